//! Turning a test's phase reports (setup, call, teardown) into the one
//! outcome the policies and the run log see.
//!
//! A rerun plugin (pytest-rerunfailures) runs a failing test again in the
//! same worker: the test's reports are then several attempts in a row, each
//! starting with its setup report, and an attempt that was run again carries
//! a `rerun` report (outcome and category "rerun") where it failed. Only the
//! last attempt decides the outcome, as in pytest's own report.

use crate::events::LostCause;
use crate::model::{Outcome, TestResult};
use crate::wire::PhaseReport;

/// The outcome pytest's own summary would give the test: a failed setup is
/// an error; a skipped or xfailed setup is that; otherwise the call decides,
/// and a failing teardown turns anything but a failure into an error.
pub fn outcome_of(reports: &[PhaseReport]) -> Outcome {
    let reports = final_attempt(reports);
    let phase = |when: &str| reports.iter().find(|r| r.when == when);
    let mut outcome = match phase("setup") {
        Some(setup) if setup.outcome != "passed" => category_outcome(setup),
        _ => match phase("call") {
            Some(call) => category_outcome(call),
            // No call report and a passing setup: the worker never got there.
            None => Outcome::Error,
        },
    };
    if let Some(teardown) = phase("teardown")
        && teardown.outcome == "failed"
        && outcome != Outcome::Failed
    {
        outcome = Outcome::Error;
    }
    outcome
}

/// Whether pytest-rerunfailures logged this report for an attempt it then
/// ran again: not a result.
pub fn is_rerun(report: &PhaseReport) -> bool {
    report.outcome == "rerun" || report.category == "rerun"
}

/// The reports of the test's last attempt: from the first setup report after
/// the last `rerun` report (an attempt goes on logging its later phases
/// after the one that triggered the rerun). All of them when none was rerun.
pub fn final_attempt(reports: &[PhaseReport]) -> &[PhaseReport] {
    let Some(last_rerun) = reports.iter().rposition(is_rerun) else {
        return reports;
    };
    let after = &reports[last_rerun + 1..];
    let start = after.iter().position(|r| r.when == "setup").unwrap_or(0);
    &after[start..]
}

/// How many times pytest ran a test, and whether it is flaky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// 1 plus the number of attempts that were run again.
    pub count: u32,
    /// An earlier attempt failed and the last one passed.
    pub flaky: bool,
}

pub fn attempts_of(reports: &[PhaseReport]) -> Attempts {
    let mut reruns = 0;
    let mut counted = false;
    for report in reports {
        if report.when == "setup" {
            counted = false;
        }
        // An attempt may have two rerun reports (its call and its teardown).
        if is_rerun(report) && !counted {
            reruns += 1;
            counted = true;
        }
    }
    let passed = matches!(outcome_of(reports), Outcome::Passed | Outcome::Xpassed);
    Attempts {
        count: 1 + reruns,
        flaky: reruns > 0 && passed,
    }
}

fn category_outcome(report: &PhaseReport) -> Outcome {
    match report.category.as_str() {
        "passed" => Outcome::Passed,
        "failed" => Outcome::Failed,
        "skipped" => Outcome::Skipped,
        "xfailed" => Outcome::Xfailed,
        "xpassed" => Outcome::Xpassed,
        "error" => Outcome::Error,
        "hung" => Outcome::Hung,
        "crashed" => Outcome::Crashed,
        // A plugin's own category: fall back on the report's raw outcome.
        _ => match (report.outcome.as_str(), report.when.as_str()) {
            ("passed", _) => Outcome::Passed,
            ("skipped", _) => Outcome::Skipped,
            (_, "call") => Outcome::Failed,
            _ => Outcome::Error,
        },
    }
}

/// The report that stands for a test the worker could not report itself:
/// it hung or crashed. `category` is "hung" or "crashed".
pub fn synthetic_report(
    id: &str,
    category: &str,
    message: &str,
    longrepr: &str,
    duration: f64,
) -> PhaseReport {
    PhaseReport {
        when: "call".into(),
        outcome: "failed".into(),
        category: category.into(),
        word: category.to_uppercase(),
        duration,
        longrepr: longrepr.into(),
        sections: Vec::new(),
        head_line: head_line(id),
        message: Some(message.into()),
        wasxfail: None,
        skip: None,
        pytest: None,
    }
}

