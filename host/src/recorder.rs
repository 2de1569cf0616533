//! Where results go once a worker reports them: the run log, the history,
//! the reporter policies and the terminal, in that order, so that a result
//! is on disk before anything else can fail.

use std::time::Instant;

use serde_json::json;

use crate::descendants::{Leftover, Swept};
use crate::model::{RunEvent, TestResult};
use crate::outcome::test_result;
use crate::policy::Policies;
use crate::state::{History, RunLog};
use crate::summary::Stats;
use crate::ui::{Problem, Summary, Terminal};
use crate::wire::{CollectError, PhaseReport, WarningRecord};

pub struct Recorder {
    pub terminal: Terminal,
    pub policies: Policies,
    pub history: History,
    log: RunLog,
    pub stats: Stats,
    problems: Vec<Problem>,
    collect_errors: Vec<CollectError>,
    warnings: Vec<WarningRecord>,
    /// Things the user must know about the run itself (a plugin failed, a
    /// worker was lost...), printed before the closing line.
    notes: Vec<String>,
    interrupted: Option<String>,
    /// A reporter failed at some point: the run must not end green.
    reporter_failed: bool,
    pub recorded: usize,
    started: Instant,
    /// Per test, whether pytest's cacheprovider would now count it as
    /// failed (true) or not (false), for `--lf` in the next run.
    last_failed: Vec<(String, bool)>,
    /// Processes tests left running, reported so far.
    leaks: usize,
}

/// Leaky tests named in notes; the run log has them all.
const LEAK_NOTES: usize = 20;

impl Recorder {
    pub fn new(
        terminal: Terminal,
        policies: Policies,
        history: History,
        log: RunLog,
        started: Instant,
    ) -> Recorder {
        Recorder {
            terminal,
            policies,
            history,
            log,
            stats: Stats::default(),
            problems: Vec::new(),
            collect_errors: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            interrupted: None,
            reporter_failed: false,
            recorded: 0,
            started,
            last_failed: Vec::new(),
            leaks: 0,
        }
    }

    pub fn note(&mut self, message: String) {
        self.terminal.warn(&message);
        self.notes.push(message);
    }

    /// A process a test left running after it ended: a note and a log
    /// line, not a failure (pytest doesn't fail such a test either).
    pub fn leaked(&mut self, leftover: &Leftover) {
        self.log(json!({
            "type": "leaked-process",
            "test": leftover.test(),
            "pid": leftover.pid,
            "command": leftover.command,
        }));
        self.leaks += 1;
        if self.leaks <= LEAK_NOTES {
            self.note(format!(
                "leaky test: {} left a process running after it ended: pid {} `{}`",
                leftover.test().unwrap_or("?"),
                leftover.pid,
                leftover.command
            ));
        } else if self.leaks == LEAK_NOTES + 1 {
            self.note("more tests left processes running; the run log lists them all".into());
        }
    }

    /// The processes killed at the end of the run, in the log and the notes.
    pub fn leftovers_killed(&mut self, swept: &Swept) {
        for leftover in &swept.killed {
            self.log(json!({
                "type": "leftover-killed",
                "test": leftover.test(),
                "origin": leftover.origin.to_string(),
                "pid": leftover.pid,
                "command": leftover.command,
            }));
        }
        for note in swept.notes() {
            self.note(note);
        }
    }

    /// Marks the run as stopped early, for the closing report.
    pub fn interrupted(&mut self, reason: String) {
        self.interrupted = Some(reason);
    }

    fn log(&mut self, line: serde_json::Value) {
        if let Err(error) = self.log.write(&line) {
            let message = format!("could not write the run log: {error}");
            if !self.notes.contains(&message) {
                self.note(message);
            }
        }
    }

    pub fn run_started(
        &mut self,
        tests: usize,
        workers: u32,
        deselected: u32,
        errors: &[CollectError],
    ) {
        self.stats.add("deselected", deselected);
        self.stats.add("error", errors.len() as u32);
        self.collect_errors = errors.to_vec();
        let collected_after = self.started.elapsed().as_secs_f64();
        self.log(json!({
            "type": "run-started",
            "tests": tests,
            "workers": workers,
            "deselected": deselected,
            "collected_after_secs": collected_after,
        }));
        for error in errors {
            self.log(
                json!({"type": "collection-error", "id": error.id, "longrepr": error.longrepr}),
            );
        }
        let event = RunEvent::RunStarted {
            tests: tests as u32,
            workers,
        };
        self.report_event(&event);
    }

