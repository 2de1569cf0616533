//! The processes a run starts beyond the zygote and its workers: finding
//! what a test leaves running once it has ended (a "leaky test", as nextest
//! calls it) and which test started it, stopping a hung test's processes even
//! after its worker is gone, and killing whatever is left when the run ends.
//!
//! runner is a child subreaper (lib.rs): a process whose parent dies comes
//! back to runner rather than to init, so every process of the run stays a
//! descendant of a worker or of runner itself, however it detached (setsid,
//! a double fork). Which test started one is in its environment: pytest sets
//! PYTEST_CURRENT_TEST ("<id> (<phase>)") during each phase of a test, and
//! whatever the test executes inherits it. A fork without exec still shows
//! the environment the zygote was started with, so for those the shim's
//! at-fork hook appends `<pid> <PYTEST_CURRENT_TEST as JSON>` to the
//! `forks` file of the run directory.
//!
//! The per-tick check reads a few small /proc files (runner's and each
//! worker's children); a process is only looked at closely once, when it
//! first appears.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use procfs::process::Process;

/// How long a process may outlive its test before it counts as left behind:
/// one the test has just told to stop may still be on its way out.
const LEAK_GRACE: Duration = Duration::from_millis(100);
/// How long the end-of-run sweep keeps killing before it gives up.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);
/// How long a process not yet traced to a test is looked at again: it may
/// have been seen between its fork and its exec, or before its fork record
/// was written.
const TRACE_RETRY: Duration = Duration::from_secs(1);
/// Longest command line kept for a message.
const COMMAND_LIMIT: usize = 200;

/// The file in the run directory where the shim records forks without exec.
pub const FORKS_FILE: &str = "forks";

/// Who started a process.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A test, in one of its phases (setup, call, teardown).
    Test { id: String, phase: String },
    /// It is a worker itself.
    Worker(String),
    /// Not traced to a test: started during collection, by a plugin outside
    /// any test, or with an environment of its own.
    Unknown,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Test { id, phase } if phase.is_empty() => write!(f, "started by {id}"),
            Origin::Test { id, phase } => write!(f, "started by {id} ({phase})"),
            Origin::Worker(id) => write!(f, "worker {id}"),
            Origin::Unknown => write!(f, "not started by a test"),
        }
    }
}

/// A process found running after the test that started it, or at the end
/// of the run.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub pid: i32,
    pub command: String,
    pub origin: Origin,
}

impl Leftover {
    pub fn test(&self) -> Option<&str> {
        match &self.origin {
            Origin::Test { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// What the end-of-run sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    pub killed: Vec<Leftover>,
    /// Processes still there when the sweep gave up (stuck in the kernel).
    pub survivors: Vec<i32>,
}

/// Lines of the killed processes shown in the note; the run log has all.
const NOTE_LINES: usize = 20;

impl Swept {
    /// What to tell the user: each process killed and who started it, and
    /// any that could not be killed.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.killed.is_empty() {
            let count = self.killed.len();
            let mut note = format!(
                "killed {count} process{} still running at the end of the run:",
                if count == 1 { "" } else { "es" }
            );
            for leftover in self.killed.iter().take(NOTE_LINES) {
                note.push_str(&format!(
                    "\n  pid {} `{}`, {}",
                    leftover.pid, leftover.command, leftover.origin
                ));
            }
            if count > NOTE_LINES {
                note.push_str(&format!("\n  and {} more", count - NOTE_LINES));
            }
            notes.push(note);
        }
        if !self.survivors.is_empty() {
            notes.push(format!(
                "could not kill {} process{} of the run (pids {:?}); they may still be running",
                self.survivors.len(),
                if self.survivors.len() == 1 { "" } else { "es" },
                self.survivors
            ));
        }
        notes
    }
}

struct Seen {
    command: String,
    origin: Origin,
    group: i32,
    first_seen: Instant,
    /// When the test that started it was first seen finished.
    test_done: Option<Instant>,
    /// Reported as left behind by its test, or not one to judge per test.
    judged: bool,
}

/// A hung test being stopped: SIGKILL for its processes at `kill_at`.
struct Stopping {
    group: i32,
    test: String,
    kill_at: Instant,
}

pub struct Descendants {
    me: i32,
    zygote: i32,
    guardian: Option<i32>,
    forks: ForkRecord,
    /// Every process found so far that may still be there, by pid.
    seen: HashMap<i32, Seen>,
    stopping: Vec<Stopping>,
    /// Worker pids and ids, as of the last check.
    workers: HashMap<i32, String>,
}

impl Descendants {
    /// `run_dir` holds the shim's fork record; the zygote and the guardian
    /// are runner's own children, never strays.
    pub fn new(zygote: i32, guardian: Option<i32>, run_dir: &Path) -> Descendants {
        Descendants {
            me: std::process::id() as i32,
            zygote,
            guardian,
            forks: ForkRecord::new(run_dir.join(FORKS_FILE)),
            seen: HashMap::new(),
            stopping: Vec::new(),
            workers: HashMap::new(),
        }
    }

