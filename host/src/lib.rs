//! runner: a pytest runner whose engine is this crate and whose policies are
//! sandboxed WebAssembly components. The flow of a run is one way:
//! collect (zygote) -> plan (policy) -> dispatch (run) -> record -> report.

pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod descendants;
pub mod events;
pub mod exit_code;
pub mod guardian;
pub mod model;
pub mod outcome;
pub mod panic;
pub mod plugins;
pub mod policy;
pub mod python;
pub mod report;
pub mod run;
pub mod run_log;
pub mod session;
pub mod signals;
pub mod state;
pub mod stdio;
pub mod summary;
pub mod ui;
pub mod watch;
pub mod wire;
pub mod zygote;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command, PolicyArgs};
use crate::config::ProjectConfig;
use crate::policy::{Policies, PolicyConfig, SandboxLimits};
use crate::session::SessionSettings;

/// The whole program; returns the process exit code.
pub fn main_impl() -> i32 {
    if let Some(run_id) = guardian::guarded_run() {
        return guardian::serve(&run_id);
    }
    panic::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                exit_code::USAGE_ERROR
            } else {
                exit_code::OK
            };
        }
    };
    if let Some(Command::CompilePolicy { parent, memory_mib }) = &cli.command {
        return policy::compile_child_main(*parent, *memory_mib);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let project = match ProjectConfig::discover(&cwd) {
        Ok(project) => project,
        Err(error) => {
            crate::errln!("error: {error}");
            return exit_code::USAGE_ERROR;
        }
    };
    if let Some(Command::Plugins { policy }) = &cli.command {
        return match policy_config(policy, &project, None) {
            Ok(config) => plugins::list(&config),
            Err(message) => {
                crate::errln!("error: {message}");
                exit_code::USAGE_ERROR
            }
        };
    }
    let file = &project.values;
    let junitxml = match (&cli.junitxml, &file.junitxml) {
        (Some(path), _) => Some(cwd.join(path)),
        (None, Some(path)) => Some(project.resolve(path)),
        (None, None) => None,
    };
    let policies = match policy_config(&cli.policy, &project, junitxml.clone()) {
        Ok(config) => Policies::load(&config).map_err(|e| (e.is_usage(), e.to_string())),
        Err(message) => Err((true, message)),
    };
    let policies = match policies {
        Ok(policies) => policies,
        Err((usage, message)) => {
            crate::errln!("error: {message}");
            return if usage {
                exit_code::USAGE_ERROR
            } else {
                exit_code::INTERNAL_ERROR
            };
        }
    };
    let python = match python::find_python(cli.python.as_deref(), &mut |warning| {
        crate::errln!("warning: {warning}")
    }) {
        Ok(python) => python,
        Err(error) => {
            crate::errln!("error: {error}");
            return exit_code::USAGE_ERROR;
        }
    };
    // Every process of the run whose parent dies becomes runner's child, not
    // init's: workers if the zygote dies, whatever a test detached (setsid,
    // double fork). So none escapes (see descendants.rs).
    if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
        crate::errln!("warning: could not become a child subreaper: {error}");
    }
    let watch = cli.watch;
    let settings = SessionSettings {
        limits: run::Limits {
            timeout: cli.timeout.or(file.timeout),
            slow: cli.slow.or(file.slow),
            global_timeout: cli.global_timeout.or(file.global_timeout),
            ..Default::default()
        },
        max_worker_restart: cli.max_worker_restart.or(file.max_worker_restart),
        python,
        workers: cli.workers.or(file.workers),
        verbosity: cli.verbosity(),
        pytest_args: cli.pytest_args,
        junitxml,
        run_log: cli.run_log,
        json: cli.format == cli::OutputFormat::Json,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
        // The session runs in `block_on`, on the main thread: the zygote
        // must be spawned from a thread that lives as long as runner.
        rt.block_on(async {
            if watch {
                watch::watch(settings, policies).await
            } else {
                session::run_once(settings, policies).await
            }
        })
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            crate::errln!("error: {error:#}");
            exit_code::INTERNAL_ERROR
        }
    }
}

/// The policy setup from the command line over the config file.
fn policy_config(
    args: &PolicyArgs,
    project: &ProjectConfig,
    junitxml: Option<PathBuf>,
) -> Result<PolicyConfig, String> {
    let file = &project.values;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut policies: Vec<PathBuf> = file.policies.iter().map(|p| project.resolve(p)).collect();
    policies.extend(args.policies.iter().map(|p| cwd.join(p)));
    let plugins_dir = match (&args.plugins_dir, &file.plugins_dir) {
        (Some(dir), _) => cwd.join(dir),
        (None, Some(dir)) => project.resolve(dir),
        (None, None) => project.project_dir.join("plugins"),
    };
    let mut options = project.policy_options().map_err(|e| e.to_string())?;
    options.extend(args.policy_opts.iter().cloned());
    let defaults = SandboxLimits::default();
    // Both sources are checked where they are read (cli, config).
    let deadline = args
        .policy_deadline
        .or(file.policy_deadline)
        .map(Duration::from_secs_f64);
    let budget = args
        .policy_budget
        .or(file.policy_budget)
        .map(Duration::from_secs_f64);
    Ok(PolicyConfig {
        policies,
        plugins_dir: Some(plugins_dir),
        options,
        junitxml,
        limits: SandboxLimits {
            memory_bytes: args
                .policy_memory
                .or(file.policy_memory_mib)
                .map_or(defaults.memory_bytes, |mib| (mib as usize) << 20),
            deadline: deadline.unwrap_or(defaults.deadline),
            budget: budget.unwrap_or(defaults.budget),
        },
        cache_dir: Some(cache_dir()),
        cache_key: cache_key(),
    })
}

/// The key cache entries are verified with: per user, in the state
/// directory, never in the cache itself, so a cache restored from
/// elsewhere (a CI cache) or written by another tool is not trusted.
fn cache_key() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|d| Path::new(&d).join(".local").join("state")))
        .map(|d| d.join("runner").join("cache-key"))
}

/// Compiled components are cached per user, not per project.
fn cache_dir() -> PathBuf {
    std::env::var_os("RUNNER_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("runner")))
        .or_else(|| std::env::var_os("HOME").map(|d| Path::new(&d).join(".cache").join("runner")))
        .unwrap_or_else(|| std::env::temp_dir().join("runner-cache"))
}
