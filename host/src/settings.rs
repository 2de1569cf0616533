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
use crate::workers::{Workers, available_cpus};
use crate::xdist::XdistOptions;

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
                max_worker_restart: Layered {
                    command_line: cli.max_worker_restart,
                    config_file: file.max_worker_restart,
                },
                python,
                workers: Layered {
                    command_line: cli.workers,
                    config_file: file.workers,
                },
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

/// A setting that pytest's options can give too: pytest-xdist's `-n` and
/// `--max-worker-restart`, which runner takes over. pytest parses them in
/// the zygote, so they are known only once it has collected.
#[derive(Debug, Clone, Default)]
pub struct Layered<T> {
    pub command_line: Option<T>,
    pub config_file: Option<T>,
}

impl<T: Copy> Layered<T> {
    /// runner's command line, then pytest's options (after `--`, in
    /// addopts or `PYTEST_ADDOPTS`), then runner's config file.
    pub fn resolve(&self, pytest: Option<T>) -> Option<T> {
        self.command_line.or(pytest).or(self.config_file)
    }

    /// runner's own request (command line, then config file), which the
    /// zygote may need to count (`-n auto`).
    pub fn runners(&self) -> Option<T> {
        self.command_line.or(self.config_file)
    }
}

/// How many workers a run of `tests` tests starts: the request that wins
/// (`Layered::resolve`), else one per CPU runner may use; never more
/// than the tests.
pub fn worker_count(workers: &Layered<Workers>, xdist: &XdistOptions, tests: usize) -> u32 {
    let count = workers
        .resolve(xdist.workers())
        .map_or_else(available_cpus, |asked| asked.count(&xdist.cpus));
    count.min(tests.max(1).try_into().unwrap_or(u32::MAX))
}

/// Replacement workers a run allows: the setting that wins, else 4 ×
/// workers (like xdist).
pub fn max_worker_restart(limit: &Layered<u32>, xdist: &XdistOptions, workers: u32) -> u32 {
    limit
        .resolve(xdist.maxworkerrestart)
        .unwrap_or(workers.saturating_mul(4))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::CpuCounts;

    fn pytest_asks(numprocesses: Option<Workers>, maxworkerrestart: Option<u32>) -> XdistOptions {
        XdistOptions {
            numprocesses,
            maxworkerrestart,
            cpus: CpuCounts {
                auto: Some(6),
                logical: Some(12),
            },
            ..Default::default()
        }
    }

    #[test]
    fn runners_command_line_then_pytests_n_then_the_config_file() {
        let layered = |command_line, config_file| Layered {
            command_line,
            config_file,
        };
        let pytest = pytest_asks(Some(Workers::Count(4)), None);
        let nothing = pytest_asks(None, None);
        let both = layered(Some(Workers::Count(2)), Some(Workers::Count(3)));
        assert_eq!(worker_count(&both, &pytest, 100), 2);
        let file_only = layered(None, Some(Workers::Count(3)));
        assert_eq!(worker_count(&file_only, &pytest, 100), 4);
        assert_eq!(worker_count(&file_only, &nothing, 100), 3);
        assert_eq!(
            worker_count(&layered(None, None), &nothing, 100),
            available_cpus().min(100)
        );
        // auto and logical are the zygote's counts, wherever they come from.
        let auto = layered(Some(Workers::Auto), None);
        assert_eq!(worker_count(&auto, &pytest, 100), 6);
        let logical = pytest_asks(Some(Workers::Logical), None);
        assert_eq!(worker_count(&layered(None, None), &logical, 100), 12);
        // 0 is one worker; never more workers than tests.
        let zero = layered(Some(Workers::Count(0)), None);
        assert_eq!(worker_count(&zero, &pytest, 100), 1);
        assert_eq!(worker_count(&both, &pytest, 1), 1);
        assert_eq!(worker_count(&both, &pytest, 0), 1);
    }

    #[test]
    fn the_restart_limit_is_layered_the_same_way() {
        let limit = |command_line, config_file, pytest| {
            let layered = Layered {
                command_line,
                config_file,
            };
            max_worker_restart(&layered, &pytest_asks(None, pytest), 3)
        };
        assert_eq!(limit(Some(1), Some(2), Some(5)), 1);
        assert_eq!(limit(None, Some(2), Some(5)), 5);
        assert_eq!(limit(None, Some(2), None), 2);
        assert_eq!(limit(None, None, Some(0)), 0);
        assert_eq!(limit(None, None, None), 12);
    }
}
