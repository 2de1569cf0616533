//! Tests of the policy host against the real embedded components.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;
use crate::model::{Outcome, PlanContext, ReporterEvent, TestCase, TestHistory, TestResult};

/// One compiled-component cache for the whole test binary, so only the
/// first test pays for compiling.
fn cache_dir() -> PathBuf {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE
        .get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .to_owned()
}

fn load(state_dir: &Path) -> Policies {
    let mut policies = Policies::load(&PolicyConfig {
        cache_dir: Some(cache_dir()),
        ..Default::default()
    })
    .unwrap();
    assert!(policies.open_outputs(state_dir, None).is_empty());
    policies
}

/// A collected test; built from JSON, as the zygote sends it, so optional
/// fields added to the model later default here too.
pub(super) fn case(id: &str) -> TestCase {
    let file = id.split("::").next().unwrap();
    serde_json::from_value(serde_json::json!({ "id": id, "file": file, "markers": [] })).unwrap()
}

fn history(id: &str, mean: Option<f64>) -> TestHistory {
    TestHistory {
        id: id.into(),
        recent: vec![Outcome::Passed],
        mean_duration_secs: mean,
        quarantined: false,
    }
}

#[test]
fn policies_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Policies>();
}

#[test]
fn plan_runs_files_with_new_tests_first_then_longest_files_keeping_test_order() {
    let state = tempfile::tempdir().unwrap();
    let mut policies = load(state.path());
    let ids = [
        "short.py::a",
        "short.py::b",
        "new.py::a",
        "new.py::b",
        "long.py::a",
        "long.py::b",
        "nan.py::a",
    ];
    let tests: Vec<TestCase> = ids.iter().map(|id| case(id)).collect();
    let history = [
        history("short.py::a", Some(1.0)),
        history("short.py::b", Some(1.0)),
        history("new.py::b", Some(9.0)),
        // Within a file, pytest's order stays even if a later test is longer.
        history("long.py::a", Some(0.5)),
        history("long.py::b", Some(4.0)),
        history("nan.py::a", Some(f64::NAN)),
        history("gone.py::x", Some(9.0)),
    ];
    let plan = policies
        .plan(&PlanContext { workers: 2 }, &tests, &history)
        .unwrap();
    let expected = [
        "new.py::a",
        "new.py::b",
        "nan.py::a",
        "long.py::a",
        "long.py::b",
        "short.py::a",
        "short.py::b",
    ];
    assert_eq!(plan.batches, expected.map(|id| vec![id.to_owned()]));
    assert!(plan.deselected.is_empty());
}

#[test]
fn plan_of_no_tests_is_empty() {
    let state = tempfile::tempdir().unwrap();
    let plan = load(state.path())
        .plan(&PlanContext { workers: 1 }, &[], &[])
        .unwrap();
    assert!(plan.batches.is_empty() && plan.deselected.is_empty());
}

#[test]
fn quarantine_default_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let mut h = history("t.py::a", Some(1.0));
    h.recent = vec![Outcome::Failed; 5];
    assert_eq!(load(state.path()).decide(&[h]).unwrap(), vec![]);
}

fn result(id: &str, outcome: Outcome, longrepr: &str) -> ReporterEvent {
    ReporterEvent::TestFinished(TestResult {
        id: id.into(),
        outcome,
        duration_secs: 0.25,
        worker: "gw0".into(),
        longrepr: longrepr.into(),
        sections: vec![],
        phases: vec![],
    })
}

