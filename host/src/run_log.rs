//! The run log's lines, and the one reader of a run log. `state::RunLog`
//! writes these lines as results arrive (one JSON object per line, flushed
//! line by line); this reader reads them back. It tolerates what a crash of
//! the machine while writing leaves behind, an incomplete last line, and
//! names the line of anything else that is not a log line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::Outcome;

/// One line of the run log, tagged by `type`. Fields a later runner adds
/// are ignored, so older readers keep working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LogLine {
    /// Collection is done and the run begins.
    RunStarted {
        tests: u64,
        workers: u32,
        deselected: u32,
        #[serde(deserialize_with = "secs")]
        collected_after_secs: f64,
    },
    /// A file or module pytest could not collect.
    CollectionError { id: String, longrepr: String },
    /// A collected test the scheduler chose not to run, and why.
    Deselected { id: String, reason: String },
    /// A test's final result.
    Result {
        id: String,
        outcome: Outcome,
        /// Each phase and pytest's report category for it.
        phases: Vec<(String, String)>,
        #[serde(deserialize_with = "secs")]
        duration_secs: f64,
        worker: String,
        longrepr: String,
        /// When runner received it, seconds since the run started.
        #[serde(deserialize_with = "secs")]
        at_secs: f64,
    },
    /// A planned test that did not run (the run stopped early).
    NotRun { id: String },
    /// A process a test left running after it ended (a leaky test).
    LeakedProcess {
        /// The test that started it, when known.
        test: Option<String>,
        pid: i32,
        command: String,
    },
    /// A process of the run still alive at its end, killed.
    LeftoverKilled {
        test: Option<String>,
        /// Who started it, in words (a test, collection, unknown).
        origin: String,
        pid: i32,
        command: String,
    },
    /// The run is over.
    RunFinished {
        exit_code: i32,
        #[serde(deserialize_with = "secs")]
        duration_secs: f64,
    },
}

/// JSON has no NaN or infinity, so serde_json writes them as `null`; such a
/// value is read back as NaN rather than losing the whole line.
fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// A run log as read back.
#[derive(Debug, Default, PartialEq)]
pub struct ReadLog {
    pub lines: Vec<LogLine>,
    /// The last line was cut short (runner or the machine stopped while
    /// writing it) and was left out.
    pub incomplete_last_line: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunLogError {
    #[error("could not read the run log {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}line {line} is not a run log line: {message}", source_prefix(.path))]
    Corrupt {
        path: Option<PathBuf>,
        /// 1-based.
        line: usize,
        message: String,
    },
}

fn source_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("run log {}, ", p.display()))
        .unwrap_or_default()
}

/// Reads the run log at `path`.
pub fn read(path: &Path) -> Result<ReadLog, RunLogError> {
    let bytes = std::fs::read(path).map_err(|error| RunLogError::Io {
        path: path.to_owned(),
        error,
    })?;
    parse(&bytes).map_err(|error| match error {
        RunLogError::Corrupt { line, message, .. } => RunLogError::Corrupt {
            path: Some(path.to_owned()),
            line,
            message,
        },
        other => other,
    })
}

/// Parses a run log's bytes. Every line ends with a newline when it was
/// written whole; a last line without one that does not parse is what a
/// crash mid-write leaves, and is dropped. Any other line that is not a log
/// line is an error naming it.
pub fn parse(bytes: &[u8]) -> Result<ReadLog, RunLogError> {
    let mut log = ReadLog::default();
    let mut rest = bytes;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                (line, true)
            }
            None => (std::mem::take(&mut rest), false),
        };
        match serde_json::from_slice::<LogLine>(line) {
            Ok(parsed) => log.lines.push(parsed),
            Err(_) if !complete => log.incomplete_last_line = true,
            Err(error) => {
                return Err(RunLogError::Corrupt {
                    path: None,
                    line: number,
                    message: error.to_string(),
                });
            }
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        r#"{"type":"run-started","tests":2,"workers":1,"deselected":0,"collected_after_secs":0.1}"#,
        "\n",
        r#"{"type":"result","id":"t.py::a","outcome":"passed","phases":[["call","passed"]],"duration_secs":0.5,"worker":"gw0","longrepr":"","at_secs":0.7,"added_later":1}"#,
        "\n",
        r#"{"type":"not-run","id":"t.py::b"}"#,
        "\n",
    );

    #[test]
    fn reads_every_line_and_ignores_fields_it_does_not_know() {
        let log = parse(LOG.as_bytes()).unwrap();
        assert!(!log.incomplete_last_line);
        assert_eq!(log.lines.len(), 3);
        assert!(matches!(
            &log.lines[1],
            LogLine::Result { id, outcome: Outcome::Passed, .. } if id == "t.py::a"
        ));
    }

    #[test]
    fn an_incomplete_last_line_is_dropped_and_flagged() {
        let cut = &LOG.as_bytes()[..LOG.len() - 10];
        let log = parse(cut).unwrap();
        assert!(log.incomplete_last_line);
        assert_eq!(log.lines.len(), 2);
    }

    #[test]
    fn a_corrupt_line_is_named() {
        let text = LOG.replace("not-run", "launch");
        let err = parse(text.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("line 3 is not a run log line"), "{err}");
        let err = parse(b"\n").unwrap_err().to_string();
        assert!(err.starts_with("line 1 "), "{err}");
    }
}
