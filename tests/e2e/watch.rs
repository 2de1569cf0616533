//! `runner --watch`: it runs, waits for a change under pytest's rootdir,
//! restarts its session on one (the tests that failed first, then the whole
//! selection once they pass), reruns in the same warm session on Enter, and
//! ends with exit code 0 on Ctrl-C, leaving no process. Each test drives a
//! real watch session as a user would: edits files, presses Enter, sends
//! SIGINT, and reads what runner prints as it prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::live::{Live, Stream};
use crate::support::{
    Project, assert_no_leftovers, closing_line, copy_fixture, read_log, repo_root, require_python,
    run, runner_bin, tag,
};

/// From a change (or Enter) to the end of the runs it starts: a session
/// start, collection, and slack for a busy machine.
const STEP: Duration = Duration::from_secs(30);
/// From Ctrl-C to runner's exit.
const QUIT: Duration = Duration::from_secs(10);
/// A whole test.
const BOUND: Duration = Duration::from_secs(150);

const FAILING: &str = "test_fixme.py::test_answer";
const ALL: [&str; 4] = [
    "test_fixme.py::test_answer",
    "test_fixme.py::test_module_loaded",
    "test_other.py::test_other",
    "test_other.py::test_skipped",
];
const FIRST_RUN: &str = "1 failed, 2 passed, 1 skipped";
const GREEN_RUN: &str = "3 passed, 1 skipped";

/// A run of the watch session, read back from its log under .runner/runs/.
#[derive(Debug)]
struct RunLog {
    id: String,
    /// Outcome and pytest's category per phase, by test id.
    results: BTreeMap<String, (String, Vec<(String, String)>)>,
    exit_code: i64,
}

impl RunLog {
    fn tests(&self) -> Vec<&str> {
        self.results.keys().map(String::as_str).collect()
    }
}

/// `runner --watch -n 1` on a copy of the `watch` fixture.
struct Watching {
    project: Project,
    tag: String,
    live: Live,
    /// Run logs already looked at.
    seen: BTreeSet<PathBuf>,
}

impl Watching {
    fn start() -> Watching {
        require_python();
        let project = copy_fixture("watch");
        let tag = tag();
        let mut cmd = Command::new(runner_bin());
        cmd.args(["--watch", "-n", "1"]).env("RUNNER_E2E_TAG", &tag);
        let live = Live::spawn(cmd, &project.dir);
        Watching {
            project,
            tag,
            live,
            seen: BTreeSet::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.project.dir.join(name)
    }

    /// Waits for the next closing line on stdout, which must read `counts`.
    #[track_caller]
    fn closing(&mut self, counts: &str) {
        let line = self
            .live
            .wait_for(Stream::Stdout, "closing line", STEP, |l| {
                closing_line(l).is_some()
            })
            .line;
        let (got, _) = closing_line(&line).unwrap();
        assert_eq!(got, counts, "{}", self.live.transcript());
    }

    /// Waits for a line on stderr that contains `text`.
    #[track_caller]
    fn says(&mut self, text: &str) {
        self.live
            .wait_for(Stream::Stderr, text, STEP, |l| l.contains(text));
    }

    /// Waits until runner waits for a change, after its runs.
    #[track_caller]
    fn watching(&mut self) {
        self.says("runner: watching ");
    }

    /// How often the module with the failing test was imported.
    fn imports(&self) -> usize {
        std::fs::read_to_string(self.path("imports.log")).map_or(0, |text| text.lines().count())
    }

    /// The runs logged since the last call, in the order they started.
    fn new_runs(&mut self) -> Vec<RunLog> {
        let runs_dir = self.project.dir.join(".runner").join("runs");
        let mut runs: Vec<(f64, RunLog)> = Vec::new();
        for entry in std::fs::read_dir(&runs_dir).unwrap() {
            let path = entry.unwrap().path();
            if !self.seen.insert(path.clone()) {
                continue;
            }
            let (_, lines) = read_log(&path);
            let run = run_log(&lines);
            assert_eq!(
                path.file_stem().unwrap().to_str().unwrap(),
                run.id,
                "a run log is named by its run's id"
            );
            runs.push((lines[0]["at"].as_f64().unwrap(), run));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        runs.into_iter().map(|(_, run)| run).collect()
    }

    /// Ctrl-C: runner exits with 0 within QUIT and leaves no process.
    #[track_caller]
    fn quit(&mut self) {
        self.live.signal(nix::sys::signal::Signal::SIGINT);
        let asked = Instant::now();
        let (status, exited) = self.live.wait_exit(QUIT);
        assert_eq!(
            status.code(),
            Some(0),
            "Ctrl-C ends watch mode with 0\n{}",
            self.live.transcript()
        );
        assert!(exited - asked < QUIT);
        assert!(
            exited - self.live.started < BOUND,
            "the test took {:?}",
            exited - self.live.started
        );
        assert_no_leftovers(&self.tag);
    }
}

/// A run log's lines as a `RunLog`.
fn run_log(lines: &[Value]) -> RunLog {
    assert_eq!(lines[0]["type"], "run-started");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "run-finished", "the run is over");
    let results = lines
        .iter()
        .filter(|l| l["type"] == "test-finished")
        .map(|l| {
            let phases = l["phases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let outcome = l["outcome"].as_str().unwrap().to_owned();
            (l["id"].as_str().unwrap().to_owned(), (outcome, phases))
        })
        .collect();
    RunLog {
        id: lines[0]["run_id"].as_str().unwrap().to_owned(),
        results,
        exit_code: last["exit_code"].as_i64().unwrap(),
    }
}

/// Edits `path`, replacing `from` by `to` (which changes the file's size,
/// so no cache keyed by size and mtime can take it for the old one).
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    assert_ne!(from.len(), to.len());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn watch_reruns_on_changes_and_on_enter() {
    let mut w = Watching::start();
    w.closing(FIRST_RUN);
    w.watching();
    assert_eq!(w.imports(), 1);
    let first = w.new_runs();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].tests(), ALL);
    assert_eq!(first[0].exit_code, 1);

