//! `-s` and pytest's other capture modes: what tests print is shown on
//! runner's stderr as it is printed, each line whole and prefixed with its
//! worker and test, however the bytes were written and whatever other
//! workers print meanwhile; a test that crashes or hangs keeps its last
//! output in its section of the report. Without `-s` nothing is shown
//! live. A `breakpoint()` in a worker that has no terminal fails its test
//! with a message that says how to debug it (tests/fixtures/live_output).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::live::{Arrived, Live, Stream};
use crate::support::{
    assert_no_leftovers, copy_fixture, read_log, require_python, runner_bin, runner_tagged, tag,
};

/// A bound on each run's wall time, generous for a loaded machine (the
/// chatty run takes about 4 s idle).
const WALL_LIMIT: Duration = Duration::from_secs(90);

/// What the fixture's chatty tests print (see test_chatty.py).
const LINES: usize = 200;
const LONG_SIZE: usize = 6000;

/// The line `test_chatty[name]` prints `i`-th, as the fixture writes it.
fn expected_chatty_line(name: &str, i: usize) -> String {
    let head = format!("{name} {i:03}");
    if i == 100 {
        format!("{head} child")
    } else if i % 40 == 7 {
        format!("{head} long {}|end", "x".repeat(LONG_SIZE))
    } else if i % 25 == 3 {
        format!("{head} pieces one two three")
    } else if i % 10 == 5 {
        format!("{head} stderr")
    } else {
        format!("{head} short")
    }
}

/// A line of live output as runner shows it: `[gw0] test | text`, or
/// `[gw0] | text` for a worker's own output.
#[derive(Debug)]
struct Shown {
    worker: String,
    test: Option<String>,
    text: String,
    at: Instant,
}

fn parse_shown(arrived: &Arrived) -> Option<Shown> {
    let rest = arrived.line.strip_prefix('[')?;
    let (worker, rest) = rest.split_once("] ")?;
    if !worker.starts_with("gw") {
        return None;
    }
    let (test, text) = match rest.strip_prefix('|') {
        Some(text) => (None, text),
        None => {
            let (test, text) = rest.split_once(" |")?;
            (Some(test.to_owned()), text)
        }
    };
    Some(Shown {
        worker: worker.to_owned(),
        test,
        text: text.strip_prefix(' ').unwrap_or(text).to_owned(),
        at: arrived.at,
    })
}