/// The report for a test whose worker was lost while running it: hung
/// (stopped by runner past its limit) or crashed, with the evidence
/// (faulthandler's traceback of every thread) when there is some, and the
/// end of what the test printed, when pytest's capture let it through.
pub fn lost_test_report(
    id: &str,
    worker: &str,
    pid: Option<i32>,
    cause: &LostCause,
    elapsed_secs: f64,
    evidence: &str,
    output: &str,
) -> PhaseReport {
    let pid = pid.map_or(String::new(), |p| format!(" (pid {p})"));
    let (category, message, mut text) = match cause {
        LostCause::Hung {
            limit_secs, global, ..
        } => {
            let why = if *global {
                format!("the run's global timeout stopped it after {elapsed_secs:.2}s")
            } else {
                format!("Timeout: the test ran longer than {limit_secs}s")
            };
            let how = format!("its worker {worker}{pid} {}", describe_loss(cause));
            ("hung", why.clone(), format!("{why}; {how}.\n"))
        }
        _ => {
            let message = format!(
                "worker {worker}{pid} {} while running this test",
                describe_loss(cause)
            );
            let text = format!("{message}, {elapsed_secs:.2}s in.\n");
            ("crashed", message, text)
        }
    };
    if evidence.trim().is_empty() {
        text.push_str("(no traceback: the worker died before Python could write one)\n");
    } else {
        text.push_str("\nTraceback of every thread (faulthandler):\n");
        text.push_str(evidence);
    }
    let mut report = synthetic_report(id, category, &message, &text, elapsed_secs);
    if !output.is_empty() {
        let title = match category {
            "hung" => "Output before it was stopped",
            _ => "Output before it crashed",
        };
        report.sections.push((title.to_owned(), output.to_owned()));
    }
    report
}

/// How a worker went, as in "worker gw0 was killed by signal 9 (SIGKILL)".
pub fn describe_loss(cause: &LostCause) -> String {
    match cause {
        LostCause::Signal { signal } => format!("was killed by {}", signal_name(*signal)),
        LostCause::Exited { code } => format!("exited with status {code}"),
        LostCause::Hung {
            signal: Some(signal),
            ..
        } => format!("was stopped with {}", signal_name(*signal)),
        LostCause::Hung { signal: None, .. } => "was stopped".to_owned(),
        LostCause::ZygoteDied => "was stopped when the zygote died".to_owned(),
        LostCause::Disappeared => "disappeared".to_owned(),
    }
}

