//! runner's own stdout and stderr, written so that a closed pipe never
//! panics (`println!` does). `runner -v | head -1` closes the pipe early:
//! the first write that finds it closed marks the output gone and wakes the
//! run, which then stops as it does on SIGTERM, quietly: no more output,
//! every process killed, what finished kept on disk.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static CLOSED: AtomicBool = AtomicBool::new(false);
static CLOSED_NOTICE: Notify = Notify::const_new();

/// Writes `text` to stdout.
pub fn out(text: &str) {
    write(&mut std::io::stdout().lock(), text);
}

/// Writes `text` to stderr.
pub fn err(text: &str) {
    write(&mut std::io::stderr().lock(), text);
}

/// Writes `bytes` (what Python printed, maybe not UTF-8) to stdout.
pub fn out_bytes(bytes: &[u8]) {
    write_bytes(&mut std::io::stdout().lock(), bytes);
}

/// Writes `bytes` to stderr.
pub fn err_bytes(bytes: &[u8]) {
    write_bytes(&mut std::io::stderr().lock(), bytes);
}

fn write(stream: &mut impl Write, text: &str) {
    write_bytes(stream, text.as_bytes());
}

fn write_bytes(stream: &mut impl Write, bytes: &[u8]) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let written = stream.write_all(bytes).and_then(|()| stream.flush());
    // Only a reader that went away stops the run; other errors (a full disk
    // behind a redirect) lose that output and nothing else.
    if written.is_err_and(|error| error.kind() == ErrorKind::BrokenPipe) {
        mark_closed();
    }
}

fn mark_closed() {
    if !CLOSED.swap(true, Ordering::Relaxed) {
        // A stored permit: a run that starts waiting later still wakes.
        CLOSED_NOTICE.notify_one();
    }
}

/// Whether a reader of runner's output went away.
pub fn is_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Resolves once a reader of runner's output goes away.
pub async fn closed() {
    if !is_closed() {
        CLOSED_NOTICE.notified().await;
    }
}

/// `println!` that never panics.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdio::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::stdio::err(&format!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct FullDisk;

    impl Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_a_broken_pipe_closes_the_output() {
        write(&mut FullDisk, "lost, and nothing else");
        assert!(!is_closed());
        write(&mut BrokenPipe, "nobody reads this");
        assert!(is_closed());
        // Resolves although the pipe closed before anyone waited.
        tokio::time::timeout(std::time::Duration::from_secs(1), closed())
            .await
            .expect("the closed output is noticed");
    }
}
