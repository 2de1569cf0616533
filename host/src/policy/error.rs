//! Errors of the policy host. Each names the plugin and what it was doing.

use std::path::PathBuf;

use super::text::safe_path;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to set up the policy engine: {0}")]
    Engine(String),
    #[error("failed to load policy `{plugin}`: {cause}")]
    Load { plugin: String, cause: String },
    #[error("policy `{plugin}` returned an error from `{func}`: {message}")]
    Failed {
        plugin: String,
        func: &'static str,
        message: String,
    },
    #[error("policy `{plugin}` was stopped in `{func}`: {cause}")]
    Trapped {
        plugin: String,
        func: &'static str,
        cause: String,
    },
    #[error("policy `{plugin}` returned an invalid answer from `{func}`: {problem}")]
    InvalidAnswer {
        plugin: String,
        func: &'static str,
        problem: IdProblem,
    },
    #[error("failed to read policy {}: {source}", safe_path(path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to load policy `{plugin}`: {why}")]
    NotAComponent { plugin: String, why: String },
    #[error("failed to compile policy `{plugin}`: {why}")]
    Compile { plugin: String, why: String },
    #[error(
        "refused policy {path}: its name (the file name without `.wasm`) {why}; rename the file"
    )]
    BadName { path: String, why: String },
    #[error(
        "policy `{plugin}` fits no slot: it exports {exports}, but a scheduler exports \
         `plan`, a reporter `on-event` and `finish`, a quarantine policy `decide` \
         (see wit/worlds.wit)"
    )]
    NoSlot { plugin: String, exports: String },
    #[error(
        "policy `{plugin}` targets runner:policy@{version}, which this runner does not support \
         (it supports runner:policy@{supported}); rebuild the policy against this runner's wit/",
        supported = super::catalog::SUPPORTED_VERSIONS
    )]
    UnsupportedVersion { plugin: String, version: String },
    #[error("{0}")]
    Conflict(String),
    #[error("--policy-opt {option}: no policy named `{plugin}` is loaded (loaded: {loaded})")]
    UnknownPlugin {
        option: String,
        plugin: String,
        loaded: String,
    },
    #[error("{} policies failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<PolicyError>),
    #[error("the JUnit XML path {} does not name a file", safe_path(.0))]
    JunitPath(PathBuf),
    #[error(
        "failed to open the reporter output directory {}: {source}",
        safe_path(path)
    )]
    OutputDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What is wrong with the test ids in a policy's answer.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum IdProblem {
    #[error("unknown test id `{0}`")]
    Unknown(String),
    #[error("test `{0}` appears more than once")]
    Duplicate(String),
    #[error("{count} collected test(s) neither planned nor deselected, e.g. `{example}`")]
    Missing { count: usize, example: String },
}

impl PolicyError {
    /// Whether the user can fix this by changing what they asked for (a
    /// policy file, an option): runner then exits with the usage-error code.
    pub fn is_usage(&self) -> bool {
        match self {
            PolicyError::Engine(_) | PolicyError::OutputDir { .. } => false,
            PolicyError::Many(errors) => errors.iter().all(PolicyError::is_usage),
            _ => true,
        }
    }
}