#[test]
fn live_output_is_whole_attributed_and_shown_as_it_is_printed() {
    require_python();
    let project = copy_fixture("live_output");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let mut cmd = Command::new(runner_bin());
    cmd.args(["-n", "2", "--run-log"])
        .arg(&log)
        .args(["--", "-s", "test_chatty.py", "test_broken.py"])
        .env("RUNNER_E2E_TAG", &tag);
    let mut live = Live::spawn(cmd, &project.dir);
    let (status, exited_at) = live.wait_exit(WALL_LIMIT);
    let stderr = live.rest(Stream::Stderr);
    let stdout: Vec<String> = live
        .rest(Stream::Stdout)
        .into_iter()
        .map(|a| a.line)
        .collect();
    let stdout = stdout.join("\n");
    let transcript = live.transcript();
    assert_eq!(status.code(), Some(1), "{transcript}");
    assert_no_leftovers(&tag);

    // No line holds two lines' bytes: a prefix only ever starts a line.
    for arrived in &stderr {
        assert!(
            !arrived.line.get(1..).unwrap_or("").contains("[gw"),
            "two lines in one: {:?}\n{transcript}",
            arrived.line
        );
        assert!(arrived.complete, "{:?}", arrived.line);
    }
    let shown: Vec<Shown> = stderr.iter().filter_map(parse_shown).collect();

    // Each chatty test's lines: every one whole, in order, from one worker.
    let mut by_test: BTreeMap<String, Vec<&Shown>> = BTreeMap::new();
    for line in &shown {
        if let Some(test) = &line.test {
            by_test.entry(test.clone()).or_default().push(line);
        }
    }
    let mut workers_of_chatty = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let id = format!("test_chatty.py::test_chatty[{name}]");
        let lines = by_test
            .get(&id)
            .unwrap_or_else(|| panic!("no live output of {id}\n{transcript}"));
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let expected: Vec<String> = (0..LINES).map(|i| expected_chatty_line(name, i)).collect();
        assert_eq!(texts.len(), LINES, "{id}: {} lines", texts.len());
        for (i, (got, want)) in texts.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{id}, line {i}");
        }
        let worker = &lines[0].worker;
        assert!(
            lines.iter().all(|l| &l.worker == worker),
            "{id} shown from several workers"
        );
        workers_of_chatty.push(worker.clone());
        // Shown while the test printed, not at its end: its lines arrive
        // over the second or so it takes.
        let spread = lines.last().unwrap().at - lines[0].at;
        assert!(spread > Duration::from_millis(500), "{id}: {spread:?}");
    }
    workers_of_chatty.sort();
    workers_of_chatty.dedup();
    assert_eq!(workers_of_chatty.len(), 2, "{workers_of_chatty:?}");
    // The two workers printed at the same time: their lines alternate.
    let chatty: Vec<&Shown> = shown
        .iter()
        .filter(|l| l.test.as_deref().is_some_and(|t| t.contains("chatty")))
        .collect();
    let switches = chatty
        .windows(2)
        .filter(|pair| pair[0].worker != pair[1].worker)
        .count();
    assert!(switches >= 20, "{switches} switches between workers");
    // And the first of them came long before the run ended.
    let first = chatty[0].at;
    assert!(
        exited_at - first > Duration::from_secs(1),
        "the first line came {:?} before the end",
        exited_at - first
    );

    // The crashed and the hung test: shown live, and kept in their section.
    let crashed = "test_broken.py::test_prints_then_crashes";
    let crash_live: Vec<&str> = by_test[crashed].iter().map(|l| l.text.as_str()).collect();
    let mut crash_expected: Vec<String> = (0..30).map(|i| format!("crash-line {i:02}")).collect();
    crash_expected.push("last words, no newline".into());
    assert_eq!(crash_live, crash_expected);
    let hung = "test_broken.py::test_prints_then_hangs";
    let hang_live: Vec<&str> = by_test[hung].iter().map(|l| l.text.as_str()).collect();
    let hang_expected: Vec<String> = (0..10).map(|i| format!("hang-line {i:02}")).collect();
    assert_eq!(hang_live, hang_expected);

    let section = |title: &str| -> String {
        let start = stdout
            .find(title)
            .unwrap_or_else(|| panic!("no {title:?} section\n{stdout}"));
        stdout[start..]
            .lines()
            .skip(1)
            .take(32)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let crash_section = section("Output before it crashed");
    for line in &crash_expected {
        assert!(crash_section.contains(line.as_str()), "{crash_section}");
    }
    let hang_section = section("Output before it was stopped");
    for line in &hang_expected {
        assert!(hang_section.contains(line.as_str()), "{hang_section}");
    }

    // Every test has its result, in the run log too, with the sections.
    let (results, lines) = read_log(&log);
    assert_eq!(results.len(), 6, "{transcript}");
    for name in ["a", "b", "c", "d"] {
        assert_eq!(
            results[&format!("test_chatty.py::test_chatty[{name}]")].outcome,
            "passed"
        );
    }
    assert_eq!(results[crashed].outcome, "crashed");
    assert_eq!(results[hung].outcome, "hung");
    let logged_section = |id: &str| -> (String, String) {
        let line = lines
            .iter()
            .find(|l| l["type"] == "test-finished" && l["id"] == id)
            .unwrap();
        let section = &line["reports"][0]["sections"][0];
        (
            section[0].as_str().unwrap().to_owned(),
            section[1].as_str().unwrap().to_owned(),
        )
    };
    let (title, text) = logged_section(crashed);
    assert_eq!(title, "Output before it crashed");
    assert!(
        text.ends_with("crash-line 29\nlast words, no newline"),
        "{text}"
    );
    let (title, text) = logged_section(hung);
    assert_eq!(title, "Output before it was stopped");
    assert!(text.starts_with("hang-line 00\n"), "{text}");
    // The log has every line shown, as events.
    let logged_output = lines.iter().filter(|l| l["type"] == "output").count();
    assert_eq!(logged_output, shown.len());
}

