//! Plugins that work in pytest's main process see every result: the
//! zygote replays the workers' reports through its own hooks. Each test
//! runs runner (two workers) and plain pytest the same way on copies of
//! the `plugins` fixture and compares what the plugin produced: pytest's
//! JUnit file, pytest-cov's report, pytest-split's durations, pytest-
//! randomly's seed and order, a conftest's terminal summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::support::{self, Ran, assert_no_leftovers, copy_fixture, repo_root, require_python};

/// A bound on each run, for a loaded machine (the suite takes ~0.5 s).
const WALL_LIMIT_SECS: f64 = 60.0;

/// `runner -n 2 -- ARGS` on a copy of the fixture, with `env`; checks the
/// exit code, the wall time and that no process is left.
fn runner(args: &[&str], env: &[(&str, &str)], code: i32) -> (Ran, PathBuf, support::Project) {
    let project = copy_fixture("plugins");
    let tag = support::tag();
    let mut cmd = Command::new(support::runner_bin());
    cmd.args(["-n", "2", "--"])
        .args(args)
        .env("RUNNER_E2E_TAG", &tag);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let started = Instant::now();
    let ran = support::run(cmd, &project.dir);
    let elapsed = started.elapsed().as_secs_f64();
    ran.assert_code(code);
    assert!(
        elapsed < WALL_LIMIT_SECS,
        "took {elapsed:.1}s\n{}",
        ran.describe()
    );
    assert_no_leftovers(&tag);
    let dir = project.dir.clone();
    (ran, dir, project)
}

/// Plain pytest with ARGS on a copy of its own.
fn pytest(args: &[&str], env: &[(&str, &str)], code: i32) -> (Ran, PathBuf, support::Project) {
    let project = copy_fixture("plugins");
    let mut cmd = Command::new(require_python());
    cmd.args(["-m", "pytest"]).args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let ran = support::run(cmd, &project.dir);
    ran.assert_code(code);
    let dir = project.dir.clone();
    (ran, dir, project)
}