#[test]
fn junit_report_matches_pytest_shape() {
    let state = tempfile::tempdir().unwrap();
    let mut policies = load(state.path());
    let mut passed = result("tests/test_a.py::TestX::test_ok[1-2]", Outcome::Passed, "");
    if let ReporterEvent::TestFinished(r) = &mut passed {
        r.sections = vec![
            ("Captured stdout call".into(), "hello <world>\n".into()),
            ("Captured stderr call".into(), "oops\n".into()),
        ];
    }
    let mut error = result(
        "tests/test_a.py::test_fixture",
        Outcome::Error,
        "    def fx():\n>       raise ValueError('boom')\nE       ValueError: boom\n",
    );
    if let ReporterEvent::TestFinished(r) = &mut error {
        r.phases = vec![("setup".into(), "error".into())];
    }
    let events = [
        ReporterEvent::RunStarted {
            tests: 8,
            workers: 2,
        },
        passed,
        result(
            "tests/test_a.py::test_fail",
            Outcome::Failed,
            "    def test_fail():\n>       assert 1 == 2\nE       assert 1 == 2\n\ntests/test_a.py:3: AssertionError",
        ),
        result(
            "tests/sub/test_b.py::test_skip",
            Outcome::Skipped,
            "Skipped: no db",
        ),
        error,
        result("tests/test_a.py::test_xfail", Outcome::Xfailed, "known bug"),
        result("tests/test_a.py::test_xpass", Outcome::Xpassed, ""),
        result(
            "tests/test_a.py::test_hang",
            Outcome::Hung,
            "Timeout after 30s\nThread 0x1 (most recent call first):",
        ),
        result(
            "tests/test_a.py::test_segv",
            Outcome::Crashed,
            "worker gw1 died: SIGSEGV\x1b[31m",
        ),
        ReporterEvent::RunFinished {
            exit_code: 1,
            duration_secs: 1.5,
        },
    ];
    for event in &events {
        policies.report(event).unwrap();
    }
    policies.finish().unwrap();
    let xml = std::fs::read_to_string(state.path().join("junit.xml")).unwrap();

    let expected = [
        r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">"#,
        r#"<testsuite name="pytest" errors="1" failures="3" skipped="2" tests="8" time="1.500">"#,
        r#"<testcase classname="tests.test_a.TestX" name="test_ok[1-2]" time="0.250"><system-out>"#,
        "hello &lt;world&gt;\n\n</system-out><system-err>",
        "oops\n\n</system-err></testcase>",
        r#"<testcase classname="tests.test_a" name="test_fail" time="0.250"><failure message="assert 1 == 2">"#,
        "&gt;       assert 1 == 2\nE       assert 1 == 2\n\ntests/test_a.py:3: AssertionError</failure>",
        r#"<testcase classname="tests.sub.test_b" name="test_skip" time="0.250"><skipped type="pytest.skip" message="no db">Skipped: no db</skipped></testcase>"#,
        r#"<error message="failed on setup with &quot;ValueError: boom&quot;">"#,
        r#"<skipped type="pytest.xfail" message="known bug"/></testcase>"#,
        r#"<testcase classname="tests.test_a" name="test_xpass" time="0.250"></testcase>"#,
        r#"<failure message="test hung: its worker was killed after the timeout">Timeout after 30s"#,
        r#"<failure message="test crashed: its worker died while running it">worker gw1 died: SIGSEGV#x1B[31m</failure>"#,
        "</testsuite></testsuites>\n",
    ];
    for fragment in expected {
        assert!(xml.contains(fragment), "missing {fragment:?} in\n{xml}");
    }
    assert_eq!(xml.matches("<testcase ").count(), 8);
    assert_eq!(xml.matches("</testcase>").count(), 8);
    // Blocks are centred in 80 columns, as pytest writes them.
    assert!(xml.contains(&format!("{0} Captured stdout call {0}\n", "-".repeat(29))));
}

#[test]
fn junitxml_option_sets_the_file() {
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("ci/reports/out.xml");
    let mut policies = Policies::load(&PolicyConfig {
        junitxml: Some(path.clone()),
        ..Default::default()
    })
    .unwrap();
    assert!(
        policies
            .open_outputs(&state.path().join(".runner"), Some(&path))
            .is_empty()
    );
    policies
        .report(&ReporterEvent::RunStarted {
            tests: 0,
            workers: 1,
        })
        .unwrap();
    policies.finish().unwrap();
    assert!(
        std::fs::read_to_string(path)
            .unwrap()
            .contains(r#"tests="0""#)
    );
}

#[test]
fn reporter_cannot_write_outside_its_dir() {
    let state = tempfile::tempdir().unwrap();
    for name in ["../x", "/etc/x"] {
        let engine =
            engine::PolicyEngine::new(Some(cache_dir()), None, SandboxLimits::default()).unwrap();
        let output = output::OutputDir::open(&state.path().join("out")).unwrap();
        let options = [("junitxml-name".to_owned(), name.to_owned())];
        let candidate = catalog::embedded(&engine, Slot::Reporter).unwrap();
        let mut reporter = reporter::Reporter::load(&engine, "test", &candidate, &options).unwrap();
        reporter.set_output(output);
        let err = reporter.finish().unwrap_err().to_string();
        assert!(
            err.contains("policy `test`") && err.contains("refused path"),
            "{err}"
        );
    }
    assert!(!state.path().join("x").exists());
}

#[test]
fn reporter_rejects_unknown_options() {
    let engine =
        engine::PolicyEngine::new(Some(cache_dir()), None, SandboxLimits::default()).unwrap();
    let options = [("colour".to_owned(), "yes".to_owned())];
    let candidate = catalog::embedded(&engine, Slot::Reporter).unwrap();
    let err = reporter::Reporter::load(&engine, "test", &candidate, &options)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "policy `test` returned an error from `configure`: unknown option `colour`"
    );
}

#[test]
fn corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let opts = PolicyConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    drop(Policies::load(&opts).unwrap());
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 3, "one artifact per component");
    for entry in &entries {
        std::fs::write(entry.path(), b"not a compiled component").unwrap();
    }
    let mut policies = Policies::load(&opts).unwrap();
    assert!(policies.open_outputs(state.path(), None).is_empty());
    policies
        .plan(&PlanContext { workers: 1 }, &[case("t.py::a")], &[])
        .unwrap();
    for entry in &entries {
        assert!(
            std::fs::metadata(entry.path()).unwrap().len() > 1000,
            "rewritten"
        );
    }
}
