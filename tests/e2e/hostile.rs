//! Hostile policies: each is built from WAT at test time and loaded with
//! `--policy` (or from the project's plugins/ directory) on a real suite.
//! Each must be contained with an error that names it (escaped), the run
//! must end within its bound (the policy deadline or budget plus a
//! margin), every test result must still be reported, and no process of
//! the run may be left. A policy that can't be loaded (a bad name, a
//! component too costly to compile) is refused before any test runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::guests::{
    self, CLOCK, SCAFFOLD, STDIO, quarantine, quarantine_with, reporter, scheduler,
};
use crate::support::{
    Project, Ran, assert_no_leftovers, closing_line, copy_fixture, require_python, runner,
    runner_tagged, tag,
};

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

/// Runs runner in the project and checks that no process of the run is
/// left afterwards; returns what it did and how long it took.
fn run_timed(p: &Project, args: &[&str]) -> (Ran, Duration) {
    require_python();
    let tag = tag();
    let (ran, took) = runner_tagged(&p.dir, &tag, args);
    assert_no_leftovers(&tag);
    (ran, Duration::from_secs_f64(took))
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
        .filter(|l| l.contains(r#""type":"test-finished""#))
        .count()
}

/// Runs the suite with a hostile scheduler and checks the run fell back to
/// the default scheduler, named the plugin and `cause`, and lost nothing.
fn assert_scheduler_contained(name: &str, extra: &str, body: &str, cause: &str) {
    assert_contained(name, "scheduler", &scheduler(extra, body), cause);
}

/// The same for a scheduler of `world` made of `wat`.
fn assert_contained(name: &str, world: &str, wat: &str, cause: &str) {
    let p = project();
    let policy = guests::build(&p.dir.join("policies"), name, world, "0.1.0", wat);
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
    // A device that never ends is read up to the size bound, not forever.
    assert_refused(
        &p,
        Path::new("/dev/zero"),
        "policy `zero`: /dev/zero is larger than the 100 MiB a policy may be",
    );
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

/// The JUnit report the default reporter wrote: every test must be in it.
fn junit_cases(p: &Project) -> usize {
    let junit = std::fs::read_to_string(p.dir.join(".runner/junit.xml")).unwrap();
    junit.matches("<testcase ").count()
}

#[test]
fn a_reporter_printing_to_wasi_stdout_and_stderr_is_logged() {
    let p = project();
    guests::build(
        &p.dir.join("plugins"),
        "printer",
        "stdio-reporter",
        "0.1.0",
        &reporter(
            &format!(r#"{STDIO} (data (i32.const 100) "event seen by the guest\n")"#),
            "(call $print (i32.const 0) (i32.const 100) (i32.const 24))
             (call $print (i32.const 1) (i32.const 100) (i32.const 24))
             (i32.const 16)",
        ),
    );
    let (ran, took) = run_timed(&p, &["-n", "2", "--policy-deadline", DEADLINE]);
    ran.assert_code(0);
    let out = ran.combined();
    // run-started, 8 test-finished, run-finished.
    for stream in ["stdout", "stderr"] {
        let line = format!("[printer] {stream}: event seen by the guest");
        assert_eq!(out.matches(&line).count(), 10, "{line}\n{}", ran.describe());
    }
    assert_eq!(
        closing_line(&ran.stdout).map(|c| c.0).as_deref(),
        Some("8 passed")
    );
    assert_eq!(logged_results(&p), 8);
    assert_eq!(junit_cases(&p), 8);
    assert!(took < MARGIN, "took {took:?}");
}

#[test]
fn a_scheduler_waiting_an_hour_on_a_pollable_is_stopped_at_the_deadline() {
    assert_contained(
        "sleeper",
        "clock-scheduler",
        &scheduler(
            CLOCK,
            "(call $sleep (i64.const 3600000000000)) (i32.const 0)",
        ),
        "was stopped in `plan`: exceeded its 1s deadline",
    );
}

#[test]
fn a_reporter_or_quarantine_waiting_on_a_pollable_is_stopped_at_the_deadline() {
    let p = project();
    guests::build(
        &p.dir.join("plugins"),
        "sleepy",
        "clock-reporter",
        "0.1.0",
        &reporter(
            CLOCK,
            "(call $sleep (i64.const 3600000000000)) (i32.const 16)",
        ),
    );
    guests::build(
        &p.dir.join("plugins"),
        "q-sleepy",
        "clock-quarantine",
        "0.1.0",
        &quarantine_with(
            CLOCK,
            "(call $sleep (i64.const 3600000000000)) (i32.const 0)",
        ),
    );
    let (ran, took) = run_timed(&p, &["-n", "2", "--policy-deadline", DEADLINE]);
    ran.assert_code(1);
    let out = ran.combined();
    for expected in [
        "policy `sleepy` was stopped in `on-event`: exceeded its 1s deadline",
        "quarantine policy failed, no quarantine changes this run: \
         policy `q-sleepy` was stopped in `decide`: exceeded its 1s deadline",
    ] {
        assert!(
            out.contains(expected),
            "missing {expected:?}\n{}",
            ran.describe()
        );
    }
    assert_eq!(
        out.matches("policy `sleepy`").count(),
        2,
        "{}",
        ran.describe()
    );
    assert_eq!(
        closing_line(&ran.stdout).map(|c| c.0).as_deref(),
        Some("8 passed")
    );
    assert_eq!(logged_results(&p), 8);
    assert_eq!(junit_cases(&p), 8);
    assert!(took < Duration::from_secs(2) + MARGIN, "took {took:?}");
}

#[test]
fn a_policy_just_under_its_deadline_on_every_call_is_dropped_at_its_run_budget() {
    let p = project();
    // 0.8 s of each call (deadline 2 s), spinning in wasm or waiting in the
    // host, after counting the call in a file: ten events would add 8 s per
    // reporter; the budget (1.2 s, from the config file) stops each in its
    // second call.
    let count = r#"(import "runner:policy/output@0.1.0" "append" (func $append (param i32 i32 i32 i32 i32)))
                   (data (i32.const 100) "calls")"#;
    let counted = "(call $append (i32.const 100) (i32.const 5) (i32.const 100) (i32.const 1) (i32.const 500))";
    for (name, wait) in [
        ("spinner", "(call $spin (i64.const 800000000))"),
        ("napper", "(call $sleep (i64.const 800000000))"),
    ] {
        guests::build(
            &p.dir.join("plugins"),
            name,
            "clock-reporter",
            "0.1.0",
            &reporter(
                &format!("{count} {CLOCK}"),
                &format!("{counted} {wait} (i32.const 16)"),
            ),
        );
    }
    std::fs::write(p.dir.join("runner.toml"), "policy-budget = 1.2\n").unwrap();
    let (ran, took) = run_timed(&p, &["-n", "2", "--policy-deadline", "2"]);
    ran.assert_code(1);
    let out = ran.combined();
    for name in ["spinner", "napper"] {
        let expected = format!(
            "policy `{name}` was stopped in `on-event`: used up its time budget of 1.2s for the run"
        );
        assert!(
            out.contains(&expected),
            "missing {expected:?}\n{}",
            ran.describe()
        );
        let calls = std::fs::read(p.dir.join(format!(".runner/reports/{name}/calls"))).unwrap();
        assert_eq!(
            calls.len(),
            2,
            "{name} was called after its budget was spent"
        );
    }
    assert_eq!(
        closing_line(&ran.stdout).map(|c| c.0).as_deref(),
        Some("8 passed")
    );
    assert_eq!(logged_results(&p), 8);
    assert_eq!(junit_cases(&p), 8);
    // At most 1.2 s per reporter, against 16 s without a budget.
    assert!(took < Duration::from_secs(3) + MARGIN, "took {took:?}");
}

/// A scheduler with eight memories besides its own, each grown by `pages`,
/// and `table_elements` more in a table; returns an error if all of that
/// was allowed.
fn many_memories(pages: u32, table_elements: u32) -> String {
    let memories: String = (1..=8).map(|i| format!("(memory $m{i} 0)\n")).collect();
    let grows: String = (1..=8)
        .map(|i| format!("(drop (memory.grow $m{i} (i32.const {pages})))\n"))
        .collect();
    format!(
        r#"(module
  {SCAFFOLD}
  {memories}
  (table $t 0 funcref)
  (data (i32.const 600) "every memory and table grew")
  (func (export "plan") (param i32 i32 i32 i32 i32) (result i32)
    {grows}
    (drop (table.grow $t (ref.null func) (i32.const {table_elements})))
    (call $err (i32.const 600) (i32.const 27))))"#
    )
}

#[test]
fn all_memories_of_a_policy_share_one_limit() {
    // 8 × 100 MiB: each memory is well under 256 MiB, together they are not.
    assert_contained(
        "octopus",
        "scheduler",
        &many_memories(1600, 0),
        "was stopped in `plan`: exceeded its memory limit of 256 MiB (all its memories and tables together)",
    );
}

#[test]
fn tables_count_against_the_same_limit_as_memories() {
    // 8 × 25 MiB of memory and 10M table elements (80 MiB).
    assert_contained(
        "tabular",
        "scheduler",
        &many_memories(400, 10_000_000),
        "was stopped in `plan`: exceeded its memory limit of 256 MiB (all its memories and tables together)",
    );
}

/// A reporter that writes a forged report to `junit.xml` in its output
/// directory on every event.
fn forging_reporter(dir: &Path, name: &str) -> PathBuf {
    guests::build(
        dir,
        name,
        "reporter",
        "0.1.0",
        &reporter(
            r#"(import "runner:policy/output@0.1.0" "write" (func $write (param i32 i32 i32 i32 i32)))
               (data (i32.const 100) "junit.xml")
               (data (i32.const 200) "<testsuites>FORGED: ALL PASSED</testsuites>")"#,
            "(call $write (i32.const 100) (i32.const 9) (i32.const 200) (i32.const 44) (i32.const 500))
             (i32.const 500)",
        ),
    )
}

/// Moves `built` to `name` beside it.
fn rename(built: &Path, name: &str) -> PathBuf {
    let to = built.with_file_name(name);
    std::fs::rename(built, &to).unwrap();
    to
}

#[test]
fn policy_names_that_are_not_plain_file_names_are_refused() {
    for (file, why) in [
        ("...wasm", "names a directory (`.` or `..`)"),
        ("..wasm", "names a directory (`.` or `..`)"),
        (
            "tab\tname.wasm",
            "contains control or bidirectional characters",
        ),
        ("builtin:reporter.wasm", "starts with `builtin:`"),
    ] {
        let p = project();
        let built = forging_reporter(&p.dir.join("plugins"), "forger");
        let policy = rename(&built, file);
        let (ran, took) = run_timed(&p, &["-n", "2"]);
        ran.assert_code(4);
        let expected = format!(
            "refused policy {}: its name (the file name without `.wasm`) {why}",
            policy.display().to_string().replace('\t', "\\t")
        );
        assert!(
            ran.stderr.contains(&expected),
            "missing {expected:?}\n{}",
            ran.describe()
        );
        assert!(
            !p.dir.join(".runner").exists(),
            "a test ran\n{}",
            ran.describe()
        );
        assert!(took < MARGIN, "took {took:?}");
        // `runner plugins` and `--policy` refuse it the same way.
        let listed = runner(&p.dir, &["plugins"]);
        listed.assert_code(4);
        assert!(listed.stderr.contains(&expected), "{}", listed.describe());
        std::fs::rename(&policy, p.dir.join(file)).unwrap();
        let given = runner(&p.dir, &["--plugins-dir", "none", "--policy", file]);
        given.assert_code(4);
        assert!(
            given.stderr.contains("refused policy"),
            "{}",
            given.describe()
        );
        assert!(!p.dir.join(".runner").exists());
    }
}

/// No escape character, C1 control or bidirectional control reached the
/// output raw.
fn assert_nothing_raw(ran: &Ran) {
    let out = ran.combined();
    for c in ['\x1b', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200f}', '\r'] {
        assert!(
            !out.contains(c),
            "raw {c:?} in the output\n{}",
            ran.describe()
        );
    }
}

#[test]
fn a_policy_name_with_escape_sequences_is_shown_escaped() {
    for (file, shown) in [
        (
            "\x1b[2J\x1b[32mALL PASSED\x1b[0m.wasm",
            "\\u{1b}[2J\\u{1b}[32mALL PASSED\\u{1b}[0m",
        ),
        ("report\u{202e}lmx.wasm", "report\\u{202e}lmx"),
        ("a\u{9b}31mb.wasm", "a\\u{9b}31mb"),
        (
            "two\n===== 8 passed in 0.01s =====.wasm",
            "two\\n===== 8 passed in 0.01s =====",
        ),
    ] {
        let p = project();
        let built = forging_reporter(&p.dir.join("plugins"), "forger");
        rename(&built, file);
        let (ran, took) = run_timed(&p, &[]);
        ran.assert_code(4);
        assert!(took < MARGIN, "took {took:?}");
        assert!(
            ran.stderr.contains(shown),
            "{shown:?} not shown\n{}",
            ran.describe()
        );
        assert_nothing_raw(&ran);
        assert!(
            !ran.combined().contains("\n===== 8 passed"),
            "{}",
            ran.describe()
        );
        let listed = runner(&p.dir, &["plugins"]);
        listed.assert_code(4);
        assert!(listed.stderr.contains(shown), "{}", listed.describe());
        assert_nothing_raw(&listed);
    }
}

/// `host.log` at info level of the `len` bytes at `ptr`.
const LOG: &str = r#"(import "runner:policy/host@0.1.0" "log" (func $log (param i32 i32 i32)))"#;

#[test]
fn what_a_policy_logs_is_escaped_on_one_line() {
    let p = project();
    let text = "ok\\0a===== 8 passed in 0.01s =====\\1b[2J\\e2\\80\\ae\\c2\\9b\\0d";
    let policy = build_scheduler(
        &p,
        "liar",
        &format!(r#"{LOG} (data (i32.const 100) "{text}")"#),
        "(call $log (i32.const 2) (i32.const 100) (i32.const 42)) (unreachable)",
    );
    let (ran, took) = run_timed(&p, &["-n", "2", "--policy", policy.to_str().unwrap()]);
    ran.assert_code(0);
    assert!(
        ran.stderr.contains(
            "[liar] info: ok\\n===== 8 passed in 0.01s =====\\u{1b}[2J\\u{202e}\\u{9b}\\r\n"
        ),
        "{}",
        ran.describe()
    );
    assert_nothing_raw(&ran);
    assert_eq!(logged_results(&p), 8);
    assert!(took < MARGIN, "took {took:?}");
}

#[test]
fn plugin_output_is_cut_after_escaping_and_bounded_per_run() {
    let p = project();
    // 2000 log lines of 4 KiB of escape characters each: 24 KiB per line
    // once escaped, 48 MiB in all if nothing bounded them.
    let policy = build_scheduler(
        &p,
        "flood",
        LOG,
        "(local $i i32)
         (memory.fill (i32.const 2048) (i32.const 27) (i32.const 4096))
         (loop $l
           (call $log (i32.const 2) (i32.const 2048) (i32.const 4096))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))
         (unreachable)",
    );
    let (ran, took) = run_timed(&p, &["-n", "2", "--policy", policy.to_str().unwrap()]);
    ran.assert_code(0);
    let lines: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.starts_with("[flood]"))
        .collect();
    assert!(lines.len() > 100, "{} lines", lines.len());
    assert!(
        lines.iter().all(|l| l.len() <= 4096 + 64),
        "a line over 4 KiB"
    );
    let total: usize = lines.iter().map(|l| l.len() + 1).sum();
    assert!(total <= (1 << 20) + 8192, "{total} bytes shown");
    assert!(
        ran.stderr
            .contains("[flood] warning: more than 1024 KiB of log output; the rest is dropped"),
        "{}",
        &ran.stderr[ran.stderr.len().saturating_sub(2000)..]
    );
    assert_nothing_raw(&ran);
    assert_eq!(logged_results(&p), 8);
    assert!(took < MARGIN, "took {took:?}");
}

#[test]
fn a_reporter_creating_tens_of_thousands_of_empty_files_is_stopped() {
    let p = project();
    // On the first event, appends nothing to 30,000 files named by four
    // letters, and returns the host's first refusal as its own error.
    guests::build(
        &p.dir.join("plugins"),
        "inodes",
        "reporter",
        "0.1.0",
        &reporter(
            r#"(import "runner:policy/output@0.1.0" "append" (func $append (param i32 i32 i32 i32 i32)))"#,
            "(local $i i32) (local $n i32) (local $k i32)
             (loop $files
               (local.set $n (local.get $i))
               (local.set $k (i32.const 0))
               (loop $letters
                 (i32.store8 (i32.add (i32.const 100) (local.get $k))
                   (i32.add (i32.const 97) (i32.rem_u (local.get $n) (i32.const 26))))
                 (local.set $n (i32.div_u (local.get $n) (i32.const 26)))
                 (local.set $k (i32.add (local.get $k) (i32.const 1)))
                 (br_if $letters (i32.lt_u (local.get $k) (i32.const 4))))
               (call $append (i32.const 100) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 500))
               (if (i32.load8_u (i32.const 500)) (then (return (i32.const 500))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $files (i32.lt_u (local.get $i) (i32.const 30000))))
             (i32.const 16)",
        ),
    );
    // Creating 10,000 files takes 13 s on the development machine's disk
    // (1.3 ms each, in Python too): this is about the count, not the time.
    let (ran, took) = run_timed(
        &p,
        &[
            "-n",
            "2",
            "--policy-deadline",
            "100",
            "--policy-budget",
            "100",
        ],
    );
    ran.assert_code(1);
    assert!(
        ran.combined()
            .contains("policy `inodes` returned an error from `on-event`: refused to write `")
            && ran
                .combined()
                .contains("a reporter may create at most 10000 files and directories in a run"),
        "{}",
        ran.describe()
    );
    let made = std::fs::read_dir(p.dir.join(".runner/reports/inodes"))
        .unwrap()
        .count();
    assert_eq!(made, 10_000);
    assert_eq!(logged_results(&p), 8);
    assert_eq!(junit_cases(&p), 8);
    // 30,000 files would take three times as long.
    assert!(took < Duration::from_secs(60) + MARGIN, "took {took:?}");
}

/// A scheduler whose code is one function of `adds` additions in a row:
/// small as a file, huge for a compiler (about 200 bytes of compiler
/// memory per byte of code).
fn compile_bomb(adds: usize) -> String {
    let mut body = String::with_capacity(adds * 20);
    for _ in 0..adds {
        body.push_str("local.get 0 i32.add\n");
    }
    format!(
        r#"(module
  {SCAFFOLD}
  (func $big (param i32) (result i32) local.get 0 {body})
  (func (export "plan") (param i32 i32 i32 i32 i32) (result i32)
    (drop (call $big (local.get 0)))
    (i32.const 0)))"#
    )
}

