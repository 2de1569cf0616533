//! The wire decoder (`wire::read_frame`) against valid messages of every
//! kind written as the Python shim writes them, streams cut anywhere or
//! delivered a few bytes at a time, mutated and hostile frames.
//!
//! Properties: it never panics; a valid frame decodes to exactly what was
//! sent; a stream cut short is a clean end only between frames; and it never
//! allocates more than a fixed multiple of the bytes it received (whatever a
//! frame's header claims) plus one first read.

use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use runner::config::MAX_SECS;
use runner::model::TestCase;
use runner::wire::{
    CollectError, Collected, Debugger, Inbound, MAX_FRAME, OutputMode, PhaseReport, Role,
    SessionStop, SkipLocation, WarningRecord, WireError, read_frame,
};
use runner::workers::{CpuCounts, Workers};
use runner::xdist::XdistOptions;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, ReadBuf};

use crate::alloc::peak_during;
use crate::{cases, text};

/// What decoding may cost: this many bytes per byte received (a JSON `""`
/// of 3 bytes becomes a 24-byte `String` in a `Vec` that may have doubled,
/// plus the frame's own buffer), plus the decoder's first read.
const BYTES_PER_BYTE: usize = 24;
const FIXED_COST: usize = 64 * 1024 + 4096;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().build().unwrap();
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

/// A reader that hands out at most `step` bytes per read, as a socket may.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Reads frames until the end or an error, checking the memory bound.
fn read_all(bytes: &[u8], step: usize) -> (Vec<Inbound>, Option<WireError>) {
    let mut reader = Chunked { data: bytes, step };
    let mut messages = Vec::new();
    loop {
        let (result, peak) = peak_during(|| block_on(read_frame(&mut reader)));
        let bound = BYTES_PER_BYTE * bytes.len() + FIXED_COST;
        assert!(
            peak <= bound,
            "decoding {} bytes allocated {peak} bytes at once (bound {bound})",
            bytes.len()
        );
        match result {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return (messages, None),
            Err(error) => return (messages, Some(error)),
        }
    }
}

pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

// ---- valid messages, and how the shim writes them ----

/// Finite numbers of every magnitude, as Python's floats can be.
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("JSON has no NaN or infinity", |x| x.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        (0u32..100_000).prop_map(|ms| ms as f64 / 1000.0),
    ]
}

/// A timeout as pytest's side may send it, in range or not.
fn timeout() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        finite().prop_map(Some),
        Just(Some(MAX_SECS)),
        Just(Some(MAX_SECS * 1.0000001)),
        (1u32..3600).prop_map(|s| Some(s as f64)),
    ]
}

fn test_case() -> impl Strategy<Value = TestCase> {
    (
        text(),
        text(),
        any::<Option<u32>>(),
        prop::collection::vec(text(), 0..4),
        prop::option::of(text()),
        timeout(),
    )
        .prop_map(|(id, file, line, markers, group, timeout)| TestCase {
            id,
            file,
            line,
            markers,
            group,
            timeout,
        })
}

fn warning() -> impl Strategy<Value = WarningRecord> {
    (text(), text()).prop_map(|(nodeid, message)| WarningRecord {
        nodeid,
        message,
        pytest: None,
        when: None,
    })
}

fn phase_report() -> impl Strategy<Value = PhaseReport> {
    let skip = prop::option::of(
        (text(), any::<Option<u32>>(), text()).prop_map(|(path, line, reason)| SkipLocation {
            path,
            line,
            reason,
        }),
    );
    (
        (text(), text(), text(), text(), finite(), text()),
        (
            prop::collection::vec((text(), text()), 0..3),
            text(),
            prop::option::of(text()),
            prop::option::of(text()),
            skip,
        ),
    )
        .prop_map(
            |(
                (when, outcome, category, word, duration, longrepr),
                (sections, head_line, message, wasxfail, skip),
            )| PhaseReport {
                when,
                outcome,
                category,
                word,
                duration,
                longrepr,
                sections,
                head_line,
                message,
                wasxfail,
                skip,
                pytest: None,
            },
        )
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Zygote),
        Just(Role::Worker),
        Just(Role::Evidence),
        Just(Role::Output)
    ]
}

