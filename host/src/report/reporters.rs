//! The reporter policies (and the quarantine policy, which judges the
//! history once the run is over) as a sink: each event they take is turned
//! into the policies' own event type. A reporter that fails is dropped by
//! `Policies` and raises a notice; the run then can't end green.

use crate::events::RunEvent;
use crate::model::{ReporterEvent, TestHistory, TestResult, Verdict};
use crate::policy::{Policies, PolicyError};

pub struct ReporterSink {
    policies: Policies,
    failed: bool,
}

impl ReporterSink {
    pub fn new(policies: Policies) -> ReporterSink {
        ReporterSink {
            policies,
            failed: false,
        }
    }

    /// Passes on what reporters see; returns a notice for each failure.
    /// `run-finished` is passed by [`ReporterSink::finish`].
    pub fn report(&mut self, event: &RunEvent) -> Vec<RunEvent> {
        let event = match event {
            RunEvent::RunStarted { tests, workers, .. } => ReporterEvent::RunStarted {
                tests: *tests as u32,
                workers: *workers,
            },
            RunEvent::TestFinished {
                id,
                worker,
                outcome,
                duration_secs,
                phases,
                longrepr,
                reports,
                ..
            } => ReporterEvent::TestFinished(TestResult {
                id: id.clone(),
                outcome: *outcome,
                duration_secs: *duration_secs,
                worker: worker.clone(),
                longrepr: longrepr.clone(),
                // pytest repeats earlier phases' sections in later reports;
                // the last report carries the complete set.
                sections: reports
                    .last()
                    .map(|r| r.sections.clone())
                    .unwrap_or_default(),
                phases: phases.clone(),
            }),
            _ => return Vec::new(),
        };
        let result = self.policies.report(&event);
        self.notice(result)
    }

    /// Tells the reporters the run is over, then lets them write their files.
    pub fn finish(&mut self, exit_code: i32, duration_secs: f64) -> Vec<RunEvent> {
        let finished = self.policies.report(&ReporterEvent::RunFinished {
            exit_code,
            duration_secs,
        });
        let mut notices = self.notice(finished);
        let written = self.policies.finish();
        notices.extend(self.notice(written));
        notices
    }

    /// The quarantine policy's verdicts on the history.
    pub fn decide(&mut self, history: &[TestHistory]) -> Result<Vec<Verdict>, PolicyError> {
        self.policies.decide(history)
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn into_policies(self) -> Policies {
        self.policies
    }

    fn notice(&mut self, result: Result<(), PolicyError>) -> Vec<RunEvent> {
        match result {
            Ok(()) => Vec::new(),
            Err(error) => {
                self.failed = true;
                vec![RunEvent::Notice {
                    message: format!("reporter failed: {error}"),
                }]
            }
        }
    }
}
