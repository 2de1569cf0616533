//! The project's config file: `runner.toml`, or the `[tool.runner]` table
//! of `pyproject.toml`, in the nearest directory at or above the current
//! one that has either (runner.toml wins when both are there). That
//! directory is the project directory: relative paths in the file, and the
//! default plugins directory (`plugins/`), are taken from it.
//!
//! Supported keys (the command line wins over each):
//!
//! ```toml
//! workers = 4                  # -n (a number, 0 for one, "auto" or "logical")
//! timeout = 30.0               # --timeout
//! slow = 10.0                  # --slow
//! global-timeout = 600.0       # --global-timeout
//! max-worker-restart = 8       # --max-worker-restart
//! junitxml = "reports/junit.xml"
//! policies = ["policies/by-file.wasm"]   # --policy (the command line adds to these)
//! plugins-dir = "plugins"      # --plugins-dir
//! policy-memory-mib = 256      # --policy-memory
//! policy-deadline = 5.0        # --policy-deadline
//! policy-budget = 30.0         # --policy-budget
//!
//! [policy.by-file]             # --policy-opt by-file.max-batch=10
//! max-batch = 10
//! ```
//!
//! Values have the command line's bounds and forms (durations in (0, 1e9]
//! seconds, workers as `-n` takes them, 1 to 4096 MiB of policy memory);
//! anything else is refused with the key and, from the TOML text, its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::policy::PolicyOption;
use crate::workers::Workers;

/// The longest duration runner accepts, in seconds (about 31 years): far
/// beyond any run, and far from where clock arithmetic overflows.
pub const MAX_SECS: f64 = 1e9;
/// The bounds of `policy-memory-mib`, as on the command line.
pub const POLICY_MEMORY_MIB: std::ops::RangeInclusive<u32> = 1..=4096;

/// A duration the user gave, in seconds: positive and at most `MAX_SECS`
/// (so neither zero, negative, NaN nor infinite).
pub fn check_secs(secs: f64) -> Result<f64, String> {
    if secs > 0.0 && secs <= MAX_SECS {
        Ok(secs)
    } else {
        Err(format!(
            "expected a positive number of seconds, at most {MAX_SECS:e}, got {secs:?}"
        ))
    }
}

/// The file's contents, as written; values out of range are refused while
/// reading, with the key and (for TOML text) the line.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub workers: Option<Workers>,
    #[serde(default, deserialize_with = "secs")]
    pub timeout: Option<f64>,
    #[serde(default, deserialize_with = "secs")]
    pub slow: Option<f64>,
    #[serde(default, deserialize_with = "secs")]
    pub global_timeout: Option<f64>,
    pub max_worker_restart: Option<u32>,
    pub junitxml: Option<PathBuf>,
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "policy_memory")]
    pub policy_memory_mib: Option<u32>,
    #[serde(default, deserialize_with = "secs")]
    pub policy_deadline: Option<f64>,
    #[serde(default, deserialize_with = "secs")]
    pub policy_budget: Option<f64>,
    /// Options per plugin name.
    #[serde(default, deserialize_with = "policy_tables")]
    pub policy: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    check_secs(secs).map(Some).map_err(D::Error::custom)
}

fn policy_memory<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(deserializer)? {
        mib if POLICY_MEMORY_MIB.contains(&mib) => Ok(Some(mib)),
        mib => Err(D::Error::custom(format!(
            "expected {} to {} MiB, got {mib}",
            POLICY_MEMORY_MIB.start(),
            POLICY_MEMORY_MIB.end()
        ))),
    }
}

/// `[policy.NAME]` tables; anything else under `policy` is refused with a
/// message that shows the expected shape. Read as TOML values first, since
/// TOML's deserializer hands a datetime to a map visitor as a map.
fn policy_tables<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, BTreeMap<String, toml::Value>>, D::Error> {
    let toml::Value::Table(policies) = toml::Value::deserialize(deserializer)? else {
        return Err(D::Error::custom(
            "expected tables of options per policy: [policy.NAME], then KEY = VALUE lines",
        ));
    };
    policies
        .into_iter()
        .map(|(name, options)| match options {
            toml::Value::Table(options) => Ok((name, options.into_iter().collect())),
            other => Err(D::Error::custom(format!(
                "policy.{name}: expected a table of options ([policy.{name}], then KEY = VALUE lines), got a {}",
                other.type_str()
            ))),
        })
        .collect()
}

/// pyproject.toml, of which runner reads only `[tool.runner]`.
#[derive(Deserialize)]
struct Pyproject {
    #[serde(default)]
    tool: Tools,
}

#[derive(Default, Deserialize)]
struct Tools {
    runner: Option<FileConfig>,
}

/// The config found for the current directory.
#[derive(Debug, Default)]
pub struct ProjectConfig {
    /// The directory of the config file, or the current directory.
    pub project_dir: PathBuf,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    pub values: FileConfig,
}

/// Which file the config comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `runner.toml`: the whole file.
    RunnerToml,
    /// `pyproject.toml`: its `[tool.runner]` table, if any.
    Pyproject,
}

