//! Reruns (pytest-rerunfailures): a test that fails, then passes on a rerun
//! is passed and flaky, everywhere runner records results.

use std::path::Path;
use std::process::Command;

use crate::support::{
    Ran, assert_no_leftovers, closing_line, copy_fixture, python, read_log, require_python, run,
    runner_bin, tag,
};

/// Whether pytest-rerunfailures is importable; when it is not, the test
/// says so and stops (it is in requirements-dev.txt).
fn rerunfailures_installed() -> bool {
    let found = python("import pytest_rerunfailures", &[]).code == Some(0);
    if !found {
        eprintln!(
            "SKIPPED: pytest_rerunfailures is not importable by python3 \
             (pip install -r requirements-dev.txt installs it)"
        );
    }
    found
}

/// Runs `program ARGS` in `dir`, counting each test's attempts in a fresh
/// directory (the fixture's `attempt` fixture reads RERUNS_COUNT_DIR).
fn with_counts(mut cmd: Command, dir: &Path, counts: &str, tag: &str) -> Ran {
    let counts = dir.join(counts);
    std::fs::create_dir_all(&counts).unwrap();
    cmd.env("RERUNS_COUNT_DIR", &counts)
        .env("RUNNER_E2E_TAG", tag);
    run(cmd, dir)
}

/// The testcases of a JUnit file, by name: (child elements, in order, with
/// their `message`, and whether they have text).
const JUNIT_CASES: &str = r#"
import json, sys, xml.etree.ElementTree as ET
cases = {}
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    cases[case.get("name")] = [
        [child.tag, child.get("type"), child.get("message")]
        for child in case
        if child.tag not in ("system-out", "system-err")
    ]
print(json.dumps(cases))
"#;

#[test]
fn a_test_passing_on_a_rerun_is_passed_and_flaky() {
    require_python();
    if !rerunfailures_installed() {
        return;
    }
    let p = copy_fixture("reruns");
    let tag = tag();

    let mut plain = Command::new("python3");
    plain.args(["-m", "pytest", "-p", "no:cacheprovider", "--reruns", "2"]);
    let reference = with_counts(plain, &p.dir, "plain-counts", &tag);
    reference.assert_code(1);
    let (want, _) = closing_line(&reference.stdout).expect("pytest's closing line");
    assert_eq!(
        want,
        "1 failed, 3 passed, 5 rerun",
        "{}",
        reference.describe()
    );

    let log = p.dir.join("run.jsonl");
    let junit = p.dir.join("junit.xml");
    let mut cmd = Command::new(runner_bin());
    cmd.args(["-n", "2", "--run-log", log.to_str().unwrap()])
        .args(["--junitxml", junit.to_str().unwrap(), "--", "--reruns", "2"]);
    let started = std::time::Instant::now();
    let ran = with_counts(cmd, &p.dir, "runner-counts", &tag);
    let elapsed = started.elapsed().as_secs_f64();
    // pytest's exit code and closing line: the last attempt decides.
    ran.assert_code(reference.code.unwrap());
    let (got, _) =
        closing_line(&ran.stdout).unwrap_or_else(|| panic!("no closing line\n{}", ran.describe()));
    assert_eq!(got, want, "{}", ran.describe());
    assert!(elapsed < 60.0, "took {elapsed:.1}s\n{}", ran.describe());
    assert_no_leftovers(&tag);

    // runner's section of the report names the flaky tests, not the others.
    let section = ran
        .stdout
        .split_once("= runner =")
        .unwrap_or_else(|| panic!("no runner section\n{}", ran.describe()))
        .1;
    for line in [
        "flaky: test_reruns.py::test_flaky failed once, then passed on attempt 2",
        "flaky: test_reruns.py::test_flaky_twice failed 2 times, then passed on attempt 3",
    ] {
        assert!(
            section.contains(line),
            "{line:?} missing\n{}",
            ran.describe()
        );
    }
    for quiet in ["test_passes", "test_always_fails failed"] {
        assert!(!section.contains(quiet), "{quiet}\n{}", ran.describe());
    }

    // The run log: every test's final outcome, its attempts, flaky.
    let (results, lines) = read_log(&log);
    let expected = [
        ("test_reruns.py::test_flaky", "passed", 2, true),
        ("test_reruns.py::test_always_fails", "failed", 3, false),
        ("test_reruns.py::test_passes", "passed", 1, false),
        ("test_reruns.py::test_flaky_twice", "passed", 3, true),
    ];
    assert_eq!(results.len(), expected.len(), "{}", log.display());
    for (id, outcome, attempts, flaky) in expected {
        assert_eq!(results[id].outcome, outcome, "{id}");
        let line = lines
            .iter()
            .find(|l| l["type"] == "test-finished" && l["id"] == id)
            .unwrap();
        assert_eq!(line["attempts"], attempts, "{id}: {line}");
        assert_eq!(line["flaky"], flaky, "{id}: {line}");
        assert_eq!(line["attempt"], 1, "{id}: {line}");
        // Every attempt's reports are kept.
        let reruns = line["reports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "rerun")
            .count();
        assert_eq!(reruns, attempts - 1, "{id}: {line}");
    }
    // The failure text is the last attempt's.
    let always = &results["test_reruns.py::test_always_fails"].longrepr;
    assert!(always.contains("attempt 3 fails too"), "{always}");
    assert!(!always.contains("attempt 1 fails too"), "{always}");

    // runner's JUnit file: flakyFailure in the passing cases, rerunFailure
    // after the failure of the one that never passed.
    let cases = python(JUNIT_CASES, &[junit.to_str().unwrap()]);
    cases.assert_code(0);
    let cases: serde_json::Value = serde_json::from_str(&cases.stdout).unwrap();
    let rerun = |tag: &str, attempt: u32, of: u32| {
        serde_json::json!([
            tag,
            "pytest.rerun",
            format!("attempt {attempt} of {of} failed on call, so the test was run again")
        ])
    };
    assert_eq!(
        cases["test_flaky"],
        serde_json::json!([rerun("flakyFailure", 1, 2)])
    );
    assert_eq!(
        cases["test_flaky_twice"],
        serde_json::json!([rerun("flakyFailure", 1, 3), rerun("flakyFailure", 2, 3)])
    );
    assert_eq!(cases["test_passes"], serde_json::json!([]));
    assert_eq!(
        cases["test_always_fails"],
        serde_json::json!([
            ["failure", null, "AssertionError: attempt 3 fails too"],
            rerun("rerunFailure", 1, 3),
            rerun("rerunFailure", 2, 3)
        ])
    );

    // The history: final outcomes, and which runs were flaky.
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dir.join(".runner/history.json")).unwrap())
            .unwrap();
    for (id, outcome, _, flaky) in expected {
        let record = &history["tests"][id];
        assert_eq!(
            record["recent"],
            serde_json::json!([outcome]),
            "{id}: {record}"
        );
        assert_eq!(
            record["flaky"],
            serde_json::json!([flaky]),
            "{id}: {record}"
        );
    }
}

