//! Everything observable about a run, as one typed stream of events. The
//! run emits them; the terminal, the run log, the JSON stream (`--format
//! json`), the history, pytest's last-failed cache and the reporter
//! policies consume them and never reach back. The run log and the JSON
//! stream are these events serialized, one JSON object per line: this type
//! is their schema (versioned by [`SCHEMA_VERSION`], documented in the
//! README).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::Outcome;
use crate::wire::{PhaseReport, Raw, SessionStop};

/// The version of the event schema; a reader refuses a newer major one.
/// Fields may be added without a new version, so readers ignore unknown
/// fields.
pub const SCHEMA_VERSION: u32 = 1;

/// An event with the wall-clock time it happened, as written to the run log
/// and the JSON stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// Seconds since the Unix epoch (UTC), to the microsecond.
    #[serde(deserialize_with = "secs")]
    pub at: f64,
    #[serde(flatten)]
    pub event: RunEvent,
}

impl Stamped {
    pub fn now(event: RunEvent) -> Stamped {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_micros() as f64) / 1e6);
        Stamped { at, event }
    }
}

/// One thing that happened in a run, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RunEvent {
    /// Always the first event: collection is done and the plan is made.
    RunStarted {
        schema: u32,
        run_id: String,
        /// runner's version.
        runner: String,
        rootdir: String,
        python: String,
        pytest: String,
        /// Tests collected (after pytest's own `-k`/`-m` selection).
        tests: u64,
        workers: u32,
        /// Tests pytest deselected (`-k`, `-m`).
        deselected: u32,
        #[serde(deserialize_with = "secs")]
        collected_after_secs: f64,
        /// The scheduler's plan: batches of test ids, each run in order on
        /// one worker.
        #[serde(default)]
        plan: Vec<Vec<String>>,
        /// The pytest option that may stop a test in a debugger (`--pdb`,
        /// `--trace`): the run's one worker is attached to runner's
        /// terminal, and no timeout applies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        debugger: Option<String>,
    },
    /// A file or module pytest could not collect.
    CollectionError {
        id: String,
        longrepr: String,
        #[serde(default)]
        message: Option<String>,
    },
    /// A warning pytest recorded (`nodeid` empty outside a test).
    Warning {
        nodeid: String,
        message: String,
        /// From a worker: when it was raised and the warning itself, for
        /// the zygote's pytest to replay; not written out.
        #[serde(skip)]
        replay: Option<(String, Raw)>,
    },
    /// A collected test the scheduler chose not to run, and why.
    Deselected { id: String, reason: String },
    /// A worker began a test.
    TestStarted {
        id: String,
        worker: String,
        attempt: u32,
    },
    /// A test is still running after `after_secs` (`--slow`).
    TestSlow {
        id: String,
        worker: String,
        #[serde(deserialize_with = "secs")]
        after_secs: f64,
    },
    /// A line a worker wrote to its stdout or stderr, when pytest's capture
    /// lets it through (`-s`): `test` wrote it (none: the worker, between
    /// tests). Lines come whole, in the order written; one cut short
    /// (`partial`: a prompt without its newline, shown after a moment or
    /// as its test ended) goes on in the next.
    Output {
        worker: String,
        #[serde(default)]
        test: Option<String>,
        /// Without its newline; bytes that are not UTF-8 are replaced.
        line: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    /// A test's final result. For a test whose worker hung or crashed, the
    /// one report is runner's, with the evidence in its `longrepr`.
    TestFinished {
        id: String,
        worker: String,
        /// runner's attempt at the test: 1 (runner does not run a test
        /// twice; pytest's reruns are `attempts`).
        attempt: u32,
        /// The final outcome: the last attempt's, when a rerun plugin
        /// (pytest-rerunfailures) ran the test again.
        outcome: Outcome,
        #[serde(deserialize_with = "secs")]
        duration_secs: f64,
        /// Each phase and pytest's report category for it.
        phases: Vec<(String, String)>,
        /// The failure text (traceback) or skip reason; empty when passed.
        #[serde(default)]
        longrepr: String,
        /// pytest's reports, one per phase, as the worker sent them
        /// (every attempt's, the `rerun` ones included).
        #[serde(default)]
        reports: Vec<PhaseReport>,
        /// How many times pytest ran the test: 1 plus its reruns.
        #[serde(default = "one")]
        attempts: u32,
        /// An earlier attempt failed and the last one passed.
        #[serde(default)]
        flaky: bool,
    },
    /// A worker is gone while it held a test or outside one.
    WorkerLost {
        worker: String,
        #[serde(default)]
        pid: Option<i32>,
        /// The test it was running, if any.
        #[serde(default)]
        test: Option<String>,
        cause: LostCause,
    },
    /// A process a test left running after it ended (a leaky test).
    LeakedProcess {
        /// The test that started it, when known.
        test: Option<String>,
        pid: i32,
        command: String,
    },
    /// A process of the run still alive at its end, killed.
    LeftoverKilled {
        test: Option<String>,
        /// Who started it, in words (a test, collection, unknown).
        origin: String,
        pid: i32,
        command: String,
    },
    /// The run stops dispatching before its plan is done.
    RunStopping { reason: StopReason },
    /// A planned test that did not run (the run stopped early).
    NotRun { id: String },
    /// The run's results can't be trusted.
    Untrusted { cause: UntrustedCause },
    /// Something the user must know that is not about one test: a policy
    /// failed or fell back, a file could not be written.
    Notice { message: String },
    /// Always the last event.
    RunFinished {
        exit_code: i32,
        #[serde(deserialize_with = "secs")]
        duration_secs: f64,
    },
}

