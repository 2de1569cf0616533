//! The run-log reader (`run_log::parse`) against logs written by runner's
//! own writer (`report::RunLogFile`), then cut anywhere, with a line damaged, or
//! replaced by arbitrary bytes.
//!
//! Properties: every complete line written is read back, equal; a log cut
//! anywhere (a crash mid-write) reads as the lines before the cut, the last
//! incomplete one flagged; a damaged line is an error naming its line
//! number; nothing panics.

use proptest::prelude::*;
use runner::events::{LostCause, RunEvent, Stamped, StopReason, UntrustedCause};
use runner::model::Outcome;
use runner::report::RunLogFile;
use runner::run_log::{LogLine, RunLogError, parse};

use crate::{cases, text};

/// Any f64: JSON cannot hold NaN or infinity, which are read back as NaN.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-0.0),
        2 => (0u32..100_000).prop_map(|ms| ms as f64 / 1000.0),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(vec![
        Outcome::Passed,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::Xfailed,
        Outcome::Xpassed,
        Outcome::Error,
        Outcome::Hung,
        Outcome::Crashed,
    ])
}

fn lost_cause() -> impl Strategy<Value = LostCause> {
    prop_oneof![
        (number(), any::<bool>(), prop::option::of(any::<i32>())).prop_map(
            |(limit_secs, global, signal)| LostCause::Hung {
                limit_secs,
                global,
                signal
            }
        ),
        any::<i32>().prop_map(|signal| LostCause::Signal { signal }),
        any::<i32>().prop_map(|code| LostCause::Exited { code }),
        Just(LostCause::ZygoteDied),
        Just(LostCause::Disappeared),
    ]
}

fn stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        any::<u32>().prop_map(|failures| StopReason::MaxFail { failures }),
        number().prop_map(|secs| StopReason::GlobalTimeout { secs }),
        any::<u32>().prop_map(|restarts| StopReason::RestartLimit { restarts }),
        (text(), text()).prop_map(|(status, last_output)| StopReason::ZygoteDied {
            status,
            last_output
        }),
        (any::<i32>(), any::<bool>(), number()).prop_map(|(pid, stopped, waited_secs)| {
            StopReason::ZygoteStuck {
                pid,
                stopped,
                waited_secs,
            }
        }),
        text().prop_map(|name| StopReason::Signal { name }),
        text().prop_map(|reason| StopReason::Collection { reason }),
    ]
}

