//! The run's clock: monotonic time minus the time runner itself could not
//! watch, and minus the time the run was held on purpose (a test paused for
//! a person to look at). When runner is stopped (SIGSTOP, a debugger, a suspended laptop
//! that resumes only some processes first) its workers may go on running,
//! and on resume every test would look as if it had run for the whole
//! pause. Timeouts, the global deadline and slow notices are measured on
//! this clock, so a stop of runner never turns a passing test into a hung
//! one.

use std::time::{Duration, Instant};

/// A wake-up later than this past the tick period means runner was not
/// running (a loaded machine delays ticks by milliseconds, not seconds).
const MAX_TICK_LATENESS: Duration = Duration::from_secs(1);

/// A point on the run clock.
pub type RunInstant = Duration;

#[derive(Debug)]
pub struct RunClock {
    origin: Instant,
    /// Time runner was seen not running, or held, not counted.
    paused: Duration,
    last_wakeup: Instant,
    /// Since when the clock is held, if it is.
    held_since: Option<Instant>,
}

impl RunClock {
    pub fn new() -> RunClock {
        RunClock::starting_at(Instant::now())
    }

    /// A clock whose run time 0 is `origin` (when runner started).
    pub fn starting_at(origin: Instant) -> RunClock {
        RunClock {
            origin,
            paused: Duration::ZERO,
            last_wakeup: Instant::now(),
            held_since: None,
        }
    }

    /// Stops the clock: until [`RunClock::release`], no time passes for
    /// timeouts and deadlines.
    pub fn hold(&mut self) {
        self.held_since.get_or_insert_with(Instant::now);
    }

    /// Starts the clock again after [`RunClock::hold`].
    pub fn release(&mut self) {
        if let Some(since) = self.held_since.take() {
            self.paused += since.elapsed();
        }
    }

    /// The run time now.
    pub fn now(&self) -> RunInstant {
        self.at(Instant::now())
    }

    fn at(&self, instant: Instant) -> RunInstant {
        let held = self.held_since.map_or(Duration::ZERO, |since| {
            instant.saturating_duration_since(since)
        });
        instant
            .saturating_duration_since(self.origin)
            .saturating_sub(self.paused + held)
    }

    /// Called first thing at every wake-up of a loop that a timer of period
    /// `period` wakes at least that often. Returns whether runner was
    /// stopped since the previous wake-up: the lateness beyond
    /// [`MAX_TICK_LATENESS`] is then left out of run time, and the caller
    /// should judge no deadline until the messages that arrived meanwhile
    /// have been read. Observing before anything else keeps run time from
    /// going backwards for anything recorded after the stop.
    pub fn observe(&mut self, period: Duration) -> bool {
        self.observe_at(Instant::now(), period)
    }

    fn observe_at(&mut self, now: Instant, period: Duration) -> bool {
        let gap = now.saturating_duration_since(self.last_wakeup);
        self.last_wakeup = now;
        let late = gap.saturating_sub(period);
        // While held, a stop of runner is already out of run time.
        if late > MAX_TICK_LATENESS && self.held_since.is_none() {
            self.paused += late;
            true
        } else {
            false
        }
    }
}

impl Default for RunClock {
    fn default() -> Self {
        RunClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(50);

    #[test]
    fn on_time_ticks_change_nothing() {
        let mut clock = RunClock::new();
        let start = clock.origin;
        for i in 1..=100 {
            assert!(!clock.observe_at(start + PERIOD * i, PERIOD));
        }
        assert_eq!(clock.at(start + PERIOD * 100), PERIOD * 100);
    }

    #[test]
    fn a_late_tick_is_a_pause_left_out_of_run_time() {
        let mut clock = RunClock::new();
        let start = clock.origin;
        assert!(!clock.observe_at(start + PERIOD, PERIOD));
        // Stopped for 30 s between two ticks.
        let resumed = start + PERIOD * 2 + Duration::from_secs(30);
        assert!(clock.observe_at(resumed, PERIOD));
        assert_eq!(clock.at(resumed), PERIOD * 2);
        assert!(!clock.observe_at(resumed + PERIOD, PERIOD));
        assert_eq!(clock.at(resumed + PERIOD), PERIOD * 3);
    }

    #[test]
    fn a_held_clock_does_not_move() {
        let mut clock = RunClock::new();
        let start = clock.origin;
        clock.held_since = Some(start + Duration::from_secs(1));
        assert_eq!(
            clock.at(start + Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        // Released at 5 s: time goes on from where it was held.
        clock.held_since = None;
        clock.paused += Duration::from_secs(4);
        assert_eq!(
            clock.at(start + Duration::from_secs(6)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn hold_and_release_leave_out_the_held_time() {
        let mut clock = RunClock::new();
        clock.hold();
        let held_at = clock.now();
        std::thread::sleep(Duration::from_millis(30));
        assert!(clock.now() - held_at < Duration::from_millis(5));
        clock.release();
        assert!(clock.now() - held_at < Duration::from_millis(10));
    }

    #[test]
    fn a_little_lateness_is_still_run_time() {
        // A loaded machine delays ticks; that is time tests really ran.
        let mut clock = RunClock::new();
        let start = clock.origin;
        let late = start + PERIOD + Duration::from_millis(900);
        assert!(!clock.observe_at(late, PERIOD));
        assert_eq!(clock.at(late), PERIOD + Duration::from_millis(900));
    }
}
