//! The terminal as a sink: runner's own lines on stderr while the run goes
//! on (its header, slow tests, notices), and the notes pytest's report
//! ends with. pytest's report itself is the zygote's (report/pytest.rs):
//! only when the zygote could not write it does this sink write it from
//! the events. Everything runner says about the run is worded here; the
//! run itself writes no prose.

use std::time::Duration;

use crate::events::{RunEvent, StopReason, UntrustedCause};
use crate::outcome::describe_loss;
use crate::summary::Stats;
use crate::ui::{Problem, Summary, Terminal, Verbosity};
use crate::wire::{CollectError, SessionStop, WarningRecord};

/// Leaky tests named in notes; the run log has them all.
const LEAK_NOTES: usize = 20;

pub struct TerminalSink {
    terminal: Terminal,
    stats: Stats,
    problems: Vec<Problem>,
    collect_errors: Vec<CollectError>,
    warnings: Vec<WarningRecord>,
    /// Things the user must know about the run itself, printed before the
    /// closing line.
    notes: Vec<String>,
    interrupted: Option<String>,
    session_stop: Option<SessionStop>,
    /// The scheduler's deselections, by reason, until they are shown.
    deselected: Vec<(String, usize)>,
    not_run: usize,
    leaks: usize,
    /// pytest's report is written by the zygote; when it could not be,
    /// this sink writes one at the end.
    pytest_reports: bool,
}

impl TerminalSink {
    pub fn new(verbosity: Verbosity) -> TerminalSink {
        TerminalSink {
            terminal: Terminal::new(verbosity),
            stats: Stats::default(),
            problems: Vec::new(),
            collect_errors: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            interrupted: None,
            session_stop: None,
            deselected: Vec::new(),
            not_run: 0,
            leaks: 0,
            pytest_reports: true,
        }
    }

    /// The zygote could not write pytest's report of this run (it died,
    /// or stopped answering): this sink writes it, from the events.
    pub fn report_instead_of_pytest(&mut self) {
        self.pytest_reports = false;
    }

