//! runner: a pytest runner whose engine is this crate and whose policies are
//! sandboxed WebAssembly components. The flow of a run is one way:
//! collect (zygote) -> plan (policy) -> dispatch (run) -> record -> report.

pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod debugger;
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
pub mod settings;
pub mod signals;
pub mod state;
pub mod stdio;
pub mod summary;
pub mod ui;
pub mod watch;
pub mod wire;
pub mod workers;
pub mod xdist;
pub mod zygote;

use std::path::PathBuf;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::ProjectConfig;
use crate::policy::Policies;
use crate::settings::Settings;

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
        return match settings::policy_config(policy, &project, &cwd, None) {
            Ok(config) => plugins::list(&config),
            Err(message) => {
                crate::errln!("error: {message}");
                exit_code::USAGE_ERROR
            }
        };
    }
    let settings = match Settings::resolve(cli, &project, &cwd, &mut |warning| {
        crate::errln!("warning: {warning}")
    }) {
        Ok(settings) => settings,
        Err(message) => {
            crate::errln!("error: {message}");
            return exit_code::USAGE_ERROR;
        }
    };
    let policies = match Policies::load(&settings.policies) {
        Ok(policies) => policies,
        Err(error) => {
            crate::errln!("error: {error}");
            return if error.is_usage() {
                exit_code::USAGE_ERROR
            } else {
                exit_code::INTERNAL_ERROR
            };
        }
    };
    // Every process of the run whose parent dies becomes runner's child, not
    // init's: workers if the zygote dies, whatever a test detached (setsid,
    // double fork). So none escapes (see descendants.rs).
    if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
        crate::errln!("warning: could not become a child subreaper: {error}");
    }
    let Settings {
        session: session_settings,
        watch,
        ..
    } = settings;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
        // The session runs in `block_on`, on the main thread: the zygote
        // must be spawned from a thread that lives as long as runner.
        rt.block_on(async {
            if watch {
                watch::watch(session_settings, policies).await
            } else {
                session::run_once(session_settings, policies).await
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
