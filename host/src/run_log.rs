//! The one reader of a run log. `report::RunLogFile` writes the run's
//! events (`events::Stamped`, one JSON object per line, flushed line by
//! line); this reader reads them back. It tolerates what a crash of
//! the machine while writing leaves behind, an incomplete last line, and
//! names the line of anything else that is not a log line.

use std::path::{Path, PathBuf};

use crate::events::Stamped;

/// One line of the run log: an event and when it happened.
pub type LogLine = Stamped;

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
    use crate::events::RunEvent;
    use crate::model::Outcome;

    const LOG: &str = concat!(
        r#"{"at":1.5,"type":"run-started","schema":1,"run_id":"r","runner":"0.1.0","rootdir":"/p","python":"3.11.7","pytest":"9.2.0","tests":2,"workers":1,"deselected":0,"collected_after_secs":0.1}"#,
        "\n",
        r#"{"at":2.0,"type":"test-finished","id":"t.py::a","worker":"gw0","attempt":1,"outcome":"passed","duration_secs":0.5,"phases":[["call","passed"]],"added_later":1}"#,
        "\n",
        r#"{"at":2.5,"type":"not-run","id":"t.py::b"}"#,
        "\n",
    );

    #[test]
    fn reads_every_line_and_ignores_fields_it_does_not_know() {
        let log = parse(LOG.as_bytes()).unwrap();
        assert!(!log.incomplete_last_line);
        assert_eq!(log.lines.len(), 3);
        assert!(matches!(
            &log.lines[1].event,
            RunEvent::TestFinished { id, outcome: Outcome::Passed, .. } if id == "t.py::a"
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