/// Events of every kind runner writes.
fn event() -> impl Strategy<Value = RunEvent> {
    let started = (
        (any::<u64>(), any::<u32>(), any::<u32>(), number()),
        (
            text(),
            text(),
            prop::collection::vec(prop::collection::vec(text(), 0..3), 0..3),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |((tests, workers, deselected, secs), (run_id, rootdir, plan, debugger))| {
                RunEvent::RunStarted {
                    schema: 1,
                    run_id,
                    runner: "0.1.0".into(),
                    rootdir,
                    python: "3.11.7".into(),
                    pytest: "9.2.0".into(),
                    tests,
                    workers,
                    deselected,
                    collected_after_secs: secs,
                    plan,
                    debugger,
                }
            },
        );
    let finished = (
        (text(), text(), outcome(), any::<u32>()),
        (
            number(),
            prop::collection::vec((text(), text()), 0..4),
            text(),
        ),
        (any::<u32>(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, worker, outcome, attempt),
                (duration_secs, phases, longrepr),
                (attempts, flaky),
            )| {
                RunEvent::TestFinished {
                    id,
                    worker,
                    attempt,
                    outcome,
                    duration_secs,
                    phases,
                    longrepr,
                    reports: Vec::new(),
                    attempts,
                    flaky,
                }
            },
        );
    let tests = prop_oneof![
        (text(), text(), any::<u32>()).prop_map(|(id, worker, attempt)| RunEvent::TestStarted {
            id,
            worker,
            attempt
        }),
        (text(), text(), number()).prop_map(|(id, worker, after_secs)| RunEvent::TestSlow {
            id,
            worker,
            after_secs
        }),
        finished,
        (
            text(),
            prop::option::of(any::<i32>()),
            prop::option::of(text()),
            lost_cause()
        )
            .prop_map(|(worker, pid, test, cause)| RunEvent::WorkerLost {
                worker,
                pid,
                test,
                cause
            }),
        text().prop_map(|id| RunEvent::NotRun { id }),
        (text(), prop::option::of(text()), text(), any::<bool>()).prop_map(
            |(worker, test, line, partial)| RunEvent::Output {
                worker,
                test,
                line,
                partial
            }
        ),
    ];
    let run = prop_oneof![
        started,
        (text(), text(), prop::option::of(text())).prop_map(|(id, longrepr, message)| {
            RunEvent::CollectionError {
                id,
                longrepr,
                message,
            }
        }),
        (text(), text()).prop_map(|(nodeid, message)| RunEvent::Warning {
            nodeid,
            message,
            replay: None,
        }),
        (text(), text()).prop_map(|(id, reason)| RunEvent::Deselected { id, reason }),
        stop_reason().prop_map(|reason| RunEvent::RunStopping { reason }),
        (text(), text()).prop_map(|(from, error)| RunEvent::Untrusted {
            cause: UntrustedCause::BadMessage { from, error }
        }),
        text().prop_map(|message| RunEvent::Notice { message }),
        (any::<i32>(), number()).prop_map(|(exit_code, duration_secs)| RunEvent::RunFinished {
            exit_code,
            duration_secs,
        }),
    ];
    let processes = prop_oneof![
        (prop::option::of(text()), any::<i32>(), text())
            .prop_map(|(test, pid, command)| RunEvent::LeakedProcess { test, pid, command }),
        (prop::option::of(text()), text(), any::<i32>(), text()).prop_map(
            |(test, origin, pid, command)| RunEvent::LeftoverKilled {
                test,
                origin,
                pid,
                command,
            }
        ),
    ];
    prop_oneof![3 => tests, 2 => run, 1 => processes]
}

fn line() -> impl Strategy<Value = LogLine> {
    (number(), event()).prop_map(|(at, event)| Stamped { at, event })
}

/// The bytes runner's writer produces for these lines.
fn written(lines: &[LogLine]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLogFile::create(dir.path(), "run", None, &mut |w| panic!("{w}"));
    for line in lines {
        log.write(line).unwrap();
    }
    drop(log);
    std::fs::read(dir.path().join("runs/run.jsonl")).unwrap()
}

/// Lines compared as written: NaN equal to NaN, infinities as NaN.
fn same(read: &[LogLine], written: &[LogLine]) -> bool {
    let show = |lines: &[LogLine]| {
        format!("{lines:?}")
            .replace("-inf", "NaN")
            .replace("inf", "NaN")
    };
    show(read) == show(written)
}

/// Where each line ends (the offset just past its newline).
fn line_ends(bytes: &[u8]) -> Vec<usize> {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(at, _)| at + 1)
        .collect()
}

/// How a whole line is damaged; each leaves it never a valid log line.
#[derive(Debug, Clone)]
enum Damage {
    /// The closing brace removed.
    Unclosed,
    /// A byte that is never valid UTF-8, anywhere in the line.
    NotUtf8(usize),
    /// An unknown line type.
    UnknownType,
    /// A field of the wrong type.
    WrongType,
    /// Arbitrary bytes that are not a JSON object.
    Garbage(Vec<u8>),
    /// An empty line.
    Empty,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::Unclosed),
        any::<usize>().prop_map(Damage::NotUtf8),
        Just(Damage::UnknownType),
        Just(Damage::WrongType),
        prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..64)
            .prop_map(Damage::Garbage),
        Just(Damage::Empty),
    ]
}