    // (a) The fix: a new session reruns the failed test alone, then, green,
    // the whole suite; nobody pressed anything.
    edit(
        &w.path("test_fixme.py"),
        "ANSWER = 41",
        "ANSWER = 42  # fixed",
    );
    w.says("runner: test_fixme.py changed; restarting the session");
    w.closing("1 passed");
    w.closing(GREEN_RUN);
    w.watching();
    assert_eq!(w.imports(), 2, "the new session imported the fix");
    let fixed = w.new_runs();
    assert_eq!(fixed.len(), 2, "{fixed:?}");
    assert_ne!(fixed[0].id, first[0].id, "a new session");
    assert_eq!(fixed[1].id, format!("{}-2", fixed[0].id), "one session");
    assert_eq!(fixed[0].tests(), [FAILING]);
    assert_eq!(fixed[0].results[FAILING].0, "passed");
    assert_eq!(fixed[1].tests(), ALL);
    assert_eq!((fixed[0].exit_code, fixed[1].exit_code), (0, 0));

    // (b) Configuration changed: a new session, the whole suite (nothing
    // failed last).
    append(&w.path("conftest.py"), "\n# changed\n");
    w.says("runner: conftest.py changed; restarting the session");
    w.closing(GREEN_RUN);
    w.watching();
    assert_eq!(w.imports(), 3);
    let reconfigured = w.new_runs();
    assert_eq!(reconfigured.len(), 1, "{reconfigured:?}");
    assert_ne!(reconfigured[0].id, fixed[0].id, "a new session");
    assert_eq!(reconfigured[0].tests(), ALL);

    // Files that are not code or configuration, and code in runner's state
    // and caches, start nothing.
    std::fs::write(w.path("notes.txt"), "not code").unwrap();
    std::fs::write(w.path("data.json"), "{}").unwrap();
    std::fs::create_dir_all(w.path("__pycache__")).unwrap();
    std::fs::write(w.path("__pycache__/stray.py"), "x = 1\n").unwrap();
    std::fs::write(w.path(".runner/stray.py"), "x = 1\n").unwrap();
    w.live.assert_silent(
        Stream::Stderr,
        Duration::from_secs(2),
        "files that do not matter changed",
    );
    w.live
        .assert_silent(Stream::Stdout, Duration::ZERO, "nothing ran");

    // (c) Enter: a rerun in the same warm session, nothing imported again.
    w.live.type_in("\n");
    w.closing(GREEN_RUN);
    w.watching();
    assert_eq!(w.imports(), 3, "Enter reruns without importing anything");
    let rerun = w.new_runs();
    assert_eq!(rerun.len(), 1, "{rerun:?}");
    assert_eq!(
        rerun[0].id,
        format!("{}-2", reconfigured[0].id),
        "the same session"
    );
    assert_eq!(rerun[0].tests(), ALL);

    // (d) Ctrl-C.
    w.quit();
}

/// One session, two runs with different selections: the whole suite, then
/// (Enter, the test still failing) the failed test alone. The module was
/// imported once for both, and each run's outcomes are plain pytest's for
/// the same selection.
#[test]
fn two_runs_of_one_session_with_different_selections_match_pytest() {
    let mut w = Watching::start();
    w.closing(FIRST_RUN);
    w.watching();
    w.live.type_in("\n");
    w.closing("1 failed");
    w.watching();
    assert_eq!(w.imports(), 1, "both runs ran in the one session");
    let runs = w.new_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].id, format!("{}-2", runs[0].id));
    assert_eq!(runs[0].tests(), ALL);
    assert_eq!(runs[1].tests(), [FAILING]);
    w.quit();

    // Plain pytest, on a copy of its own (its imports count nowhere).
    let reference = copy_fixture("watch");
    for (run, selection) in runs.iter().zip([&[][..], &[FAILING][..]]) {
        let (outcomes, exit_code) = pytest_outcomes(&reference.dir, selection);
        let phases: BTreeMap<&str, &Vec<(String, String)>> = run
            .results
            .iter()
            .map(|(id, (_, phases))| (id.as_str(), phases))
            .collect();
        let expected: BTreeMap<&str, &Vec<(String, String)>> =
            outcomes.iter().map(|(id, p)| (id.as_str(), p)).collect();
        assert_eq!(
            phases, expected,
            "run {} against pytest {selection:?}",
            run.id
        );
        assert_eq!(run.exit_code, exit_code, "run {}", run.id);
    }
}

