//! `runner --format json`: the run's events as JSON lines on stdout while
//! the run goes on, the same objects as the run log (`runner::events` is
//! their schema), with the human report on stderr. Each test reads the
//! stream as a consumer would, line by line as it arrives.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use runner::events::{LostCause, RunEvent, SCHEMA_VERSION, Stamped};
use serde_json::Value;

use crate::live::{Arrived, Live, Stream};
use crate::support::{
    assert_no_leftovers, closing_line, copy_fixture, read_log, require_python, runner_bin, tag,
};

/// `--timeout`: the hung test holds its worker this long, at least.
const TIMEOUT_SECS: f64 = 2.0;
/// The whole run: the hang, runner's dump wait and SIGTERM, start-up, and
/// slack for a busy machine.
const BOUND: Duration = Duration::from_secs(20);
/// How long after an event happened its line may reach the reader.
const LAG_SECS: f64 = 1.0;

/// What each test of the `json_stream` fixture ends as.
const OUTCOMES: &[(&str, &str)] = &[
    ("test_healthy.py::test_passes_1", "passed"),
    ("test_healthy.py::test_passes_2", "passed"),
    ("test_healthy.py::test_passes_3", "passed"),
    ("test_healthy.py::test_fails", "failed"),
    ("test_healthy.py::test_errors_in_setup", "error"),
    ("test_healthy.py::test_skipped", "skipped"),
    ("test_healthy.py::test_xfails", "xfailed"),
    ("test_broken.py::test_hangs", "hung"),
    ("test_broken.py::test_segfaults", "crashed"),
    ("test_broken.py::test_exits", "crashed"),
];

/// The stream of one run, read to its end.
struct Streamed {
    code: Option<i32>,
    /// When runner exited.
    exited: Instant,
    elapsed: Duration,
    lines: Vec<Arrived>,
    values: Vec<Value>,
    events: Vec<Stamped>,
    stderr: String,
    transcript: String,
}

/// Runs `runner --format json ARGS` in `dir`; `react` sees each stdout line
/// as it arrives (to signal runner mid-run).
fn stream(dir: &Path, tag: &str, args: &[&str], react: impl Fn(&Live, &Value)) -> Streamed {
    require_python();
    let mut cmd = Command::new(runner_bin());
    cmd.arg("--format")
        .arg("json")
        .args(args)
        .env("RUNNER_E2E_TAG", tag);
    let mut live = Live::spawn(cmd, dir);
    let mut lines = Vec::new();
    let mut values = Vec::new();
    let mut events = Vec::new();
    // Read until stdout closes: that is runner's exit (nothing else of the
    // run holds it), or a hang the bound catches.
    let deadline = Instant::now() + BOUND;
    while let Some(arrived) = live.next_line(
        Stream::Stdout,
        deadline.saturating_duration_since(Instant::now()),
    ) {
        assert!(
            arrived.complete,
            "a line without its newline: {:?}",
            arrived.line
        );
        let value: Value = serde_json::from_str(&arrived.line).unwrap_or_else(|e| {
            panic!(
                "stdout holds a line that is not JSON ({e}): {:?}\n{}",
                arrived.line,
                live.transcript()
            )
        });
        let event: Stamped = serde_json::from_str(&arrived.line).unwrap_or_else(|e| {
            panic!(
                "a line that is not an event of the schema ({e}): {:?}",
                arrived.line
            )
        });
        react(&live, &value);
        lines.push(arrived);
        values.push(value);
        events.push(event);
    }
    let (status, exited) = live.wait_exit(BOUND);
    let stderr: Vec<String> = live
        .rest(Stream::Stderr)
        .into_iter()
        .map(|a| a.line)
        .collect();
    Streamed {
        code: status.code(),
        exited,
        elapsed: exited - live.started,
        lines,
        values,
        events,
        stderr: stderr.join("\n"),
        transcript: live.transcript(),
    }
}

