//! What a test can do to pytest's own machinery inside a worker: turn every
//! warning into an error, fork a child that goes on running pytest's code.
//! runner must end as plain pytest does, lose no result, and leave no
//! process behind.

use std::process::Command;

use crate::support::{
    assert_no_leftovers, compare_outcomes_in, compare_outcomes_with_env, copy_fixture, read_log,
    run, runner_tagged, tag,
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
