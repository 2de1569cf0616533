//! The project's config file: `runner.toml`, or the `[tool.runner]` table
//! of `pyproject.toml`, in the nearest directory at or above the current
//! one that has either (runner.toml wins when both are there). That
//! directory is the project directory: relative paths in the file, and the
//! default plugins directory (`plugins/`), are taken from it.
//!
//! Supported keys (the command line wins over each):
//!
//! ```toml
//! workers = 4                  # -n
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::PolicyOption;

/// The file's contents, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub workers: Option<u32>,
    pub timeout: Option<f64>,
    pub slow: Option<f64>,
    pub global_timeout: Option<f64>,
    pub max_worker_restart: Option<u32>,
    pub junitxml: Option<PathBuf>,
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    pub policy_memory_mib: Option<u32>,
    pub policy_deadline: Option<f64>,
    pub policy_budget: Option<f64>,
    /// Options per plugin name.
    #[serde(default)]
    pub policy: BTreeMap<String, BTreeMap<String, toml::Value>>,
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
                return Self::read(dir, runner_toml, None);
            }
            let pyproject = dir.join("pyproject.toml");
            if pyproject.is_file() {
                return Self::read(dir, pyproject, Some("runner"));
            }
        }
        Ok(ProjectConfig {
            project_dir: cwd.to_owned(),
            ..Default::default()
        })
    }

    /// Reads `path`; for pyproject.toml, only its `[tool.<table>]`.
    fn read(dir: &Path, path: PathBuf, table: Option<&str>) -> Result<ProjectConfig, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| error(e.to_string()))?;
        let values = match table {
            None => toml::from_str(&text).map_err(|e| error(e.to_string()))?,
            Some(table) => {
                let doc: toml::Table = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
                match doc.get("tool").and_then(|t| t.get(table)) {
                    Some(section) => FileConfig::deserialize(section.clone())
                        .map_err(|e| error(format!("[tool.{table}]: {e}")))?,
                    None => FileConfig::default(),
                }
            }
        };
        Ok(ProjectConfig {
            project_dir: dir.to_owned(),
            file: Some(path),
            values,
        })
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
        assert_eq!(config.values.workers, Some(3));
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
            Some(5)
        );
        std::fs::write(root.path().join("runner.toml"), "wrokers = 5\n").unwrap();
        let err = ProjectConfig::discover(root.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `wrokers`"), "{err}");
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
