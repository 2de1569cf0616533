//! Hostile policies: each is built from WAT at test time and loaded with
//! `--policy` (or from the project's plugins/ directory) on a real suite.
//! Each must be contained with an error that names it, the run must end
//! within the policy deadline plus a margin, and every test result must
//! still be reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::guests::{self, quarantine, reporter, scheduler};
use crate::support::{Project, Ran, closing_line, copy_fixture, runner};

/// The per-call deadline the hostile runs use.
const DEADLINE: &str = "1";
/// Python start-up, collection and 8 tests on a loaded 2-core CI machine,
/// on top of the deadline.
const MARGIN: Duration = Duration::from_secs(12);

/// A fresh copy of the 8-test suite.
fn project() -> Project {
    copy_fixture("all_pass")
}

/// Writes `wat` as a scheduler component into the project.
fn build_scheduler(p: &Project, name: &str, extra: &str, body: &str) -> PathBuf {
    guests::build(
        &p.dir.join("policies"),
        name,
        "scheduler",
        "0.1.0",
        &scheduler(extra, body),
    )
}

fn run_timed(p: &Project, args: &[&str]) -> (Ran, Duration) {
    let started = Instant::now();
    let ran = runner(&p.dir, args);
    (ran, started.elapsed())
}

/// The number of `result` lines in the run's log.
fn logged_results(p: &Project) -> usize {
    let runs = p.dir.join(".runner/runs");
    let log = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a run log");
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""type":"result""#))
        .count()
}

