//! What happens if runner itself has a bug: a panic anywhere (any thread,
//! any task) prints what happened and how to report it, kills every process
//! runner started, and exits with code 3, the documented "runner itself
//! failed". Nothing is left running, whatever state the run was in.

use std::io::Write;

use crate::exit_code;

/// Installs the hook; call once, first thing.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        let message = format!(
            "error: runner crashed (a bug in runner, not in your tests): {info}\n\
             \x20 every process runner started has been stopped; results that finished are in .runner/runs/\n\
             \x20 please report this with the command you ran and this message; the backtrace:\n{backtrace}\n"
        );
        // Never panic again while reporting a panic: a closed stderr is fine.
        let _ = std::io::stderr().lock().write_all(message.as_bytes());
        kill_descendants();
        std::process::exit(exit_code::INTERNAL_ERROR);
    }));
}

/// SIGKILLs every descendant of runner. runner is a child subreaper, so
/// every process of the run that lost its parent is its child: walking the
/// tree from runner reaches them all.
pub fn kill_descendants() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // Stop the tree top-down so no parent forks a replacement meanwhile;
    // two passes catch what was forked while the first one ran.
    for _ in 0..2 {
        for pid in descendants(std::process::id() as i32) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Every descendant of `pid`, parents before children, read from
/// `/proc/PID/task/TID/children`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        for child in children(parent) {
            if !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_children_and_grandchildren() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let shell_pid = shell.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let found = descendants(std::process::id() as i32);
            if found.len() >= 3 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(found.contains(&shell_pid), "{found:?}");
        let grandchildren = descendants(shell_pid);
        assert_eq!(grandchildren.len(), 2, "{grandchildren:?}");
        for pid in grandchildren {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = shell.wait();
    }
}
