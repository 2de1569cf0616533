//! The Python shim is a package written to the run directory and imported by
//! path: a project whose own modules share its modules' names imports its
//! own, under every import mode, and finds nothing of runner's on sys.path.

use crate::support::{
    assert_no_leftovers, closing_line, compare_outcomes, copy_fixture, read_log, runner_tagged, tag,
};

#[test]
fn project_modules_named_like_the_shims_default_import_mode() {
    compare_outcomes("shim_names", 2, &[]);
}

#[test]
fn project_modules_named_like_the_shims_importlib_mode() {
    compare_outcomes("shim_names", 2, &["--import-mode=importlib"]);
}

#[test]
fn project_modules_named_like_the_shims_append_mode() {
    compare_outcomes("shim_names", 1, &["--import-mode=append"]);
}

/// Without xdist, the shim's xdist_compat plugin provides `worker_id` and
/// `testrun_uid` (plain pytest would have neither).
#[test]
fn xdist_fixtures_without_xdist() {
    let project = copy_fixture("shim_names");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let (ran, elapsed) = runner_tagged(
        &project.dir,
        &tag,
        &[
            "-n",
            "2",
            "--run-log",
            log.to_str().unwrap(),
            "--",
            "-p",
            "no:xdist",
        ],
    );
    ran.assert_code(0);
    let (counts, _) = closing_line(&ran.stdout).expect("a closing line");
    assert_eq!(counts, "11 passed", "{}", ran.describe());
    let (results, _) = read_log(&log);
    assert_eq!(results.len(), 11, "{}", ran.describe());
    for id in [
        "tests/test_names.py::test_worker_id",
        "tests/test_names.py::test_testrun_uid",
    ] {
        assert_eq!(results[id].outcome, "passed", "{id}\n{}", ran.describe());
    }
    assert!(elapsed < 15.0, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}
