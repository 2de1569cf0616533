//! Bad input gets a clear error and loses nothing: a missing interpreter,
//! an interpreter without pytest, a broken conftest, a corrupt state file,
//! a virtualenv without Python, durations out of range.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::support::{
    Ran, assert_no_leftovers, copy_fixture, pytest, read_log, require_python, run, runner,
    runner_bin, tag,
};

#[test]
fn a_missing_python_is_a_usage_error() {
    let p = copy_fixture("all_pass");
    let ran = runner(&p.dir, &["--python", "/no/such/python3"]);
    ran.assert_code(4);
    assert!(
        ran.stderr.contains("/no/such/python3"),
        "{}",
        ran.describe()
    );
}

#[test]
fn a_python_without_pytest_is_a_usage_error_with_a_hint() {
    let p = copy_fixture("all_pass");
    let venv = p.dir.join("bare-venv");
    let py = require_python();
    let mut cmd = std::process::Command::new(py);
    cmd.args(["-m", "venv", "--without-pip"]).arg(&venv);
    run(cmd, &p.dir).assert_code(0);
    let bare = venv.join("bin/python");
    let ran = runner(&p.dir, &["--python", bare.to_str().unwrap()]);
    ran.assert_code(4);
    assert!(
        ran.stderr.contains("pytest is not installed"),
        "{}",
        ran.describe()
    );
    assert!(
        ran.stderr.contains("-m pip install pytest"),
        "the hint says how to fix it\n{}",
        ran.describe()
    );
}

#[test]
fn a_broken_conftest_fails_like_pytest_with_its_error() {
    let p = copy_fixture("all_pass");
    std::fs::write(
        p.dir.join("conftest.py"),
        "import no_such_module_for_runner\n",
    )
    .unwrap();
    let reference = pytest(&p.dir, &[]);
    let ran = runner(&p.dir, &[]);
    ran.assert_code(reference.code.expect("pytest exited"));
    assert!(
        ran.combined().contains("no_such_module_for_runner"),
        "{}",
        ran.describe()
    );
}

#[test]
fn a_corrupt_history_is_reported_and_the_run_goes_on() {
    let p = copy_fixture("all_pass");
    std::fs::create_dir_all(p.dir.join(".runner")).unwrap();
    std::fs::write(
        p.dir.join(".runner/history.json"),
        "{\"version\": 1, \"tests\": [garbage",
    )
    .unwrap();
    let ran = runner(&p.dir, &["-n", "2"]);
    ran.assert_code(0);
    assert!(ran.stderr.contains("corrupt"), "{}", ran.describe());
    // The next run finds a good file again.
    let again = runner(&p.dir, &["-n", "2"]);
    again.assert_code(0);
    assert!(!again.stderr.contains("corrupt"), "{}", again.describe());
}

/// runner in `dir` with `env` set, tagged to find leftovers; its wall time.
fn runner_with_env(dir: &Path, tag: &str, args: &[&str], env: &[(&str, &OsStr)]) -> (Ran, f64) {
    require_python();
    let mut cmd = Command::new(runner_bin());
    cmd.args(args)
        .env("RUNNER_E2E_TAG", tag)
        .envs(env.iter().copied());
    let started = Instant::now();
    let ran = run(cmd, dir);
    (ran, started.elapsed().as_secs_f64())
}

#[test]
fn a_virtualenv_without_python_is_named_with_the_python_used_instead() {
    let p = copy_fixture("all_pass");
    let gone = p.dir.join("deleted-venv");
    let empty = p.dir.join("empty-venv");
    std::fs::create_dir_all(&empty).unwrap();
    // The usual way it happens: the interpreter a venv links to was removed.
    let dangling = p.dir.join("dangling-venv");
    std::fs::create_dir_all(dangling.join("bin")).unwrap();
    std::os::unix::fs::symlink("/no/such/python3.99", dangling.join("bin/python")).unwrap();
    let cases = [
        (&gone, "that directory does not exist"),
        (&empty, "it has no Python at"),
        (&dangling, "it has no Python at"),
    ];
    for (venv, why) in cases {
        let tag = tag();
        let log = p.dir.join("run.jsonl");
        let (ran, secs) = runner_with_env(
            &p.dir,
            &tag,
            &["-n", "2", "--run-log", log.to_str().unwrap()],
            &[("VIRTUAL_ENV", venv.as_os_str())],
        );
        ran.assert_code(0);
        let warning = format!("warning: VIRTUAL_ENV is {}, but {why}", venv.display());
        assert!(ran.stderr.contains(&warning), "{}", ran.describe());
        assert!(
            ran.stderr.contains("from PATH instead") && ran.stderr.contains("python3"),
            "the warning names the Python used\n{}",
            ran.describe()
        );
        let (results, _) = read_log(&log);
        assert_eq!(results.len(), 8, "{}", ran.describe());
        assert!(results.values().all(|r| r.outcome == "passed"));
        assert!(secs < 60.0, "took {secs:.1}s");
        assert_no_leftovers(&tag);
    }
    // --python wins over the virtualenv, which is then not looked at.
    let tag = tag();
    let (ran, _) = runner_with_env(
        &p.dir,
        &tag,
        &["-n", "1", "--python", "python3"],
        &[("VIRTUAL_ENV", gone.as_os_str())],
    );
    ran.assert_code(0);
    assert!(!ran.stderr.contains("VIRTUAL_ENV"), "{}", ran.describe());
    assert_no_leftovers(&tag);
}

