//! The run log: every event of the run, one JSON object per line, in the
//! state directory (`runs/<run-id>.jsonl`) and, with `--run-log PATH`, in
//! a file of the user's. Each line is flushed as it is written, so a run
//! that is killed keeps everything up to its last event; `run_log::read`
//! reads it back.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::events::Stamped;

/// Run logs older than the newest this many are pruned.
const KEPT_RUN_LOGS: usize = 20;

/// The open run log files of one run.
pub struct RunLogFile {
    writers: Vec<(PathBuf, BufWriter<fs::File>)>,
    /// A write failed: said once, not at every event.
    failed: bool,
}

impl RunLogFile {
    /// Opens `<state_dir>/runs/<run_id>.jsonl`, plus `extra` if given. A log
    /// that can't be created is left out and reported through `warn` with
    /// its path: a read-only project still runs its tests.
    pub fn create(
        state_dir: &Path,
        run_id: &str,
        extra: Option<&Path>,
        warn: &mut dyn FnMut(String),
    ) -> RunLogFile {
        let runs = state_dir.join("runs");
        let main = runs.join(format!("{run_id}.jsonl"));
        let main_file = fs::create_dir_all(&runs).and_then(|()| {
            prune_old_logs(&runs);
            fs::File::create(&main)
        });
        let extra_file = extra.map(|path| (path.to_owned(), fs::File::create(path)));
        let mut writers = Vec::new();
        for (path, file) in std::iter::once((main, main_file)).chain(extra_file) {
            match file {
                Ok(file) => writers.push((path, BufWriter::new(file))),
                Err(error) => warn(format!(
                    "cannot write the run log {}: {error}; this run is not logged there",
                    path.display()
                )),
            }
        }
        RunLogFile {
            writers,
            failed: false,
        }
    }

    /// Appends one event; an error (once) says which file failed.
    pub fn write(&mut self, event: &Stamped) -> Result<(), String> {
        let mut bytes = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let mut error = None;
        for (path, writer) in &mut self.writers {
            if let Err(e) = writer.write_all(&bytes).and_then(|()| writer.flush()) {
                error.get_or_insert(format!(
                    "could not write the run log {}: {e}",
                    path.display()
                ));
            }
        }
        match error {
            Some(message) if !self.failed => {
                self.failed = true;
                Err(message)
            }
            _ => Ok(()),
        }
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
    use crate::events::RunEvent;

    #[test]
    fn run_logs_are_pruned_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(KEPT_RUN_LOGS + 5) {
            let mut log =
                RunLogFile::create(dir.path(), &format!("{i:04}"), None, &mut |w| panic!("{w}"));
            let event = Stamped::now(RunEvent::NotRun { id: "t".into() });
            log.write(&event).unwrap();
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
