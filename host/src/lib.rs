//! runner: a pytest runner whose engine is this crate and whose policies are
//! sandboxed WebAssembly components. The flow of a run is one way:
//! collect (zygote) -> plan (policy) -> dispatch (run) -> record -> report.

pub mod cli;
pub mod connections;
pub mod exit_code;
pub mod model;
pub mod outcome;
pub mod policy;
pub mod pool;
pub mod python;
pub mod recorder;
pub mod run;
pub mod state;
pub mod summary;
pub mod ui;
pub mod wire;
pub mod zygote;

use clap::Parser;

use crate::cli::Cli;
use crate::run::RunSettings;

/// The whole program; returns the process exit code.
pub fn main_impl() -> i32 {
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
    let python = match python::find_python(cli.python.as_deref()) {
        Ok(python) => python,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code::USAGE_ERROR;
        }
    };
    // Workers are the zygote's children; if the zygote dies they become
    // runner's, so that none escapes.
    if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("warning: could not become a child subreaper: {error}");
    }
    let settings = RunSettings {
        limits: pool::Limits {
            timeout: cli.timeout,
            slow: cli.slow,
            global_timeout: cli.global_timeout,
            ..Default::default()
        },
        max_worker_restart: cli.max_worker_restart,
        python,
        workers: cli.workers,
        verbosity: cli.verbosity(),
        pytest_args: cli.pytest_args,
        junitxml: cli.junitxml,
        run_log: cli.run_log,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run::run(settings)));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit_code::INTERNAL_ERROR
        }
    }
}
