//! What runner prints and writes: pytest's closing line, JUnit XML, run logs.

use crate::support::{closing_line, copy_fixture, pytest, python, runner};

#[test]
fn closing_line_has_pytests_format_all_pass() {
    let p = copy_fixture("all_pass");
    let ran = runner(&p.dir, &["-n", "2"]);
    ran.assert_code(0);
    let (counts, _) = closing_line(&ran.stdout)
        .unwrap_or_else(|| panic!("no closing line on stdout\n{}", ran.describe()));
    assert_eq!(counts, "8 passed", "{}", ran.describe());
}

#[test]
fn closing_line_counts_match_pytest_on_fidelity_suite() {
    let p = copy_fixture("fidelity");
    let reference = pytest(&p.dir, &["--doctest-modules"]);
    let (want, _) = closing_line(&reference.stdout).expect("plain pytest printed a closing line");
    let ran = runner(&p.dir, &["-n", "2", "--", "--doctest-modules"]);
    let (got, _) = closing_line(&ran.stdout)
        .unwrap_or_else(|| panic!("no closing line on stdout\n{}", ran.describe()));
    assert_eq!(
        got,
        want,
        "closing line counts differ from pytest's\n{}",
        ran.describe()
    );
    // The last non-empty line of the output is the closing line.
    let last = ran
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        closing_line(last).is_some(),
        "the closing line is not the last line: {last:?}\n{}",
        ran.describe()
    );
}

#[test]
fn closing_line_for_collection_error_and_empty_suite() {
    for (fixture, want) in [("collect_error", "1 error"), ("empty", "no tests ran")] {
        let p = copy_fixture(fixture);
        let reference = pytest(&p.dir, &[]);
        assert_eq!(
            closing_line(&reference.stdout).map(|c| c.0).as_deref(),
            Some(want),
            "{}",
            reference.describe()
        );
        let ran = runner(&p.dir, &[]);
        assert_eq!(
            closing_line(&ran.stdout).map(|c| c.0).as_deref(),
            Some(want),
            "{fixture}\n{}",
            ran.describe()
        );
    }
}

/// Prints `tests=N failures=N errors=N skipped=N names=N` for a JUnit file:
/// counts of distinct test cases (classname, name) and of those with a
/// <failure>, <error> or <skipped> child.
const JUNIT_SUMMARY: &str = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = {}
for tc in root.iter("testcase"):
    key = (tc.get("classname"), tc.get("name"))
    kinds = cases.setdefault(key, set())
    for kind in ("failure", "error", "skipped"):
        if tc.find(kind) is not None:
            kinds.add(kind)
print("tests=%d failures=%d errors=%d skipped=%d" % (
    len(cases),
    sum("failure" in k for k in cases.values()),
    sum("error" in k for k in cases.values()),
    sum("skipped" in k for k in cases.values())))
for key in sorted(cases, key=str):
    print("case", key[0], key[1])
"#;

fn junit_summary(path: &std::path::Path) -> (String, Vec<String>) {
    assert!(path.is_file(), "no JUnit XML at {}", path.display());
    let ran = python(JUNIT_SUMMARY, &[path.to_str().unwrap()]);
    ran.assert_code(0);
    let mut lines = ran.stdout.lines();
    let counts = lines.next().unwrap_or("").to_string();
    (counts, lines.map(str::to_string).collect())
}

#[test]
fn junit_xml_counts_match_pytest() {
    let p = copy_fixture("fidelity");
    let args = ["--doctest-modules", "--ignore=tests/test_subtests.py"];
    let want_xml = p.dir.join("pytest-junit.xml");
    let mut py_args = args.to_vec();
    let junit_arg = format!("--junitxml={}", want_xml.display());
    py_args.push(&junit_arg);
    pytest(&p.dir, &py_args).assert_code(1);
    let (want, _) = junit_summary(&want_xml);

    let got_xml = p.dir.join("out").join("runner-junit.xml");
    let mut rn_args = vec!["-n", "2", "--junitxml", got_xml.to_str().unwrap(), "--"];
    rn_args.extend(args);
    let ran = runner(&p.dir, &rn_args);
    ran.assert_code(1);
    let (got, _) = junit_summary(&got_xml);
    assert_eq!(
        got,
        want,
        "JUnit counts differ from pytest's\n{}",
        ran.describe()
    );
}

#[test]
fn junit_xml_test_names_match_pytest() {
    let p = copy_fixture("all_pass");
    let want_xml = p.dir.join("pytest-junit.xml");
    pytest(&p.dir, &[&format!("--junitxml={}", want_xml.display())]).assert_code(0);
    let (want_counts, want_cases) = junit_summary(&want_xml);
    let got_xml = p.dir.join("runner-junit.xml");
    let ran = runner(
        &p.dir,
        &["-n", "2", "--junitxml", got_xml.to_str().unwrap()],
    );
    ran.assert_code(0);
    let (got_counts, got_cases) = junit_summary(&got_xml);
    assert_eq!(got_counts, want_counts);
    assert_eq!(
        got_cases, want_cases,
        "JUnit classname/name differ from pytest's"
    );
}

#[test]
fn run_log_is_kept_under_dot_runner() {
    let p = copy_fixture("all_pass");
    let explicit = p.dir.join("explicit-run-log.jsonl");
    let ran = runner(
        &p.dir,
        &["-n", "2", "--run-log", explicit.to_str().unwrap()],
    );
    ran.assert_code(0);
    let runs = p.dir.join(".runner").join("runs");
    let logs: Vec<_> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", runs.display(), ran.describe()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!logs.is_empty(), "no run log under {}", runs.display());
    for log in logs.iter().chain([&explicit]) {
        let text = std::fs::read_to_string(log).unwrap();
        let mut results = 0;
        let mut finished = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {line:?}: {e}", log.display()));
            match v["type"].as_str() {
                Some("test-finished") => {
                    results += 1;
                    assert_eq!(v["outcome"], "passed", "{line}");
                    assert!(
                        v["id"]
                            .as_str()
                            .is_some_and(|id| id.starts_with("test_all_pass.py::")),
                        "{line}"
                    );
                }
                Some("run-finished") => finished = Some(v["exit_code"].as_i64()),
                _ => {}
            }
        }
        assert_eq!(results, 8, "{}: {text}", log.display());
        assert_eq!(
            finished,
            Some(Some(0)),
            "{}: no run-finished line with exit_code 0",
            log.display()
        );
    }
}
