//! JUnit XML rendering, following pytest's `junitxml` plugin: the same
//! classname/name split, elements, attributes and escaping.

use alloc::string::String;
use core::fmt::Write;

use crate::runner::policy::types::{Outcome, TestResult};

/// A `<testsuite>` under construction: rendered cases plus running totals.
pub struct Suite {
    cases: String,
    tests: u32,
    failures: u32,
    errors: u32,
    skipped: u32,
    /// Wall time of the run once known; until then, the sum of test times.
    duration: Option<f64>,
    test_time: f64,
}

impl Suite {
    pub const fn new() -> Self {
        Suite {
            cases: String::new(),
            tests: 0,
            failures: 0,
            errors: 0,
            skipped: 0,
            duration: None,
            test_time: 0.0,
        }
    }

    pub fn set_duration(&mut self, seconds: f64) {
        self.duration = Some(seconds);
    }

    pub fn add(&mut self, result: &TestResult) {
        self.tests += 1;
        self.test_time += result.duration;
        let (classname, name) = split_node_id(&result.id);
        let out = &mut self.cases;
        let _ = write!(
            out,
            r#"<testcase classname="{}" name="{}" time="{:.3}">"#,
            Attr(&classname),
            Attr(name),
            result.duration
        );
        let longrepr = result.longrepr.as_str();
        match result.outcome {
            Outcome::Passed | Outcome::Xpassed => {}
            Outcome::Failed => {
                self.failures += 1;
                element(
                    out,
                    "failure",
                    None,
                    &crash_message(longrepr),
                    Some(longrepr),
                );
                // pytest also reports a teardown that failed after the call
                // did, as an error of the same test case.
                if result.phases.iter().any(|(when, category)| when == "teardown" && category == "error") {
                    self.errors += 1;
                    element(out, "error", None, "failed on teardown", Some(longrepr));
                }
            }
            Outcome::Hung => {
                self.failures += 1;
                let message = "test hung: its worker was killed after the timeout";
                element(out, "failure", None, message, Some(longrepr));
            }
            Outcome::Crashed => {
                self.failures += 1;
                let message = "test crashed: its worker died while running it";
                element(out, "failure", None, message, Some(longrepr));
            }
            Outcome::Error => {
                self.errors += 1;
                let phase = result
                    .phases
                    .iter()
                    .find(|(_, category)| category == "error")
                    .map_or("setup", |(phase, _)| phase.as_str());
                let message =
                    alloc::format!("failed on {phase} with \"{}\"", crash_message(longrepr));
                element(out, "error", None, &message, Some(longrepr));
            }
            Outcome::Skipped => {
                self.skipped += 1;
                let reason = longrepr.strip_prefix("Skipped: ").unwrap_or(longrepr);
                element(out, "skipped", Some("pytest.skip"), reason, Some(longrepr));
            }
            Outcome::Xfailed => {
                self.skipped += 1;
                element(out, "skipped", Some("pytest.xfail"), longrepr, None);
            }
        }
        reruns(out, result);
        captured(out, "system-out", result, |title| !title.contains("stderr"));
        captured(out, "system-err", result, |title| title.contains("stderr"));
        out.push_str("</testcase>");
    }

    pub fn render(&self) -> String {
        let mut xml = String::with_capacity(self.cases.len() + 256);
        let _ = write!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="utf-8"?>"#,
                r#"<testsuites name="pytest tests">"#,
                r#"<testsuite name="pytest" errors="{}" failures="{}" skipped="{}" tests="{}" time="{:.3}">"#,
            ),
            self.errors,
            self.failures,
            self.skipped,
            self.tests,
            self.duration.unwrap_or(self.test_time),
        );
        xml.push_str(&self.cases);
        xml.push_str("</testsuite></testsuites>\n");
        xml
    }
}

/// Splits a node id the way pytest's `mangle_test_address` does:
/// `tests/test_a.py::TestX::test_y[1-2]` → (`tests.test_a.TestX`, `test_y[1-2]`).
/// Parameters are set aside first, since they may contain `::` or `/`.
fn split_node_id(id: &str) -> (String, &str) {
    let path_end = id.find('[').unwrap_or(id.len());
    let (path, _) = id.split_at(path_end);
    let (parents, name) = match path.rfind("::") {
        Some(at) => (&path[..at], &id[at + 2..]),
        None => ("", id),
    };
    let mut classname = String::new();
    for (i, part) in parents.split("::").enumerate() {
        if i == 0 {
            let module = part.strip_suffix(".py").unwrap_or(part);
            classname.push_str(&module.replace('/', "."));
        } else {
            classname.push('.');
            classname.push_str(part);
        }
    }
    (classname, name)
}

