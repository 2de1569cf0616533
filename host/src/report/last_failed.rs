//! pytest's "last failed" set, as its cacheprovider would have updated it
//! from this run's reports, so that `runner -- --lf` works next time. The
//! session hands it to the zygote, whose cacheprovider saves it.

use crate::events::RunEvent;
use crate::wire::PhaseReport;

#[derive(Debug, Default)]
pub struct LastFailed {
    /// Per test, whether it now counts as failed.
    tests: Vec<(String, bool)>,
}

impl LastFailed {
    pub fn record(&mut self, event: &RunEvent) {
        if let RunEvent::TestFinished { id, reports, .. } = event
            && let Some(failed) = last_failed_state(reports)
        {
            self.tests.push((id.clone(), failed));
        }
    }

    /// The tests this run failed.
    pub fn failed(&self) -> Vec<String> {
        self.ids(true)
    }

    /// The tests this run cleared.
    pub fn passed(&self) -> Vec<String> {
        self.ids(false)
    }

    fn ids(&self, failed: bool) -> Vec<String> {
        self.tests
            .iter()
            .filter(|(_, f)| *f == failed)
            .map(|(id, _)| id.clone())
            .collect()
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
