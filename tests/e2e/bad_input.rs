//! Bad input gets a clear error and loses nothing: a missing interpreter,
//! an interpreter without pytest, a broken conftest, a corrupt state file.

use crate::support::{copy_fixture, pytest, require_python, run, runner};

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