/// The one-line message pytest would take from the exception: the first
/// `E ` line of the traceback, else its last non-empty line.
fn crash_message(longrepr: &str) -> String {
    let mut lines = longrepr.lines();
    let first_e = lines
        .clone()
        .find_map(|l| l.strip_prefix("E "))
        .map(str::trim);
    let last = lines.rfind(|l| !l.trim().is_empty()).map(str::trim);
    String::from(first_e.or(last).unwrap_or(""))
}

/// Writes an element per attempt a rerun plugin (pytest-rerunfailures) ran
/// again, in the form Maven surefire writes and CI systems read: a
/// `flakyFailure` in a test that then passed, a `rerunFailure` in one that
/// did not. The `test-result` carries only the last attempt's text, so they
/// name the attempt and the phase it failed in, without its traceback.
fn reruns(out: &mut String, result: &TestResult) {
    let failed_in = rerun_phases(&result.phases);
    let tag = match result.outcome {
        Outcome::Passed | Outcome::Xpassed => "flakyFailure",
        _ => "rerunFailure",
    };
    let attempts = failed_in.len() + 1;
    for (i, phase) in failed_in.iter().enumerate() {
        let message = alloc::format!(
            "attempt {} of {attempts} failed on {phase}, so the test was run again",
            i + 1
        );
        element(out, tag, Some("pytest.rerun"), &message, None);
    }
}

/// The phase each rerun attempt failed in. An attempt starts at its setup
/// phase; one that was run again has a phase of category "rerun" (its call
/// and its teardown may both have one).
fn rerun_phases(phases: &[(String, String)]) -> alloc::vec::Vec<&str> {
    let mut failed_in = alloc::vec::Vec::new();
    let mut counted = false;
    for (when, category) in phases {
        if when == "setup" {
            counted = false;
        }
        if category == "rerun" && !counted {
            failed_in.push(when.as_str());
            counted = true;
        }
    }
    failed_in
}

/// Writes `<tag [type=..] message=..>text</tag>`, or a self-closing tag
/// when there is no text.
fn element(out: &mut String, tag: &str, kind: Option<&str>, message: &str, text: Option<&str>) {
    let _ = write!(out, "<{tag}");
    if let Some(kind) = kind {
        let _ = write!(out, r#" type="{}""#, Attr(kind));
    }
    let _ = write!(out, r#" message="{}""#, Attr(message));
    match text {
        Some(text) => {
            let _ = write!(out, ">{}</{tag}>", Text(text));
        }
        None => out.push_str("/>"),
    }
}

/// Writes the captured sections `keep` selects under one `tag`, each under
/// a centred header as pytest's junitxml does.
fn captured(out: &mut String, tag: &str, result: &TestResult, keep: impl Fn(&str) -> bool) {
    let mut sections = result
        .sections
        .iter()
        .filter(|(title, _)| keep(title))
        .peekable();
    if sections.peek().is_none() {
        return;
    }
    let _ = write!(out, "<{tag}>");
    for (title, content) in sections {
        let header = alloc::format!(" {title} ");
        let pad = 80usize.saturating_sub(header.chars().count());
        let dashes = |n| "-".repeat(n);
        let _ = write!(
            out,
            "{}{}{}\n{}\n",
            dashes(pad / 2),
            Text(&header),
            dashes(pad - pad / 2),
            Text(content)
        );
    }
    let _ = write!(out, "</{tag}>");
}

/// Text content, escaped.
struct Text<'a>(&'a str);

/// An attribute value, escaped, with line breaks kept as character references.
struct Attr<'a>(&'a str);

impl core::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        escape(f, self.0, false)
    }
}

impl core::fmt::Display for Attr<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        escape(f, self.0, true)
    }
}

/// Escapes markup, and replaces characters XML 1.0 forbids (ANSI escapes in
/// tracebacks, NULs) with `#xNN` as pytest's `bin_xml_escape` does, so the
/// file always parses.
fn escape(f: &mut core::fmt::Formatter<'_>, s: &str, attr: bool) -> core::fmt::Result {
    for c in s.chars() {
        match c {
            '&' => f.write_str("&amp;")?,
            '<' => f.write_str("&lt;")?,
            '>' => f.write_str("&gt;")?,
            '"' if attr => f.write_str("&quot;")?,
            '\n' if attr => f.write_str("&#10;")?,
            '\r' => f.write_str("&#13;")?,
            '\t' | '\n' => f.write_char(c)?,
            '\u{20}'..='\u{7e}' | '\u{80}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' => {
                f.write_char(c)?
            }
            '\u{10000}'.. => f.write_char(c)?,
            _ if (c as u32) <= 0xff => write!(f, "#x{:02X}", c as u32)?,
            _ => write!(f, "#x{:04X}", c as u32)?,
        }
    }
    Ok(())
}