/// Durations that are not a positive number of seconds runner can measure.
const BAD_SECS: &[&str] = &["-1", "0", "-0.0", "nan", "inf", "-inf", "1e300", "1e10"];
const SECS_KEYS: &[&str] = &["timeout", "slow", "global-timeout", "policy-deadline"];

/// Runs runner expecting a usage error before anything starts: exit 4, a
/// message containing each of `needles`, no run recorded, nothing left.
fn assert_refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let tag = tag();
    let (ran, secs) = runner_with_env(dir, &tag, args, &[]);
    ran.assert_code(4);
    for needle in needles {
        assert!(
            ran.stderr.contains(needle),
            "no {needle:?}\n{}",
            ran.describe()
        );
    }
    assert!(
        !dir.join(".runner").exists(),
        "nothing may run\n{}",
        ran.describe()
    );
    assert!(secs < 10.0, "took {secs:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn durations_out_of_range_are_usage_errors_on_the_command_line() {
    let p = copy_fixture("all_pass");
    for key in SECS_KEYS {
        for value in BAD_SECS {
            let flag = format!("--{key}={value}");
            assert_refused(
                &p.dir,
                &[&flag],
                &[&format!("--{key}"), "expected a positive number of seconds"],
            );
        }
        assert_refused(&p.dir, &[&format!("--{key}=soon")], &["\"soon\""]);
    }
}

#[test]
fn durations_out_of_range_are_usage_errors_in_the_config_file() {
    let p = copy_fixture("all_pass");
    for key in SECS_KEYS {
        for value in BAD_SECS {
            let line = format!("{key} = {value}");
            std::fs::write(p.dir.join("runner.toml"), format!("workers = 1\n{line}\n")).unwrap();
            assert_refused(
                &p.dir,
                &[],
                &[
                    "runner.toml",
                    "line 2",
                    &line,
                    "expected a positive number of seconds",
                ],
            );
            std::fs::remove_file(p.dir.join("runner.toml")).unwrap();
            std::fs::write(
                p.dir.join("pyproject.toml"),
                format!("[project]\nname = 'x'\n\n[tool.runner]\n{line}\n"),
            )
            .unwrap();
            assert_refused(
                &p.dir,
                &[],
                &[
                    "pyproject.toml",
                    "line 5",
                    &line,
                    "expected a positive number of seconds",
                ],
            );
            std::fs::remove_file(p.dir.join("pyproject.toml")).unwrap();
        }
    }
    // The other numbers have their command line's bounds too.
    for (line, needle) in [
        ("workers = -1", "expected a number of workers"),
        ("workers = 'many'", "`auto`"),
        ("policy-memory-mib = 0", "expected 1 to 4096 MiB"),
        ("policy-memory-mib = 4097", "expected 1 to 4096 MiB"),
        ("max-worker-restart = -1", "max-worker-restart"),
        (
            "[policy]\nby-file = 3",
            "expected a table of options ([policy.by-file]",
        ),
    ] {
        std::fs::write(p.dir.join("runner.toml"), format!("{line}\n")).unwrap();
        assert_refused(&p.dir, &[], &["runner.toml", needle]);
    }
    // In range, as an integer or a float, the run goes on.
    std::fs::write(
        p.dir.join("runner.toml"),
        "timeout = 30\nslow = 0.5\nglobal-timeout = 1e9\n",
    )
    .unwrap();
    let tag = tag();
    let log = p.dir.join("run.jsonl");
    let (ran, secs) = runner_with_env(&p.dir, &tag, &["--run-log", log.to_str().unwrap()], &[]);
    ran.assert_code(0);
    assert_eq!(read_log(&log).0.len(), 8, "{}", ran.describe());
    assert!(secs < 60.0, "took {secs:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn timeouts_from_pytest_that_could_never_fire_are_no_timeouts() {
    // A timeout marker or ini value of zero, below zero or beyond what a
    // clock can count used to panic runner when the test started.
    let p = copy_fixture("all_pass");
    std::fs::write(
        p.dir.join("test_marks.py"),
        "import pytest\n\n\
         @pytest.mark.timeout(1e300)\ndef test_huge():\n    pass\n\n\
         @pytest.mark.timeout(-1)\ndef test_negative():\n    pass\n\n\
         @pytest.mark.timeout(0)\ndef test_zero():\n    pass\n\n\
         @pytest.mark.timeout(float('inf'))\ndef test_inf():\n    pass\n\n\
         @pytest.mark.timeout(float('nan'))\ndef test_nan():\n    pass\n\n\
         @pytest.mark.timeout(10**400)\ndef test_overflow():\n    pass\n",
    )
    .unwrap();
    for ini in [
        "runner_timeout=1e12",
        "runner_timeout=-5",
        "runner_timeout=0",
        "runner_timeout=inf",
        "runner_timeout=nan",
    ] {
        let tag = tag();
        let log = p.dir.join("run.jsonl");
        let (ran, secs) = runner_with_env(
            &p.dir,
            &tag,
            &[
                "-n",
                "2",
                "--run-log",
                log.to_str().unwrap(),
                "--",
                "-o",
                ini,
            ],
            &[],
        );
        ran.assert_code(0);
        let (results, _) = read_log(&log);
        assert_eq!(results.len(), 14, "{}", ran.describe());
        assert!(results.values().all(|r| r.outcome == "passed"));
        assert!(secs < 60.0, "took {secs:.1}s");
        assert_no_leftovers(&tag);
    }
}
