//! runner reports exactly what plain pytest reports, test by test
//! (tests/compare_outcomes.py does the comparing).

use crate::support::compare_outcomes;

#[test]
fn fidelity_suite_two_workers() {
    compare_outcomes("fidelity", 2, &["--doctest-modules"]);
}

#[test]
fn fidelity_suite_one_worker() {
    compare_outcomes("fidelity", 1, &["--doctest-modules"]);
}

#[test]
fn fidelity_suite_more_workers_than_cores() {
    compare_outcomes("fidelity", 5, &["--doctest-modules"]);
}

#[test]
fn fidelity_suite_quiet_and_report_chars() {
    compare_outcomes("fidelity", 2, &["--doctest-modules", "-q", "-rA"]);
}

#[test]
fn fidelity_keyword_selection() {
    compare_outcomes(
        "fidelity",
        2,
        &[
            "--doctest-modules",
            "-k",
            "login or math or (TestCounter and not fails)",
        ],
    );
}

#[test]
fn fidelity_marker_selection() {
    compare_outcomes(
        "fidelity",
        2,
        &["--doctest-modules", "-m", "smoke and not slow"],
    );
}

#[test]
fn fidelity_marker_added_by_hook() {
    // `auto` is added by conftest's pytest_collection_modifyitems.
    compare_outcomes("fidelity", 2, &["-m", "auto"]);
}

#[test]
fn fidelity_path_and_node_id_arguments() {
    compare_outcomes(
        "fidelity",
        2,
        &[
            "tests/pkg_a",
            "tests/test_outcomes.py::test_pass",
            "tests/test_params.py::test_awkward_ids",
        ],
    );
}

#[test]
fn fidelity_custom_option_and_plugin_blocking() {
    // A conftest-defined option given on the command line, and -p no:... parsing.
    compare_outcomes(
        "fidelity",
        2,
        &[
            "--fidelity-level",
            "1",
            "-p",
            "no:randomly",
            "tests/test_builtin_fixtures.py",
        ],
    );
}

#[test]
fn all_pass_suite() {
    compare_outcomes("all_pass", 2, &[]);
}