fn collected() -> impl Strategy<Value = Collected> {
    (
        (text(), text(), text()),
        prop::collection::vec(test_case(), 0..5),
        prop::collection::vec(
            (text(), text(), prop::option::of(text())).prop_map(|(id, longrepr, message)| {
                CollectError {
                    id,
                    longrepr,
                    message,
                }
            }),
            0..3,
        ),
        prop::collection::vec(warning(), 0..3),
        (
            any::<u32>(),
            prop::option::of(text()),
            any::<u32>(),
            timeout(),
            prop_oneof![Just(OutputMode::Captured), Just(OutputMode::Live)],
            prop::option::of(prop_oneof![Just(Debugger::Pdb), Just(Debugger::Trace)]),
            xdist_options(),
        ),
    )
        .prop_map(
            |((rootdir, python, pytest), tests, errors, warnings, rest)| {
                let (deselected, interrupted, maxfail, timeout, output, debugger, xdist) = rest;
                Collected {
                    rootdir,
                    python,
                    pytest,
                    tests,
                    errors,
                    warnings,
                    deselected,
                    interrupted,
                    maxfail,
                    timeout,
                    output,
                    debugger,
                    xdist,
                }
            },
        )
}

fn workers() -> impl Strategy<Value = Workers> {
    prop_oneof![
        any::<u32>().prop_map(Workers::Count),
        Just(Workers::Auto),
        Just(Workers::Logical),
    ]
}

fn xdist_options() -> impl Strategy<Value = XdistOptions> {
    (
        prop::option::of(workers()),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
        prop::option::of(text()),
        prop::collection::vec(text(), 0..3),
        any::<bool>(),
        any::<(Option<u32>, Option<u32>)>(),
        prop::collection::vec(text(), 0..2),
    )
        .prop_map(
            |(numprocesses, maxprocesses, maxworkerrestart, dist, tx, looponfail, cpus, notes)| {
                XdistOptions {
                    numprocesses,
                    maxprocesses,
                    maxworkerrestart,
                    dist,
                    tx,
                    looponfail,
                    cpus: CpuCounts {
                        auto: cpus.0,
                        logical: cpus.1,
                    },
                    notes,
                }
            },
        )
}

/// Every kind of message, with the timeouts as the host keeps them: one
/// that could never fire is none.
fn message() -> impl Strategy<Value = Inbound> {
    prop_oneof![
        (
            role(),
            any::<i32>(),
            prop::option::of(text()),
            prop::option::of(text())
        )
            .prop_map(|(role, pid, worker, test)| Inbound::Hello {
                role,
                pid,
                worker,
                test
            }),
        collected().prop_map(|c| Inbound::Collected(Box::new(c))),
        (text(), any::<i32>()).prop_map(|(worker, pid)| Inbound::Forked { worker, pid }),
        (
            text(),
            any::<i32>(),
            any::<Option<i32>>(),
            any::<Option<i32>>()
        )
            .prop_map(|(worker, pid, code, signal)| Inbound::WorkerExited {
                worker,
                pid,
                code,
                signal,
            }),
        Just(()).prop_map(|_| Inbound::Ready),
        Just(()).prop_map(|_| Inbound::Reported),
        text().prop_map(|id| Inbound::Started { id }),
        (
            text(),
            prop::collection::vec(phase_report(), 0..4),
            prop::collection::vec(warning(), 0..3)
        )
            .prop_map(|(id, reports, warnings)| Inbound::Result {
                id,
                reports,
                warnings
            }),
        (prop::option::of(text()), text(), text(), any::<i32>()).prop_map(
            |(id, reason, detail, exit_code)| Inbound::Stop(SessionStop {
                id,
                reason,
                detail,
                exit_code,
            })
        ),
    ]
}

