//! The data that flows through a run: collected tests, per-phase reports,
//! per-test results. Policies see these through the WIT types in
//! `wit/policy.wit`; `policy` converts between the two.

use serde::{Deserialize, Serialize};

/// A test as pytest collected it in the zygote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestCase {
    /// pytest node id, e.g. `tests/test_a.py::TestX::test_y[1-2]`.
    pub id: String,
    /// Path of the file that defines the test, relative to the rootdir.
    pub file: String,
    /// 1-based line of the definition, when pytest knows it.
    pub line: Option<u32>,
    /// Names of the markers on the test (`slow`, `xfail`, `parametrize`...).
    pub markers: Vec<String>,
    /// The `xdist_group` marker's name, if any.
    pub group: Option<String>,
    /// Seconds from the test's `timeout` marker, if any.
    #[serde(default, deserialize_with = "crate::wire::timeout_secs")]
    pub timeout: Option<f64>,
}

/// The outcome of one test, as pytest would summarise it, plus the two
/// outcomes only a supervisor can see.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    Xfailed,
    Xpassed,
    Error,
    Hung,
    Crashed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Xfailed => "xfailed",
            Outcome::Xpassed => "xpassed",
            Outcome::Error => "error",
            Outcome::Hung => "hung",
            Outcome::Crashed => "crashed",
        }
    }

    /// Whether this outcome makes the run fail (pytest exit code 1).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::Error | Outcome::Hung | Outcome::Crashed
        )
    }
}

/// The final result of one test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestResult {
    pub id: String,
    pub outcome: Outcome,
    /// Wall time of setup + call + teardown, measured by pytest in the worker.
    pub duration_secs: f64,
    /// The worker that ran it, e.g. `gw0`.
    pub worker: String,
    /// The failure text (traceback) or the skip/xfail reason; empty when passed.
    pub longrepr: String,
    /// Captured stdout, stderr and log sections, as pytest reports them.
    pub sections: Vec<(String, String)>,
    /// The report categories pytest's own `pytest_report_teststatus` gave each
    /// phase, e.g. `[("setup",""),("call","passed"),("teardown","error")]`.
    /// The closing line counts these exactly as pytest does.
    pub phases: Vec<(String, String)>,
}

/// What the policies know of a test from earlier runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestHistory {
    pub id: String,
    /// Most recent first.
    pub recent: Vec<Outcome>,
    pub mean_duration_secs: Option<f64>,
    pub quarantined: bool,
}

/// The scheduler's answer: batches to run (each on one worker, in order) and
/// tests it chose not to run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub batches: Vec<Vec<String>>,
    pub deselected: Vec<(String, String)>,
}

/// Facts about the run given to the scheduler.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub workers: u32,
}

/// A quarantine policy's decision for one test.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub id: String,
    pub quarantined: bool,
    pub reason: String,
}

/// Events the reporters receive, in order.
#[derive(Debug, Clone)]
pub enum ReporterEvent {
    RunStarted { tests: u32, workers: u32 },
    TestFinished(TestResult),
    RunFinished { exit_code: i32, duration_secs: f64 },
}
