//! Project-local state under `.runner/`: the outcome and duration history
//! the policies read, and one append-only JSON-lines log per run. Writes of
//! whole files are atomic (temp file + rename); a corrupt file is reported
//! and replaced, never a crash.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Outcome, TestHistory, TestResult};
use crate::run_log::LogLine;

/// How many recent outcomes and durations are kept per test.
const HISTORY_DEPTH: usize = 10;
/// Run logs older than the newest this many are pruned.
const KEPT_RUN_LOGS: usize = 20;
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

    pub fn record(&mut self, result: &TestResult) {
        let record = self.file.tests.entry(result.id.clone()).or_default();
        record.recent.insert(0, result.outcome);
        record.recent.truncate(HISTORY_DEPTH);
        record.durations.insert(0, result.duration_secs);
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

/// The append-only JSON-lines log of one run, flushed line by line so an
/// interrupted run keeps everything that finished.
pub struct RunLog {
    writers: Vec<BufWriter<fs::File>>,
}

impl RunLog {
    /// Opens `<state_dir>/runs/<run_id>.jsonl`, plus `extra` if given. A log
    /// that can't be created is left out and reported through `warn` with
    /// its path: a read-only project still runs its tests.
    pub fn create(
        state_dir: &Path,
        run_id: &str,
        extra: Option<&Path>,
        warn: &mut dyn FnMut(String),
    ) -> RunLog {
        let runs = state_dir.join("runs");
        let main = runs.join(format!("{run_id}.jsonl"));
        let main_file = fs::create_dir_all(&runs).and_then(|()| {
            prune_old_logs(&runs);
            fs::File::create(&main)
        });
        let extra_file = extra.map(|path| (path, fs::File::create(path)));
        let mut writers = Vec::new();
        for (path, file) in std::iter::once((main.as_path(), main_file)).chain(extra_file) {
            match file {
                Ok(file) => writers.push(BufWriter::new(file)),
                Err(error) => warn(format!(
                    "cannot write the run log {}: {error}; this run is not logged there",
                    path.display()
                )),
            }
        }
        RunLog { writers }
    }

    pub fn write(&mut self, line: &LogLine) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line)?;
        bytes.push(b'\n');
        for writer in &mut self.writers {
            writer.write_all(&bytes)?;
            writer.flush()?;
        }
        Ok(())
    }
}

fn prune_old_logs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    // Run ids start with a sortable timestamp.
    logs.sort();
    let excess = logs.len().saturating_sub(KEPT_RUN_LOGS - 1);
    for old in &logs[..excess] {
        let _ = fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, outcome: Outcome, secs: f64) -> TestResult {
        TestResult {
            id: id.into(),
            outcome,
            duration_secs: secs,
            worker: "gw0".into(),
            longrepr: String::new(),
            sections: vec![],
            phases: vec![],
        }
    }

    #[test]
    fn history_round_trips_and_averages_durations() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::load(dir.path(), &mut |w| panic!("{w}"));
        history.record(&result("a", Outcome::Passed, 1.0));
        history.record(&result("a", Outcome::Failed, 3.0));
        history.save().unwrap();
        let history = History::load(dir.path(), &mut |w| panic!("{w}"));
        let seen = history.for_tests(["a", "unknown"].into_iter());
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].recent, vec![Outcome::Failed, Outcome::Passed]);
        assert_eq!(seen[0].mean_duration_secs, Some(2.0));
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
        history.record(&result("a", Outcome::Passed, 1.0));
        history.save().unwrap();
        let mut none = vec![];
        assert_eq!(
            History::load(dir.path(), &mut |w| none.push(w)).all().len(),
            1
        );
        assert!(none.is_empty());
    }

    #[test]
    fn run_logs_are_pruned_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(KEPT_RUN_LOGS + 5) {
            let mut log =
                RunLog::create(dir.path(), &format!("{i:04}"), None, &mut |w| panic!("{w}"));
            log.write(&LogLine::NotRun { id: "t".into() }).unwrap();
        }
        let count = fs::read_dir(dir.path().join("runs")).unwrap().count();
        assert_eq!(count, KEPT_RUN_LOGS);
        assert!(
            dir.path()
                .join("runs")
                .join(format!("{:04}.jsonl", KEPT_RUN_LOGS + 4))
                .exists()
        );
    }
}