#[test]
fn compiling_a_policy_is_bounded_in_memory() {
    let p = project();
    // A cache of its own: a compiled artifact, once made, is trusted.
    let tmp = tempfile::tempdir().unwrap();
    let (cache, state) = (tmp.path().join("cache"), tmp.path().join("state"));
    // 6 MB of code that takes over 1.2 GB to compile.
    let policy = guests::build(
        &p.dir.join("policies"),
        "bomb",
        "scheduler",
        "0.1.0",
        &compile_bomb(2_000_000),
    );
    let policy = policy.to_str().unwrap();
    let refusal = "failed to compile policy `bomb`: compiling it needs more than the 1024 MiB \
                   of memory a policy may take to compile (4 times --policy-memory, at least 1024 MiB)";
    for args in [
        &["plugins", "--policy", policy][..],
        &["-n", "2", "--policy", policy],
    ] {
        let (ran, took) = run_cached(&p, &cache, &state, args);
        ran.assert_code(4);
        assert!(ran.stderr.contains(refusal), "{}", ran.describe());
        assert!(
            !p.dir.join(".runner").exists(),
            "a test ran\n{}",
            ran.describe()
        );
        assert!(took < Duration::from_secs(60), "took {took:?}");
    }
    // Given the memory, it compiles and the run goes on with the default
    // scheduler (this one returns a plan of nothing).
    let (ran, _) = run_cached(
        &p,
        &cache,
        &state,
        &["-n", "2", "--policy-memory", "1024", "--policy", policy],
    );
    ran.assert_code(0);
    assert!(
        ran.combined().contains(
            "scheduler failed, the default scheduler plans this run instead: policy `bomb`"
        ),
        "{}",
        ran.describe()
    );
    assert_eq!(logged_results(&p), 8);
}