#[test]
fn events_are_streamed_as_json_lines_while_the_run_goes_on() {
    let project = copy_fixture("json_stream");
    let log = project.dir.join("events.jsonl");
    let tag = tag();
    let timeout = TIMEOUT_SECS.to_string();
    let run = stream(
        &project.dir,
        &tag,
        &[
            "-n",
            "2",
            "--timeout",
            &timeout,
            "--run-log",
            log.to_str().unwrap(),
        ],
        |_, _| {},
    );
    let context = &run.transcript;
    assert_eq!(run.code, Some(1), "{context}");
    assert!(
        run.elapsed < BOUND,
        "the run took {:?}\n{context}",
        run.elapsed
    );

    // Every line has the keys the schema requires, with their types.
    for value in &run.values {
        check_keys(value);
    }

    // run-started first, run-finished last, with the process's exit code.
    let first = &run.events[0].event;
    let RunEvent::RunStarted {
        schema,
        run_id,
        tests,
        workers,
        plan,
        ..
    } = first
    else {
        panic!("the first event is {first:?}\n{context}");
    };
    assert_eq!(*schema, SCHEMA_VERSION);
    assert_eq!(*tests, OUTCOMES.len() as u64);
    assert_eq!(*workers, 2);
    let mut planned: Vec<&str> = plan.iter().flatten().map(String::as_str).collect();
    planned.sort_unstable();
    let mut expected: Vec<&str> = OUTCOMES.iter().map(|(id, _)| *id).collect();
    expected.sort_unstable();
    assert_eq!(planned, expected, "the plan holds every test once");
    let last = &run.events.last().unwrap().event;
    assert!(
        matches!(last, RunEvent::RunFinished { exit_code, .. } if Some(*exit_code) == run.code),
        "the last event is {last:?}, the exit code {:?}",
        run.code
    );
    let run_types = |t: &str| run.values.iter().filter(|v| v["type"] == t).count();
    assert_eq!(run_types("run-started"), 1);
    assert_eq!(run_types("run-finished"), 1);

    // Each test: started, then finished once, with its outcome; a hung or
    // crashed one has its worker's loss before its result.
    for (id, outcome) in OUTCOMES {
        let started = position(
            &run.events,
            |e| matches!(e, RunEvent::TestStarted { id: i, .. } if i == id),
        )
        .unwrap_or_else(|| panic!("no test-started for {id}\n{context}"));
        let finished: Vec<usize> = positions(
            &run.events,
            |e| matches!(e, RunEvent::TestFinished { id: i, .. } if i == id),
        );
        assert_eq!(finished.len(), 1, "one result for {id}\n{context}");
        let finished = finished[0];
        assert!(started < finished, "{id} finished before it started");
        let (
            RunEvent::TestStarted {
                worker: started_on,
                attempt: started_attempt,
                ..
            },
            RunEvent::TestFinished {
                worker,
                attempt,
                outcome: got,
                ..
            },
        ) = (&run.events[started].event, &run.events[finished].event)
        else {
            unreachable!()
        };
        assert_eq!(got.as_str(), *outcome, "{id}\n{context}");
        assert_eq!((started_on, started_attempt), (worker, attempt), "{id}");
        if matches!(*outcome, "hung" | "crashed") {
            let lost = position(
                &run.events,
                |e| matches!(e, RunEvent::WorkerLost { test: Some(t), .. } if t == id),
            )
            .unwrap_or_else(|| panic!("no worker-lost for {id}\n{context}"));
            assert!(lost < finished, "{id}: worker-lost after its result");
            let RunEvent::WorkerLost {
                worker: lost_worker,
                cause,
                ..
            } = &run.events[lost].event
            else {
                unreachable!()
            };
            assert_eq!(lost_worker, worker, "{id}");
            let expected_cause = match id.rsplit("::").next().unwrap() {
                "test_hangs" => {
                    matches!(cause, LostCause::Hung { limit_secs, global: false, .. } if *limit_secs == TIMEOUT_SECS)
                }
                "test_segfaults" => matches!(cause, LostCause::Signal { signal: 11 }),
                "test_exits" => matches!(cause, LostCause::Exited { code: 3 }),
                other => unreachable!("{other}"),
            };
            assert!(expected_cause, "{id}: lost as {cause:?}");
        }
    }

    // Streamed, not written at the end: every line reached the reader
    // within LAG_SECS of its event, and the first result long before
    // runner exited (the hung test alone holds it TIMEOUT_SECS more).
    for (arrived, event) in run.lines.iter().zip(&run.events) {
        let lag = arrived.unix - event.at;
        assert!(
            (-0.01..LAG_SECS).contains(&lag),
            "a line arrived {lag:.3}s after its event: {}",
            arrived.line
        );
    }
    let first_result = run
        .values
        .iter()
        .position(|v| v["type"] == "test-finished")
        .unwrap();
    let ahead = run.exited - run.lines[first_result].at;
    assert!(
        ahead > Duration::from_secs_f64(TIMEOUT_SECS / 2.0),
        "the first result arrived only {ahead:?} before runner exited\n{context}"
    );
    let hung = "test_broken.py::test_hangs";
    let arrival = |kind: &str| {
        let index = run
            .values
            .iter()
            .position(|v| v["type"] == kind && v["id"] == hung)
            .unwrap();
        run.lines[index].at
    };
    let held = arrival("test-finished") - arrival("test-started");
    assert!(
        held >= Duration::from_secs_f64(TIMEOUT_SECS),
        "the hung test's start and end arrived {held:?} apart"
    );

    // The stream is the run log: the same objects in the same order, in
    // --run-log's file and under .runner/runs/.
    let in_state_dir = project
        .dir
        .join(".runner")
        .join("runs")
        .join(format!("{run_id}.jsonl"));
    for path in [&log, &in_state_dir] {
        let (_, logged) = read_log(path);
        assert_eq!(
            type_and_id(&logged),
            type_and_id(&run.values),
            "{}",
            path.display()
        );
        assert_eq!(logged, run.values, "{}", path.display());
    }

    // The human report is on stderr, whole; stdout had nothing but events.
    let Some((counts, _)) = closing_line(&run.stderr) else {
        panic!("no closing line on stderr\n{context}");
    };
    assert_eq!(
        count_map(&counts),
        // pytest's report counts hung and crashed tests as failures.
        count_map("4 failed, 3 passed, 1 skipped, 1 xfailed, 1 error"),
        "{context}"
    );
    for section in ["FAILURES", "ERRORS", "short test summary info"] {
        assert!(
            run.stderr.contains(&format!(" {section} ")),
            "no {section} section on stderr\n{context}"
        );
    }
    for summary in [
        "HUNG test_broken.py::test_hangs - ",
        "CRASHED test_broken.py::test_segfaults - ",
        "CRASHED test_broken.py::test_exits - ",
    ] {
        assert!(
            run.stderr.lines().any(|line| line.starts_with(summary)),
            "no {summary:?} in the short summary\n{context}"
        );
    }
    assert_no_leftovers(&tag);
}

