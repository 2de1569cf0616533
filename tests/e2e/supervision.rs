//! Supervision: whatever a test does (hang, segfault, abort, exit, get
//! killed, leave children behind), the run finishes, the other tests still
//! run, the broken one is reported with evidence, and no process survives.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{assert_no_leftovers, copy_fixture, read_log, runner_bin, runner_tagged, tag};

const TIMEOUT: f64 = 2.0;
/// runner's dump wait (0.3 s) + SIGTERM grace (2 s) + start-up and slack.
const MARGIN: f64 = 6.0;

/// Runs one broken test between two healthy ones and checks its outcome,
/// its evidence, the healthy ones, the wall time and the leftovers.
fn broken_test(name: &str, outcome: &str, evidence: &[&str]) {
    let project = copy_fixture("supervision");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let selection = format!("{name} or test_first_ok or test_last_ok");
    let timeout = TIMEOUT.to_string();
    let args = [
        "-n",
        "1",
        "--timeout",
        &timeout,
        "--run-log",
        log.to_str().unwrap(),
        "--",
        "-k",
        &selection,
    ];
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(1);
    let (results, _) = read_log(&log);
    assert_eq!(
        results.len(),
        3,
        "three results expected\n{}",
        ran.describe()
    );
    for healthy in ["test_first_ok", "test_last_ok"] {
        let id = format!("test_broken.py::{healthy}");
        assert_eq!(
            results[&id].outcome,
            "passed",
            "{id} must be unaffected\n{}",
            ran.describe()
        );
    }
    let broken = &results[&format!("test_broken.py::{name}")];
    assert_eq!(broken.outcome, outcome, "{}", ran.describe());
    for needle in evidence {
        assert!(
            broken.longrepr.contains(needle),
            "evidence for {name} lacks {needle:?}:\n{}",
            broken.longrepr
        );
    }
    assert!(
        ran.stdout.contains(&format!("1 {outcome}")),
        "closing line counts it\n{}",
        ran.describe()
    );
    let bound = TIMEOUT + MARGIN;
    assert!(
        elapsed < bound,
        "{name}: the run took {elapsed:.1}s, more than {bound}s"
    );
    assert_no_leftovers(&tag);
}

#[test]
fn infinite_python_loop_is_hung_with_its_traceback() {
    broken_test(
        "test_infinite_loop",
        "hung",
        &["Timeout", "spin_forever", "test_infinite_loop"],
    );
}

#[test]
fn test_blocked_in_c_is_hung_with_its_traceback() {
    broken_test("test_blocked_in_c", "hung", &["Timeout", "block_in_c"]);
}

#[test]
fn segfault_is_crashed_with_signal_and_traceback() {
    broken_test("test_segfault", "crashed", &["SIGSEGV", "write_to_null"]);
}

#[test]
fn abort_is_crashed_with_sigabrt() {
    broken_test("test_abort", "crashed", &["SIGABRT", "test_abort"]);
}

#[test]
fn os_exit_is_crashed_with_its_status() {
    broken_test("test_exit_3", "crashed", &["exited with status 3"]);
}

#[test]
fn sigkill_from_a_thread_is_crashed() {
    broken_test("test_sigkill_from_thread", "crashed", &["SIGKILL"]);
}

#[test]
fn hung_test_and_the_child_it_started_are_both_stopped() {
    broken_test(
        "test_child_then_hang",
        "hung",
        &["Timeout", "test_child_then_hang"],
    );
}