/// A conftest that breaks ends the session without a run: watch mode shows
/// pytest's error, keeps waiting, and once it is fixed reruns the test that
/// failed before it broke.
#[test]
fn a_broken_conftest_waits_for_its_fix() {
    let mut w = Watching::start();
    w.closing(FIRST_RUN);
    w.watching();
    let conftest = w.path("conftest.py");
    let original = std::fs::read_to_string(&conftest).unwrap();
    std::fs::write(&conftest, "raise RuntimeError('conftest is broken')\n").unwrap();
    w.says("runner: conftest.py changed; restarting the session");
    w.says("ImportError while loading conftest");
    w.says("RuntimeError: conftest is broken");
    w.says("runner: watching ");
    // Enter tries again, with the same result.
    w.live.type_in("\n");
    w.says("RuntimeError: conftest is broken");
    w.says("runner: watching ");
    w.live
        .assert_silent(Stream::Stdout, Duration::ZERO, "no run without a session");

    std::fs::write(&conftest, original + "# fixed\n").unwrap();
    w.says("runner: conftest.py changed");
    w.closing("1 failed");
    w.watching();
    let runs = w.new_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].tests(), [FAILING], "the test that failed last");
    w.quit();
}

/// Ctrl-C while a test runs ends watch mode too: exit 0, the test's worker
/// and everything else gone.
#[test]
fn ctrl_c_during_a_run_ends_watch_mode() {
    let mut w = Watching::start();
    w.closing(FIRST_RUN);
    w.watching();
    // A new test that sleeps for ten minutes: the session restarts and
    // runs the failed test alone, still failing.
    std::fs::write(
        w.path("test_waits.py"),
        "import time\n\n\ndef test_waits():\n    time.sleep(600)\n",
    )
    .unwrap();
    w.says("runner: test_waits.py changed; restarting the session");
    w.closing("1 failed");
    // Fixed, the whole suite runs, the sleeping test included.
    w.watching();
    edit(
        &w.path("test_fixme.py"),
        "ANSWER = 41",
        "ANSWER = 42  # fixed",
    );
    w.closing("1 passed");
    let deadline = Instant::now() + STEP;
    let runs_dir = w.path(".runner/runs");
    while !started_anywhere(&runs_dir, "test_waits.py::test_waits") {
        assert!(
            Instant::now() < deadline,
            "test_waits never started\n{}",
            w.live.transcript()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.quit();
    // The interrupted run's log is whole: it ends with run-finished (exit
    // code 2), the sleeping test not run.
    let runs = w.new_runs();
    let interrupted = runs.last().unwrap();
    assert_eq!(interrupted.exit_code, 2, "{runs:?}");
    assert!(
        !interrupted
            .results
            .contains_key("test_waits.py::test_waits")
    );
    let (_, lines) = read_log(
        &w.path(".runner/runs")
            .join(format!("{}.jsonl", interrupted.id)),
    );
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "not-run" && l["id"] == "test_waits.py::test_waits"),
        "{lines:?}"
    );
}

/// Whether a run log under `runs_dir` has a test-started for `id`.
fn started_anywhere(runs_dir: &Path, id: &str) -> bool {
    let needle = format!("\"type\":\"test-started\",\"id\":\"{id}\"");
    std::fs::read_dir(runs_dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            std::fs::read_to_string(entry.path()).is_ok_and(|text| text.contains(&needle))
        })
    })
}

/// Plain pytest's categories per phase and its exit code, recorded by
/// tests/outcome_recorder.py, for `pytest -p no:cacheprovider SELECTION`.
fn pytest_outcomes(
    dir: &Path,
    selection: &[&str],
) -> (BTreeMap<String, Vec<(String, String)>>, i64) {
    let record = dir.join("pytest-outcomes.json");
    let mut cmd = Command::new(require_python());
    cmd.args([
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "outcome_recorder",
    ])
    .args(selection)
    .env("PYTHONPATH", repo_root().join("tests"))
    .env("OUTCOME_RECORDER_OUT", &record);
    let ran = run(cmd, dir);
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(&record)
            .unwrap_or_else(|e| panic!("no outcome record ({e})\n{}", ran.describe())),
    )
    .unwrap();
    assert_eq!(Some(data["exitstatus"].as_i64().unwrap() as i32), ran.code);
    let outcomes = data["results"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, phases)| {
            let phases = phases
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (id.clone(), phases)
        })
        .collect();
    (outcomes, data["exitstatus"].as_i64().unwrap())
}