/// The message as the shim writes it: `t` first, then the fields in any
/// order; fields at their default left out or not (`omit`), and keys the
/// host does not know added (`extra`).
fn to_wire(message: &Inbound, omit: bool, extra: &[(String, Value)]) -> Vec<u8> {
    let (tag, mut fields) = match message {
        Inbound::Hello {
            role,
            pid,
            worker,
            test,
        } => (
            "hello",
            json!({
                "role": format!("{role:?}").to_lowercase(),
                "pid": pid,
                "worker": worker,
                "test": test,
            }),
        ),
        Inbound::Collected(c) => ("collected", collected_json(c)),
        Inbound::Forked { worker, pid } => ("forked", json!({"worker": worker, "pid": pid})),
        Inbound::WorkerExited {
            worker,
            pid,
            code,
            signal,
        } => (
            "worker_exited",
            json!({"worker": worker, "pid": pid, "code": code, "signal": signal}),
        ),
        Inbound::Stop(stop) => (
            "stop",
            json!({
                "id": stop.id,
                "reason": stop.reason,
                "detail": stop.detail,
                "exit_code": stop.exit_code,
            }),
        ),
        Inbound::Ready => ("ready", json!({})),
        Inbound::Reported => ("reported", json!({})),
        Inbound::Started { id } => ("started", json!({ "id": id })),
        Inbound::Result {
            id,
            reports,
            warnings,
        } => (
            "result",
            json!({
                "id": id,
                "reports": reports,
                "warnings": warnings.iter().map(warning_json).collect::<Vec<_>>(),
            }),
        ),
    };
    if omit {
        strip_defaults(tag, &mut fields);
    }
    let fields = fields.as_object_mut().unwrap();
    for (key, value) in extra {
        if !fields.contains_key(key) && key != "t" {
            fields.insert(key.clone(), value.clone());
        }
    }
    let rest = serde_json::to_string(&fields).unwrap();
    let body = if fields.is_empty() {
        format!(r#"{{"t":"{tag}"}}"#)
    } else {
        format!(r#"{{"t":"{tag}",{}"#, &rest[1..])
    };
    body.into_bytes()
}

fn collected_json(c: &Collected) -> Value {
    json!({
    "rootdir": c.rootdir, "python": c.python, "pytest": c.pytest,
    "tests": c.tests, "errors": c.errors.iter().map(|e| json!({
        "id": e.id, "longrepr": e.longrepr, "message": e.message,
    })).collect::<Vec<_>>(),
    "warnings": c.warnings.iter().map(warning_json).collect::<Vec<_>>(),
    "deselected": c.deselected, "interrupted": c.interrupted,
    "maxfail": c.maxfail, "timeout": c.timeout,
    "output": match c.output { OutputMode::Captured => "captured", OutputMode::Live => "live" },
    "debugger": c.debugger.map(Debugger::option),
    "xdist": xdist_json(&c.xdist),
        })
}

/// As the shim writes it: `-n` as a number or a word, every field present
/// (None as null).
fn xdist_json(x: &XdistOptions) -> Value {
    let numprocesses = x.numprocesses.map(|w| match w {
        Workers::Count(n) => json!(n),
        word => json!(word.to_string()),
    });
    json!({
        "numprocesses": numprocesses, "maxprocesses": x.maxprocesses,
        "maxworkerrestart": x.maxworkerrestart, "dist": x.dist, "tx": x.tx,
        "looponfail": x.looponfail,
        "cpus": {"auto": x.cpus.auto, "logical": x.cpus.logical}, "notes": x.notes,
    })
}

fn warning_json(w: &WarningRecord) -> Value {
    json!({"nodeid": w.nodeid, "message": w.message})
}

/// Drops the fields the host lets the shim leave out, where they hold
/// their default.
fn strip_defaults(tag: &str, fields: &mut Value) {
    let top: &[&str] = match tag {
        "hello" => &["worker", "test"],
        "collected" => &[
            "warnings",
            "maxfail",
            "timeout",
            "interrupted",
            "output",
            "debugger",
        ],
        "worker_exited" => &["code", "signal"],
        "result" => &["warnings"],
        "stop" => &["id", "detail"],
        _ => &[],
    };
    strip(fields, top);
    let nested: &[(&str, &[&str])] = &[
        ("tests", &["line", "group", "timeout"]),
        ("errors", &["message"]),
        (
            "reports",
            &[
                "word",
                "longrepr",
                "sections",
                "head_line",
                "message",
                "wasxfail",
                "skip",
            ],
        ),
    ];
    for (list, keys) in nested {
        if let Some(Value::Array(items)) = fields.get_mut(*list) {
            items.iter_mut().for_each(|item| strip(item, keys));
        }
    }
    if let Some(xdist) = fields.get_mut("xdist") {
        let keys = [
            "numprocesses",
            "maxprocesses",
            "maxworkerrestart",
            "dist",
            "tx",
            "notes",
        ];
        strip(xdist, &keys);
    }
}

/// Fields that are an `Option` in the host: only `null` is their default.
const OPTIONS: &[&str] = &[
    "worker",
    "test",
    "debugger",
    "numprocesses",
    "maxprocesses",
    "maxworkerrestart",
    "dist",
    "id",
    "timeout",
    "interrupted",
    "code",
    "signal",
    "line",
    "group",
    "message",
    "wasxfail",
    "skip",
];

fn strip(object: &mut Value, keys: &[&str]) {
    if let Value::Object(map) = object {
        map.retain(|key, value| {
            let default = match value {
                Value::Null => true,
                _ if OPTIONS.contains(&key.as_str()) => false,
                _ => *value == json!("") || *value == json!([]) || *value == json!(0),
            };
            !(default && keys.contains(&key.as_str()))
        });
    }
}

/// The host's view of a message sent with timeouts out of range.
fn as_decoded(mut message: Inbound) -> Inbound {
    let keep = |t: Option<f64>| t.filter(|t| *t > 0.0 && *t <= MAX_SECS);
    if let Inbound::Collected(c) = &mut message {
        c.timeout = keep(c.timeout);
        for test in &mut c.tests {
            test.timeout = keep(test.timeout);
        }
    }
    message
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        finite().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn extra_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec((text(), json_value()), 0..3)
}

/// How a valid frame is damaged.
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite the byte at this position (modulo the length).
    Flip(usize, u8),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Remove a range.
    Remove(usize, usize),
    /// Replace the length header.
    Header(u32),
    /// Put a byte that is never valid UTF-8 into the body.
    NotUtf8(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Flip(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Damage::Remove(at, n)),
        prop_oneof![
            any::<u32>(),
            Just(u32::MAX),
            Just(MAX_FRAME as u32),
            Just(MAX_FRAME as u32 + 1),
            0u32..64,
        ]
        .prop_map(Damage::Header),
        any::<usize>().prop_map(Damage::NotUtf8),
    ]
}

fn apply(frame: &mut Vec<u8>, damage: &Damage) {
    let len = frame.len().max(1);
    match damage {
        Damage::Flip(at, byte) => {
            let at = at % len;
            if at < frame.len() {
                frame[at] = *byte;
            }
        }
        Damage::Insert(at, bytes) => {
            let at = at % (frame.len() + 1);
            frame.splice(at..at, bytes.iter().copied());
        }
        Damage::Remove(at, n) => {
            let at = at % len;
            let end = (at + n).min(frame.len());
            frame.drain(at.min(end)..end);
        }
        Damage::Header(size) => {
            if frame.len() >= 4 {
                frame[..4].copy_from_slice(&size.to_be_bytes());
            }
        }
        Damage::NotUtf8(at) => {
            if frame.len() > 4 {
                let at = 4 + at % (frame.len() - 4);
                frame[at] = 0xff;
            }
        }
    }
}

/// JSON nested `depth` deep where a message's fields are.
fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    let mut body = String::from(r#"{"t":"result","id":"x","reports":"#);
    body.push_str(&open.repeat(depth));
    body.push_str(&close.repeat(depth));
    body.push('}');
    framed(body.as_bytes())
}

proptest! {
    #![proptest_config(cases(256))]

    /// A stream of valid frames, delivered in pieces of any size, decodes to
    /// exactly the messages sent, then ends cleanly.
    #[test]
    fn valid_frames_round_trip(
        messages in prop::collection::vec((message(), any::<bool>(), extra_fields()), 1..4),
        step in prop_oneof![Just(usize::MAX), 1usize..9],
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (message, omit, extra) in messages {
            stream.extend(framed(&to_wire(&message, omit, &extra)));
            expected.push(as_decoded(message));
        }
        let (decoded, error) = read_all(&stream, step);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(decoded, expected);
    }

    /// A stream cut anywhere yields every frame before the cut, then a clean
    /// end if the cut is between frames and a truncation error otherwise.
    #[test]
    fn a_cut_stream_keeps_whole_frames(
        messages in prop::collection::vec(message(), 1..4),
        cut in any::<prop::sample::Index>(),
        step in prop_oneof![Just(usize::MAX), 1usize..5],
    ) {
        let frames: Vec<Vec<u8>> =
            messages.iter().map(|m| framed(&to_wire(m, false, &[]))).collect();
        let stream = frames.concat();
        let cut = cut.index(stream.len() + 1);
        let (decoded, error) = read_all(&stream[..cut], step);
        let mut end = 0;
        let whole = frames.iter().take_while(|f| { end += f.len(); end <= cut }).count();
        prop_assert_eq!(decoded.len(), whole);
        let at_boundary = frames.iter().scan(0, |at, f| { *at += f.len(); Some(*at) })
            .chain([0])
            .any(|at| at == cut);
        if at_boundary {
            prop_assert!(error.is_none(), "{error:?}");
        } else {
            prop_assert!(matches!(error, Some(WireError::Truncated { .. })), "{error:?}");
        }
    }

    /// A damaged frame is an error or some message, never a panic, and
    /// never costs more memory than the bound.
    #[test]
    fn damaged_frames_are_errors_not_panics(
        message in message(),
        damages in prop::collection::vec(damage(), 1..4),
        step in prop_oneof![Just(usize::MAX), 1usize..5],
    ) {
        let mut frame = framed(&to_wire(&message, false, &[]));
        for damage in &damages {
            apply(&mut frame, damage);
        }
        read_all(&frame, step);
    }

    /// Any bytes at all.
    #[test]
    fn arbitrary_bytes_are_errors_not_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        read_all(&bytes, usize::MAX);
        // The same garbage with an honest header reaches the JSON parser.
        read_all(&framed(&body), usize::MAX);
    }

    /// Any JSON object with a message's tag: wrong types, missing fields.
    #[test]
    fn any_json_with_a_known_tag_is_decoded_or_refused(
        tag in prop_oneof![
            Just("hello"), Just("collected"), Just("forked"), Just("worker_exited"),
            Just("ready"), Just("started"), Just("result"), Just("t"), Just(""),
        ],
        fields in extra_fields(),
    ) {
        let message = to_wire(&Inbound::Ready, false, &fields);
        let body = String::from_utf8(message).unwrap().replacen("ready", tag, 1);
        read_all(&framed(body.as_bytes()), usize::MAX);
    }
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for depth in [127, 128, 129, 10_000, 1_000_000] {
        for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
            let frame = nested(depth, open, close);
            let (decoded, error) = read_all(&frame, usize::MAX);
            assert!(decoded.is_empty());
            assert!(
                matches!(error, Some(WireError::Malformed(_))),
                "{depth}: {error:?}"
            );
        }
    }
}

