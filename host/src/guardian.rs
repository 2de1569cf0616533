//! The guardian: a second runner process that outlives runner only to
//! clean up after it. A runner that is killed outright (SIGKILL, the OOM
//! killer) can't stop what its run started. The zygote and the workers die
//! with it (parent-death signals), but a process a test started may run on,
//! detached or not. The guardian waits on a pipe from runner: if it reaches
//! the end without runner's word that the run ended cleanly, it kills every
//! process that carries the run's id (RUNNER_RUN_ID, which everything the
//! run starts inherits) and exits.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Set in the guardian's environment: the run it guards.
const GUARDED_RUN: &str = "RUNNER_GUARDIAN_OF_RUN";
/// How long the guardian keeps looking for processes of the run.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

pub struct Guardian {
    child: Child,
    /// runner's end of the pipe; closing it without a word means runner died.
    pipe: Option<ChildStdin>,
}

impl Guardian {
    /// Starts the guardian of `run_id`: this same binary, in its own process
    /// group so that the terminal's signals for runner don't reach it.
    pub fn start(run_id: &str) -> std::io::Result<Guardian> {
        let mut child = Command::new("/proc/self/exe")
            .env(GUARDED_RUN, run_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Guardian { child, pipe })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// runner cleaned up after its run itself: the guardian leaves quietly.
    pub fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"done");
        }
        let _ = self.child.wait();
    }
}

/// The run this process must guard, if it was started as a guardian.
pub fn guarded_run() -> Option<String> {
    std::env::var(GUARDED_RUN).ok()
}

/// The guardian's whole life; returns its exit code.
pub fn serve(run_id: &str) -> i32 {
    let runner = std::os::unix::process::parent_id();
    let mut word = [0u8; 4];
    if matches!(std::io::stdin().read(&mut word), Ok(n) if n > 0) {
        return 0;
    }
    let killed = kill_run(run_id);
    if killed > 0 {
        crate::errln!(
            "runner: runner (pid {runner}) ended before its run did; its guardian killed the {killed} process{} the run left",
            if killed == 1 { "" } else { "es" }
        );
    }
    0
}

/// Kills every process whose environment carries the run's id, until none
/// is left; returns how many it killed.
fn kill_run(run_id: &str) -> usize {
    let started = Instant::now();
    let mut killed = std::collections::HashSet::new();
    loop {
        // A process still shows its environment until it is a zombie.
        let found = processes_of(run_id);
        if found.is_empty() {
            break;
        }
        for &pid in &found {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.insert(pid);
        }
        if started.elapsed() > CLEANUP_LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

fn processes_of(run_id: &str) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter(|process| {
            process.environ().is_ok_and(|env| {
                env.get(OsStr::new("RUNNER_RUN_ID"))
                    .is_some_and(|id| id == OsStr::new(run_id))
            })
        })
        .map(|process| process.pid)
        .collect()
}
