//! Where results go once a worker reports them: the run log, the history,
//! the reporter policies and the terminal, in that order, so that a result
//! is on disk before anything else can fail.

use std::time::Instant;

use crate::descendants::{Leftover, Swept};
use crate::model::{RunEvent, TestResult};
use crate::outcome::test_result;
use crate::policy::Policies;
use crate::run_log::LogLine;
use crate::state::{History, RunLog};
use crate::summary::Stats;
use crate::ui::{Problem, Summary, Terminal, Verbosity};
use crate::wire::{CollectError, PhaseReport, SessionStop, WarningRecord};

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
    /// A test stopped pytest's session.
    session_stop: Option<SessionStop>,
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
            session_stop: None,
            reporter_failed: false,
            recorded: 0,
            started,
            last_failed: Vec::new(),
            leaks: 0,
        }
    }

    /// Something the user must know, shown now and again before the closing
    /// line.
    pub fn note(&mut self, message: String) {
        self.terminal.warn(&message);
        self.notes.push(message);
    }

    /// A note found once the run is over: shown once, before the closing line.
    pub fn closing_note(&mut self, message: String) {
        self.notes.push(message);
    }

    /// A process a test left running after it ended: a note and a log
    /// line, not a failure (pytest doesn't fail such a test either).
    pub fn leaked(&mut self, leftover: &Leftover) {
        self.log(LogLine::LeakedProcess {
            test: leftover.test().map(str::to_owned),
            pid: leftover.pid,
            command: leftover.command.clone(),
        });
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
            self.log(LogLine::LeftoverKilled {
                test: leftover.test().map(str::to_owned),
                origin: leftover.origin.to_string(),
                pid: leftover.pid,
                command: leftover.command.clone(),
            });
        }
        for note in swept.notes() {
            self.note(note);
        }
    }

    /// Marks the run as stopped early, for the closing report.
    pub fn interrupted(&mut self, reason: String) {
        self.interrupted = Some(reason);
    }

    /// A test stopped pytest's session, for the closing report.
    pub fn session_stopped(&mut self, stop: SessionStop) {
        self.session_stop = Some(stop);
    }

    fn log(&mut self, line: LogLine) {
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
        self.log(LogLine::RunStarted {
            tests: tests as u64,
            workers,
            deselected,
            collected_after_secs: collected_after,
        });
        for error in errors {
            self.log(LogLine::CollectionError {
                id: error.id.clone(),
                longrepr: error.longrepr.clone(),
            });
        }
        let event = RunEvent::RunStarted {
            tests: tests as u32,
            workers,
        };
        self.report_event(&event);
    }

    /// Tests the scheduler chose not to run: in the log with their reason,
    /// counted as deselected, each named in the header.
    pub fn deselected_by_scheduler(&mut self, deselected: &[(String, String)]) {
        let mut reasons: Vec<(&str, usize)> = Vec::new();
        for (id, reason) in deselected {
            self.log(LogLine::Deselected {
                id: id.clone(),
                reason: reason.clone(),
            });
            if self.terminal.verbosity() == Verbosity::Verbose {
                self.terminal
                    .header(&format!("deselected by the scheduler: {id} ({reason})"));
            }
            match reasons.iter_mut().find(|(r, _)| r == reason) {
                Some((_, count)) => *count += 1,
                None => reasons.push((reason, 1)),
            }
        }
        if !reasons.is_empty() && self.terminal.verbosity() == Verbosity::Normal {
            let listed: Vec<String> = reasons
                .iter()
                .map(|(reason, count)| format!("{count} ({reason})"))
                .collect();
            self.terminal.header(&format!(
                "deselected by the scheduler: {}",
                listed.join(", ")
            ));
        }
        self.stats.add("deselected", deselected.len() as u32);
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
        injected_panic();
        self.log(LogLine::Result {
            id: result.id.clone(),
            outcome: result.outcome,
            phases: result.phases.clone(),
            duration_secs: result.duration_secs,
            worker: result.worker.clone(),
            longrepr: result.longrepr.clone(),
            at_secs: self.started.elapsed().as_secs_f64(),
        });
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
            self.log(LogLine::NotRun { id: id.clone() });
        }
        self.closing_note(format!("{} planned tests did not run", ids.len()));
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
        self.log(LogLine::RunFinished {
            exit_code,
            duration_secs: elapsed.as_secs_f64(),
        });
        if let Err(error) = self.history.save() {
            let path = self.history.path().display();
            self.note(format!(
                "could not save the test history to {path}: {error}"
            ));
        }
        let summary = Summary {
            collect_errors: &self.collect_errors,
            warnings: &self.warnings,
            problems: &self.problems,
            stats: &self.stats,
            elapsed,
            notes: &self.notes,
            interrupted: self.interrupted.as_deref(),
            exit_code,
            session_stop: self.session_stop.as_ref(),
        };
        self.terminal.finish(&summary);
        exit_code
    }
}

/// Fault injection for runner's own tests: `RUNNER_INJECT_PANIC=result`
/// makes runner panic when the first result arrives, mid-run, as a bug
/// would; the tests check that the panic hook cleans up.
fn injected_panic() {
    static INJECT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *INJECT
        .get_or_init(|| std::env::var_os("RUNNER_INJECT_PANIC").is_some_and(|v| v == "result"))
    {
        panic!("injected by RUNNER_INJECT_PANIC=result");
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