/// `signal 9 (SIGKILL)`.
pub fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(known) => format!("signal {signal} ({})", known.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

/// pytest's `head_line` for a node id: the part after the file, dotted.
fn head_line(id: &str) -> String {
    match id.split_once("::") {
        Some((_, rest)) => rest.replace("::", "."),
        None => id.to_string(),
    }
}

/// The per-test record handed to the log, the reporters and the history.
pub fn test_result(id: &str, worker: &str, reports: &[PhaseReport]) -> TestResult {
    let outcome = outcome_of(reports);
    // The text pytest's JUnit XML has: the report as the terminal shows
    // it, without the blank line and indentation it starts with; the last
    // attempt's (earlier attempts' reports stay in the run log).
    let longrepr = final_attempt(reports)
        .iter()
        .filter(|r| !r.longrepr.trim().is_empty())
        .map(|r| match (&r.skip, &r.wasxfail) {
            (Some(skip), _) => skip.reason.clone(),
            (None, Some(reason)) if r.outcome != "failed" => reason.clone(),
            _ => r.longrepr.trim().to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    TestResult {
        id: id.to_string(),
        outcome,
        duration_secs: reports.iter().map(|r| r.duration).sum(),
        worker: worker.to_string(),
        longrepr,
        // pytest repeats earlier phases' sections in later reports; the last
        // report carries the complete set.
        sections: reports
            .last()
            .map(|r| r.sections.clone())
            .unwrap_or_default(),
        // Every attempt's, so that a reporter sees the reruns.
        phases: reports
            .iter()
            .map(|r| (r.when.clone(), r.category.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(when: &str, outcome: &str, category: &str) -> PhaseReport {
        PhaseReport {
            when: when.into(),
            outcome: outcome.into(),
            category: category.into(),
            word: String::new(),
            duration: 0.25,
            longrepr: String::new(),
            sections: vec![],
            head_line: "t".into(),
            message: None,
            wasxfail: None,
            skip: None,
            pytest: None,
        }
    }

    fn passing(call: PhaseReport) -> Vec<PhaseReport> {
        vec![
            report("setup", "passed", ""),
            call,
            report("teardown", "passed", ""),
        ]
    }

    #[test]
    fn the_call_decides_when_setup_and_teardown_pass() {
        assert_eq!(
            outcome_of(&passing(report("call", "passed", "passed"))),
            Outcome::Passed
        );
        assert_eq!(
            outcome_of(&passing(report("call", "failed", "failed"))),
            Outcome::Failed
        );
        assert_eq!(
            outcome_of(&passing(report("call", "skipped", "xfailed"))),
            Outcome::Xfailed
        );
        assert_eq!(
            outcome_of(&passing(report("call", "passed", "xpassed"))),
            Outcome::Xpassed
        );
    }

    #[test]
    fn setup_and_teardown_problems() {
        let setup_error = vec![
            report("setup", "failed", "error"),
            report("teardown", "passed", ""),
        ];
        assert_eq!(outcome_of(&setup_error), Outcome::Error);
        let skipped = vec![
            report("setup", "skipped", "skipped"),
            report("teardown", "passed", ""),
        ];
        assert_eq!(outcome_of(&skipped), Outcome::Skipped);
        let teardown_error = vec![
            report("setup", "passed", ""),
            report("call", "passed", "passed"),
            report("teardown", "failed", "error"),
        ];
        assert_eq!(outcome_of(&teardown_error), Outcome::Error);
        let both = vec![
            report("setup", "passed", ""),
            report("call", "failed", "failed"),
            report("teardown", "failed", "error"),
        ];
        assert_eq!(outcome_of(&both), Outcome::Failed);
    }

    /// pytest-rerunfailures' reports for a test whose attempts end with
    /// these calls: each attempt but the last is a rerun.
    fn attempts(calls: &[(&str, &str)]) -> Vec<PhaseReport> {
        let mut reports = vec![];
        for (i, (outcome, category)) in calls.iter().enumerate() {
            let mut call = report("call", outcome, category);
            if i + 1 < calls.len() {
                call = report("call", "rerun", "rerun");
            }
            if call.outcome != "passed" {
                call.longrepr = format!("attempt {}", i + 1);
            }
            reports.extend(passing(call));
        }
        reports
    }

    #[test]
    fn the_last_attempt_decides_after_reruns() {
        let flaky = attempts(&[("failed", "failed"), ("passed", "passed")]);
        assert_eq!(outcome_of(&flaky), Outcome::Passed);
        assert_eq!(
            attempts_of(&flaky),
            Attempts {
                count: 2,
                flaky: true
            }
        );
        let result = test_result("t.py::t", "gw0", &flaky);
        assert_eq!(result.outcome, Outcome::Passed);
        assert_eq!(result.longrepr, "");
        assert_eq!(result.phases[1], ("call".into(), "rerun".into()));
        assert_eq!(result.phases.len(), 6);

        let failing = attempts(&[("f", ""), ("f", ""), ("failed", "failed")]);
        assert_eq!(outcome_of(&failing), Outcome::Failed);
        assert_eq!(
            attempts_of(&failing),
            Attempts {
                count: 3,
                flaky: false
            }
        );
        assert_eq!(test_result("t", "gw0", &failing).longrepr, "attempt 3");

        let once = passing(report("call", "passed", "passed"));
        assert_eq!(
            attempts_of(&once),
            Attempts {
                count: 1,
                flaky: false
            }
        );
    }

    #[test]
    fn a_rerun_teardown_belongs_to_its_attempt() {
        // The call failed and triggered the rerun; its teardown failed too
        // and is logged as a rerun as well: still one rerun attempt.
        let mut reports = vec![
            report("setup", "passed", ""),
            report("call", "rerun", "rerun"),
            report("teardown", "rerun", "rerun"),
        ];
        reports.extend(passing(report("call", "passed", "passed")));
        assert_eq!(
            attempts_of(&reports),
            Attempts {
                count: 2,
                flaky: true
            }
        );
        // A passing teardown of the rerun attempt is not the last one's.
        let mut reports = vec![
            report("setup", "passed", ""),
            report("call", "rerun", "rerun"),
            report("teardown", "failed", "error"),
        ];
        reports.extend(passing(report("call", "passed", "passed")));
        assert_eq!(outcome_of(&reports), Outcome::Passed);
    }

    #[test]
    fn result_keeps_every_phase_and_sums_durations() {
        let result = test_result(
            "t.py::t",
            "gw1",
            &passing(report("call", "passed", "passed")),
        );
        assert_eq!(result.duration_secs, 0.75);
        assert_eq!(result.phases[1], ("call".to_string(), "passed".to_string()));
        assert_eq!(result.worker, "gw1");
    }
}
