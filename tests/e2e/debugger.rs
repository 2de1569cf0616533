//! `--pdb` and `--trace`, driven as a person would, in a real terminal:
//! runner runs in a detached tmux session, the test reads the screen
//! (`capture-pane`) and types (`send-keys`). The run has one worker,
//! attached to the terminal; pdb stops where pytest would stop, reads what
//! is typed, and the run then finishes with the failing test FAILED (not
//! CRASHED) and nothing left running (tests/fixtures/debugger).
//!
//! Skipped, with a message, where tmux is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    assert_no_leftovers, clean_env, copy_fixture, read_log, require_python, runner_bin, tag,
};

/// How long pdb's prompt or the end of the run may take to show, on a
/// loaded machine.
const SHOW_LIMIT: Duration = Duration::from_secs(60);

/// A detached tmux server of its own, with one session of 200x50 running
/// one command; killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// None (after saying why) where tmux is not installed.
    fn start(scratch: &Path, cwd: &Path, command: &str) -> Option<Tmux> {
        let installed = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!(
                "skipped: tmux is not installed, and this test drives runner in a real terminal through it (apt-get install tmux)"
            );
            return None;
        }
        let tmux = Tmux {
            socket: scratch.join("tmux.sock"),
        };
        let mut new_session = tmux.command();
        new_session
            .args([
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-s",
                "main",
                "-c",
            ])
            .arg(cwd)
            .arg(command);
        clean_env(&mut new_session);
        let status = new_session.status().expect("run tmux");
        assert!(status.success(), "tmux new-session failed: {status}");
        Some(tmux)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket);
        command
    }

    /// The whole screen and its history, wrapped lines joined.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-", "-t", "main"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen holds `text` `count` times; returns it.
    #[track_caller]
    fn wait_for(&self, text: &str, count: usize) -> String {
        let deadline = Instant::now() + SHOW_LIMIT;
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= count {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not show {count} time(s) within {SHOW_LIMIT:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `keys` and Enter.
    fn type_line(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "main", keys, "Enter"])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// The shell command tmux runs: runner with `args` (tagged, to find what it
/// leaves), then its exit code on the screen; the pane then stays open.
fn shell_command(tag: &str, args: &[&str]) -> String {
    let runner = runner_bin();
    let words: Vec<String> = [runner.to_str().unwrap()]
        .iter()
        .chain(args)
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect();
    format!(
        "RUNNER_E2E_TAG='{tag}' {}; echo \"runner exited with $?\"; exec sleep 600",
        words.join(" ")
    )
}

#[test]
fn pdb_stops_at_the_failure_and_at_a_breakpoint_and_the_run_finishes() {
    require_python();
    let project = copy_fixture("debugger");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let started = Instant::now();
    let command = shell_command(
        &tag,
        &["-n", "2", "--run-log", log.to_str().unwrap(), "--", "--pdb"],
    );
    let Some(tmux) = Tmux::start(project.dir.parent().unwrap(), &project.dir, &command) else {
        return;
    };

    // The failing test stops in pdb, after its traceback, on one worker.
    let screen = tmux.wait_for("(Pdb)", 1);
    assert!(screen.contains("· 1 worker ·"), "{screen}");
    assert!(
        screen.contains(
            "runner: --pdb: running on one worker attached to this terminal; timeouts are off"
        ),
        "{screen}"
    );
    assert!(screen.contains(">       assert answer == 42"), "{screen}");
    assert!(screen.contains("-> assert answer == 42"), "{screen}");
    // pdb reads what is typed here.
    tmux.type_line("p answer * 1000");
    tmux.wait_for("41000", 1);
    tmux.type_line("c");

    // The breakpoint stops too.
    let screen = tmux.wait_for("(Pdb)", 3);
    assert!(screen.contains("-> assert reached"), "{screen}");
    tmux.type_line("p reached.upper()");
    tmux.wait_for("'THE BREAKPOINT'", 1);
    tmux.type_line("c");

    let screen = tmux.wait_for("runner exited with", 1);
    assert!(screen.contains("runner exited with 1"), "{screen}");
    assert!(screen.contains("1 failed, 3 passed"), "{screen}");
    assert!(
        screen.contains("FAILED test_debug.py::test_fails - assert 41 == 42"),
        "{screen}"
    );
    assert!(!screen.contains("CRASHED"), "{screen}");
    assert_no_leftovers(&tag);
    assert!(started.elapsed() < Duration::from_secs(120));

    // The failure is pytest's, traceback and all.
    let (results, _) = read_log(&log);
    assert_eq!(results.len(), 4);
    let failed = &results["test_debug.py::test_fails"];
    assert_eq!(failed.outcome, "failed");
    assert!(
        failed.longrepr.contains(">       assert answer == 42"),
        "{}",
        failed.longrepr
    );
    assert!(failed.longrepr.contains("E       assert 41 == 42"));
    assert_eq!(results["test_debug.py::test_breakpoint"].outcome, "passed");
}

#[test]
fn trace_stops_at_the_first_line_of_each_test() {
    require_python();
    let project = copy_fixture("debugger");
    let tag = tag();
    let command = shell_command(
        &tag,
        &["-n", "2", "--", "--trace", "-k", "test_fails or test_last"],
    );
    let Some(tmux) = Tmux::start(project.dir.parent().unwrap(), &project.dir, &command) else {
        return;
    };
    let screen = tmux.wait_for("(Pdb)", 1);
    assert!(
        screen.contains(
            "runner: --trace: running on one worker attached to this terminal; timeouts are off"
        ),
        "{screen}"
    );
    assert!(screen.contains("test_fails()\n-> answer = 41"), "{screen}");
    // One step on, the local exists.
    tmux.type_line("n");
    tmux.wait_for("-> assert answer == 42", 1);
    tmux.type_line("p answer + 1");
    tmux.wait_for("\n42\n", 1);
    tmux.type_line("c");
    // The next test stops at its first line too.
    let screen = tmux.wait_for("(Pdb)", 4);
    assert!(screen.contains("test_last()\n-> pass"), "{screen}");
    tmux.type_line("c");
    let screen = tmux.wait_for("runner exited with", 1);
    assert!(screen.contains("runner exited with 1"), "{screen}");
    assert!(
        screen.contains("1 failed, 1 passed, 2 deselected"),
        "{screen}"
    );
    assert_no_leftovers(&tag);
}
