//! The command line. Everything after `--` goes to pytest untouched.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::policy::PolicyOption;
use crate::ui::Verbosity;
use crate::workers::Workers;

/// What runner writes on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// pytest's report.
    Human,
    /// The run's events as JSON lines (the human report goes to stderr).
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Run a pytest suite in warm, forked workers, with policies as sandboxed WebAssembly components",
    after_help = "Arguments after `--` are passed to pytest unchanged, e.g.\n  runner -n 2 -- -k \"not slow\" tests/unit\n\nOptions can also be set in runner.toml or in [tool.runner] of pyproject.toml.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Number of worker processes: N (0 means one), `auto` (one per physical
    /// core, as pytest-xdist counts them) or `logical` (one per logical CPU).
    /// Wins over pytest's own `-n` (after `--` or in addopts) [default:
    /// pytest's `-n`, then the config file's, then the number of CPUs; never
    /// more than the number of tests].
    #[arg(short = 'n', long = "workers", value_name = "N|auto|logical", allow_negative_numbers = true, value_parser = workers)]
    pub workers: Option<Workers>,

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

    /// A line for every test in pytest's report (pytest's `-v`).
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,

    /// A quieter report (pytest's `-q`).
    #[arg(short, long)]
    pub quiet: bool,

    /// Run, then run again whenever a file under pytest's rootdir changes
    /// (the tests that failed first, then all); Enter reruns, Ctrl-C quits.
    #[arg(long)]
    pub watch: bool,

    /// `json`: write the run's events as JSON lines on stdout while it runs
    /// (the schema of the run log); the human report goes to stderr.
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    pub format: OutputFormat,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Arguments for pytest.
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Internal: compiles a policy component read from stdin for the runner
    /// process `parent`, under bounds (see policy/compile.rs).
    #[command(name = crate::policy::COMPILE_SUBCOMMAND, hide = true)]
    CompilePolicy {
        #[arg(long)]
        parent: u32,
        #[arg(long)]
        memory_mib: u64,
    },
    /// List the policies a run would load here: name, slot, WIT version,
    /// size, source and every interface each imports (a capability audit).
    Plugins {
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Which policies run, their options and their sandbox.
#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// Load this policy component (repeatable). Its slot (scheduler,
    /// reporter, quarantine) comes from what it exports; a scheduler or
    /// quarantine policy replaces the default, reporters add up.
    #[arg(long = "policy", value_name = "FILE.wasm")]
    pub policies: Vec<PathBuf>,

    /// An option for a policy, passed to its `configure` (repeatable).
    #[arg(long = "policy-opt", value_name = "NAME.KEY=VALUE", value_parser = policy_opt)]
    pub policy_opts: Vec<PolicyOption>,

    /// Load every *.wasm in DIR [default: plugins/ in the project directory].
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,

    /// Memory a policy may use, all its memories and tables together, in MiB [default: 256].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub policy_memory: Option<u32>,

    /// How long one policy call may run before it is stopped [default: 5].
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub policy_deadline: Option<f64>,

    /// How long all of one policy's calls in a run may take together; past
    /// it the policy is dropped like a failing one [default: 30].
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub policy_budget: Option<f64>,
}

/// `NAME.KEY=VALUE`; NAME is the policy's file name without `.wasm`, or
/// `builtin:scheduler`, `builtin:reporter`, `builtin:quarantine`.
fn policy_opt(text: &str) -> Result<PolicyOption, String> {
    let parsed = text.split_once('=').and_then(|(name_key, value)| {
        let (plugin, key) = name_key.rsplit_once('.')?;
        (!plugin.is_empty() && !key.is_empty()).then(|| PolicyOption {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        })
    });
    parsed.ok_or_else(|| format!("expected NAME.KEY=VALUE, got {text:?}"))
}

/// `-n`: the forms the config file and pytest's `-n` accept too.
fn workers(text: &str) -> Result<Workers, String> {
    text.parse()
}

/// Seconds, in the range the config file accepts too.
fn positive_secs(text: &str) -> Result<f64, String> {
    let secs = text
        .parse::<f64>()
        .map_err(|_| format!("expected a positive number of seconds, got {text:?}"))?;
    crate::config::check_secs(secs)
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
        assert_eq!(cli.workers, Some(Workers::Count(2)));
        assert_eq!(cli.pytest_args, ["-k", "not slow", "-x", "tests/unit"]);
    }

    #[test]
    fn policy_flags_and_the_plugins_subcommand() {
        let cli = Cli::try_parse_from([
            "runner",
            "--policy",
            "a.wasm",
            "--policy-opt",
            "my.policy.size=1=2",
            "--",
            "plugins",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.pytest_args, ["plugins"]);
        assert_eq!(
            cli.policy.policy_opts,
            [PolicyOption {
                plugin: "my.policy".into(),
                key: "size".into(),
                value: "1=2".into()
            }]
        );
        let cli = Cli::try_parse_from(["runner", "plugins", "--policy", "a.wasm"]).unwrap();
        assert!(
            matches!(&cli.command, Some(Command::Plugins { policy }) if policy.policies.len() == 1)
        );
        assert!(Cli::try_parse_from(["runner", "--policy-opt", "novalue"]).is_err());
    }

    #[test]
    fn workers_are_a_number_auto_or_logical() {
        let workers = |value: &str| {
            Cli::try_parse_from(["runner", "-n", value])
                .map(|cli| cli.workers)
                .map_err(|e| e.to_string())
        };
        assert_eq!(workers("3"), Ok(Some(Workers::Count(3))));
        assert_eq!(workers("0"), Ok(Some(Workers::Count(0))));
        assert_eq!(workers("auto"), Ok(Some(Workers::Auto)));
        assert_eq!(workers("logical"), Ok(Some(Workers::Logical)));
        let long = Cli::try_parse_from(["runner", "--workers=auto"]).unwrap();
        assert_eq!(long.workers, Some(Workers::Auto));
        for bad in ["-1", "many", "", "1.5"] {
            let error = workers(bad).unwrap_err();
            assert!(
                error.contains("invalid value")
                    && error.contains("`auto`")
                    && error.contains("`logical`"),
                "{bad}: {error}"
            );
        }
        // A negative number is the value, not a flag: it is refused as one.
        assert!(workers("-1").unwrap_err().contains("\"-1\""));
    }
}
