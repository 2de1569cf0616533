//! Errors of the policy host. Each names the plugin and what it was doing.

use std::path::PathBuf;

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
    #[error("the JUnit XML path {0} does not name a file")]
    JunitPath(PathBuf),
    #[error("failed to open the reporter output directory {path}: {source}")]
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
