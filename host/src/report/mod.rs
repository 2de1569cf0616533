//! The sinks of a run's events: the run log, the JSON stream, the terminal,
//! the history (with the quarantine policy), pytest's last-failed set and
//! the reporter policies. [`Sinks::emit`] stamps each event and hands it to
//! every sink, the run log first so that a result is on disk before
//! anything else can fail. Sinks only consume; what they find (a reporter
//! that failed, a file that can't be written) comes back as events of their
//! own, never as a call into the run.

mod json;
mod last_failed;
mod log;
mod pytest;
mod reporters;
mod terminal;

pub use last_failed::LastFailed;
pub use log::RunLogFile;
pub use terminal::TerminalSink;

use crate::connections::ZygoteLink;
use crate::events::{RunEvent, Stamped};
use crate::policy::Policies;
use crate::state::History;
use json::JsonStream;
use pytest::PytestSink;
use reporters::ReporterSink;

/// Where the events of one run go.
pub struct Sinks {
    log: RunLogFile,
    json: Option<JsonStream>,
    pub terminal: TerminalSink,
    pub pytest: PytestSink,
    history: History,
    reporters: ReporterSink,
    last_failed: LastFailed,
    /// Events the sinks raised themselves while handling one (a reporter
    /// that failed), emitted after it.
    raised: Vec<RunEvent>,
}

/// What the sinks learned that changes how the run ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkVerdict {
    /// A reporter policy failed: the run must not end green.
    pub reporter_failed: bool,
}

impl Sinks {
    pub fn new(
        log: RunLogFile,
        json: bool,
        terminal: TerminalSink,
        history: History,
        policies: Policies,
        zygote: Option<ZygoteLink>,
    ) -> Sinks {
        policies.set_log_sink(terminal.log_sink());
        Sinks {
            log,
            json: json.then(JsonStream::default),
            terminal,
            pytest: PytestSink::new(zygote),
            history,
            reporters: ReporterSink::new(policies),
            last_failed: LastFailed::default(),
            raised: Vec::new(),
        }
    }

    /// Hands `event` to every sink, then whatever they raised.
    pub fn emit(&mut self, event: RunEvent) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            self.deliver(Stamped::now(event));
            if !self.raised.is_empty() {
                next = Some(self.raised.remove(0));
            }
        }
    }

    fn deliver(&mut self, stamped: Stamped) {
        if let Err(error) = self.log.write(&stamped) {
            self.raised.push(RunEvent::Notice { message: error });
        }
        if let Some(json) = &mut self.json {
            json.write(&stamped);
        }
        let event = &stamped.event;
        self.history.record_event(event);
        self.last_failed.record(event);
        self.raised.extend(self.reporters.report(event));
        self.pytest.show(event);
        self.terminal.show(event);
    }

    /// Ends the run: the reporter policies get `run-finished` and write
    /// their files, the quarantine policy judges the history, the history
    /// is saved; then `exit_code`, told whether a reporter failed, gives the
    /// run's exit code, which the last event carries to the other sinks.
    /// Returns that exit code.
    pub fn finish(&mut self, duration_secs: f64, exit_code: impl Fn(SinkVerdict) -> i32) -> i32 {
        let tentative = exit_code(self.verdict());
        let mut raised = self.reporters.finish(tentative, duration_secs);
        match self.reporters.decide(&self.history.all()) {
            Ok(verdicts) => {
                for verdict in verdicts {
                    self.history
                        .set_quarantined(&verdict.id, verdict.quarantined);
                }
            }
            Err(error) => raised.push(RunEvent::Notice {
                message: format!(
                    "quarantine policy failed, no quarantine changes this run: {error}"
                ),
            }),
        }
        if let Err(error) = self.history.save() {
            let path = self.history.path().display();
            raised.push(RunEvent::Notice {
                message: format!("could not save the test history to {path}: {error}"),
            });
        }
        for event in raised {
            self.emit(event);
        }
        let code = exit_code(self.verdict());
        self.emit(RunEvent::RunFinished {
            exit_code: code,
            duration_secs,
        });
        code
    }

    fn verdict(&self) -> SinkVerdict {
        SinkVerdict {
            reporter_failed: self.reporters.failed(),
        }
    }

    /// The tests this run failed and those it cleared, for pytest's cache.
    pub fn last_failed(&self) -> &LastFailed {
        &self.last_failed
    }

    /// Gives the policies back once the run is over (a session plans its
    /// next run with them).
    pub fn into_policies(self) -> Policies {
        self.reporters.into_policies()
    }
}