/// Runs the suite with a hostile scheduler and checks the run fell back to
/// the default scheduler, named the plugin and `cause`, and lost nothing.
fn assert_scheduler_contained(name: &str, extra: &str, body: &str, cause: &str) {
    let p = project();
    let policy = build_scheduler(&p, name, extra, body);
    let (ran, took) = run_timed(
        &p,
        &[
            "-n",
            "2",
            "--policy-deadline",
            DEADLINE,
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    ran.assert_code(0);
    let out = ran.combined();
    let expected =
        format!("scheduler failed, the default scheduler plans this run instead: policy `{name}`");
    assert!(
        out.contains(&expected),
        "no fallback warning\n{}",
        ran.describe()
    );
    assert!(
        out.contains(cause),
        "cause {cause:?} not named\n{}",
        ran.describe()
    );
    assert_eq!(
        closing_line(&ran.stdout).map(|c| c.0).as_deref(),
        Some("8 passed"),
        "{}",
        ran.describe()
    );
    assert_eq!(logged_results(&p), 8, "{}", ran.describe());
    assert!(
        took < Duration::from_secs(1) + MARGIN,
        "took {took:?}\n{}",
        ran.describe()
    );
}

#[test]
fn infinite_loop_hits_the_deadline() {
    assert_scheduler_contained(
        "spin",
        "",
        "(loop $l (br $l)) (i32.const 0)",
        "was stopped in `plan`: exceeded its 1s deadline",
    );
}

#[test]
fn unbounded_memory_growth_hits_the_limit() {
    assert_scheduler_contained(
        "hog",
        "",
        "(loop $l (drop (memory.grow (i32.const 256))) (br $l)) (i32.const 0)",
        "was stopped in `plan`: exceeded its memory limit of 256 MiB",
    );
}

#[test]
fn deep_recursion_overflows_the_stack() {
    assert_scheduler_contained(
        "deep",
        "(func $deep (param i32) (result i32)
           (i32.add (call $deep (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))",
        "(call $deep (i32.const 0))",
        "was stopped in `plan`: overflowed its stack",
    );
}

#[test]
fn a_trap_is_named() {
    assert_scheduler_contained(
        "divzero",
        "",
        "(i32.div_u (i32.const 1) (i32.sub (local.get $workers) (local.get $workers)))",
        "was stopped in `plan`: trapped: wasm trap: integer divide by zero",
    );
}

#[test]
fn a_panic_is_named() {
    assert_scheduler_contained(
        "panicky",
        "",
        "(unreachable)",
        "was stopped in `plan`: panicked",
    );
}

/// Stores a one-batch plan at 400 whose batch is the `n` strings at 200.
fn plan_of_strings_at_200(n: u32) -> String {
    format!(
        "(i32.store (i32.const 300) (i32.const 200)) (i32.store (i32.const 304) (i32.const {n}))
         (i32.store (i32.const 404) (i32.const 300)) (i32.store (i32.const 408) (i32.const 1))
         (i32.const 400)"
    )
}

#[test]
fn a_plan_with_an_unknown_id_is_rejected() {
    assert_scheduler_contained(
        "ghost",
        r#"(data (i32.const 100) "nope.py::test_ghost")"#,
        &format!(
            "(i32.store (i32.const 200) (i32.const 100)) (i32.store (i32.const 204) (i32.const 19))
             {}",
            plan_of_strings_at_200(1)
        ),
        "returned an invalid answer from `plan`: unknown test id `nope.py::test_ghost`",
    );
}

#[test]
fn a_plan_with_a_duplicate_is_rejected() {
    assert_scheduler_contained(
        "twice",
        "",
        &format!(
            "(i32.store (i32.const 200) (i32.load (local.get $tests)))
             (i32.store (i32.const 204) (i32.load offset=4 (local.get $tests)))
             (i32.store (i32.const 208) (i32.load (local.get $tests)))
             (i32.store (i32.const 212) (i32.load offset=4 (local.get $tests)))
             {}",
            plan_of_strings_at_200(2)
        ),
        "returned an invalid answer from `plan`: test `test_all_pass.py::test_one` appears more than once",
    );
}

#[test]
fn a_plan_missing_tests_is_rejected() {
    assert_scheduler_contained(
        "empty-plan",
        "",
        "(i32.const 400)",
        "returned an invalid answer from `plan`: 8 collected test(s) neither planned nor deselected",
    );
}

#[test]
fn a_100_mb_string_is_cut() {
    let p = project();
    let policy = build_scheduler(
        &p,
        "chatty",
        "",
        "(local $base i32)
         (local.set $base (i32.mul (memory.grow (i32.const 1600)) (i32.const 65536)))
         (memory.fill (local.get $base) (i32.const 65) (i32.const 104857600))
         (call $err (local.get $base) (i32.const 104857600))",
    );
    let (ran, took) = run_timed(&p, &["--policy", policy.to_str().unwrap()]);
    ran.assert_code(0);
    let out = ran.combined();
    assert!(
        out.contains("policy `chatty` returned an error from `plan`: AAAA"),
        "{}",
        ran.describe()
    );
    assert!(out.contains("more bytes cut]"), "{}", ran.describe());
    assert!(out.len() < 100_000, "the string was printed whole");
    assert_eq!(logged_results(&p), 8);
    assert!(took < MARGIN, "took {took:?}");
}

#[test]
fn wasi_gives_no_environment() {
    let p = project();
    let policy = guests::build(
        &p.dir.join("policies"),
        "snoop-env",
        "env-scheduler",
        "0.1.0",
        &scheduler(
            r#"(import "wasi:cli/environment@0.2.0" "get-environment" (func $env (param i32)))
               (data (i32.const 600) "saw no environment variables")"#,
            // Leaks the first variable's value as its error, if there is one.
            "(call $env (i32.const 500))
             (if (result i32) (i32.eqz (i32.load (i32.const 504)))
               (then (call $err (i32.const 600) (i32.const 28)))
               (else (call $err (i32.load offset=8 (i32.load (i32.const 500)))
                                (i32.load offset=12 (i32.load (i32.const 500))))))",
        ),
    );
    let mut cmd = std::process::Command::new(crate::support::runner_bin());
    cmd.args(["--policy", policy.to_str().unwrap()])
        .env("RUNNER_TEST_SECRET", "hunter2")
        .env("AWS_SECRET_ACCESS_KEY", "hunter2");
    crate::support::require_python();
    let ran = crate::support::run(cmd, &p.dir);
    ran.assert_code(0);
    let out = ran.combined();
    assert!(
        out.contains(
            "policy `snoop-env` returned an error from `plan`: saw no environment variables"
        ),
        "{}",
        ran.describe()
    );
    assert!(!out.contains("hunter2"), "{}", ran.describe());
    assert_eq!(logged_results(&p), 8);
}

#[test]
fn wasi_gives_no_directory_to_read_etc_passwd_from() {
    let p = project();
    let policy = guests::build(
        &p.dir.join("policies"),
        "snoop-fs",
        "fs-scheduler",
        "0.1.0",
        &scheduler(
            r#"(import "wasi:filesystem/preopens@0.2.0" "get-directories" (func $dirs (param i32)))
               (data (i32.const 600) "no preopened directory: /etc/passwd is out of reach")
               (data (i32.const 700) "LEAK: a directory is preopened")"#,
            "(call $dirs (i32.const 500))
             (if (result i32) (i32.eqz (i32.load (i32.const 504)))
               (then (call $err (i32.const 600) (i32.const 51)))
               (else (call $err (i32.const 700) (i32.const 30))))",
        ),
    );
    let ran = runner(&p.dir, &["--policy", policy.to_str().unwrap()]);
    ran.assert_code(0);
    assert!(
        ran.combined().contains(
            "policy `snoop-fs` returned an error from `plan`: no preopened directory: /etc/passwd is out of reach"
        ),
        "{}",
        ran.describe()
    );
    assert!(!ran.combined().contains("root:"), "{}", ran.describe());
    assert_eq!(logged_results(&p), 8);
}

/// A reporter whose every event tries to write `path`, and returns the
/// host's answer as its own.
fn escaping_reporter(p: &Project, name: &str, path: &str) -> PathBuf {
    guests::build(
        &p.dir.join("plugins"),
        name,
        "reporter",
        "0.1.0",
        &reporter(
            &format!(
                r#"(import "runner:policy/output@0.1.0" "write" (func $write (param i32 i32 i32 i32 i32)))
                   (data (i32.const 100) "{path}")"#
            ),
            &format!(
                "(call $write (i32.const 100) (i32.const {}) (i32.const 100) (i32.const 5) (i32.const 500))
                 (i32.const 500)",
                path.len()
            ),
        ),
    )
}

#[test]
fn failing_reporters_are_dropped_and_the_others_carry_on() {
    let p = project();
    let outside = p.dir.parent().unwrap().join("escaped.txt");
    let absolute = outside.to_str().unwrap().to_owned();
    escaping_reporter(&p, "escape-up", "../../../escaped.txt");
    escaping_reporter(&p, "escape-abs", &absolute);
    guests::build(
        &p.dir.join("plugins"),
        "stuck",
        "reporter",
        "0.1.0",
        &reporter("", "(loop $l (br $l)) (i32.const 0)"),
    );
    let (ran, took) = run_timed(&p, &["-n", "2", "--policy-deadline", DEADLINE]);
    ran.assert_code(1);
    let out = ran.combined();
    for expected in [
        "policy `escape-up` returned an error from `on-event`: refused path `../../../escaped.txt`",
        &format!(
            "policy `escape-abs` returned an error from `on-event`: refused path `{absolute}`"
        ),
        "policy `stuck` was stopped in `on-event`: exceeded its 1s deadline",
    ] {
        assert!(
            out.contains(expected),
            "missing {expected:?}\n{}",
            ran.describe()
        );
    }
    // Each failed once, then was dropped.
    assert_eq!(
        out.matches("policy `stuck`").count(),
        2,
        "{}",
        ran.describe()
    );
    assert!(!outside.exists());
    assert_eq!(
        closing_line(&ran.stdout).map(|c| c.0).as_deref(),
        Some("8 passed")
    );
    assert_eq!(logged_results(&p), 8);
    let junit = std::fs::read_to_string(p.dir.join(".runner/junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 8);
    assert!(took < Duration::from_secs(1) + MARGIN, "took {took:?}");
}

#[test]
fn a_failing_quarantine_policy_changes_nothing() {
    let p = project();
    let policy = guests::build(
        &p.dir.join("policies"),
        "q-spin",
        "quarantine",
        "0.1.0",
        &quarantine("(loop $l (br $l)) (i32.const 0)"),
    );
    let (ran, took) = run_timed(
        &p,
        &[
            "--policy-deadline",
            DEADLINE,
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    ran.assert_code(0);
    assert!(
        ran.combined().contains(
            "quarantine policy failed, no quarantine changes this run: policy `q-spin` was stopped in `decide`: exceeded its 1s deadline"
        ),
        "{}",
        ran.describe()
    );
    assert_eq!(logged_results(&p), 8);
    assert!(took < Duration::from_secs(1) + MARGIN, "took {took:?}");
}

/// Loading errors are usage errors (exit 4), named, before any test runs.
fn assert_refused(p: &Project, policy: &Path, expected: &str) {
    let ran = runner(&p.dir, &["--policy", policy.to_str().unwrap()]);
    ran.assert_code(4);
    assert!(
        ran.stderr.contains(expected),
        "missing {expected:?}\n{}",
        ran.describe()
    );
    assert!(
        !p.dir.join(".runner").exists(),
        "a test ran\n{}",
        ran.describe()
    );
}

#[test]
fn an_unknown_wit_version_is_refused() {
    let p = project();
    let policy = guests::build(
        &p.dir.join("policies"),
        "future",
        "scheduler",
        "0.2.0",
        &scheduler("", "(unreachable)"),
    );
    assert_refused(
        &p,
        &policy,
        "policy `future` targets runner:policy@0.2.0, which this runner does not support \
         (it supports runner:policy@0.1.x)",
    );
}

#[test]
fn files_that_are_not_policies_are_refused() {
    let p = project();
    let dir = p.dir.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    assert_refused(
        &p,
        &core,
        "policy `core`: it is a core WebAssembly module, not a component",
    );
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    assert_refused(&p, &text, "policy `notes`: it is not a WebAssembly file");
    let missing = dir.join("missing.wasm");
    assert_refused(&p, &missing, "failed to read policy");
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    assert_refused(
        &p,
        &empty,
        "policy `empty` fits no slot: it exports nothing",
    );
}

#[test]
fn a_bad_option_is_the_policys_own_error() {
    let p = project();
    let ran = runner(&p.dir, &["--policy-opt", "builtin:scheduler.colour=blue"]);
    ran.assert_code(4);
    assert!(
        ran.stderr.contains(
            "error: policy `builtin:scheduler` returned an error from `configure`: unknown option `colour`"
        ),
        "{}",
        ran.describe()
    );
    let ran = runner(&p.dir, &["--policy-opt", "nobody.x=1"]);
    ran.assert_code(4);
    assert!(
        ran.stderr
            .contains("--policy-opt nobody.x=1: no policy named `nobody` is loaded"),
        "{}",
        ran.describe()
    );
}

/// Writes a few of these components to `$RUNNER_HOSTILE_OUT`, to try by
/// hand: `RUNNER_HOSTILE_OUT=/tmp/h cargo test --test e2e -- --ignored write_hostile`.
#[test]
#[ignore]
fn write_hostile_components() {
    let Some(out) = std::env::var_os("RUNNER_HOSTILE_OUT") else {
        return;
    };
    let p = project();
    for (name, path) in [
        ("escape-up", "../../../escaped.txt"),
        ("escape-abs", "/tmp/escaped.txt"),
    ] {
        let built = escaping_reporter(&p, name, path);
        std::fs::copy(&built, Path::new(&out).join(format!("{name}.wasm"))).unwrap();
    }
    guests::build(
        Path::new(&out),
        "spin",
        "scheduler",
        "0.1.0",
        &scheduler("", "(loop $l (br $l)) (i32.const 0)"),
    );
    guests::build(
        Path::new(&out),
        "snoop-env",
        "env-scheduler",
        "0.1.0",
        &scheduler(
            r#"(import "wasi:cli/environment@0.2.0" "get-environment" (func $env (param i32)))"#,
            "(call $env (i32.const 500)) (i32.const 400)",
        ),
    );
}
