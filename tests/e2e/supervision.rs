//! Supervision: whatever a test does (hang, segfault, abort, exit, get
//! killed, leave children behind), the run finishes, the other tests still
//! run, the broken one is reported with evidence, and no process survives.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    assert_no_leftovers, copy_fixture, read_log, run, runner_bin, runner_tagged, tag,
};

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
    // pytest's report counts it as a failure (as pytest-timeout and xdist
    // do) and names what happened in its short summary.
    let summary_line = format!("{} test_broken.py::{name} - ", outcome.to_uppercase());
    assert!(
        ran.stdout.lines().any(|l| l.starts_with(&summary_line)),
        "the short summary names it {summary_line:?}\n{}",
        ran.describe()
    );
    assert_eq!(
        crate::support::closing_line(&ran.stdout).map(|(counts, _)| counts),
        Some("1 failed, 2 passed, 10 deselected".to_owned()),
        "{}",
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
    while std::fs::read_to_string(&log).map_or(0, |t| t.matches("\"test-finished\"").count()) < 2 {
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

/// Whether `pid` is gone (or a zombie, as good as gone).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The pids the fixture's tests wrote to `started/`, by name.
fn started_pids(dir: &Path) -> Vec<(String, i32)> {
    let Ok(entries) = std::fs::read_dir(dir.join("started")) else {
        return Vec::new();
    };
    let mut pids: Vec<(String, i32)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = std::fs::read_to_string(entry.path()).ok()?.parse().ok()?;
            (!name.ends_with(".tmp")).then_some((name, pid))
        })
        .collect();
    pids.sort();
    pids
}