/// Ctrl-C while a test hangs: the stream still ends with `run-finished`
/// (exit code 2) and says why it stopped; every planned test ends in the
/// stream, with a result or as `not-run`; it is the run log, and no process
/// is left.
#[test]
fn an_interrupted_run_closes_its_stream() {
    let project = copy_fixture("json_stream");
    let log = project.dir.join("events.jsonl");
    let tag = tag();
    let signalled = std::cell::Cell::new(false);
    let run = stream(
        &project.dir,
        &tag,
        &[
            "-n",
            "2",
            "--timeout",
            "60",
            "--run-log",
            log.to_str().unwrap(),
        ],
        |live, value| {
            // The consumer sees the hang begin and stops the run.
            if value["type"] == "test-started"
                && value["id"] == "test_broken.py::test_hangs"
                && !signalled.replace(true)
            {
                live.signal(nix::sys::signal::Signal::SIGINT);
            }
        },
    );
    let context = &run.transcript;
    assert!(signalled.get(), "the hung test never started\n{context}");
    assert_eq!(run.code, Some(2), "{context}");
    assert!(run.elapsed < BOUND, "took {:?}\n{context}", run.elapsed);
    for value in &run.values {
        check_keys(value);
    }
    let last = run.values.last().unwrap();
    assert_eq!(last["type"], "run-finished", "{context}");
    assert_eq!(last["exit_code"], 2);
    assert!(
        run.values
            .iter()
            .any(|v| v["type"] == "run-stopping" && v["reason"]["kind"] == "signal"),
        "no run-stopping for the signal\n{context}"
    );
    let RunEvent::RunStarted { plan, .. } = &run.events[0].event else {
        panic!("the first event is not run-started\n{context}");
    };
    for id in plan.iter().flatten() {
        let ends = run
            .values
            .iter()
            .filter(|v| (v["type"] == "test-finished" || v["type"] == "not-run") && v["id"] == **id)
            .count();
        assert_eq!(
            ends, 1,
            "{id} must end once in the stream, with a result or as not-run\n{context}"
        );
    }
    let (_, logged) = read_log(&log);
    assert_eq!(logged, run.values);
    assert!(
        run.stderr.contains("KeyboardInterrupt"),
        "the report on stderr says why\n{context}"
    );
    assert_no_leftovers(&tag);
}