/// The config in a file's bytes. Any input gives the values or a message
/// that says what is wrong and where (TOML's line and column).
pub fn parse(bytes: &[u8], kind: FileKind) -> Result<FileConfig, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let values = match kind {
        FileKind::RunnerToml => toml::from_str(text),
        FileKind::Pyproject => {
            toml::from_str::<Pyproject>(text).map(|p| p.tool.runner.unwrap_or_default())
        }
    };
    values.map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("failed to read the config file {path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl ProjectConfig {
    /// Finds and reads the config for `cwd`.
    pub fn discover(cwd: &Path) -> Result<ProjectConfig, ConfigError> {
        for dir in cwd.ancestors() {
            let runner_toml = dir.join("runner.toml");
            if runner_toml.is_file() {
                return Self::read(dir, runner_toml, FileKind::RunnerToml);
            }
            let pyproject = dir.join("pyproject.toml");
            if pyproject.is_file() {
                return Self::read(dir, pyproject, FileKind::Pyproject);
            }
        }
        Ok(ProjectConfig {
            project_dir: cwd.to_owned(),
            ..Default::default()
        })
    }

    /// Reads `path`: runner.toml, or `[tool.runner]` of pyproject.toml.
    fn read(dir: &Path, path: PathBuf, kind: FileKind) -> Result<ProjectConfig, ConfigError> {
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse(&bytes, kind));
        match parsed {
            Ok(values) => Ok(ProjectConfig {
                project_dir: dir.to_owned(),
                file: Some(path),
                values,
            }),
            Err(message) => Err(ConfigError { path, message }),
        }
    }

    /// A path from the file, relative to the project directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.project_dir.join(path)
    }

    /// The `[policy.NAME]` tables as options; numbers and booleans are
    /// passed as their TOML text.
    pub fn policy_options(&self) -> Result<Vec<PolicyOption>, ConfigError> {
        let mut options = Vec::new();
        for (plugin, table) in &self.values.policy {
            for (key, value) in table {
                let value = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        value.to_string()
                    }
                    other => {
                        return Err(ConfigError {
                            path: self.file.clone().unwrap_or_default(),
                            message: format!(
                                "[policy.{plugin}] {key}: expected a string, number or boolean, got {}",
                                other.type_str()
                            ),
                        });
                    }
                };
                options.push(PolicyOption {
                    plugin: plugin.clone(),
                    key: key.clone(),
                    value,
                });
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tool_runner_from_pyproject_in_a_parent() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("pyproject.toml"),
            "[project]\nname = 'x'\n[tool.runner]\nworkers = 3\npolicies = ['p/a.wasm']\n\
             [tool.runner.policy.a]\nsize = 10\nname = 'x'\n",
        )
        .unwrap();
        let sub = root.path().join("tests/unit");
        std::fs::create_dir_all(&sub).unwrap();
        let config = ProjectConfig::discover(&sub).unwrap();
        assert_eq!(config.project_dir, root.path());
        assert_eq!(config.values.workers, Some(Workers::Count(3)));
        assert_eq!(
            config.resolve(&config.values.policies[0]),
            root.path().join("p/a.wasm")
        );
        let opts = config.policy_options().unwrap();
        assert_eq!(
            opts.iter()
                .map(|o| (o.key.as_str(), o.value.as_str()))
                .collect::<Vec<_>>(),
            [("name", "x"), ("size", "10")]
        );
    }

    #[test]
    fn runner_toml_wins_and_unknown_keys_are_errors() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("pyproject.toml"),
            "[tool.runner]\nworkers = 3\n",
        )
        .unwrap();
        std::fs::write(root.path().join("runner.toml"), "workers = 5\n").unwrap();
        assert_eq!(
            ProjectConfig::discover(root.path()).unwrap().values.workers,
            Some(Workers::Count(5))
        );
        std::fs::write(root.path().join("runner.toml"), "wrokers = 5\n").unwrap();
        let err = ProjectConfig::discover(root.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `wrokers`"), "{err}");
    }

    #[test]
    fn values_out_of_range_are_refused_with_their_line() {
        for text in [
            "timeout = -1",
            "slow = nan",
            "global-timeout = inf",
            "policy-deadline = 0.0",
            "timeout = 1e10",
            "workers = -1",
            "workers = 'many'",
            "policy-memory-mib = 4097",
            "policy = 3",
            "[policy]\nx = 1979-05-27",
        ] {
            let err = parse(text.as_bytes(), FileKind::RunnerToml).unwrap_err();
            assert!(err.contains("line "), "{text}: {err}");
        }
        let ok = parse(b"timeout = 30\nslow = 0.5\n", FileKind::RunnerToml).unwrap();
        assert_eq!((ok.timeout, ok.slow), (Some(30.0), Some(0.5)));
        for (text, workers) in [
            ("workers = 0", Workers::Count(0)),
            ("workers = 'auto'", Workers::Auto),
            ("workers = \"logical\"", Workers::Logical),
        ] {
            let ok = parse(text.as_bytes(), FileKind::RunnerToml).unwrap();
            assert_eq!(ok.workers, Some(workers), "{text}");
        }
    }

    #[test]
    fn no_file_means_the_current_directory() {
        let root = tempfile::tempdir().unwrap();
        let config = ProjectConfig::discover(root.path()).unwrap();
        // Some ancestor of a temp dir might have a pyproject.toml; only
        // check when none does.
        if config.file.is_none() {
            assert_eq!(config.project_dir, root.path());
        }
    }
}