/// Waits (5 s at most) for every process the tests recorded to be gone.
fn assert_started_pids_gone(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for (name, pid) in started_pids(dir) {
        while !gone(pid) {
            assert!(
                Instant::now() < deadline,
                "{name} (pid {pid}) is still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A hung test whose worker dies of the SIGTERM (Python's default) and
/// whose process ignores it: the SIGKILL must still reach it, while the
/// run goes on (the next test checks), not only at the end of the run.
fn hung_test_stops_what_it_started(name: &str) {
    let project = copy_fixture("supervision");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let selection = format!(
        "{name} or test_what_the_hung_test_started_is_gone or test_first_ok or test_last_ok"
    );
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
    let outcome = |test: &str| results[&format!("test_broken.py::{test}")].outcome.as_str();
    assert_eq!(results.len(), 4, "{}", ran.describe());
    assert_eq!(outcome(name), "hung", "{}", ran.describe());
    for healthy in [
        "test_first_ok",
        "test_what_the_hung_test_started_is_gone",
        "test_last_ok",
    ] {
        assert_eq!(outcome(healthy), "passed", "{healthy}\n{}", ran.describe());
    }
    assert_eq!(started_pids(&project.dir).len(), 1, "{}", ran.describe());
    assert!(
        !ran.combined().contains("killed 1 process"),
        "nothing of the hung test is left for the end of the run\n{}",
        ran.describe()
    );
    let bound = TIMEOUT + MARGIN + 2.0;
    assert!(elapsed < bound, "took {elapsed:.1}s, more than {bound}s");
    assert_started_pids_gone(&project.dir);
    assert_no_leftovers(&tag);
}

#[test]
fn sigkill_reaches_a_hung_tests_child_that_ignores_sigterm_after_its_worker_died() {
    hung_test_stops_what_it_started("test_hang_with_child_ignoring_sigterm");
}

#[test]
fn sigkill_reaches_a_hung_tests_grandchild_that_ignores_sigterm() {
    hung_test_stops_what_it_started("test_hang_with_grandchild_ignoring_sigterm");
}

#[test]
fn a_hung_tests_child_in_its_own_process_group_is_stopped_too() {
    hung_test_stops_what_it_started("test_hang_with_child_in_its_own_group");
}

/// The leaks fixture's tests that leave a process running, with the name
/// each writes its leftover's pid under.
const LEAKY: [(&str, &str); 4] = [
    ("test_leaves_sleep", "sleep"),
    ("test_exec_daemon", "exec-daemon"),
    ("test_fork_daemon", "fork-daemon"),
    ("test_grandchild_in_its_own_group", "own-group"),
];

/// Runs the leaks fixture: every test passes as under pytest, each leaky
/// test is named with its process once it ended, every leftover is killed
/// at the end with a note naming its test, and nothing else is reported.
fn leaky_tests_are_reported_and_their_processes_killed(workers: &str) {
    let project = copy_fixture("leaks");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let args = ["-n", workers, "--run-log", log.to_str().unwrap()];
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(0);
    assert!(ran.stdout.contains("10 passed"), "{}", ran.describe());
    let (results, lines) = read_log(&log);
    assert_eq!(results.len(), 10, "{}", ran.describe());
    assert!(results.values().all(|r| r.outcome == "passed"));
    let started: std::collections::HashMap<String, i32> =
        started_pids(&project.dir).into_iter().collect();
    assert_eq!(started.len(), LEAKY.len(), "{:?}", started);
    let of_type = |kind: &str| -> Vec<(String, i64)> {
        lines
            .iter()
            .filter(|l| l["type"] == kind)
            .map(|l| {
                let test = l["test"].as_str().unwrap_or("").to_string();
                (test, l["pid"].as_i64().unwrap())
            })
            .collect()
    };
    let mut leaked = of_type("leaked-process");
    let mut killed = of_type("leftover-killed");
    leaked.sort();
    killed.retain(|(_, pid)| started.values().any(|p| *p as i64 == *pid));
    killed.sort();
    let mut expected: Vec<(String, i64)> = LEAKY
        .iter()
        .map(|(test, name)| (format!("test_leaks.py::{test}"), started[*name] as i64))
        .collect();
    expected.sort();
    assert_eq!(
        leaked,
        expected,
        "each leaky test, once\n{}",
        ran.describe()
    );
    assert_eq!(
        killed,
        expected,
        "each leftover killed at the end, with its test\n{}",
        ran.describe()
    );
    if workers == "1" {
        // Reported as each test ended, not at the end of the run: before the
        // last test, which runs after a 1 s one.
        let last_result = lines
            .iter()
            .position(|l| l["type"] == "test-finished" && l["id"] == "test_leaks.py::test_last_ok")
            .unwrap();
        let last_leak = lines
            .iter()
            .rposition(|l| l["type"] == "leaked-process")
            .unwrap();
        assert!(last_leak < last_result, "{}", ran.describe());
    }
    for (test, name) in LEAKY {
        let pid = started[name];
        assert!(
            ran.stderr.contains(&format!(
                "leaky test: test_leaks.py::{test} left a process running after it ended: pid {pid}"
            )),
            "a live warning for {test}\n{}",
            ran.describe()
        );
        // Killed once pytest's session ended (its report is written), so
        // said by runner on stderr.
        assert!(
            ran.stderr.lines().any(|line| {
                line.starts_with(&format!("  pid {pid} `"))
                    && line.ends_with(&format!("`, started by test_leaks.py::{test} (call)"))
            }),
            "the closing notes name {test}\n{}",
            ran.describe()
        );
    }
    assert!(
        !ran.combined().contains("test_uses_a_fixtures_process left")
            && !ran
                .combined()
                .contains("test_kills_its_child_without_waiting left")
            && !ran.combined().contains("test_waits_for_its_child left"),
        "{}",
        ran.describe()
    );
    assert!(elapsed < MARGIN, "took {elapsed:.1}s");
    assert_started_pids_gone(&project.dir);
    assert_no_leftovers(&tag);
}

#[test]
fn leaky_tests_are_named_and_what_they_left_is_killed() {
    leaky_tests_are_reported_and_their_processes_killed("1");
}

#[test]
fn leaky_tests_are_named_across_workers() {
    leaky_tests_are_reported_and_their_processes_killed("2");
}

/// Starts runner on the runner_killed fixture, waits until what the tests
/// wrote under started/ is `ready`, sends `signal` to runner, and checks
/// that nothing the run started is left.
fn signal_runner_when(
    signal: nix::sys::signal::Signal,
    ready: fn(&[(String, i32)]) -> bool,
    env: &[(&str, &str)],
    pytest_args: &[&str],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let project = copy_fixture("runner_killed");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let started = Instant::now();
    let child = Command::new(runner_bin())
        .args(["-n", "2", "--run-log", log.to_str().unwrap(), "--"])
        .args(pytest_args)
        .envs(env.iter().copied())
        .env("RUNNER_E2E_TAG", &tag)
        .current_dir(&project.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&started_pids(&project.dir)) {
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}",
            started_pids(&project.dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let output = child.wait_with_output().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(elapsed < 30.0, "took {elapsed:.1}s");
    assert_started_pids_gone(&project.dir);
    assert_no_leftovers(&tag);
    let lines = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line of the log is whole"))
        .collect();
    (output, lines)
}

/// The hanging test has started all its processes.
fn hanging(started: &[(String, i32)]) -> bool {
    started.iter().any(|(name, _)| name == "hanging")
}

fn results_so_far_passed(lines: &[serde_json::Value]) -> usize {
    let results: Vec<_> = lines
        .iter()
        .filter(|l| l["type"] == "test-finished")
        .collect();
    assert!(
        results.iter().all(|r| r["outcome"] == "passed"),
        "{results:?}"
    );
    results.len()
}

fn killed_by(output: &std::process::Output, signal: nix::sys::signal::Signal) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(signal as i32),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn sigkill_of_runner_during_collection_leaves_nothing() {
    use nix::sys::signal::Signal::SIGKILL;
    let (output, lines) = signal_runner_when(
        SIGKILL,
        |started| started.iter().any(|(name, _)| name == "collecting"),
        &[("HANG_IN_COLLECTION", "1")],
        &[],
    );
    killed_by(&output, SIGKILL);
    assert!(lines.is_empty(), "no run log before collection ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("its guardian killed"),
        "the guardian says what it did\n{stderr}"
    );
}

#[test]
fn sigkill_of_runner_with_tests_in_flight_leaves_nothing() {
    use nix::sys::signal::Signal::SIGKILL;
    // Both workers forked, each running a test with more queued behind it.
    let both_busy = |started: &[(String, i32)]| {
        let workers: std::collections::HashSet<i32> = started.iter().map(|(_, pid)| *pid).collect();
        workers.len() == 2
    };
    let (output, lines) = signal_runner_when(SIGKILL, both_busy, &[], &["-k", "test_busy"]);
    killed_by(&output, SIGKILL);
    assert!(results_so_far_passed(&lines) < 8);
}

#[test]
fn sigkill_of_runner_with_a_hung_test_and_its_daemon_leaves_nothing() {
    use nix::sys::signal::Signal::SIGKILL;
    let (output, lines) = signal_runner_when(SIGKILL, hanging, &[], &[]);
    killed_by(&output, SIGKILL);
    results_so_far_passed(&lines);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("its guardian killed"), "{stderr}");
}

#[test]
fn sigterm_of_runner_with_a_hung_test_and_its_daemon_kills_and_names_them() {
    use nix::sys::signal::Signal::SIGTERM;
    let (output, lines) = signal_runner_when(SIGTERM, hanging, &[], &[]);
    assert_eq!(output.status.code(), Some(2));
    results_so_far_passed(&lines);
    let killed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "leftover-killed")
        .collect();
    assert!(
        killed
            .iter()
            .any(|l| l["test"] == "test_killed.py::test_daemon_then_hang"),
        "the daemon is killed and traced to its test: {killed:?}"
    );
    assert_eq!(lines.last().unwrap()["type"], "run-finished");
    // Killed once pytest's session ended, so said by runner on stderr.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("started by test_killed.py::test_daemon_then_hang (call)"),
        "{stderr}"
    );
}

#[test]
fn a_process_started_during_collection_is_killed_at_the_end() {
    let project = copy_fixture("leaks");
    let tag = tag();
    let mut cmd = Command::new(runner_bin());
    cmd.args(["--", "-k", "no_test_has_this_name"])
        .env("RUNNER_E2E_TAG", &tag)
        .env("LEAVE_IN_COLLECTION", "1");
    let started = Instant::now();
    let ran = run(cmd, &project.dir);
    let elapsed = started.elapsed().as_secs_f64();
    // pytest's own exit code when everything is deselected.
    ran.assert_code(5);
    let pids = started_pids(&project.dir);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let pid = pids[0].1;
    assert!(
        ran.stderr.contains(&format!(
            "killed 1 process still running at the end of the run:\n  pid {pid} `sleep 1000`, not started by a test"
        )),
        "{}",
        ran.describe()
    );
    assert!(!ran.combined().contains("leaky test"), "{}", ran.describe());
    assert!(elapsed < MARGIN, "took {elapsed:.1}s");
    assert_started_pids_gone(&project.dir);
    assert_no_leftovers(&tag);
}
