//! The rules that stop a run before its plan is done, from the run's own
//! counts: pytest's `--maxfail` (`-x`), the bound on replacement workers,
//! and the global deadline. Signals, commands and a test stopping pytest's
//! session stop a run too, but they are events, not rules.

use std::time::Duration;

use crate::clock::RunInstant;
use crate::events::StopReason;

/// Supervision settings, from the command line and pytest's config.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Per-test timeout in seconds, unless a test's marker says otherwise.
    pub timeout: Option<f64>,
    /// Print a notice for tests running longer than this.
    pub slow: Option<f64>,
    /// Stop the whole run after this long (from runner's start).
    pub global_timeout: Option<f64>,
    /// Replacement workers allowed before the run stops.
    pub max_worker_restart: u32,
    /// Stop after this many failures (pytest's --maxfail; 0 = never).
    pub maxfail: u32,
}

impl Limits {
    /// After `failures` failed reports (pytest's `testsfailed`).
    pub fn after_failures(&self, failures: u32) -> Option<StopReason> {
        (self.maxfail > 0 && failures >= self.maxfail).then_some(StopReason::MaxFail { failures })
    }

    /// Before forking a replacement, when `restarts` were already made.
    pub fn before_restart(&self, restarts: u32) -> Option<StopReason> {
        (restarts >= self.max_worker_restart).then_some(StopReason::RestartLimit { restarts })
    }

    /// At run time `now`.
    pub fn at(&self, now: RunInstant) -> Option<StopReason> {
        let secs = self.global_timeout?;
        (now > Duration::from_secs_f64(secs)).then_some(StopReason::GlobalTimeout { secs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxfail_stops_at_the_limit_and_zero_never_does() {
        let limits = Limits {
            maxfail: 2,
            ..Limits::default()
        };
        assert_eq!(limits.after_failures(1), None);
        assert_eq!(
            limits.after_failures(2),
            Some(StopReason::MaxFail { failures: 2 })
        );
        // Two failures in one report batch: pytest stops at the count it has.
        assert_eq!(
            limits.after_failures(3),
            Some(StopReason::MaxFail { failures: 3 })
        );
        assert_eq!(Limits::default().after_failures(1000), None);
    }

    #[test]
    fn restarts_are_bounded() {
        let limits = Limits {
            max_worker_restart: 2,
            ..Limits::default()
        };
        assert_eq!(limits.before_restart(1), None);
        assert_eq!(
            limits.before_restart(2),
            Some(StopReason::RestartLimit { restarts: 2 })
        );
        let none = Limits::default();
        assert_eq!(
            none.before_restart(0),
            Some(StopReason::RestartLimit { restarts: 0 }),
            "no replacement allowed when the bound is 0"
        );
    }

    #[test]
    fn the_global_deadline_is_on_run_time() {
        let limits = Limits {
            global_timeout: Some(1.5),
            ..Limits::default()
        };
        assert_eq!(limits.at(Duration::from_millis(1500)), None);
        assert_eq!(
            limits.at(Duration::from_millis(1501)),
            Some(StopReason::GlobalTimeout { secs: 1.5 })
        );
        assert_eq!(Limits::default().at(Duration::from_secs(1_000_000)), None);
    }
}