#[test]
fn without_s_output_stays_in_pytests_report_and_tee_sys_shows_both() {
    require_python();
    let project = copy_fixture("live_output");
    let failing_line = "printed by a failing test";
    let cases: [(&[&str], bool, bool); 3] = [
        // (pytest args, shown live, in the report's captured section)
        (&["test_captured.py"], false, true),
        (&["--capture=tee-sys", "test_captured.py"], true, true),
        (&["-s", "test_captured.py"], true, false),
    ];
    for (args, live, captured) in cases {
        let tag = tag();
        let mut all = vec!["-n", "2", "--"];
        all.extend_from_slice(args);
        let (ran, elapsed) = runner_tagged(&project.dir, &tag, &all);
        ran.assert_code(1);
        assert!(elapsed < WALL_LIMIT.as_secs_f64(), "{}", ran.describe());
        assert_no_leftovers(&tag);
        assert_eq!(
            ran.stderr.contains("[gw"),
            live,
            "{args:?}\n{}",
            ran.describe()
        );
        if live {
            for (test, line) in [
                ("test_fails_with_output", failing_line),
                ("test_passes_with_output", "printed by a passing test"),
            ] {
                let wanted = format!("] test_captured.py::{test} | {line}");
                assert!(
                    ran.stderr.lines().any(|l| l.ends_with(&wanted)),
                    "{args:?}: no {wanted:?}\n{}",
                    ran.describe()
                );
            }
        }
        assert_eq!(
            ran.stdout.contains("Captured stdout call"),
            captured,
            "{args:?}\n{}",
            ran.describe()
        );
        if captured {
            let section = ran.stdout.split("Captured stdout call").nth(1).unwrap();
            assert!(
                section.lines().nth(1) == Some(failing_line),
                "{args:?}\n{}",
                ran.describe()
            );
        }
        assert!(
            ran.stdout.contains("1 failed, 1 passed"),
            "{}",
            ran.describe()
        );
    }
}

#[test]
fn output_events_are_in_the_json_stream() {
    require_python();
    let project = copy_fixture("live_output");
    let tag = tag();
    let (ran, _) = runner_tagged(
        &project.dir,
        &tag,
        &[
            "-n",
            "2",
            "--format",
            "json",
            "--",
            "-s",
            "test_captured.py",
        ],
    );
    ran.assert_code(1);
    assert_no_leftovers(&tag);
    let events: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let output: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "output").collect();
    let line = output
        .iter()
        .find(|e| e["test"] == "test_captured.py::test_fails_with_output")
        .unwrap_or_else(|| panic!("{}", ran.describe()));
    assert_eq!(line["line"], "printed by a failing test");
    assert!(line["worker"].as_str().unwrap().starts_with("gw"));
    assert!(line.get("partial").is_none(), "{line}");
    // The live lines are on stderr, as without --format json.
    assert!(
        ran.stderr
            .contains("test_captured.py::test_fails_with_output | printed by a failing test"),
        "{}",
        ran.describe()
    );
}

#[test]
fn breakpoint_without_a_terminal_fails_its_test_saying_how_to_debug_it() {
    require_python();
    let project = copy_fixture("live_output");
    for args in [&["test_breakpoint.py"][..], &["-s", "test_breakpoint.py"]] {
        let tag = tag();
        let mut all = vec!["-n", "2", "--"];
        all.extend_from_slice(args);
        let (ran, elapsed) = runner_tagged(&project.dir, &tag, &all);
        ran.assert_code(1);
        // pdb never waits for input that can't come.
        assert!(elapsed < 60.0, "{elapsed}s\n{}", ran.describe());
        assert_no_leftovers(&tag);
        assert!(
            ran.stdout.contains(
                "breakpoint() at test_breakpoint.py:7 needs a terminal, and runner's workers have none"
            ),
            "{args:?}\n{}",
            ran.describe()
        );
        assert!(
            ran.stdout.contains("run `runner -- --pdb`"),
            "{}",
            ran.describe()
        );
        assert!(
            ran.stdout
                .contains("FAILED test_breakpoint.py::test_stops_at_a_breakpoint"),
            "{}",
            ran.describe()
        );
        assert!(
            ran.stdout.contains("1 failed, 1 passed"),
            "{}",
            ran.describe()
        );
    }
}

/// `-s` in pytest's own configuration counts as on the command line: what
/// pytest parsed decides, not runner's arguments.
#[test]
fn s_in_addopts_shows_output_live() {
    require_python();
    let project = copy_fixture("live_output");
    std::fs::write(project.dir.join("pytest.ini"), "[pytest]\naddopts = -s\n").unwrap();
    let tag = tag();
    let (ran, _) = runner_tagged(&project.dir, &tag, &["-n", "2", "--", "test_captured.py"]);
    ran.assert_code(1);
    assert_no_leftovers(&tag);
    assert!(
        ran.stderr.lines().any(|l| l.starts_with("[gw")
            && l.ends_with(
                "] test_captured.py::test_fails_with_output | printed by a failing test"
            )),
        "{}",
        ran.describe()
    );
    assert!(
        !ran.stdout.contains("Captured stdout call"),
        "{}",
        ran.describe()
    );
}