    /// Stops a hung test's processes: SIGTERM now to its worker's process
    /// group and to every process traced to the test, SIGKILL after `grace`
    /// whether or not the worker is still there (a worker that dies on
    /// SIGTERM must not take the SIGKILL for a child that ignores it along).
    pub fn stop_test(&mut self, group: i32, test: &str, grace: Duration) {
        let _ = killpg(Pid::from_raw(group), Signal::SIGTERM);
        for pid in self.traced_to(test) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        self.stopping.push(Stopping {
            group,
            test: test.to_string(),
            kill_at: Instant::now() + grace,
        });
    }

    /// One look at the process tree: sends the SIGKILLs that are due, reaps
    /// the orphans runner adopted once they exit, and returns the processes
    /// that tests left running, each once. `running` says whether a test is
    /// still in progress.
    pub fn check<'w>(
        &mut self,
        workers: impl Iterator<Item = (i32, &'w str)>,
        running: impl Fn(&str) -> bool,
    ) -> Vec<Leftover> {
        let now = Instant::now();
        self.kill_due(now);
        self.workers = workers.map(|(pid, id)| (pid, id.to_string())).collect();
        let mut present = HashSet::new();
        for pid in children_of(self.me) {
            if pid == self.zygote || Some(pid) == self.guardian || self.workers.contains_key(&pid) {
                continue;
            }
            if reap(pid) {
                self.seen.remove(&pid);
            } else {
                present.insert(pid);
            }
        }
        for &worker in self.workers.keys() {
            present.extend(children_of(worker));
        }
        for &pid in &present {
            self.look_at(pid, now);
        }
        self.seen
            .retain(|pid, _| present.contains(pid) || is_alive(*pid));
        self.judge(&present, now, &running)
    }

