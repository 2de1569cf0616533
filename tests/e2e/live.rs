//! A process read while it runs: each line of its stdout and stderr is
//! taken by a reader thread the moment it is written, stamped with when it
//! arrived, and handed over a channel, so a test can wait for a line, act
//! (edit a file, press Enter, send a signal) and see what follows.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::clean_env;

/// A line as it arrived.
#[derive(Debug, Clone)]
pub struct Arrived {
    pub line: String,
    /// When the reader got it.
    pub at: Instant,
    /// The same moment as Unix seconds, to compare with an event's `at`.
    pub unix: f64,
    /// It ended with a newline (only a last line may not).
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Arrived>,
    stderr: Receiver<Arrived>,
    /// Every line read so far from either stream, for failure messages.
    transcript: Arc<Mutex<Vec<String>>>,
    exit: Option<(ExitStatus, Instant)>,
    pub started: Instant,
}

impl Live {
    /// Starts `cmd` in `cwd` with all three standard streams piped.
    pub fn spawn(mut cmd: Command, cwd: &Path) -> Live {
        cmd.current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clean_env(&mut cmd);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {}: {e}", cwd.display()));
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let stdout = read_lines(child.stdout.take().unwrap(), "out", transcript.clone());
        let stderr = read_lines(child.stderr.take().unwrap(), "err", transcript.clone());
        Live {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            transcript,
            exit: None,
            started,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line of `stream`, or None at its end or after `timeout`.
    pub fn next_line(&mut self, stream: Stream, timeout: Duration) -> Option<Arrived> {
        let receiver = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        // Its end and the timeout are the same to the caller: no line.
        receiver.recv_timeout(timeout).ok()
    }

    /// Reads `stream` up to the first line that `wanted` accepts and returns
    /// it; panics with everything read so far if none comes within
    /// `timeout`. `what` names the line for that message.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        stream: Stream,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Arrived {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(stream, left) {
                Some(arrived) if wanted(&arrived.line) => return arrived,
                Some(_) => {}
                None => panic!(
                    "no {what} on {stream:?} within {timeout:?}\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Asserts that `stream` shows no line within `quiet`.
    #[track_caller]
    pub fn assert_silent(&mut self, stream: Stream, quiet: Duration, why: &str) {
        if let Some(arrived) = self.next_line(stream, quiet) {
            panic!(
                "{why}, but {stream:?} printed {:?}\n{}",
                arrived.line,
                self.transcript()
            );
        }
    }

    /// Writes `text` to the process's stdin.
    pub fn type_in(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit, polling often so that the moment is
    /// precise; panics (the process is killed on drop) after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + timeout;
        while self.exit.is_none() {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exit = Some((status, Instant::now()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {timeout:?}\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.exit.unwrap()
    }

    /// What is left of `stream` once the process has exited, up to its end.
    pub fn rest(&mut self, stream: Stream) -> Vec<Arrived> {
        let mut lines = Vec::new();
        // The pipe closes when the last process holding it exits.
        while let Some(arrived) = self.next_line(stream, Duration::from_secs(10)) {
            lines.push(arrived);
        }
        lines
    }

    /// Everything read so far, each line tagged with its stream.
    pub fn transcript(&self) -> String {
        let lines = self.transcript.lock().unwrap();
        format!("--- output so far ---\n{}", lines.join("\n"))
    }
}

impl Drop for Live {
    /// A test that fails midway leaves no process running (runner's
    /// guardian takes the rest of the run with it).
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(
    pipe: impl Read + Send + 'static,
    tag: &'static str,
    transcript: Arc<Mutex<Vec<String>>>,
) -> Receiver<Arrived> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        // Lines are read as bytes so that a non-UTF-8 line is seen, not fatal.
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let complete = buf.ends_with(b"\n");
            let arrived = Arrived {
                line: String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_owned(),
                at: Instant::now(),
                unix,
                complete,
            };
            transcript
                .lock()
                .unwrap()
                .push(format!("{tag}| {}", arrived.line));
            buf.clear();
            if tx.send(arrived).is_err() {
                return;
            }
        }
    });
    rx
}
