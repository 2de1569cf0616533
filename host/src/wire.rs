//! The protocol between the host and the Python side (zygote and workers):
//! frames of a 4-byte big-endian length and a UTF-8 JSON object, decoded
//! into typed messages. A malformed or oversized frame is an error for that
//! peer, never a crash of the host. The Python end is `host/python/_runner_shim.py`.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::model::TestCase;

/// Frames above this size are refused (the shim enforces the same bound and
/// truncates oversized test output before sending).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Messages from the Python side.
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Inbound {
    Hello {
        role: Role,
        pid: i32,
        #[serde(default)]
        worker: Option<String>,
    },
    /// The zygote finished collection.
    Collected(Collected),
    /// The zygote forked a worker.
    Forked { worker: String, pid: i32 },
    /// The zygote reaped a worker.
    WorkerExited {
        worker: String,
        pid: i32,
        #[serde(default)]
        code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
    },
    /// A worker has at most one test left and wants more.
    Ready,
    /// A worker began running a test.
    Started { id: String },
    /// A worker finished a test: all its phase reports.
    Result {
        id: String,
        reports: Vec<PhaseReport>,
        #[serde(default)]
        warnings: Vec<WarningRecord>,
    },
    /// A test stopped pytest's session (KeyboardInterrupt, SIGINT, or
    /// `pytest.exit()`); what it got through came first, as a `Result`.
    Stop(SessionStop),
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Zygote,
    /// A worker's command connection.
    Worker,
    /// A worker's second connection, where faulthandler writes tracebacks.
    Evidence,
}

#[derive(Debug, Deserialize)]
pub struct Collected {
    pub rootdir: String,
    /// Versions, for the header line.
    pub python: String,
    pub pytest: String,
    pub tests: Vec<TestCase>,
    pub errors: Vec<CollectError>,
    /// Warnings raised while configuring and collecting.
    #[serde(default)]
    pub warnings: Vec<WarningRecord>,
    pub deselected: u32,
    /// Set when pytest stops the session because collection failed.
    pub interrupted: Option<String>,
    /// pytest's `--maxfail` (`-x` is 1); 0 for no limit.
    #[serde(default)]
    pub maxfail: u32,
    /// The `runner_timeout` ini option, seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// Why pytest's session stopped, as its terminal reporter shows it.
#[derive(Debug, Deserialize, Clone, PartialEq)]
pub struct SessionStop {
    /// The test it happened in; none when it came between tests.
    #[serde(default)]
    pub id: Option<String>,
    /// The title of pytest's `!!! ... !!!` line: `KeyboardInterrupt`,
    /// `_pytest.outcomes.Exit: reason`.
    pub reason: String,
    /// The lines pytest prints under it (where a KeyboardInterrupt was raised).
    #[serde(default)]
    pub detail: String,
    /// pytest's exit code: 2, or the `returncode` given to `pytest.exit`.
    pub exit_code: i32,
}

#[derive(Debug, Deserialize, Clone)]
pub struct CollectError {
    pub id: String,
    pub longrepr: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// A warning pytest recorded (`pytest_warning_recorded`), formatted as
/// pytest's warnings summary shows it.
#[derive(Debug, Deserialize, Clone)]
pub struct WarningRecord {
    /// The test it was raised in; empty during configuration or collection.
    pub nodeid: String,
    pub message: String,
}

/// One pytest `TestReport` (setup, call or teardown), as the worker saw it.
#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct PhaseReport {
    pub when: String,
    pub outcome: String,
    /// pytest_report_teststatus's category: "passed", "failed", "error",
    /// "skipped", "xfailed", "xpassed", "" or a plugin's own.
    pub category: String,
    /// Only for runner's own reports (HUNG, CRASHED): the word to show.
    #[serde(default)]
    pub word: String,
    pub duration: f64,
    #[serde(default)]
    pub longrepr: String,
    #[serde(default)]
    pub sections: Vec<(String, String)>,
    /// pytest's title for the test, sent for failed reports.
    #[serde(default)]
    pub head_line: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub wasxfail: Option<String>,
    #[serde(default)]
    pub skip: Option<SkipLocation>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct SkipLocation {
    pub path: String,
    pub line: Option<u32>,
    pub reason: String,
}

/// Commands to the Python side.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Outbound<'a> {
    /// To the zygote: fork a worker with this id.
    Fork { worker: &'a str, count: u32 },
    /// To a worker: run these tests, in order, after what it already has.
    Run { ids: &'a [String] },
    /// To the zygote, before it shuts down: how this run changed pytest's
    /// "last failed" set, so that its cacheprovider saves it for `--lf`.
    LastFailed {
        failed: &'a [String],
        passed: &'a [String],
    },
    /// To either: finish what you have and exit. With `drop_pending`, a
    /// worker drops the tests it holds but has not started (--maxfail).
    Shutdown {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        drop_pending: bool,
    },
}

pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Inbound>, WireError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_FRAME {
        return Err(WireError::TooLarge(size));
    }
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Outbound<'_>,
) -> Result<(), WireError> {
    let body = serde_json::to_vec(message)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[tokio::test]
    async fn decodes_a_result_frame() {
        let body = br#"{"t":"result","id":"t.py::a","reports":[{"when":"call","outcome":"passed","category":"passed","duration":0.5}]}"#;
        let mut input = &framed(body)[..];
        match read_frame(&mut input).await.unwrap() {
            Some(Inbound::Result { id, reports, .. }) => {
                assert_eq!(id, "t.py::a");
                assert_eq!(reports[0].category, "passed");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            read_frame(&mut input).await.unwrap().is_none(),
            "clean EOF after the frame"
        );
    }

    #[tokio::test]
    async fn decodes_a_session_stop() {
        let body = br#"{"t":"stop","id":"t.py::a","reason":"_pytest.outcomes.Exit: done","detail":"","exit_code":3}"#;
        let mut input = &framed(body)[..];
        match read_frame(&mut input).await.unwrap() {
            Some(Inbound::Stop(stop)) => {
                assert_eq!(stop.id.as_deref(), Some("t.py::a"));
                assert_eq!(stop.reason, "_pytest.outcomes.Exit: done");
                assert_eq!(stop.exit_code, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_frames() {
        let mut huge = &((MAX_FRAME as u32) + 1).to_be_bytes()[..];
        assert!(matches!(
            read_frame(&mut huge).await,
            Err(WireError::TooLarge(_))
        ));
        let mut garbage = &framed(b"{not json")[..];
        assert!(matches!(
            read_frame(&mut garbage).await,
            Err(WireError::Malformed(_))
        ));
        let mut missing_field = &framed(br#"{"t":"stop","reason":"KeyboardInterrupt"}"#)[..];
        assert!(matches!(
            read_frame(&mut missing_field).await,
            Err(WireError::Malformed(_))
        ));
        let mut unknown = &framed(br#"{"t":"launch_missiles"}"#)[..];
        assert!(matches!(
            read_frame(&mut unknown).await,
            Err(WireError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn encodes_commands_with_a_length_prefix() {
        let mut out = Vec::new();
        let ids = vec!["a".to_string()];
        write_frame(&mut out, &Outbound::Run { ids: &ids })
            .await
            .unwrap();
        assert_eq!(&out[..4], &(out.len() as u32 - 4).to_be_bytes());
        assert_eq!(&out[4..], br#"{"t":"run","ids":["a"]}"#);
    }
}