fn damaged(line: &[u8], damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Unclosed => line[..line.len() - 1].to_vec(),
        Damage::NotUtf8(at) => {
            let mut line = line.to_vec();
            let at = at % line.len();
            line[at] = 0xff;
            line
        }
        Damage::UnknownType => {
            let text = String::from_utf8(line.to_vec()).unwrap();
            let start = text.find(r#""type":""#).unwrap() + 8;
            format!("{}launched-missiles{}", &text[..start], &text[start..]).into_bytes()
        }
        Damage::WrongType => {
            let mut value: serde_json::Value = serde_json::from_slice(line).unwrap();
            let object = value.as_object_mut().unwrap();
            let key = object.keys().find(|k| *k != "type").cloned();
            match key {
                Some(key) => object.insert(key, serde_json::json!({"x": [true]})),
                None => object.insert("type".into(), serde_json::json!(7)),
            };
            serde_json::to_vec(&value).unwrap()
        }
        Damage::Garbage(bytes) => {
            let mut bytes = bytes.clone();
            // Never an object, so never a log line.
            bytes.insert(0, b'!');
            bytes
        }
        Damage::Empty => Vec::new(),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Every line the writer wrote is read back, equal, in order.
    #[test]
    fn every_line_written_is_read_back(lines in prop::collection::vec(line(), 0..8)) {
        let bytes = written(&lines);
        let log = parse(&bytes).unwrap();
        prop_assert!(!log.incomplete_last_line);
        prop_assert!(same(&log.lines, &lines), "read {:?}\nwrote {:?}", log.lines, lines);
    }

    /// A log cut anywhere reads as every line before the cut; a cut inside
    /// a line is flagged, never an error.
    #[test]
    fn a_log_cut_anywhere_keeps_the_lines_before(
        lines in prop::collection::vec(line(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = written(&lines);
        let cut = cut.index(bytes.len() + 1);
        let log = parse(&bytes[..cut]).unwrap();
        let ends = line_ends(&bytes);
        let whole = ends.iter().filter(|end| **end <= cut).count();
        // Cut just before a newline: the line is all there but its newline.
        let all_but_newline = ends.contains(&(cut + 1));
        let expected = whole + usize::from(all_but_newline);
        prop_assert_eq!(log.lines.len(), expected);
        prop_assert!(same(&log.lines, &lines[..expected]));
        let mid_line = !ends.contains(&cut) && cut != 0 && !all_but_newline;
        prop_assert_eq!(log.incomplete_last_line, mid_line);
    }

    /// A damaged line that is not the last one is an error naming it.
    #[test]
    fn a_damaged_line_is_named(
        lines in prop::collection::vec(line(), 2..8),
        which in any::<prop::sample::Index>(),
        damage in damage(),
    ) {
        let bytes = written(&lines);
        let mut starts = vec![0];
        starts.extend(line_ends(&bytes));
        let which = which.index(lines.len() - 1);
        let (start, end) = (starts[which], starts[which + 1] - 1);
        let mut broken = bytes[..start].to_vec();
        broken.extend(damaged(&bytes[start..end], &damage));
        broken.extend(&bytes[end..]);
        match parse(&broken) {
            Err(RunLogError::Corrupt { line, message, .. }) => {
                prop_assert_eq!(line, which + 1, "{}", message);
                prop_assert!(!message.is_empty());
            }
            other => prop_assert!(false, "{damage:?} on line {}: {other:?}", which + 1),
        }
    }

    /// Any bytes: some lines, or an error naming a line that exists.
    #[test]
    fn arbitrary_bytes_are_read_or_refused(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\n'), Just(b'{'), Just(b'"')], 0..512),
    ) {
        match parse(&bytes) {
            Ok(log) => prop_assert!(log.lines.len() <= line_ends(&bytes).len() + 1),
            Err(RunLogError::Corrupt { line, .. }) => {
                prop_assert!(line >= 1 && line <= line_ends(&bytes).len())
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for depth in [128, 100_000] {
        let line = format!(
            r#"{{"type":"not-run","id":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = parse(format!("{line}\n").as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("line 1 "), "{err}");
    }
}

#[test]
fn a_crash_that_leaves_zeros_keeps_the_lines_before() {
    // ext4 may leave a crashed append as zero bytes of the right length.
    let not_run = Stamped {
        at: 1.0,
        event: RunEvent::NotRun { id: "a".into() },
    };
    let mut bytes = written(std::slice::from_ref(&not_run));
    bytes.extend([0u8; 40]);
    let log = parse(&bytes).unwrap();
    assert_eq!(log.lines, [not_run]);
    assert!(log.incomplete_last_line);
}