    /// runner's notes for the end of pytest's report: what the user must
    /// know about the run itself (tests that did not run, leaky tests, a
    /// policy that failed).
    pub fn report_notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if self.not_run > 0 {
            notes.push(not_run_note(self.not_run));
        }
        notes
    }

    /// The final report goes to stderr: stdout carries `--format json`.
    pub fn report_to_stderr(&mut self) {
        self.terminal.report_to_stderr = true;
    }

    /// A warning before the run's events start (a corrupt history, a state
    /// directory that can't be written).
    pub fn warn(&self, message: &str) {
        self.terminal.warn(message);
    }

    /// Where policy log lines go, kept clear of the progress bar.
    pub fn log_sink(&self) -> Box<dyn FnMut(&str) + Send> {
        self.terminal.log_sink()
    }

    pub fn show(&mut self, event: &RunEvent) {
        if !matches!(event, RunEvent::Deselected { .. }) {
            self.show_deselected();
        }
        match event {
            RunEvent::RunStarted {
                runner,
                rootdir,
                python,
                pytest,
                tests,
                workers,
                deselected,
                debugger,
                ..
            } => {
                self.terminal.header(&format!(
                    "runner {runner} · Python {python} · pytest {pytest} · {tests} tests · {workers} worker{} · rootdir {rootdir}",
                    if *workers == 1 { "" } else { "s" },
                ));
                self.stats.add("deselected", *deselected);
                if let Some(option) = debugger {
                    self.terminal.say(&format!(
                        "runner: {option}: running on one worker attached to this terminal; timeouts are off"
                    ));
                }
            }
            RunEvent::CollectionError {
                id,
                longrepr,
                message,
            } => {
                self.stats.add("error", 1);
                self.collect_errors.push(CollectError {
                    id: id.clone(),
                    longrepr: longrepr.clone(),
                    message: message.clone(),
                });
            }
            RunEvent::Warning {
                nodeid, message, ..
            } => {
                self.stats.add("warnings", 1);
                self.warnings.push(WarningRecord {
                    nodeid: nodeid.clone(),
                    message: message.clone(),
                    pytest: None,
                    when: None,
                });
            }
            RunEvent::Deselected { id, reason } => {
                self.stats.add("deselected", 1);
                if self.terminal.verbosity() == Verbosity::Verbose {
                    self.terminal
                        .header(&format!("deselected by the scheduler: {id} ({reason})"));
                }
                match self.deselected.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, count)) => *count += 1,
                    None => self.deselected.push((reason.clone(), 1)),
                }
            }
            RunEvent::TestStarted { .. } => {}
            RunEvent::Output {
                worker, test, line, ..
            } => self.terminal.output_line(worker, test.as_deref(), line),
            RunEvent::TestSlow {
                id,
                worker,
                after_secs,
            } => self
                .terminal
                .notice(&format!("SLOW [> {after_secs:.1}s] {worker} {id}")),
            RunEvent::TestFinished {
                id,
                outcome,
                reports,
                attempts,
                flaky,
                ..
            } => {
                for report in reports {
                    self.stats.add(&report.category, 1);
                }
                if *flaky {
                    self.notes.push(flaky_note(id, *attempts));
                }
                if outcome.is_failure() {
                    self.problems.push(Problem {
                        id: id.clone(),
                        reports: reports.clone(),
                    });
                }
            }
            RunEvent::WorkerLost { .. } => {}
            RunEvent::LeakedProcess { test, pid, command } => {
                self.leaks += 1;
                if self.leaks <= LEAK_NOTES {
                    self.note(format!(
                        "leaky test: {} left a process running after it ended: pid {pid} `{command}`",
                        test.as_deref().unwrap_or("?"),
                    ));
                } else if self.leaks == LEAK_NOTES + 1 {
                    self.note(
                        "more tests left processes running; the run log lists them all".into(),
                    );
                }
            }
            RunEvent::LeftoverKilled { .. } => {}
            RunEvent::RunStopping { reason } => self.stopping(reason),
            RunEvent::NotRun { .. } => self.not_run += 1,
            RunEvent::Untrusted { cause } => self
                .notes
                .push(format!("this run can't be trusted: {}", untrusted(cause))),
            RunEvent::Notice { message } => self.note(message.clone()),
            RunEvent::RunFinished {
                exit_code,
                duration_secs,
            } => {
                if self.pytest_reports {
                    return;
                }
                if self.not_run > 0 {
                    self.notes.push(not_run_note(self.not_run));
                }
                let summary = Summary {
                    collect_errors: &self.collect_errors,
                    warnings: &self.warnings,
                    problems: &self.problems,
                    stats: &self.stats,
                    elapsed: Duration::from_secs_f64(duration_secs.max(0.0)),
                    notes: &self.notes,
                    interrupted: self.interrupted.as_deref(),
                    exit_code: *exit_code,
                    session_stop: self.session_stop.as_ref(),
                };
                self.terminal.finish(&summary);
            }
        }
    }

    /// Something the user must know: shown now, and again before the
    /// closing line.
    fn note(&mut self, message: String) {
        self.terminal.warn(&message);
        self.notes.push(message);
    }

    fn stopping(&mut self, reason: &StopReason) {
        match reason {
            StopReason::Session(stop) => {
                self.session_stop = Some(stop.clone());
                return;
            }
            StopReason::ZygoteDied {
                status,
                last_output,
            } => {
                let last_output = last_output.trim_end();
                self.note(if last_output.is_empty() {
                    format!("the zygote exited unexpectedly ({status})")
                } else {
                    format!(
                        "the zygote exited unexpectedly ({status}); its last output:\n{last_output}"
                    )
                });
            }
            StopReason::ZygoteStuck {
                pid,
                stopped,
                waited_secs,
            } => {
                let state = if *stopped {
                    " (it is stopped: SIGSTOP or a debugger)"
                } else {
                    ""
                };
                self.note(format!(
                    "the zygote (pid {pid}) did not fork a worker within {waited_secs}s{state}; no new test starts"
                ));
            }
            _ => {}
        }
        self.interrupted = Some(reason.describe());
    }

    /// The scheduler's deselections, one line by reason (each one with -v).
    fn show_deselected(&mut self) {
        if self.deselected.is_empty() {
            return;
        }
        let reasons = std::mem::take(&mut self.deselected);
        if self.terminal.verbosity() == Verbosity::Normal {
            let listed: Vec<String> = reasons
                .iter()
                .map(|(reason, count)| format!("{count} ({reason})"))
                .collect();
            self.terminal.header(&format!(
                "deselected by the scheduler: {}",
                listed.join(", ")
            ));
        }
    }
}

fn not_run_note(count: usize) -> String {
    match count {
        1 => "1 planned test did not run".to_owned(),
        n => format!("{n} planned tests did not run"),
    }
}

/// "flaky: t.py::test_x failed once, then passed on attempt 2".
fn flaky_note(id: &str, attempts: u32) -> String {
    let failed = match attempts.saturating_sub(1) {
        1 => "once".to_owned(),
        n => format!("{n} times"),
    };
    format!("flaky: {id} failed {failed}, then passed on attempt {attempts}")
}

fn untrusted(cause: &UntrustedCause) -> String {
    match cause {
        UntrustedCause::WorkerLostOutsideTest { worker, cause } => {
            format!("worker {worker} {} outside a test", describe_loss(cause))
        }
        UntrustedCause::Unaccounted {
            planned,
            results,
            not_run,
        } => format!(
            "{planned} tests were planned but {} were accounted for ({results} results, {not_run} not run)",
            results + not_run
        ),
        UntrustedCause::BadMessage { from, error } => format!("bad message from {from}: {error}"),
    }
}
