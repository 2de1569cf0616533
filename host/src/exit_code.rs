//! runner's exit codes: pytest's own, so CI scripts written for pytest keep working.

/// All tests passed (skips and xfails included).
pub const OK: i32 = 0;
/// Some test failed, errored, hung or crashed, or the run could not be trusted.
pub const TESTS_FAILED: i32 = 1;
/// The run was interrupted: Ctrl-C, or pytest stopped on collection errors.
pub const INTERRUPTED: i32 = 2;
/// runner itself failed.
pub const INTERNAL_ERROR: i32 = 3;
/// Bad command line (runner's or pytest's), or no usable Python/pytest.
pub const USAGE_ERROR: i32 = 4;
/// No tests were collected.
pub const NO_TESTS_COLLECTED: i32 = 5;

use crate::events::StopReason;
use crate::run::RunEnd;

/// What decides a run's exit code.
#[derive(Debug)]
pub struct RunVerdict<'a> {
    /// pytest stopped the session on collection errors: nothing ran.
    pub collection_interrupted: bool,
    /// Collection errors were reported (and the session went on).
    pub collection_errors: bool,
    /// How the run ended; none when no test was planned.
    pub end: Option<&'a RunEnd>,
    /// A reporter policy failed.
    pub reporter_failed: bool,
}

/// The one place a run's exit code is decided, from the finished run.
pub fn of_run(verdict: &RunVerdict) -> i32 {
    let code = match verdict.end {
        _ if verdict.collection_interrupted => INTERRUPTED,
        None if verdict.collection_errors => TESTS_FAILED,
        // Nothing collected, or everything deselected, as pytest.
        None => NO_TESTS_COLLECTED,
        Some(end) => match &end.stop {
            Some(reason) if reason.is_interruption() => INTERRUPTED,
            // pytest's own code for a stop a test asked for, failures or
            // not; but never a green exit for a run that can't be trusted.
            Some(StopReason::Session(stop)) if stop.exit_code != OK || !end.untrusted => {
                stop.exit_code
            }
            _ if end.failures > 0
                || end.untrusted
                || end.stop.is_some()
                || verdict.collection_errors =>
            {
                TESTS_FAILED
            }
            _ => OK,
        },
    };
    if verdict.reporter_failed && code == OK {
        TESTS_FAILED
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SessionStop;

    fn end(stop: Option<StopReason>, failures: u32, untrusted: bool) -> RunEnd {
        RunEnd {
            stop,
            failures,
            untrusted,
            zygote_usable: true,
            zygote_answers: true,
        }
    }

    fn code(end: Option<&RunEnd>) -> i32 {
        of_run(&RunVerdict {
            collection_interrupted: false,
            collection_errors: false,
            end,
            reporter_failed: false,
        })
    }

    #[test]
    fn pytests_codes() {
        assert_eq!(code(Some(&end(None, 0, false))), OK);
        assert_eq!(code(Some(&end(None, 2, false))), TESTS_FAILED);
        assert_eq!(code(None), NO_TESTS_COLLECTED);
        let maxfail = end(Some(StopReason::MaxFail { failures: 1 }), 1, false);
        assert_eq!(code(Some(&maxfail)), TESTS_FAILED);
        let signal = end(
            Some(StopReason::Signal {
                name: "SIGTERM".into(),
            }),
            0,
            false,
        );
        assert_eq!(code(Some(&signal)), INTERRUPTED);
    }

    #[test]
    fn an_untrusted_run_is_never_green() {
        assert_eq!(code(Some(&end(None, 0, true))), TESTS_FAILED);
        let exit0 = SessionStop {
            id: None,
            reason: "Exit".into(),
            detail: String::new(),
            exit_code: 0,
        };
        let stop = Some(StopReason::Session(exit0));
        assert_eq!(code(Some(&end(stop.clone(), 0, false))), OK);
        assert_eq!(code(Some(&end(stop, 0, true))), TESTS_FAILED);
    }

    #[test]
    fn a_failed_reporter_and_collection_problems() {
        let ok = end(None, 0, false);
        let verdict = |interrupted, errors, reporter_failed, end| {
            of_run(&RunVerdict {
                collection_interrupted: interrupted,
                collection_errors: errors,
                end,
                reporter_failed,
            })
        };
        assert_eq!(verdict(false, false, true, Some(&ok)), TESTS_FAILED);
        assert_eq!(verdict(false, true, false, Some(&ok)), TESTS_FAILED);
        assert_eq!(verdict(false, true, false, None), TESTS_FAILED);
        assert_eq!(verdict(true, true, false, None), INTERRUPTED);
    }
}
