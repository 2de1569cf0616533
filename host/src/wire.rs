//! The protocol between the host and the Python side (zygote and workers):
//! frames of a 4-byte big-endian length and a UTF-8 JSON object, decoded
//! into typed messages. A message's first key, `t`, names it; the others
//! are its fields. A malformed, truncated or oversized frame is an error for
//! that peer, never a crash of the host, and decoding a frame costs memory in
//! proportion to the bytes received, whatever its header claims. The Python
//! end is the package `host/python/runner_shim/` (`framing.py`).

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, DeserializeSeed, EnumAccess, IgnoredAny, IntoDeserializer, MapAccess, VariantAccess,
    Visitor,
};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::MAX_SECS;
use crate::model::TestCase;
use crate::xdist::XdistOptions;

/// Frames above this size are refused (the shim enforces the same bound and
/// truncates oversized test output before sending).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { expected: usize, got: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Messages from the Python side. On the wire each is one JSON object,
/// `{"t": "<variant in snake_case>", <fields>...}`; see [`decode`].
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Inbound {
    Hello {
        role: Role,
        pid: i32,
        #[serde(default)]
        worker: Option<String>,
        /// On an output connection: the test whose output it carries (none
        /// for the worker's own, between tests).
        #[serde(default)]
        test: Option<String>,
    },
    /// The zygote finished collection.
    Collected(Box<Collected>),
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
    /// The zygote wrote pytest's summary of a run (`Outbound::RunEnd`).
    Reported,
}

/// A piece of JSON passed through as received: a report in pytest's own
/// serializable form, which the host hands back to the zygote's pytest
/// without reading it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Raw(pub Box<serde_json::value::RawValue>);

impl PartialEq for Raw {
    fn eq(&self, other: &Raw) -> bool {
        self.0.get() == other.0.get()
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Zygote,
    /// A worker's command connection.
    Worker,
    /// A worker's second connection, where faulthandler writes tracebacks.
    Evidence,
    /// A worker's stdout and stderr: its own between tests, and one per
    /// test when pytest's capture lets the test's output through.
    Output,
}

#[derive(Debug, Deserialize, PartialEq)]
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
    #[serde(default, deserialize_with = "timeout_secs")]
    pub timeout: Option<f64>,
    /// Whether pytest's capture lets tests' output through (`-s`).
    #[serde(default)]
    pub output: OutputMode,
    /// The pytest option that may stop a test in a debugger: the run then
    /// has one worker, attached to runner's terminal.
    #[serde(default)]
    pub debugger: Option<Debugger>,
    /// pytest-xdist's options as pytest parsed them (xdist never acts on
    /// them; runner does).
    #[serde(default)]
    pub xdist: XdistOptions,
}

/// The pytest options that may stop a test in pdb.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum Debugger {
    /// A failing test stops in pdb.
    #[serde(rename = "--pdb")]
    Pdb,
    /// Every test stops in pdb at its first line.
    #[serde(rename = "--trace")]
    Trace,
}

impl Debugger {
    pub fn option(self) -> &'static str {
        match self {
            Debugger::Pdb => "--pdb",
            Debugger::Trace => "--trace",
        }
    }
}

/// What reaches a worker's stdout and stderr, by pytest's `--capture`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// `fd` (the default): pytest keeps tests' output in their reports.
    #[default]
    Captured,
    /// `-s`, `--capture=no`, `sys`, `tee-sys`: tests' output gets through
    /// and is shown live, each line with its worker and test.
    Live,
}

/// Why pytest's session stopped, as its terminal reporter shows it.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
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

#[derive(Debug, Deserialize, Clone, PartialEq)]
pub struct CollectError {
    pub id: String,
    pub longrepr: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// A warning pytest recorded (`pytest_warning_recorded`), formatted as
/// pytest's warnings summary shows it.
#[derive(Debug, Deserialize, Clone, PartialEq)]
pub struct WarningRecord {
    /// The test it was raised in; empty during configuration or collection.
    pub nodeid: String,
    pub message: String,
    /// From a worker: the warning as the zygote's pytest rebuilds it, and
    /// when it was raised.
    #[serde(default)]
    pub pytest: Option<Raw>,
    #[serde(default)]
    pub when: Option<String>,
}

/// One pytest `TestReport` (setup, call or teardown), as the worker saw it.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
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
    /// The report as pytest's terminal shows it, blank first line included.
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
    /// The whole report in pytest's serializable form, replayed through the
    /// zygote's hooks; none for runner's own (HUNG, CRASHED).
    #[serde(default, skip_serializing)]
    pub pytest: Option<Raw>,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
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
    /// To the zygote, after the session's last run: its end (`RunEnd`'s
    /// fields), then pytest's end of session; `silent` when every run was
    /// reported already.
    Shutdown {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        drop_pending: bool,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        end: Option<RunEnd<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        silent: bool,
        /// To the zygote: kill the workers still alive before waiting.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        kill_workers: bool,
    },
    /// To the zygote: a run starts, of this many tests on this many workers.
    RunStart { tests: usize, workers: u32 },
    /// To the zygote: a finished test, for its pytest to replay.
    Test {
        id: &'a str,
        reports: Vec<&'a Raw>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lost: Option<Lost<'a>>,
    },
    /// To the zygote: tests the scheduler chose not to run (pytest counts
    /// them as deselected).
    Deselected { ids: &'a [&'a str] },
    /// To the zygote: a warning a test raised in its worker.
    Warning {
        nodeid: &'a str,
        when: &'a str,
        warning: &'a Raw,
    },
    /// To the zygote: a run that is not the session's last is over; it
    /// writes pytest's summary and answers `Reported`.
    RunEnd(RunEnd<'a>),
}

