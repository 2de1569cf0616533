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

/// Fault injection for runner's own tests: `RUNNER_INJECT_PANIC=result`
/// makes runner panic at the point named `result` (when the first result
/// arrives, mid-run), as a bug would; the tests check that the hook cleans
/// up.
pub fn injected(point: &str) {
    static INJECT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = INJECT.get_or_init(|| std::env::var("RUNNER_INJECT_PANIC").ok());
    if wanted.as_deref() == Some(point) {
        panic!("injected by RUNNER_INJECT_PANIC={point}");
    }
}

/// SIGKILLs every descendant of runner. runner is a child subreaper, so
/// every process of the run that lost its parent is its child: walking the
/// tree from runner reaches them all. Two passes catch what was forked
/// while the first one ran.
fn kill_descendants() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let runner = std::process::id() as i32;
    for _ in 0..2 {
        for pid in crate::descendants::subtree(runner) {
            if pid != runner {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}
