//! Project-local state under `.runner/`: the outcome and duration history
//! the policies read (the run logs are `report::RunLogFile`'s). Writes of
//! whole files are atomic (temp file + rename); a corrupt file is reported
//! and replaced, never a crash.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::events::RunEvent;
use crate::model::{Outcome, TestHistory};

/// How many recent outcomes and durations are kept per test.
const HISTORY_DEPTH: usize = 10;
const HISTORY_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    version: u32,
    tests: BTreeMap<String, TestRecord>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct TestRecord {
    /// Most recent first.
    recent: Vec<Outcome>,
    /// Seconds, most recent first.
    durations: Vec<f64>,
    #[serde(default)]
    quarantined: bool,
    /// Whether each of `recent` was flaky: failed, then passed on a rerun
    /// (pytest-rerunfailures). Kept here only: the policies' `test-history`
    /// has no place for it yet. Shorter than `recent` in a file written
    /// before it existed; the missing, older runs count as not flaky.
    #[serde(default)]
    flaky: Vec<bool>,
}

/// The per-test history, loaded at start and saved at the end of a run.
pub struct History {
    path: PathBuf,
    file: HistoryFile,
}

impl History {
    /// Loads `<state_dir>/history.json`; a missing file is an empty history,
    /// a corrupt one is reported through `warn` and starts afresh.
    pub fn load(state_dir: &Path, warn: &mut dyn FnMut(String)) -> History {
        let path = state_dir.join("history.json");
        let file = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<HistoryFile>(&bytes) {
                Ok(file) if file.version == HISTORY_VERSION => file,
                Ok(file) => {
                    warn(format!(
                        "{} has format version {}, expected {HISTORY_VERSION}; starting a new history",
                        path.display(),
                        file.version
                    ));
                    HistoryFile::default()
                }
                Err(error) => {
                    warn(format!(
                        "{} is corrupt ({error}); starting a new history",
                        path.display()
                    ));
                    HistoryFile::default()
                }
            },
            Err(_) => HistoryFile::default(),
        };
        History { path, file }
    }

    /// What the policies get to see for these tests, in the same order.
    pub fn for_tests<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<TestHistory> {
        ids.filter_map(|id| {
            let record = self.file.tests.get(id)?;
            let mean = (!record.durations.is_empty())
                .then(|| record.durations.iter().sum::<f64>() / record.durations.len() as f64);
            Some(TestHistory {
                id: id.to_string(),
                recent: record.recent.clone(),
                mean_duration_secs: mean,
                quarantined: record.quarantined,
            })
        })
        .collect()
    }

    /// Takes in a test's result from the run's events.
    pub fn record_event(&mut self, event: &RunEvent) {
        if let RunEvent::TestFinished {
            id,
            outcome,
            duration_secs,
            flaky,
            ..
        } = event
        {
            self.record(id, *outcome, *duration_secs, *flaky);
        }
    }

    pub fn record(&mut self, id: &str, outcome: Outcome, duration_secs: f64, flaky: bool) {
        let record = self.file.tests.entry(id.to_owned()).or_default();
        // Aligned with `recent` first (a file from before `flaky` existed).
        record.flaky.resize(record.recent.len(), false);
        record.flaky.insert(0, flaky);
        record.flaky.truncate(HISTORY_DEPTH);
        record.recent.insert(0, outcome);
        record.recent.truncate(HISTORY_DEPTH);
        record.durations.insert(0, duration_secs);
        record.durations.truncate(HISTORY_DEPTH);
    }

    pub fn set_quarantined(&mut self, id: &str, quarantined: bool) {
        if let Some(record) = self.file.tests.get_mut(id) {
            record.quarantined = quarantined;
        }
    }

    pub fn all(&self) -> Vec<TestHistory> {
        self.for_tests(self.file.tests.keys().map(String::as_str))
    }

    /// Where it is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        self.file.version = HISTORY_VERSION;
        write_atomic(&self.path, &serde_json::to_vec(&self.file)?)
    }
}

/// Writes `bytes` to a sibling temp file, then renames it over `path`, so a
/// reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_and_averages_durations() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::load(dir.path(), &mut |w| panic!("{w}"));
        history.record("a", Outcome::Passed, 1.0, true);
        history.record("a", Outcome::Failed, 3.0, false);
        history.save().unwrap();
        let history = History::load(dir.path(), &mut |w| panic!("{w}"));
        let seen = history.for_tests(["a", "unknown"].into_iter());
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].recent, vec![Outcome::Failed, Outcome::Passed]);
        assert_eq!(seen[0].mean_duration_secs, Some(2.0));
        assert_eq!(history.file.tests["a"].flaky, vec![false, true]);
    }

    #[test]
    fn flaky_runs_stay_aligned_with_a_history_from_before_them() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("history.json"),
            br#"{"version": 1, "tests": {"a": {"recent": ["failed", "passed"], "durations": [1.0, 1.0]}}}"#,
        )
        .unwrap();
        let mut history = History::load(dir.path(), &mut |w| panic!("{w}"));
        history.record("a", Outcome::Passed, 1.0, true);
        let record = &history.file.tests["a"];
        assert_eq!(record.recent.len(), 3);
        assert_eq!(record.flaky, vec![true, false, false]);
    }

    #[test]
    fn a_corrupt_history_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("history.json"),
            b"{\"version\": 1, \"tests\": [tru",
        )
        .unwrap();
        let mut warnings = vec![];
        let mut history = History::load(dir.path(), &mut |w| warnings.push(w));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("corrupt"), "{warnings:?}");
        history.record("a", Outcome::Passed, 1.0, false);
        history.save().unwrap();
        let mut none = vec![];
        assert_eq!(
            History::load(dir.path(), &mut |w| none.push(w)).all().len(),
            1
        );
        assert!(none.is_empty());
    }
}