/// How a worker was lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LostCause {
    /// Stopped by runner after its test passed its time limit (or the run's
    /// global timeout, `global`).
    Hung {
        #[serde(deserialize_with = "secs")]
        limit_secs: f64,
        global: bool,
        /// The signal it finally died of, if known.
        #[serde(default)]
        signal: Option<i32>,
    },
    /// Killed by a signal it did not get from runner.
    Signal { signal: i32 },
    /// Exited by itself.
    Exited { code: i32 },
    /// Stopped when the zygote died.
    ZygoteDied,
    /// Gone without an exit status (nobody could report it).
    Disappeared,
}

/// Why a run stopped dispatching early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StopReason {
    /// `-x` / `--maxfail`.
    MaxFail { failures: u32 },
    GlobalTimeout {
        #[serde(deserialize_with = "secs")]
        secs: f64,
    },
    /// Workers crashed more often than `--max-worker-restart` allows.
    RestartLimit { restarts: u32 },
    ZygoteDied {
        status: String,
        /// The end of what it printed, for the note.
        #[serde(default)]
        last_output: String,
    },
    /// The zygote did not fork a worker within the deadline.
    ZygoteStuck {
        pid: i32,
        /// It was stopped (SIGSTOP, a debugger).
        stopped: bool,
        #[serde(deserialize_with = "secs")]
        waited_secs: f64,
    },
    /// SIGINT, SIGTERM, or the reader of runner's output went away.
    Signal { name: String },
    /// A command from outside the run (cancel, stop).
    Command { name: String },
    /// A test stopped pytest's session (KeyboardInterrupt, `pytest.exit`).
    Session(SessionStop),
    /// pytest stopped the session on collection errors: nothing runs.
    Collection { reason: String },
}

impl StopReason {
    /// Whether the run was interrupted from outside (exit code 2).
    pub fn is_interruption(&self) -> bool {
        matches!(
            self,
            StopReason::Signal { .. }
                | StopReason::GlobalTimeout { .. }
                | StopReason::Command { .. }
                | StopReason::Collection { .. }
        )
    }

    /// pytest's words for it, as in `!!! Interrupted: ... !!!`.
    pub fn describe(&self) -> String {
        match self {
            StopReason::MaxFail { failures } => format!("stopping after {failures} failures"),
            StopReason::GlobalTimeout { secs } => format!("global timeout of {secs}s reached"),
            StopReason::RestartLimit { restarts } => format!(
                "workers crashed {restarts} times, the --max-worker-restart limit; stopping"
            ),
            StopReason::ZygoteDied { status, .. } => format!("the zygote died ({status})"),
            StopReason::ZygoteStuck { .. } => "the zygote can't fork workers; stopping".to_owned(),
            StopReason::Signal { name } | StopReason::Command { name } => name.clone(),
            StopReason::Session(stop) => stop.reason.clone(),
            StopReason::Collection { reason } => reason.clone(),
        }
    }
}

/// Why a run's results can't be trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum UntrustedCause {
    /// A worker died while holding no test: it may have lost a result.
    WorkerLostOutsideTest { worker: String, cause: LostCause },
    /// Results and not-run tests do not add up to the plan.
    Unaccounted {
        planned: u64,
        results: u64,
        not_run: u64,
    },
    /// A worker sent something that is not the protocol.
    BadMessage { from: String, error: String },
}

fn one() -> u32 {
    1
}

/// JSON has no NaN or infinity, so serde_json writes them as `null`; such a
/// value is read back as NaN rather than losing the whole line.
fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_their_time_and_tag() {
        let event = Stamped {
            at: 1_795_457_070.5,
            event: RunEvent::WorkerLost {
                worker: "gw1".into(),
                pid: Some(42),
                test: Some("t.py::a".into()),
                cause: LostCause::Hung {
                    limit_secs: 2.0,
                    global: false,
                    signal: Some(15),
                },
            },
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"at":1795457070.5,"type":"worker-lost","worker":"gw1","pid":42,"test":"t.py::a","cause":{"kind":"hung","limit_secs":2.0,"global":false,"signal":15}}"#
        );
        assert_eq!(serde_json::from_str::<Stamped>(&line).unwrap(), event);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = r#"{"at":1.0,"type":"not-run","id":"t.py::b","added_later":[1]}"#;
        let read: Stamped = serde_json::from_str(line).unwrap();
        assert_eq!(
            read.event,
            RunEvent::NotRun {
                id: "t.py::b".into()
            }
        );
    }
}