#[test]
fn timeout_marker_sets_the_limit_per_test() {
    let project = copy_fixture("supervision");
    let source = project.dir.join("test_broken.py");
    let text = std::fs::read_to_string(&source).unwrap();
    let marked = text.replace(
        "def test_infinite_loop",
        "@pytest.mark.timeout(1)\ndef test_infinite_loop",
    );
    std::fs::write(&source, format!("import pytest\n{marked}")).unwrap();
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let args = [
        "--run-log",
        log.to_str().unwrap(),
        "--",
        "-k",
        "test_infinite_loop or test_first_ok",
    ];
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(1);
    let (results, _) = read_log(&log);
    assert_eq!(
        results["test_broken.py::test_infinite_loop"].outcome,
        "hung",
        "{}",
        ran.describe()
    );
    assert!(
        results["test_broken.py::test_infinite_loop"]
            .longrepr
            .contains("longer than 1s")
    );
    assert!(elapsed < 1.0 + MARGIN, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn crash_during_collection_fails_fast_with_the_zygotes_output() {
    let project = copy_fixture("collect_crash");
    let tag = tag();
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &[]);
    ran.assert_code(2);
    assert!(ran.stderr.contains("SIGSEGV"), "{}", ran.describe());
    assert!(
        ran.stderr.contains("crash_while_collecting"),
        "the traceback names the function\n{}",
        ran.describe()
    );
    assert!(elapsed < MARGIN, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn restarts_are_bounded_when_every_test_crashes() {
    let project = copy_fixture("all_crash");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let (ran, elapsed) = runner_tagged(
        &project.dir,
        &tag,
        &["-n", "2", "--run-log", log.to_str().unwrap()],
    );
    ran.assert_code(1);
    assert!(
        ran.stdout.contains("--max-worker-restart"),
        "{}",
        ran.describe()
    );
    let (results, lines) = read_log(&log);
    // Two workers plus 4 × 2 replacements, each crashing on its first test;
    // the last replacement may be told to stop before it starts one.
    assert!(
        (9..=10).contains(&results.len()),
        "{} results\n{}",
        results.len(),
        ran.describe()
    );
    assert!(results.values().all(|r| r.outcome == "crashed"));
    let not_run = lines.iter().filter(|l| l["type"] == "not-run").count();
    assert_eq!(
        results.len() + not_run,
        30,
        "every test is either a result or not run"
    );
    assert!(elapsed < MARGIN, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn a_worker_dying_outside_a_test_makes_the_run_untrusted() {
    let project = copy_fixture("untrusted");
    let tag = tag();
    let (ran, _) = runner_tagged(&project.dir, &tag, &["-n", "2"]);
    ran.assert_code(1);
    assert!(ran.stdout.contains("6 passed"), "{}", ran.describe());
    assert!(
        ran.combined().contains("can't be trusted"),
        "{}",
        ran.describe()
    );
    assert!(
        ran.combined()
            .contains("exited with status 7 outside a test"),
        "{}",
        ran.describe()
    );
    assert_no_leftovers(&tag);
}

#[test]
fn maxfail_stops_dispatching() {
    let project = copy_fixture("slow");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let (ran, _) = runner_tagged(
        &project.dir,
        &tag,
        &["-n", "2", "--run-log", log.to_str().unwrap(), "--", "-x"],
    );
    ran.assert_code(1);
    assert!(
        ran.stdout.contains("stopping after 1 failures"),
        "{}",
        ran.describe()
    );
    let (results, lines) = read_log(&log);
    let not_run = lines.iter().filter(|l| l["type"] == "not-run").count();
    assert!(
        not_run > 0,
        "some tests must not have run\n{}",
        ran.describe()
    );
    assert_eq!(results.len() + not_run, 24, "{}", ran.describe());
    assert!(
        ran.combined().contains("planned tests did not run"),
        "{}",
        ran.describe()
    );
    assert_no_leftovers(&tag);
}

#[test]
fn global_timeout_stops_the_run() {
    let project = copy_fixture("slow");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let args = [
        "-n",
        "2",
        "--global-timeout",
        "1.5",
        "--run-log",
        log.to_str().unwrap(),
    ];
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(2);
    assert!(ran.stdout.contains("global timeout"), "{}", ran.describe());
    let (results, lines) = read_log(&log);
    let not_run = lines.iter().filter(|l| l["type"] == "not-run").count();
    assert!(not_run > 0 && !results.is_empty(), "{}", ran.describe());
    assert!(elapsed < 1.5 + MARGIN, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

/// Starts runner on the slow suite, signals it mid-run, checks the exit
/// code, the saved results and the leftovers.
fn interrupt_mid_run(signal: nix::sys::signal::Signal) {
    let project = copy_fixture("slow");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let child = Command::new(runner_bin())
        .args(["-n", "2", "--run-log", log.to_str().unwrap()])
        .env("RUNNER_E2E_TAG", &tag)
        .current_dir(&project.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some results are on disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&log).map_or(0, |t| t.matches("\"result\"").count()) < 2 {
        assert!(Instant::now() < deadline, "no results within 30s");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit code after {signal}\n{stdout}"
    );
    let (results, lines) = read_log(&log);
    assert!(
        results.len() >= 2 && results.len() < 24,
        "partial results kept: {}",
        results.len()
    );
    assert_eq!(
        lines.last().unwrap()["type"],
        "run-finished",
        "the log is closed properly"
    );
    assert!(stdout.contains("Interrupted"), "{stdout}");
    assert_no_leftovers(&tag);
}

#[test]
fn sigint_stops_the_run_and_keeps_results() {
    interrupt_mid_run(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_stops_the_run_and_keeps_results() {
    interrupt_mid_run(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn slow_tests_get_a_live_notice() {
    let project = copy_fixture("slow");
    let (ran, _) = runner_tagged(
        &project.dir,
        &tag(),
        &[
            "-n",
            "2",
            "--slow",
            "0.2",
            "--",
            "-k",
            "test_sleeps[0] or test_sleeps[1]",
        ],
    );
    ran.assert_code(0);
    assert!(ran.stderr.contains("SLOW [> 0.2s]"), "{}", ran.describe());
    assert!(ran.stderr.contains("test_sleeps[0]"), "{}", ran.describe());
}

#[test]
fn junit_report_shows_hung_and_crashed_tests_with_evidence() {
    let project = copy_fixture("supervision");
    let junit = project.dir.join("junit.xml");
    let args = [
        "--timeout",
        "1",
        "--junitxml",
        junit.to_str().unwrap(),
        "--",
        "-k",
        "segfault or infinite_loop",
    ];
    let (ran, _) = runner_tagged(&project.dir, &tag(), &args);
    ran.assert_code(1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"failures="2""#), "{xml}");
    assert!(
        xml.contains("SIGSEGV") && xml.contains("write_to_null"),
        "crash evidence in the report\n{xml}"
    );
    assert!(
        xml.contains("spin_forever"),
        "hang traceback in the report\n{xml}"
    );
}

#[test]
fn zygote_death_ends_the_run_clearly_and_keeps_results() {
    let project = copy_fixture("zygote_dies");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let (ran, elapsed) = runner_tagged(
        &project.dir,
        &tag,
        &["-n", "1", "--run-log", log.to_str().unwrap()],
    );
    ran.assert_code(1);
    assert!(
        ran.combined().contains("the zygote exited unexpectedly"),
        "{}",
        ran.describe()
    );
    let (results, lines) = read_log(&log);
    let before = (0..4).filter(|n| {
        results
            .get(&format!("test_zygote_dies.py::test_before[{n}]"))
            .is_some_and(|r| r.outcome == "passed")
    });
    assert_eq!(
        before.count(),
        4,
        "results from before the zygote died are kept\n{}",
        ran.describe()
    );
    assert_eq!(lines.last().unwrap()["type"], "run-finished");
    assert!(elapsed < MARGIN, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}
