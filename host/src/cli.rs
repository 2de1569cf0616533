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

    /// Per-test timeout in seconds: past it, the test's traceback is dumped,
    /// its worker and every process it started are killed, and the test is
    /// recorded as hung. `@pytest.mark.timeout(N)` and the `runner_timeout`
    /// ini option set it too (the marker wins).
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub timeout: Option<f64>,

    /// Print a notice for each test still running after SECS (and again at every multiple).
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub slow: Option<f64>,

    /// Stop the whole run after SECS: tests in flight are stopped as hung, the rest do not run.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub global_timeout: Option<f64>,

    /// Replacement workers allowed after crashes before the run stops [default: 4 × workers].
    #[arg(long, value_name = "N")]
    pub max_worker_restart: Option<u32>,

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

fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
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