/// Runs runner in the project with the compiled-policy cache in `cache`
/// and its key under `state`; checks no process is left.
fn run_cached(p: &Project, cache: &Path, state: &Path, args: &[&str]) -> (Ran, Duration) {
    require_python();
    let tag = tag();
    let mut cmd = std::process::Command::new(crate::support::runner_bin());
    cmd.args(args)
        .env("RUNNER_CACHE_DIR", cache)
        .env("XDG_STATE_HOME", state)
        .env("RUNNER_E2E_TAG", &tag);
    let started = std::time::Instant::now();
    let ran = crate::support::run(cmd, &p.dir);
    let took = started.elapsed();
    assert_no_leftovers(&tag);
    (ran, took)
}

fn cache_entries(cache: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    entries.sort();
    entries
}

#[test]
fn a_damaged_or_foreign_compiled_policy_is_compiled_again() {
    let p = project();
    let tmp = tempfile::tempdir().unwrap();
    let (cache, state, elsewhere) = (
        tmp.path().join("cache"),
        tmp.path().join("state"),
        tmp.path().join("other-machine"),
    );
    guests::build(
        &p.dir.join("plugins"),
        "quiet",
        "reporter",
        "0.1.0",
        &reporter("", "(i32.const 16)"),
    );
    let passed = |ran: &Ran| {
        ran.assert_code(0);
        assert_eq!(
            closing_line(&ran.stdout).map(|c| c.0).as_deref(),
            Some("8 passed"),
            "{}",
            ran.describe()
        );
    };
    let (ran, _) = run_cached(&p, &cache, &state, &["-n", "2"]);
    passed(&ran);
    assert!(!ran.stderr.contains("recompiling"), "{}", ran.describe());
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 4, "three defaults and `quiet`");

    // Code bytes overwritten with int3 (what a bad disk, a truncated CI
    // cache restore or another tool may leave): never executed.
    for entry in &entries {
        let mut bytes = std::fs::read(entry).unwrap();
        let n = bytes.len();
        bytes[n / 3..2 * n / 3].fill(0xCC);
        std::fs::write(entry, bytes).unwrap();
    }
    let (ran, took) = run_cached(&p, &cache, &state, &["-n", "2"]);
    passed(&ran);
    for name in [
        "builtin:scheduler",
        "builtin:reporter",
        "builtin:quarantine",
        "quiet",
    ] {
        let warning = format!("runner: warning: recompiling policy `{name}`: its cached artifact");
        assert!(
            ran.stderr.contains(&warning),
            "{warning}\n{}",
            ran.describe()
        );
    }
    assert!(
        ran.stderr
            .contains("is unusable: it is damaged or was not written by this user's runner"),
        "{}",
        ran.describe()
    );
    assert_eq!(logged_results(&p), 8);
    assert!(took < MARGIN, "took {took:?}");
    // Rewritten: the next run trusts them again.
    let (ran, _) = run_cached(&p, &cache, &state, &["-n", "2"]);
    passed(&ran);
    assert!(!ran.stderr.contains("recompiling"), "{}", ran.describe());

    // The same cache with another user's key (a CI cache restored on a
    // fresh machine): nothing in it is trusted.
    let (ran, _) = run_cached(&p, &cache, &elsewhere, &["-n", "2"]);
    passed(&ran);
    assert_eq!(
        ran.stderr
            .matches("runner: warning: recompiling policy")
            .count(),
        4,
        "{}",
        ran.describe()
    );
}