/// What pytest prints itself (here `--collect-only`'s list) goes to stderr
/// too: stdout carries nothing but events, even when no run starts.
#[test]
fn pytests_own_output_stays_off_the_stream() {
    let project = copy_fixture("json_stream");
    let tag = tag();
    let run = stream(
        &project.dir,
        &tag,
        &["--", "--collect-only", "-q"],
        |_, _| {},
    );
    assert_eq!(run.code, Some(0), "{}", run.transcript);
    assert!(run.lines.is_empty(), "{}", run.transcript);
    for (id, _) in OUTCOMES {
        assert!(
            run.stderr.lines().any(|l| l == *id),
            "{id} is not listed on stderr\n{}",
            run.transcript
        );
    }
    assert!(
        run.stderr.contains("10 tests collected"),
        "{}",
        run.transcript
    );
    assert_no_leftovers(&tag);
}

/// The required keys of the main event types, and their JSON types, as
/// documented in `runner::events`.
fn check_keys(value: &Value) {
    use Kind::*;
    let common: &[(&str, Kind)] = &[("at", Number), ("type", Text)];
    let specific: &[(&str, Kind)] = match value["type"].as_str() {
        Some("run-started") => &[
            ("schema", Count),
            ("run_id", Text),
            ("runner", Text),
            ("rootdir", Text),
            ("python", Text),
            ("pytest", Text),
            ("tests", Count),
            ("workers", Count),
            ("deselected", Count),
            ("collected_after_secs", Number),
            ("plan", List),
        ],
        Some("test-started") => &[("id", Text), ("worker", Text), ("attempt", Count)],
        Some("test-finished") => &[
            ("id", Text),
            ("worker", Text),
            ("attempt", Count),
            ("outcome", Text),
            ("duration_secs", Number),
            ("phases", List),
            ("longrepr", Text),
            ("reports", List),
        ],
        Some("worker-lost") => &[
            ("worker", Text),
            ("pid", Integer),
            ("test", TextOrNull),
            ("cause", Object),
        ],
        Some("not-run") => &[("id", Text)],
        Some("run-stopping") => &[("reason", Object)],
        Some("run-finished") => &[("exit_code", Integer), ("duration_secs", Number)],
        _ => &[],
    };
    for (key, kind) in common.iter().chain(specific) {
        let field = &value[key];
        let ok = match kind {
            Number => field.is_number(),
            Integer => field.is_i64(),
            Count => field.is_u64(),
            Text => field.is_string(),
            TextOrNull => field.is_string() || field.is_null(),
            List => field.is_array(),
            Object => field.is_object(),
        };
        assert!(
            ok,
            "{key} of a {} event is not {kind:?}: {value}",
            value["type"]
        );
    }
    match value["type"].as_str() {
        Some("test-finished") => {
            for phase in value["phases"].as_array().unwrap() {
                let pair = phase.as_array().filter(|p| p.len() == 2);
                assert!(
                    pair.is_some_and(|p| p.iter().all(Value::is_string)),
                    "a phase is not [when, category]: {phase}"
                );
            }
            for report in value["reports"].as_array().unwrap() {
                for key in ["when", "outcome", "category"] {
                    assert!(report[key].is_string(), "report without {key}: {report}");
                }
            }
        }
        Some("worker-lost" | "run-stopping") => {
            let inner = if value["type"] == "worker-lost" {
                &value["cause"]
            } else {
                &value["reason"]
            };
            assert!(inner["kind"].is_string(), "no kind: {value}");
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Number,
    Integer,
    Count,
    Text,
    TextOrNull,
    List,
    Object,
}

fn position(events: &[Stamped], wanted: impl Fn(&RunEvent) -> bool) -> Option<usize> {
    events.iter().position(|e| wanted(&e.event))
}

fn positions(events: &[Stamped], wanted: impl Fn(&RunEvent) -> bool) -> Vec<usize> {
    (0..events.len())
        .filter(|&i| wanted(&events[i].event))
        .collect()
}

fn type_and_id(values: &[Value]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or_default().to_owned(),
                v["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `1 failed, 3 passed` as {failed: 1, passed: 3}.
fn count_map(counts: &str) -> HashMap<String, u32> {
    counts
        .split(", ")
        .map(|part| {
            let (n, word) = part.split_once(' ').unwrap();
            (word.to_owned(), n.parse().unwrap())
        })
        .collect()
}
