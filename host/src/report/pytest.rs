//! pytest itself as a sink: each finished test goes back to the zygote,
//! whose pytest replays its reports through its own hooks (as xdist's
//! controller does). pytest's terminal reporter then writes the report the
//! user reads, and main-process plugins (junitxml, pytest-cov, pytest-split,
//! a conftest's terminal summary) see every result.

use crate::connections::ZygoteLink;
use crate::events::{RunEvent, StopReason};
use crate::wire::{Lost, Outbound, SessionStop};

pub struct PytestSink {
    /// None once the zygote's connection is gone (or for a session without
    /// one): pytest's report is then incomplete.
    link: Option<ZygoteLink>,
    /// Why the run stopped early, for pytest's summary.
    stop: Option<StopReason>,
}

impl PytestSink {
    pub fn new(link: Option<ZygoteLink>) -> PytestSink {
        PytestSink { link, stop: None }
    }

    /// Whether every event reached the zygote so far.
    pub fn connected(&self) -> bool {
        self.link.is_some()
    }

    pub fn show(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { plan, workers, .. } => {
                let tests = plan.iter().map(Vec::len).sum();
                self.send(&Outbound::RunStart {
                    tests,
                    workers: *workers,
                });
            }
            RunEvent::TestFinished { id, reports, .. } => {
                let replayed = reports.iter().filter_map(|r| r.pytest.as_ref()).collect();
                // runner's own report: a test whose worker hung or crashed.
                let lost = reports
                    .iter()
                    .find(|r| r.pytest.is_none() && !r.word.is_empty())
                    .map(|r| Lost {
                        outcome: &r.category,
                        longrepr: &r.longrepr,
                        message: r.message.as_deref().unwrap_or_default(),
                        duration: r.duration,
                        sections: &r.sections,
                    });
                self.send(&Outbound::Test {
                    id,
                    reports: replayed,
                    lost,
                });
            }
            RunEvent::Warning {
                nodeid,
                replay: Some((when, warning)),
                ..
            } => self.send(&Outbound::Warning {
                nodeid,
                when,
                warning,
            }),
            RunEvent::Deselected { id, .. } => self.send(&Outbound::Deselected { ids: &[id] }),
            RunEvent::RunStopping { reason } => {
                self.stop.get_or_insert_with(|| reason.clone());
            }
            _ => {}
        }
    }

    /// How pytest's summary tells why the run stopped early: a test that
    /// stopped pytest's session stops the zygote's the same way; `-x` and
    /// `--maxfail` pytest counts itself; anything else is runner's reason.
    pub fn stopped(&self) -> (Option<String>, Option<&SessionStop>) {
        match &self.stop {
            None | Some(StopReason::MaxFail { .. }) => (None, None),
            Some(StopReason::Session(stop)) => (None, Some(stop)),
            Some(reason) => (Some(format!("Interrupted: {}", reason.describe())), None),
        }
    }

    fn send(&mut self, message: &Outbound<'_>) {
        if let Some(link) = &self.link
            && !link.send(message)
        {
            self.link = None;
        }
    }
}
