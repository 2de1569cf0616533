//! Turning a test's phase reports (setup, call, teardown) into the one
//! outcome the policies and the run log see.

use crate::model::{Outcome, TestResult};
use crate::wire::PhaseReport;

/// The outcome pytest's own summary would give the test: a failed setup is
/// an error; a skipped or xfailed setup is that; otherwise the call decides,
/// and a failing teardown turns anything but a failure into an error.
pub fn outcome_of(reports: &[PhaseReport]) -> Outcome {
    let phase = |when: &str| reports.iter().find(|r| r.when == when);
    let mut outcome = match phase("setup") {
        Some(setup) if setup.outcome != "passed" => category_outcome(setup),
        _ => match phase("call") {
            Some(call) => category_outcome(call),
            // No call report and a passing setup: the worker never got there.
            None => Outcome::Error,
        },
    };
    if let Some(teardown) = phase("teardown") {
        if teardown.outcome == "failed" && outcome != Outcome::Failed {
            outcome = Outcome::Error;
        }
    }
    outcome
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
    // it, without the blank line and indentation it starts with.
    let longrepr = reports
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