/// Skips (with the reason on stderr) when `module` can't be imported: the
/// plugin is installed by scripts/setup.sh.
fn has_module(module: &str) -> bool {
    let found = Command::new(require_python())
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipped: {module} is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// The test cases of a JUnit XML file, read with junitparser: the result
/// of each (`passed`, or the element: `failure`, `skipped`, `error`) by
/// `classname.name`.
fn junit_cases(path: &Path) -> BTreeMap<String, String> {
    let script = r#"
import json, sys
from junitparser import JUnitXml
cases = {}
for suite in JUnitXml.fromfile(sys.argv[1]):
    for case in suite:
        kinds = [type(result).__name__.lower() for result in case.result]
        cases[f"{case.classname}.{case.name}"] = kinds[0] if kinds else "passed"
print(json.dumps(cases))
"#;
    let out = Command::new(require_python())
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pytests_junitxml_has_every_test_with_pytests_outcomes() {
    if !has_module("junitparser") {
        return;
    }
    let (ran, dir, _p) = runner(&["--junitxml=report.xml"], &[], 1);
    let (_, pytest_dir, _q) = pytest(&["--junitxml=report.xml"], &[], 1);
    let ours = junit_cases(&dir.join("report.xml"));
    let theirs = junit_cases(&pytest_dir.join("report.xml"));
    assert_eq!(ours.len(), 6, "{ours:?}\n{}", ran.describe());
    assert_eq!(ours, theirs);
    assert_eq!(
        ran.stdout.matches("generated xml file").count(),
        1,
        "{}",
        ran.describe()
    );
}

/// `TOTAL  12  2  83%`: the total line of coverage's report, spaces
/// squeezed.
fn coverage_total(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|line| line.starts_with("TOTAL"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn pytest_cov_measures_the_workers_and_reports_once() {
    if !has_module("pytest_cov") {
        return;
    }
    let args = ["--cov=calc", "--cov-report=term"];
    let (ran, _, _p) = runner(&args, &[], 1);
    let (plain, _, _q) = pytest(&args, &[], 1);
    let total = coverage_total(&ran.stdout);
    assert_eq!(total.len(), 1, "the report once\n{}", ran.describe());
    // Each test file takes other branches and runs on another worker: the
    // total is right only if every worker's measurements were combined.
    assert_eq!(total, coverage_total(&plain.stdout), "{}", ran.describe());
    assert_eq!(total[0], "TOTAL 12 2 83%");
}

#[test]
fn pytest_split_stores_the_duration_of_every_test() {
    if !has_module("pytest_split") {
        return;
    }
    let args = ["--store-durations", "--durations-path=durations.json"];
    let (ran, dir, _p) = runner(&args, &[], 1);
    let durations: BTreeMap<String, f64> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("durations.json")).unwrap())
            .unwrap_or_else(|e| panic!("{e}\n{}", ran.describe()));
    let (_, pytest_dir, _q) = pytest(&args, &[], 1);
    let by_pytest: BTreeMap<String, f64> =
        serde_json::from_str(&std::fs::read_to_string(pytest_dir.join("durations.json")).unwrap())
            .unwrap();
    assert_eq!(
        durations.keys().collect::<Vec<_>>(),
        by_pytest.keys().collect::<Vec<_>>()
    );
    assert_eq!(durations.len(), 6, "{durations:?}");
    // The two tests that sleep 0.2 s are measured as such.
    for id in [
        "test_positive.py::test_positive",
        "test_negative.py::test_negative",
    ] {
        assert!(durations[id] >= 0.2, "{id}: {durations:?}");
    }
}

#[test]
fn a_conftests_terminal_summary_sees_every_result_once() {
    let (ran, _, _p) = runner(&[], &[], 1);
    let (plain, _, _q) = pytest(&["-p", "no:cacheprovider"], &[], 1);
    let line = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .filter(|l| l.starts_with("conftest saw "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(line(&ran.stdout), line(&plain.stdout), "{}", ran.describe());
    assert_eq!(
        line(&ran.stdout),
        ["conftest saw {'passed': 4, 'failed': 1, 'skipped': 1} with exit status 1"]
    );
}

/// pytest-randomly, installed by scripts/setup.sh where nothing else sees
/// it (it shuffles every suite it is installed for).
fn randomly_path() -> Option<PathBuf> {
    let path = repo_root().join("target/python-plugins/randomly");
    if path.join("pytest_randomly").is_dir() {
        Some(path)
    } else {
        eprintln!(
            "skipped: pytest-randomly is not in {} (scripts/setup.sh installs it)",
            path.display()
        );
        None
    }
}

/// The order a run log's tests started in.
fn started_order(log: &Path) -> Vec<String> {
    let (_, lines) = support::read_log(log);
    lines
        .iter()
        .filter(|l| l["type"] == "test-started")
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn pytest_randomly_shows_its_seed_and_a_seed_gives_pytests_order() {
    let Some(plugin) = randomly_path() else {
        return;
    };
    let plugin = plugin.to_str().unwrap().to_owned();
    let env = [("PYTHONPATH", plugin.as_str())];
    // Its header line, with the seed it chose, so the run can be repeated.
    let (ran, _, _p) = runner(&[], &env, 1);
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("Using --randomly-seed=")),
        "{}",
        ran.describe()
    );
    // One worker runs the tests in the order pytest-randomly gave them.
    let project = copy_fixture("plugins");
    let log = project.dir.join("run.jsonl");
    let mut cmd = Command::new(support::runner_bin());
    cmd.args(["-n", "1", "--run-log", log.to_str().unwrap(), "--"])
        .args(["--randomly-seed=1234"])
        .env("PYTHONPATH", &plugin);
    support::run(cmd, &project.dir).assert_code(1);
    let (plain, _, _q) = pytest(&["--collect-only", "-q", "--randomly-seed=1234"], &env, 0);
    let pytest_order: Vec<String> = plain
        .stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(pytest_order.len(), 6, "{}", plain.describe());
    assert_eq!(started_order(&log), pytest_order);
    // Another seed, another order: the seed is what decides it.
    let shuffled = |seed: &str| {
        let (plain, _, _r) = pytest(
            &["--collect-only", "-q", &format!("--randomly-seed={seed}")],
            &env,
            0,
        );
        plain.stdout
    };
    assert_ne!(shuffled("1234"), shuffled("99"));
}