    /// Warnings pytest recorded, counted in the closing line as pytest does.
    pub fn warnings(&mut self, warnings: Vec<WarningRecord>) {
        self.stats.add("warnings", warnings.len() as u32);
        self.warnings.extend(warnings);
    }

    pub fn test_finished(
        &mut self,
        id: &str,
        worker: &str,
        reports: Vec<PhaseReport>,
    ) -> TestResult {
        let result = test_result(id, worker, &reports);
        self.log(json!({
            "type": "result",
            "id": result.id,
            "outcome": result.outcome,
            "phases": result.phases,
            "duration_secs": result.duration_secs,
            "worker": result.worker,
            "longrepr": result.longrepr,
            // When runner received it, seconds since the run started.
            "at_secs": self.started.elapsed().as_secs_f64(),
        }));
        self.history.record(&result);
        if let Some(failed) = last_failed_state(&reports) {
            self.last_failed.push((id.to_string(), failed));
        }
        for report in &reports {
            self.stats.add(&report.category, 1);
        }
        self.terminal.test_finished(&result);
        self.report_event(&RunEvent::TestFinished(result.clone()));
        if result.outcome.is_failure() {
            self.problems.push(Problem {
                id: id.to_string(),
                reports,
            });
        }
        self.recorded += 1;
        result
    }

    /// The tests this run failed and those it cleared, for the zygote's cache.
    pub fn last_failed(&self) -> (Vec<String>, Vec<String>) {
        let (failed, passed): (Vec<_>, Vec<_>) =
            self.last_failed.iter().partition(|(_, failed)| *failed);
        let ids = |list: Vec<&(String, bool)>| list.into_iter().map(|(id, _)| id.clone()).collect();
        (ids(failed), ids(passed))
    }

    /// Planned tests that never ran (the run stopped early), for the log and
    /// the summary.
    pub fn not_run(&mut self, ids: &[String]) {
        for id in ids {
            self.log(json!({"type": "not-run", "id": id}));
        }
        self.note(format!("{} planned tests did not run", ids.len()));
    }

    fn report_event(&mut self, event: &RunEvent) {
        if let Err(error) = self.policies.report(event) {
            self.reporter_failed = true;
            self.note(format!("reporter failed: {error}"));
        }
    }

    /// Closes the run: reporters, quarantine, history, the final report.
    /// Returns the exit code, made non-zero if a policy failed.
    pub fn finish(mut self, mut exit_code: i32) -> i32 {
        let elapsed = self.started.elapsed();
        self.report_event(&RunEvent::RunFinished {
            exit_code,
            duration_secs: elapsed.as_secs_f64(),
        });
        if let Err(error) = self.policies.finish() {
            self.reporter_failed = true;
            self.note(format!("reporter failed: {error}"));
        }
        if self.reporter_failed && exit_code == crate::exit_code::OK {
            exit_code = crate::exit_code::TESTS_FAILED;
        }
        match self.policies.decide(&self.history.all()) {
            Ok(verdicts) => {
                for verdict in verdicts {
                    self.history
                        .set_quarantined(&verdict.id, verdict.quarantined);
                }
            }
            Err(error) => self.note(format!(
                "quarantine policy failed, no quarantine changes this run: {error}"
            )),
        }
        self.log(json!({"type": "run-finished", "exit_code": exit_code, "duration_secs": elapsed.as_secs_f64()}));
        if let Err(error) = self.history.save() {
            self.note(format!("could not save the test history: {error}"));
        }
        let summary = Summary {
            collect_errors: &self.collect_errors,
            warnings: &self.warnings,
            problems: &self.problems,
            stats: &self.stats,
            elapsed,
            notes: &self.notes,
            interrupted: self.interrupted.as_deref(),
        };
        self.terminal.finish(&summary);
        exit_code
    }
}

/// What pytest's cacheprovider (`LFPlugin.pytest_runtest_logreport`) makes of
/// a test's reports: a passed call or any skip clears it, a failure sets it.
fn last_failed_state(reports: &[PhaseReport]) -> Option<bool> {
    reports.iter().fold(None, |state, report| {
        if (report.when == "call" && report.outcome == "passed") || report.outcome == "skipped" {
            Some(false)
        } else if report.outcome == "failed" {
            Some(true)
        } else {
            state
        }
    })
}
