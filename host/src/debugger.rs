//! runner's terminal, lent to a debugger. Under `--pdb` or `--trace` the
//! run has one worker, attached to the terminal runner was started from:
//! its stdin, stdout and stderr are runner's own (the zygote gets copies of
//! them, `RUNNER_TERMINAL`, and hands them to the worker, see the shim's
//! output.py), and its process group takes the terminal's foreground, so
//! that pdb can read from it and Ctrl-C reaches the test, as under plain
//! pytest. runner takes the foreground back once the run is over.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

/// The environment variable that tells the zygote where runner's terminal
/// is: `IN,OUT,ERR,PGID`, three descriptors and runner's process group
/// (a worker takes the foreground only from it).
pub const TERMINAL_ENV: &str = "RUNNER_TERMINAL";

/// Copies of runner's stdin, stdout and stderr for the zygote.
pub struct TerminalFds {
    fds: [OwnedFd; 3],
}

impl TerminalFds {
    /// Copies of runner's standard streams, or None if one is closed. With
    /// `--format json` stdout carries events only, so the debugger's
    /// output goes to stderr.
    pub fn of_runner(json: bool) -> Option<TerminalFds> {
        let stdin = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let stdout = if json {
            std::io::stderr().as_fd().try_clone_to_owned().ok()?
        } else {
            std::io::stdout().as_fd().try_clone_to_owned().ok()?
        };
        let stderr = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
        Some(TerminalFds {
            fds: [stdin, stdout, stderr],
        })
    }

    /// The value of [`TERMINAL_ENV`].
    pub fn env_value(&self) -> String {
        let [stdin, stdout, stderr] = self.raw();
        format!("{stdin},{stdout},{stderr},{}", getpgrp())
    }

    /// The descriptors, which must stay open across the zygote's exec.
    pub fn raw(&self) -> [RawFd; 3] {
        [
            self.fds[0].as_raw_fd(),
            self.fds[1].as_raw_fd(),
            self.fds[2].as_raw_fd(),
        ]
    }
}

/// The terminal's foreground for the length of a run whose worker may
/// take it: given back to runner when dropped, if runner had it when the
/// run started (a runner started in the background never takes it from
/// the shell).
pub struct Foreground {
    runner_had_it: bool,
}

impl Foreground {
    pub fn lend() -> Foreground {
        let stdin = std::io::stdin();
        Foreground {
            runner_had_it: stdin.is_terminal()
                && tcgetpgrp(stdin.as_fd()).is_ok_and(|pgrp| pgrp == getpgrp()),
        }
    }
}

impl Drop for Foreground {
    /// Takes the foreground back from the worker that took it (gone now, or
    /// about to be). From a background group this sends SIGTTOU, ignored
    /// meanwhile, as shells do.
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let ours: Pid = getpgrp();
        if !self.runner_had_it || tcgetpgrp(stdin.as_fd()).is_ok_and(|pgrp| pgrp == ours) {
            return;
        }
        // SAFETY: the handler is SIG_IGN, no code of ours runs on the
        // signal; the previous disposition is restored right after.
        #[allow(unsafe_code)]
        unsafe {
            let Ok(previous) = signal(Signal::SIGTTOU, SigHandler::SigIgn) else {
                return;
            };
            let _ = tcsetpgrp(stdin.as_fd(), ours);
            let _ = signal(Signal::SIGTTOU, previous);
        }
    }
}
