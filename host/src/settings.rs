//! Settings, resolved once: the command line over the config file
//! (`runner.toml` or `[tool.runner]`), over the defaults. Every value is
//! checked where it is read (cli, config); this is the one place where the
//! sources meet, so no other part of runner looks at either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{Cli, OutputFormat, PolicyArgs};
use crate::config::ProjectConfig;
use crate::policy::{PolicyConfig, SandboxLimits};
use crate::python;
use crate::run::Limits;
use crate::session::SessionSettings;
use crate::ui::Verbosity;

/// Everything a `runner` run needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub session: SessionSettings,
    pub policies: PolicyConfig,
    /// `--watch`: run again on every change.
    pub watch: bool,
}

impl Settings {
    /// Resolves the command line over the project's config file; `warn`
    /// hears what was ignored (a `VIRTUAL_ENV` without a Python). An error
    /// is a usage error.
    pub fn resolve(
        cli: Cli,
        project: &ProjectConfig,
        cwd: &Path,
        warn: &mut dyn FnMut(String),
    ) -> Result<Settings, String> {
        let file = &project.values;
        let junitxml = match (&cli.junitxml, &file.junitxml) {
            (Some(path), _) => Some(cwd.join(path)),
            (None, Some(path)) => Some(project.resolve(path)),
            (None, None) => None,
        };
        let policies = policy_config(&cli.policy, project, cwd, junitxml.clone())?;
        let python = python::find_python(cli.python.as_deref(), warn).map_err(|e| e.to_string())?;
        let verbosity = cli.verbosity();
        Ok(Settings {
            session: SessionSettings {
                limits: Limits {
                    timeout: cli.timeout.or(file.timeout),
                    slow: cli.slow.or(file.slow),
                    global_timeout: cli.global_timeout.or(file.global_timeout),
                    ..Default::default()
                },
                max_worker_restart: cli.max_worker_restart.or(file.max_worker_restart),
                python,
                workers: cli.workers.or(file.workers),
                verbosity,
                pytest_args: pytest_args(verbosity, cli.pytest_args),
                junitxml,
                run_log: cli.run_log,
                json: cli.format == OutputFormat::Json,
            },
            policies,
            watch: cli.watch,
        })
    }
}

/// What pytest is given: runner's `-v`/`-q` (pytest writes the report, so
/// they are pytest's too), then the arguments after `--`.
fn pytest_args(verbosity: Verbosity, after_dashes: Vec<String>) -> Vec<String> {
    let flag = match verbosity {
        Verbosity::Verbose => Some("-v"),
        Verbosity::Quiet => Some("-q"),
        Verbosity::Normal => None,
    };
    flag.map(str::to_owned)
        .into_iter()
        .chain(after_dashes)
        .collect()
}

/// The policy setup from the command line over the config file.
pub fn policy_config(
    args: &PolicyArgs,
    project: &ProjectConfig,
    cwd: &Path,
    junitxml: Option<PathBuf>,
) -> Result<PolicyConfig, String> {
    let file = &project.values;
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
