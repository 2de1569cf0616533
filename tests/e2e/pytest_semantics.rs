//! What a test can do to pytest's own machinery inside a worker: turn every
//! warning into an error, fork a child that goes on running pytest's code,
//! stop the session. runner must end as plain pytest does, lose no result,
//! and leave no process behind.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::support::{
    Ran, assert_no_leftovers, compare_outcomes_in, compare_outcomes_with_env, copy_fixture,
    read_log, require_python, run, runner_tagged, tag,
};

/// A run of a handful of quick tests, on a loaded 2-core machine.
const BOUND: f64 = 8.0;

// --- filterwarnings = error ---------------------------------------------

/// The warnings_error fixture's tests that pass under plain pytest.
const PASSING: &str = "not fails and not uncaught and not leaked";

/// Runs the warnings_error fixture and checks that no worker failed
/// outside a test: the objects runner opens must never raise a warning.
fn warnings_run(pytest_args: &[&str], env: &[(&str, &str)], expected_code: i32) {
    let project = copy_fixture("warnings_error");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let mut args = vec!["-n", "2", "--run-log", log.to_str().unwrap(), "--"];
    args.extend_from_slice(pytest_args);
    let mut cmd = Command::new(crate::support::runner_bin());
    cmd.args(&args)
        .env("RUNNER_E2E_TAG", &tag)
        .envs(env.iter().copied());
    let started = std::time::Instant::now();
    let ran = run(cmd, &project.dir);
    let elapsed = started.elapsed().as_secs_f64();
    ran.assert_code(expected_code);
    let passing_only = pytest_args.contains(&PASSING);
    // The failing tests' own reports name their warnings; the passing ones
    // must show none at all.
    let mut unexpected = vec!["can't be trusted", "outside a test"];
    if passing_only {
        unexpected.push("Warning");
    }
    for needle in unexpected {
        assert!(
            !ran.combined().contains(needle),
            "{needle:?} in the output\n{}",
            ran.describe()
        );
    }
    let (results, lines) = read_log(&log);
    let selected = if passing_only { 7 } else { 11 };
    assert_eq!(results.len(), selected, "{}", ran.describe());
    assert!(lines.iter().all(|l| l["type"] != "not-run"));
    assert!(elapsed < BOUND, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn filterwarnings_error_in_the_ini_keeps_the_run_trusted() {
    warnings_run(&["-k", PASSING], &[], 0);
    warnings_run(&[], &[], 1);
}

#[test]
fn filterwarnings_error_outcomes_match_pytest() {
    let project = copy_fixture("warnings_error");
    compare_outcomes_in(&project.dir, 2, &[]);
    compare_outcomes_in(&project.dir, 1, &["-k", PASSING]);
    compare_outcomes_in(&project.dir, 3, &["-k", PASSING]);
}

#[test]
fn warnings_as_errors_from_the_command_line() {
    let args = ["-o", "filterwarnings=", "-W", "error", "-k", PASSING];
    warnings_run(&args, &[], 0);
    let project = copy_fixture("warnings_error");
    compare_outcomes_in(&project.dir, 2, &["-o", "filterwarnings=", "-W", "error"]);
    compare_outcomes_in(&project.dir, 2, &args);
}

#[test]
fn warnings_as_errors_from_pythonwarnings() {
    let env = [("PYTHONWARNINGS", "error")];
    let args = ["-o", "filterwarnings=", "-k", PASSING];
    warnings_run(&args, &env, 0);
    let project = copy_fixture("warnings_error");
    compare_outcomes_with_env(&project.dir, 2, &["-o", "filterwarnings="], &env);
    compare_outcomes_with_env(&project.dir, 2, &args, &env);
}

// --- forked children -----------------------------------------------------

/// Every test of the forking fixture passes when each child keeps quiet
/// and each parent's result arrives.
fn forked_children(workers: &str) {
    let project = copy_fixture("forking");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let args = ["-n", workers, "--run-log", log.to_str().unwrap()];
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(0);
    let (results, _) = read_log(&log);
    assert_eq!(results.len(), 14, "{}", ran.describe());
    for (id, result) in &results {
        assert_eq!(result.outcome, "passed", "{id}\n{}", ran.describe());
    }
    assert!(ran.stdout.contains("14 passed"), "{}", ran.describe());
    // What the host says when a process it did not give a test to speaks.
    for needle in [
        "not given",
        "bad message",
        "unexpected message",
        "did not fork",
        "can't be trusted",
    ] {
        assert!(
            !ran.combined().contains(needle),
            "{needle:?}\n{}",
            ran.describe()
        );
    }
    assert!(elapsed < BOUND, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn forked_children_never_speak_for_their_worker_one_worker() {
    forked_children("1");
}

#[test]
fn forked_children_never_speak_for_their_worker_two_workers() {
    forked_children("2");
}

// --- a test stops the session ----------------------------------------------

const STOP_FILE: &str = "test_session_stop.py";

fn node(name: &str) -> String {
    format!("{STOP_FILE}::{name}")
}

/// Plain pytest in its own process group, as a shell runs it: a test that
/// signals its group must reach pytest, not the test harness.
fn plain_pytest(dir: &Path, args: &[String], tag: &str) -> Ran {
    let mut cmd = Command::new(require_python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider"])
        .args(args)
        .env("RUNNER_E2E_TAG", tag)
        .process_group(0);
    run(cmd, dir)
}

/// pytest's `!!! reason !!!` line and the lines under it, up to the
/// closing line or one of runner's own notes (`! ...`).
fn stop_block(output: &str, reason: &str) -> Vec<String> {
    let mut lines = output
        .lines()
        .skip_while(|l| !(l.starts_with("!!!") && l.trim_matches('!').trim() == reason));
    let Some(title) = lines.next() else {
        return Vec::new();
    };
    std::iter::once(title)
        .chain(lines.take_while(|l| !l.is_empty() && !l.starts_with('=') && !l.starts_with("! ")))
        .map(str::to_string)
        .collect()
}

/// One way of stopping the session, with one worker so that the order is
/// pytest's: the same exit code, outcomes, closing line and `!!!` lines as
/// plain pytest; the tests after it do not run and are logged as not run.
fn session_stop(case: &str, code: i32, reason: &str) {
    let project = copy_fixture("session_stop");
    let tag = tag();
    let selection: Vec<String> = [
        "test_first_ok",
        "test_failing",
        case,
        "test_after_1",
        "test_after_2",
    ]
    .iter()
    .map(|name| node(name))
    .collect();
    let selection_args: Vec<&str> = selection.iter().map(String::as_str).collect();
    compare_outcomes_with_env(
        &project.dir,
        1,
        &selection_args,
        &[("RUNNER_E2E_TAG", &tag)],
    );

    let log = project.dir.join("run.jsonl");
    let mut args = vec!["-n", "1", "--run-log", log.to_str().unwrap(), "--"];
    args.extend_from_slice(&selection_args);
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(code);
    let pytest = plain_pytest(&project.dir, &selection, &tag);
    pytest.assert_code(code);
    let expected = stop_block(&pytest.stdout, reason);
    assert!(
        !expected.is_empty(),
        "pytest shows no stop\n{}",
        pytest.describe()
    );
    assert_eq!(
        stop_block(&ran.stdout, reason),
        expected,
        "runner must show the stop as pytest does\n{}",
        ran.describe()
    );

    let (results, lines) = read_log(&log);
    assert_eq!(results[&node("test_first_ok")].outcome, "passed");
    assert_eq!(results[&node("test_failing")].outcome, "failed");
    let not_run: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "not-run")
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    for after in ["test_after_1", "test_after_2"] {
        assert!(
            not_run.contains(&node(after).as_str()),
            "{after} must not run\n{}",
            ran.describe()
        );
    }
    assert_eq!(
        results.len() + not_run.len(),
        5,
        "every selected test is a result or not run\n{}",
        ran.describe()
    );
    assert!(
        !ran.combined().contains("can't be trusted"),
        "{}",
        ran.describe()
    );
    assert!(elapsed < BOUND, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn keyboard_interrupt_in_a_test_stops_the_session() {
    session_stop("test_keyboard_interrupt", 2, "KeyboardInterrupt");
}

#[test]
fn keyboard_interrupt_in_setup_and_teardown_stops_the_session() {
    session_stop("test_interrupt_in_setup", 2, "KeyboardInterrupt");
    session_stop("test_interrupt_in_teardown", 2, "KeyboardInterrupt");
}

#[test]
fn sigint_to_the_process_group_stops_the_session() {
    session_stop("test_sigint_to_the_process_group", 2, "KeyboardInterrupt");
}

#[test]
fn sigint_from_another_thread_stops_the_session() {
    session_stop("test_sigint_from_a_thread", 2, "KeyboardInterrupt");
}

#[test]
fn pytest_exit_stops_the_session_with_its_code() {
    session_stop(
        "test_pytest_exit",
        2,
        "_pytest.outcomes.Exit: stopped by the test",
    );
    session_stop(
        "test_pytest_exit_with_code",
        3,
        "_pytest.outcomes.Exit: stopped with code 3",
    );
    session_stop(
        "test_pytest_exit_with_zero",
        0,
        "_pytest.outcomes.Exit: all done",
    );
    session_stop(
        "test_needs_the_service",
        4,
        "_pytest.outcomes.Exit: the service is unavailable",
    );
}

/// With two workers, a test in flight on the other worker finishes and is
/// reported; whatever was not started is logged as not run.
fn session_stop_two_workers(case: &str, code: i32, reason: &str) {
    let project = copy_fixture("session_stop");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let selection: Vec<String> = [
        "test_first_ok",
        "test_slow_ok",
        case,
        "test_after_1",
        "test_after_2",
    ]
    .iter()
    .map(|name| node(name))
    .collect();
    let mut args = vec!["-n", "2", "--run-log", log.to_str().unwrap(), "--"];
    args.extend(selection.iter().map(String::as_str));
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &args);
    ran.assert_code(code);
    assert!(
        !stop_block(&ran.stdout, reason).is_empty(),
        "{}",
        ran.describe()
    );
    let (results, lines) = read_log(&log);
    let not_run = lines.iter().filter(|l| l["type"] == "not-run").count();
    assert_eq!(results.len() + not_run, 5, "{}", ran.describe());
    if let Some(slow) = results.get(&node("test_slow_ok")) {
        assert_eq!(slow.outcome, "passed", "{}", ran.describe());
    }
    assert!(
        !ran.combined().contains("can't be trusted"),
        "{}",
        ran.describe()
    );
    assert!(elapsed < BOUND, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn session_stop_with_two_workers_keeps_every_result() {
    session_stop_two_workers("test_keyboard_interrupt", 2, "KeyboardInterrupt");
    session_stop_two_workers("test_sigint_to_the_process_group", 2, "KeyboardInterrupt");
    session_stop_two_workers(
        "test_needs_the_service",
        4,
        "_pytest.outcomes.Exit: the service is unavailable",
    );
}