/// Without `--reruns`, the same suite fails as it does under pytest: no
/// test is flaky, and runner says nothing about reruns.
#[test]
fn without_reruns_nothing_is_flaky() {
    require_python();
    if !rerunfailures_installed() {
        return;
    }
    let p = copy_fixture("reruns");
    let tag = tag();
    let log = p.dir.join("run.jsonl");
    let mut cmd = Command::new(runner_bin());
    cmd.args(["-n", "2", "--run-log", log.to_str().unwrap()]);
    let ran = with_counts(cmd, &p.dir, "counts", &tag);
    ran.assert_code(1);
    let (got, _) = closing_line(&ran.stdout).unwrap();
    assert_eq!(got, "3 failed, 1 passed", "{}", ran.describe());
    assert!(!ran.stdout.contains("flaky:"), "{}", ran.describe());
    let (results, lines) = read_log(&log);
    assert_eq!(results.len(), 4);
    for line in lines.iter().filter(|l| l["type"] == "test-finished") {
        assert_eq!(
            (&line["attempts"], &line["flaky"]),
            (&1.into(), &false.into()),
            "{line}"
        );
    }
    assert_no_leftovers(&tag);
}

/// A suite whose only failures pass on a rerun exits 0, as under pytest.
#[test]
fn flaky_tests_alone_exit_0() {
    require_python();
    if !rerunfailures_installed() {
        return;
    }
    let p = copy_fixture("reruns");
    let tag = tag();
    let args = ["--reruns", "2", "-k", "not always"];
    let mut plain = Command::new("python3");
    plain
        .args(["-m", "pytest", "-p", "no:cacheprovider"])
        .args(args);
    let reference = with_counts(plain, &p.dir, "plain-counts", &tag);
    reference.assert_code(0);
    let mut cmd = Command::new(runner_bin());
    cmd.args(["-n", "1", "--"]).args(args);
    let ran = with_counts(cmd, &p.dir, "runner-counts", &tag);
    ran.assert_code(0);
    let (want, _) = closing_line(&reference.stdout).unwrap();
    let (got, _) = closing_line(&ran.stdout).unwrap();
    assert_eq!(got, want, "{}", ran.describe());
    assert_eq!(got, "3 passed, 1 deselected, 3 rerun", "{}", ran.describe());
    assert!(
        ran.stdout
            .contains("flaky: test_reruns.py::test_flaky failed once"),
        "{}",
        ran.describe()
    );
    assert_no_leftovers(&tag);
}