    /// Ends the run's processes, once the zygote is gone: after a short
    /// grace for those on their way out, kills every process still there
    /// with everything under it, until none is left. Returns what it killed.
    pub async fn sweep(&mut self) -> Swept {
        self.kill_due(Instant::now() + SWEEP_LIMIT);
        let started = Instant::now();
        let mut swept = Swept::default();
        let mut killed = HashSet::new();
        let mut grace_until = None;
        loop {
            let left: Vec<i32> = children_of(self.me)
                .into_iter()
                .filter(|&pid| pid != self.zygote && Some(pid) != self.guardian && !reap(pid))
                .collect();
            if left.is_empty() {
                break;
            }
            if started.elapsed() > SWEEP_LIMIT {
                swept.survivors = left;
                break;
            }
            let grace_until = *grace_until.get_or_insert_with(|| Instant::now() + LEAK_GRACE);
            if Instant::now() >= grace_until {
                for pid in left.into_iter().flat_map(subtree) {
                    if killed.insert(pid) {
                        swept.killed.push(self.describe(pid));
                    }
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        swept
    }

    /// Sends SIGKILL to the hung tests whose grace ended before `now`.
    fn kill_due(&mut self, now: Instant) {
        let (due, pending) = std::mem::take(&mut self.stopping)
            .into_iter()
            .partition(|stop| stop.kill_at <= now);
        self.stopping = pending;
        for stop in due {
            // The group outlives its leader while any member lives, so its
            // id can't have been reused by then.
            let _ = killpg(Pid::from_raw(stop.group), Signal::SIGKILL);
            for pid in self.traced_to(&stop.test) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Processes that `test` started, wherever they are now: one first
    /// seen in the worker's group may have left it since (a child that
    /// calls setpgrp after its fork), so the group it was seen in decides
    /// nothing; those still in the worker's group get the signal twice,
    /// harmlessly.
    fn traced_to(&self, test: &str) -> Vec<i32> {
        self.seen
            .iter()
            .filter(|(_, s)| s.test() == Some(test))
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn look_at(&mut self, pid: i32, now: Instant) {
        if let Some(seen) = self.seen.get(&pid) {
            let retry = seen.origin == Origin::Unknown && seen.first_seen.elapsed() < TRACE_RETRY;
            if !retry {
                return;
            }
        }
        let Some(found) = examine(pid, &mut self.forks) else {
            return;
        };
        let seen = self.seen.entry(pid).or_insert(Seen {
            command: String::new(),
            origin: Origin::Unknown,
            group: found.group,
            first_seen: now,
            test_done: None,
            judged: false,
        });
        seen.command = found.command;
        seen.origin = found.origin;
    }

    /// The processes that outlived their test, once that test is over. One
    /// started in a test's setup is left to the end of the run: a fixture
    /// of wider scope may own it.
    fn judge(
        &mut self,
        present: &HashSet<i32>,
        now: Instant,
        running: &impl Fn(&str) -> bool,
    ) -> Vec<Leftover> {
        let stopping: Vec<(i32, &str)> = self
            .stopping
            .iter()
            .map(|s| (s.group, s.test.as_str()))
            .collect();
        let mut left = Vec::new();
        for (pid, seen) in &mut self.seen {
            if seen.judged || !present.contains(pid) {
                continue;
            }
            let Origin::Test { id, phase } = &seen.origin else {
                seen.judged = seen.first_seen.elapsed() >= TRACE_RETRY;
                continue;
            };
            if phase == "setup" {
                seen.judged = true;
                continue;
            }
            let being_stopped = stopping
                .iter()
                .any(|(group, test)| *group == seen.group || test == id);
            if running(id) || being_stopped {
                continue;
            }
            let done = *seen.test_done.get_or_insert(now);
            if now.duration_since(done) < LEAK_GRACE {
                continue;
            }
            seen.judged = true;
            if is_alive(*pid) {
                left.push(Leftover {
                    pid: *pid,
                    command: seen.command.clone(),
                    origin: seen.origin.clone(),
                });
            }
        }
        left.sort_by_key(|l| l.pid);
        left
    }

    /// A process about to be killed, as the notes name it.
    fn describe(&mut self, pid: i32) -> Leftover {
        let found = examine(pid, &mut self.forks);
        let known = self.seen.get(&pid);
        let origin = match (self.workers.get(&pid), &found, known) {
            (Some(worker), _, _) => Origin::Worker(worker.clone()),
            (_, Some(found), _) if found.origin != Origin::Unknown => found.origin.clone(),
            (_, _, Some(seen)) => seen.origin.clone(),
            _ => Origin::Unknown,
        };
        let command = found
            .map(|f| f.command)
            .or_else(|| known.map(|s| s.command.clone()))
            .unwrap_or_default();
        Leftover {
            pid,
            command,
            origin,
        }
    }
}

impl Seen {
    fn test(&self) -> Option<&str> {
        match &self.origin {
            Origin::Test { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// What /proc says about a live process.
struct Found {
    command: String,
    origin: Origin,
    group: i32,
}

/// None for a process that is gone or a zombie.
fn examine(pid: i32, forks: &mut ForkRecord) -> Option<Found> {
    let process = Process::new(pid).ok()?;
    let stat = process.stat().ok()?;
    if stat.state == 'Z' {
        return None;
    }
    let current_test = process.environ().ok().and_then(|env| {
        env.get(OsStr::new("PYTEST_CURRENT_TEST"))
            .map(|value| parse_current_test(&value.to_string_lossy()))
    });
    let origin = current_test
        .or_else(|| forks.lookup(pid))
        .unwrap_or(Origin::Unknown);
    let argv = process.cmdline().unwrap_or_default();
    let command = if argv.is_empty() {
        format!("[{}]", stat.comm)
    } else {
        argv.iter()
            .map(|arg| first_line(arg))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(Found {
        command: printable(&command),
        origin,
        group: stat.pgrp,
    })
}

/// pytest's PYTEST_CURRENT_TEST: `<node id> (<phase>)`.
fn parse_current_test(value: &str) -> Origin {
    match value.rsplit_once(" (") {
        Some((id, phase)) if phase.ends_with(')') => Origin::Test {
            id: id.to_string(),
            phase: phase.trim_end_matches(')').to_string(),
        },
        _ if value.is_empty() => Origin::Unknown,
        _ => Origin::Test {
            id: value.to_string(),
            phase: String::new(),
        },
    }
}

/// A command line for a one-line message: control characters escaped, cut.
fn printable(command: &str) -> String {
    let mut text: String = command.chars().flat_map(char::escape_debug).collect();
    if text.chars().count() > COMMAND_LIMIT {
        text = text.chars().take(COMMAND_LIMIT).collect::<String>() + "…";
    }
    text
}

/// An argument that is a whole script (`python -c '...'`) by its first line.
fn first_line(arg: &str) -> String {
    match arg.lines().find(|line| !line.trim().is_empty()) {
        Some(line) if line.len() < arg.trim_end().len() => format!("{}…", line.trim()),
        _ => arg.to_string(),
    }
}

/// The children of every thread of `pid` (a child belongs to the thread
/// that forked it; an orphan to the main thread of its subreaper).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = Process::new(pid).and_then(|p| p.tasks()) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| task.children().unwrap_or_default())
        .map(|child| child as i32)
        .collect()
}

/// `pid` and all its descendants, parents first.
pub(crate) fn subtree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut next = 0;
    while next < all.len() {
        for child in children_of(all[next]) {
            if !all.contains(&child) {
                all.push(child);
            }
        }
        next += 1;
    }
    all
}

/// Reaps a child of runner if it has exited; true if it is gone.
fn reap(pid: i32) -> bool {
    !matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::StillAlive)
    )
}

fn is_alive(pid: i32) -> bool {
    Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|stat| stat.state != 'Z')
}

/// The shim's record of forks without exec, read as far as it was written.
struct ForkRecord {
    path: PathBuf,
    read: u64,
    origins: HashMap<i32, Origin>,
}

impl ForkRecord {
    fn new(path: PathBuf) -> ForkRecord {
        ForkRecord {
            path,
            read: 0,
            origins: HashMap::new(),
        }
    }

    fn lookup(&mut self, pid: i32) -> Option<Origin> {
        self.catch_up();
        self.origins.get(&pid).cloned()
    }

    /// Reads the complete lines written since the last call; a later line
    /// for a pid wins (pids are reused).
    fn catch_up(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.read)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return;
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.read += complete as u64;
        for line in String::from_utf8_lossy(&bytes[..complete]).lines() {
            let Some((pid, value)) = line.split_once(' ') else {
                continue;
            };
            if let (Ok(pid), Ok(value)) = (pid.parse(), serde_json::from_str::<String>(value)) {
                self.origins.insert(pid, parse_current_test(&value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_test_names_the_test_and_its_phase() {
        assert_eq!(
            parse_current_test("tests/test_a.py::test_x[a (b)] (call)"),
            Origin::Test {
                id: "tests/test_a.py::test_x[a (b)]".into(),
                phase: "call".into()
            }
        );
        assert_eq!(parse_current_test(""), Origin::Unknown);
        assert_eq!(
            parse_current_test("odd"),
            Origin::Test {
                id: "odd".into(),
                phase: String::new()
            }
        );
    }

    #[test]
    fn fork_record_reads_complete_lines_and_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FORKS_FILE);
        let mut record = ForkRecord::new(path.clone());
        assert_eq!(record.lookup(10), None, "no file yet");
        std::fs::write(
            &path,
            "10 \"t.py::a (call)\"\nbad line\n11 \"t.py::b (setup)\"\n12 \"t.py::c",
        )
        .unwrap();
        let call = |id: &str, phase: &str| {
            Some(Origin::Test {
                id: id.into(),
                phase: phase.into(),
            })
        };
        assert_eq!(record.lookup(10), call("t.py::a", "call"));
        assert_eq!(record.lookup(12), None, "a line still being written");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(" (call)\"\n10 \"t.py::d (teardown)\"\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(record.lookup(12), call("t.py::c", "call"));
        assert_eq!(record.lookup(10), call("t.py::d", "teardown"));
        assert_eq!(record.lookup(11), call("t.py::b", "setup"));
    }

    #[test]
    fn commands_are_printable_and_bounded() {
        assert_eq!(printable("sleep\n1000"), "sleep\\n1000");
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), COMMAND_LIMIT + 1);
        assert_eq!(first_line("\nimport os\nos.fork()\n"), "import os…");
        assert_eq!(first_line("sleep"), "sleep");
    }
}
