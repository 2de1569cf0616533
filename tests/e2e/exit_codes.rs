//! runner exits with pytest's exit codes.

use crate::support::{copy_fixture, pytest, runner};

#[test]
fn exit_0_when_all_pass() {
    let p = copy_fixture("all_pass");
    let ran = runner(&p.dir, &["-n", "2"]);
    ran.assert_code(0);
}

#[test]
fn exit_1_when_tests_fail() {
    let p = copy_fixture("fidelity");
    let ran = runner(&p.dir, &["-n", "2", "--", "--doctest-modules"]);
    ran.assert_code(1);
}

#[test]
fn exit_2_on_collection_error_naming_the_module() {
    let p = copy_fixture("collect_error");
    let reference = pytest(&p.dir, &[]);
    reference.assert_code(2);
    let ran = runner(&p.dir, &["-n", "2"]);
    ran.assert_code(2);
    let all = ran.combined();
    assert!(
        all.contains("test_broken_import.py"),
        "the failing module is not named\n{}",
        ran.describe()
    );
    assert!(
        all.contains("fails at import on purpose"),
        "the import error's message is not shown\n{}",
        ran.describe()
    );
}

#[test]
fn exit_4_on_unknown_runner_flag() {
    let p = copy_fixture("all_pass");
    let ran = runner(&p.dir, &["--no-such-flag"]);
    ran.assert_code(4);
    assert!(
        ran.combined().contains("--no-such-flag"),
        "the bad flag is not named\n{}",
        ran.describe()
    );
}

#[test]
fn exit_4_on_unknown_pytest_flag() {
    let p = copy_fixture("all_pass");
    let reference = pytest(&p.dir, &["--no-such-pytest-flag"]);
    reference.assert_code(4);
    let ran = runner(&p.dir, &["-n", "2", "--", "--no-such-pytest-flag"]);
    ran.assert_code(4);
    assert!(
        ran.combined().contains("--no-such-pytest-flag"),
        "pytest's usage error is not shown\n{}",
        ran.describe()
    );
}

#[test]
fn exit_5_when_no_tests_collected() {
    let p = copy_fixture("empty");
    let ran = runner(&p.dir, &["-n", "2"]);
    ran.assert_code(5);
}

#[test]
fn exit_5_when_everything_deselected() {
    let p = copy_fixture("all_pass");
    let reference = pytest(&p.dir, &["-k", "no_test_has_this_name"]);
    reference.assert_code(5);
    let ran = runner(&p.dir, &["-n", "2", "--", "-k", "no_test_has_this_name"]);
    ran.assert_code(5);
}