/// How a run ended, for pytest's summary in the zygote.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RunEnd<'a> {
    /// runner's notes on the run (tests that did not run, leaky tests).
    pub notes: &'a [String],
    /// Why runner stopped the run early, when pytest did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<&'a str>,
    /// A test stopped pytest's session: the zygote's stops the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_stop: Option<&'a SessionStop>,
    /// The run's results can't be trusted: its closing line is never green.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
}

/// runner's report of a test whose worker hung or crashed.
#[derive(Debug, Serialize)]
pub struct Lost<'a> {
    /// "hung" or "crashed".
    pub outcome: &'a str,
    pub longrepr: &'a str,
    pub message: &'a str,
    pub duration: f64,
    /// What the test printed before (with `-s`), as pytest's report sections.
    pub sections: &'a [(String, String)],
}

/// A timeout from pytest's side (the `timeout` marker, the `runner_timeout`
/// ini option) that could never fire is no timeout: zero or negative (as
/// pytest-timeout reads it), or longer than runner measures (`MAX_SECS`).
pub(crate) fn timeout_secs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<f64>, D::Error> {
    let secs = Option::<f64>::deserialize(deserializer)?;
    Ok(secs.filter(|secs| *secs > 0.0 && *secs <= MAX_SECS))
}

/// The first bytes of a frame's body read before any more is allocated.
const FIRST_READ: usize = 64 * 1024;

/// The next message; `None` when the peer closed the connection between
/// two frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Inbound>, WireError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match reader.read(&mut header[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(WireError::Truncated { expected: 4, got }),
            n => got += n,
        }
    }
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_FRAME {
        return Err(WireError::TooLarge(size));
    }
    // The buffer grows with what arrives, not with what the header claims.
    let mut body = Vec::with_capacity(size.min(FIRST_READ));
    (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < size {
        return Err(WireError::Truncated {
            expected: size,
            got: body.len(),
        });
    }
    decode(&body).map(Some)
}

/// Decodes one frame's body. The fields are read straight into the message
/// named by the first key, `t`: serde's internally tagged enums would first
/// copy the whole message into a tree of its own, which took up to 36 times
/// the frame's size in memory.
pub fn decode(body: &[u8]) -> Result<Inbound, WireError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let message = (&mut json).deserialize_map(MessageVisitor)?;
    json.end()?;
    Ok(message)
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Inbound;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message: an object whose first key is `t`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Inbound, A::Error> {
        if map.next_key::<String>()?.as_deref() != Some("t") {
            return Err(de::Error::custom(
                "the message type `t` must be the first key",
            ));
        }
        let tag: String = map.next_value()?;
        Inbound::deserialize(Tagged { tag, map })
    }
}

/// The rest of a message's object, presented to `Inbound`'s derived
/// (externally tagged) `Deserialize` as the variant named `tag`.
struct Tagged<A> {
    tag: String,
    map: A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Tagged<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for Tagged<A> {
    type Error = A::Error;
    type Variant = Fields<A>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Fields<A>), A::Error> {
        let variant = seed.deserialize(self.tag.into_deserializer())?;
        Ok((variant, Fields(self.map)))
    }
}

/// A message's fields: the keys after `t`.
struct Fields<A>(A);

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        // Keys a message without fields does not know are ignored, as a
        // struct ignores them.
        while self.0.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        seed.deserialize(MapAccessDeserializer::new(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Outbound<'_>,
) -> Result<(), WireError> {
    writer.write_all(&encode_frame(message)?).await?;
    Ok(())
}

/// One message as a frame: its length, then its JSON.
pub fn encode_frame(message: &Outbound<'_>) -> Result<Vec<u8>, WireError> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message)?;
    let length = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    Ok(frame)
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
    async fn a_frame_cut_short_is_an_error_not_an_end() {
        // Inside the header, and inside a body whose header claims 64 MiB.
        let mut cut_header = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut cut_header).await,
            Err(WireError::Truncated {
                expected: 4,
                got: 2
            })
        ));
        let mut frame = (MAX_FRAME as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(b"{\"t\":");
        assert!(matches!(
            read_frame(&mut &frame[..]).await,
            Err(WireError::Truncated { got: 5, .. })
        ));
    }

    #[tokio::test]
    async fn the_type_comes_first_and_unknown_keys_are_ignored() {
        let mut input = &framed(br#"{"t":"ready","extra":[1,{"a":null}]}"#)[..];
        assert_eq!(read_frame(&mut input).await.unwrap(), Some(Inbound::Ready));
        let mut late = &framed(br#"{"id":"a","t":"started"}"#)[..];
        let error = read_frame(&mut late).await.unwrap_err().to_string();
        assert!(error.contains("`t` must be the first key"), "{error}");
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
