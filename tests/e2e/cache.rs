//! pytest's cache: a runner run leaves the same "last failed" set as a
//! plain pytest run, so `--lf` and `--ff` work after either.

use crate::support::{copy_fixture, pytest, read_log, runner};

fn last_failed(dir: &std::path::Path) -> Vec<String> {
    let path = dir.join(".pytest_cache/v/cache/lastfailed");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<String> = map.keys().cloned().collect();
    ids.sort();
    ids
}

#[test]
fn last_failed_matches_pytest() {
    let by_pytest = copy_fixture("fidelity");
    // support::pytest disables the cacheprovider; turn it back on.
    pytest(
        &by_pytest.dir,
        &["-p", "cacheprovider", "--doctest-modules"],
    )
    .assert_code(1);
    let by_runner = copy_fixture("fidelity");
    runner(&by_runner.dir, &["-n", "2", "--", "--doctest-modules"]).assert_code(1);
    let expected = last_failed(&by_pytest.dir);
    assert!(
        expected.len() > 10,
        "the fixture has failures: {expected:?}"
    );
    assert_eq!(last_failed(&by_runner.dir), expected);

    // And --lf then runs exactly those.
    let log = by_runner.dir.join("rerun.jsonl");
    let args = [
        "-n",
        "2",
        "--run-log",
        log.to_str().unwrap(),
        "--",
        "--doctest-modules",
        "--lf",
    ];
    let rerun = runner(&by_runner.dir, &args);
    rerun.assert_code(1);
    let mut rerun_ids: Vec<String> = read_log(&log).0.into_keys().collect();
    rerun_ids.sort();
    assert_eq!(
        rerun_ids,
        expected,
        "--lf reruns the last failures\n{}",
        rerun.describe()
    );
}