#[test]
fn a_header_that_lies_costs_only_what_arrives() {
    // Each claims the largest frame allowed and sends a few bytes.
    for sent in [0, 1, 100, 70_000] {
        let mut frame = (MAX_FRAME as u32).to_be_bytes().to_vec();
        frame.extend(std::iter::repeat_n(b' ', sent));
        let (_, error) = read_all(&frame, 4096);
        assert!(
            matches!(error, Some(WireError::Truncated { got, .. }) if got == sent),
            "{error:?}"
        );
    }
    let (_, error) = read_all(&(MAX_FRAME as u32 + 1).to_be_bytes(), usize::MAX);
    assert!(matches!(error, Some(WireError::TooLarge(_))), "{error:?}");
}

#[test]
fn the_message_type_must_come_first() {
    let (_, error) = read_all(&framed(br#"{"id":"a","t":"started"}"#), usize::MAX);
    let error = error.expect("refused").to_string();
    assert!(error.contains("`t` must be the first key"), "{error}");
    let (decoded, error) = read_all(&framed(br#"{"t":"started","id":"a"}"#), usize::MAX);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(decoded, [Inbound::Started { id: "a".into() }]);
}

/// The messages that cost most memory per byte: many tiny strings.
#[test]
fn the_memory_bound_holds_for_the_densest_messages() {
    let n = 100_000;
    for body in [
        format!(
            r#"{{"t":"collected","rootdir":"","python":"","pytest":"","errors":[],"deselected":0,"interrupted":null,"tests":[{{"id":"a","file":"f","markers":[{}""]}}]}}"#,
            r#""","#.repeat(n)
        ),
        format!(
            r#"{{"t":"result","id":"x","reports":[{{"when":"call","outcome":"passed","category":"passed","duration":0.1,"sections":[{}["",""]]}}]}}"#,
            r#"["",""],"#.repeat(n)
        ),
        format!(
            r#"{{"t":"collected","rootdir":"","python":"","pytest":"","errors":[],"deselected":0,"interrupted":null,"tests":[{}{{"id":"","file":"","markers":[]}}]}}"#,
            r#"{"id":"","file":"","markers":[]},"#.repeat(n)
        ),
        format!(
            r#"{{"t":"result","id":"x","reports":[],"warnings":[{}{{}}]}}"#,
            "{},".repeat(n)
        ),
    ] {
        read_all(&framed(body.as_bytes()), usize::MAX);
    }
}
