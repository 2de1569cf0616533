//! The command line. Everything after `--` goes to pytest untouched.

use std::path::PathBuf;

use clap::Parser;

use crate::ui::Verbosity;

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Run a pytest suite in warm, forked workers, with policies as sandboxed WebAssembly components",
    after_help = "Arguments after `--` are passed to pytest unchanged, e.g.\n  runner -n 2 -- -k \"not slow\" tests/unit"
)]
pub struct Cli {
    /// Number of worker processes [default: the number of CPUs, never more than the number of tests].
    #[arg(short = 'n', long = "workers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,

    /// Python interpreter to run pytest with [default: $VIRTUAL_ENV/bin/python, then python3 on PATH].
    #[arg(long, value_name = "PATH", env = "RUNNER_PYTHON")]
    pub python: Option<PathBuf>,

    /// Write a JUnit XML report here [default: .runner/junit.xml].
    #[arg(long, value_name = "PATH")]
    pub junitxml: Option<PathBuf>,

    /// Also write the run's JSON-lines log here (it is always kept under .runner/runs/).
    #[arg(long, value_name = "PATH")]
    pub run_log: Option<PathBuf>,

    /// Print a line for every test, not only for failures.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print only the closing line.
    #[arg(short, long)]
    pub quiet: bool,

    /// Arguments for pytest.
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

impl Cli {
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_args_pass_through_untouched() {
        let cli = Cli::try_parse_from([
            "runner",
            "-n",
            "2",
            "--",
            "-k",
            "not slow",
            "-x",
            "tests/unit",
        ])
        .unwrap();
        assert_eq!(cli.workers, Some(2));
        assert_eq!(cli.pytest_args, ["-k", "not slow", "-x", "tests/unit"]);
    }

    #[test]
    fn zero_workers_is_a_usage_error() {
        assert!(Cli::try_parse_from(["runner", "-n", "0"]).is_err());
    }
}
