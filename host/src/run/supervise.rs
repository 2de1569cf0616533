//! Supervision of a running test: slow notices, and past its time limit the
//! escalation that stops it. First SIGUSR1, on which faulthandler dumps
//! every thread's traceback to runner's evidence socket; after a short wait
//! the test's processes get SIGTERM, and SIGKILL after a grace period (the
//! SIGKILL is `Descendants`' to send, as it must come even if the worker
//! dies of the SIGTERM). All on the run clock, so time runner was stopped
//! or a test was held does not count.

use std::time::Duration;

use crate::clock::RunInstant;

/// After the traceback dump, how long a timed-out worker gets before SIGTERM.
pub const DUMP_WAIT: Duration = Duration::from_millis(300);
/// Between SIGTERM and SIGKILL of a hung test's processes.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    Running,
    /// SIGUSR1 sent: faulthandler dumps every thread's traceback.
    Dumped(RunInstant),
    /// SIGTERM sent.
    Terminated,
}

/// A test a worker is running.
#[derive(Debug)]
pub struct Running {
    pub id: String,
    pub since: RunInstant,
    pub timeout: Option<Duration>,
    pub stage: Stage,
    pub slow_notices: u32,
    /// Set when the global timeout, not the test's own, stopped it.
    pub global: bool,
}

/// What the supervisor must do for a running test, now.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Still running after this many seconds (`--slow`, at every multiple).
    Slow(f64),
    /// Ask for a traceback of every thread (SIGUSR1).
    Dump,
    /// Stop the test's processes (SIGTERM, then SIGKILL after TERM_GRACE).
    Terminate,
}

impl Running {
    pub fn new(id: String, since: RunInstant, timeout: Option<f64>) -> Running {
        Running {
            id,
            since,
            timeout: timeout.filter(|t| *t > 0.0).map(Duration::from_secs_f64),
            stage: Stage::Running,
            slow_notices: 0,
            global: false,
        }
    }

    /// Whether runner has begun stopping it (it is hung).
    pub fn stopped_by_runner(&self) -> bool {
        self.stage != Stage::Running
    }

    /// The limit it was held to.
    pub fn limit(&self) -> Duration {
        self.timeout.unwrap_or_default()
    }

    /// The run's global deadline passed: it stops now, as hung.
    pub fn stop_now(&mut self, now: RunInstant) {
        self.global = true;
        self.timeout = Some(now.saturating_sub(self.since));
    }

    /// The actions due at `now`, advancing the escalation.
    pub fn check(&mut self, now: RunInstant, slow: Option<f64>) -> Vec<Action> {
        let mut actions = Vec::new();
        let elapsed = now.saturating_sub(self.since);
        if let Some(slow) = slow.filter(|s| *s > 0.0) {
            let crossed = (elapsed.as_secs_f64() / slow) as u32;
            if crossed > self.slow_notices {
                self.slow_notices = crossed;
                actions.push(Action::Slow(crossed as f64 * slow));
            }
        }
        let Some(timeout) = self.timeout else {
            return actions;
        };
        self.stage = match self.stage {
            Stage::Running if elapsed >= timeout => {
                actions.push(Action::Dump);
                Stage::Dumped(now)
            }
            Stage::Dumped(at) if now.saturating_sub(at) >= DUMP_WAIT => {
                actions.push(Action::Terminate);
                Stage::Terminated
            }
            stage => stage,
        };
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> RunInstant {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_test_past_its_limit_is_dumped_then_terminated() {
        let mut running = Running::new("t".into(), secs(10.0), Some(2.0));
        assert_eq!(running.check(secs(11.9), None), []);
        assert_eq!(running.check(secs(12.0), None), [Action::Dump]);
        assert_eq!(running.check(secs(12.1), None), []);
        assert_eq!(running.check(secs(12.3), None), [Action::Terminate]);
        assert_eq!(running.check(secs(20.0), None), [], "terminated once");
        assert!(running.stopped_by_runner());
    }

    #[test]
    fn slow_notices_come_at_each_multiple() {
        let mut running = Running::new("t".into(), secs(0.0), None);
        assert_eq!(running.check(secs(0.9), Some(1.0)), []);
        assert_eq!(running.check(secs(1.0), Some(1.0)), [Action::Slow(1.0)]);
        assert_eq!(running.check(secs(1.5), Some(1.0)), []);
        assert_eq!(running.check(secs(3.2), Some(1.0)), [Action::Slow(3.0)]);
    }

    #[test]
    fn no_timeout_means_never_hung() {
        let mut running = Running::new("t".into(), secs(0.0), Some(0.0));
        assert_eq!(running.check(secs(1e6), None), []);
        assert!(!running.stopped_by_runner());
    }

    #[test]
    fn the_global_deadline_stops_it_now() {
        let mut running = Running::new("t".into(), secs(1.0), None);
        running.stop_now(secs(4.0));
        assert_eq!(running.check(secs(4.0), None), [Action::Dump]);
        assert!(running.global);
        assert_eq!(running.limit(), secs(3.0));
    }
}
