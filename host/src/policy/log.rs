//! What a plugin says: `host.log` calls and WASI stdout/stderr become log
//! lines tagged with the plugin's name, made safe for a terminal (see
//! `text`), bounded in length, in number and in total bytes per run, and
//! sent to one [`LogSink`] (stderr until the run's terminal takes over, so
//! lines never garble the progress bar).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::text::{MAX_TEXT, safe};

/// Log lines one plugin may emit in a run; later ones are dropped.
const MAX_LINES: usize = 1000;
/// Bytes of text one plugin may have shown in a run (log lines and the
/// reasons it gives), so that no plugin can flood a CI log.
pub(crate) const MAX_SHOWN_BYTES: usize = 1 << 20;
/// Bytes a guest may write to stdout/stderr in one `write` call.
const WRITE_PERMIT: usize = 64 << 10;

type SinkFn = Box<dyn FnMut(&str) + Send>;

/// Where every plugin's log lines go; shared by all plugins, replaceable.
#[derive(Clone)]
pub(crate) struct LogSink(Arc<Mutex<SinkFn>>);

impl Default for LogSink {
    fn default() -> Self {
        // A closed stderr loses the line (and stops the run) rather than
        // panicking.
        LogSink(Arc::new(Mutex::new(Box::new(|line: &str| {
            crate::errln!("{line}")
        }))))
    }
}

impl LogSink {
    pub(crate) fn set(&self, sink: SinkFn) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    fn emit(&self, line: &str) {
        (self.0.lock().unwrap_or_else(|e| e.into_inner()))(line);
    }
}

/// One plugin's log: its name, the sink, and what it has used of its
/// lines and bytes.
#[derive(Clone)]
pub(crate) struct PluginLog {
    plugin: Arc<str>,
    sink: LogSink,
    lines: Arc<AtomicUsize>,
    shown: Arc<AtomicUsize>,
}

impl PluginLog {
    /// `plugin` is a validated name (see `catalog`): it needs no escaping.
    pub(crate) fn new(plugin: &str, sink: LogSink) -> PluginLog {
        PluginLog {
            plugin: plugin.into(),
            sink,
            lines: Arc::default(),
            shown: Arc::default(),
        }
    }

    pub(crate) fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Emits `[plugin] level: message`, unless the plugin used up its lines
    /// or its bytes for the run.
    pub(crate) fn line(&self, level: &str, message: &str) {
        let n = self.lines.fetch_add(1, Ordering::Relaxed);
        if n > MAX_LINES {
            return;
        }
        if n == MAX_LINES {
            self.sink.emit(&format!(
                "[{}] warning: more than {MAX_LINES} log lines; the rest are dropped",
                self.plugin
            ));
            return;
        }
        if let Some(message) = self.charge(message) {
            self.sink
                .emit(&format!("[{}] {level}: {message}", self.plugin));
        }
    }

    /// `text` made safe and charged to the plugin's byte budget, or `None`
    /// once the budget is used up (a notice says so, once).
    pub(crate) fn charge(&self, text: &str) -> Option<String> {
        if self.shown.load(Ordering::Relaxed) >= MAX_SHOWN_BYTES {
            return None;
        }
        let text = safe(text);
        let before = self.shown.fetch_add(text.len(), Ordering::Relaxed);
        if before + text.len() <= MAX_SHOWN_BYTES {
            return Some(text);
        }
        if before < MAX_SHOWN_BYTES {
            self.sink.emit(&format!(
                "[{}] warning: more than {} KiB of log output; the rest is dropped",
                self.plugin,
                MAX_SHOWN_BYTES >> 10
            ));
        }
        None
    }
}

/// A guest's stdout or stderr: complete lines become log lines. Flushing
/// doesn't cut a line (interpreters flush after every piece of a `print`);
/// the rest of an unfinished line is shown when the plugin's store goes.
pub(crate) struct GuestStream {
    pending: Arc<PendingLine>,
}

/// The unfinished line of one stream, shared by every handle to it.
struct PendingLine {
    log: PluginLog,
    name: &'static str,
    bytes: Mutex<Vec<u8>>,
}

impl GuestStream {
    pub(crate) fn new(log: PluginLog, name: &'static str) -> GuestStream {
        GuestStream {
            pending: Arc::new(PendingLine {
                log,
                name,
                bytes: Mutex::default(),
            }),
        }
    }

    fn clone_stream(&self) -> GuestStream {
        GuestStream {
            pending: self.pending.clone(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let PendingLine { log, name, .. } = &*self.pending;
        let mut pending = self.pending.lock();
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            log.line(name, &String::from_utf8_lossy(&pending[start..start + end]));
            start += end + 1;
        }
        pending.drain(..start);
        // A line that never ends is shown (cut) rather than hoarded.
        if pending.len() > MAX_TEXT {
            log.line(
                name,
                &String::from_utf8_lossy(&std::mem::take(&mut *pending)),
            );
        }
    }
}

impl PendingLine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        // Printing while unwinding (stderr closed, say) would abort.
        if std::thread::panicking() {
            return;
        }
        let rest = std::mem::take(&mut *self.lock());
        if !rest.is_empty() {
            self.log.line(self.name, &String::from_utf8_lossy(&rest));
        }
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone_stream())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone_stream())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting() -> (LogSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (lines_sink(&lines), lines)
    }

    fn lines_sink(lines: &Arc<Mutex<Vec<String>>>) -> LogSink {
        let sink = LogSink::default();
        let seen = lines.clone();
        sink.set(Box::new(move |l: &str| {
            seen.lock().unwrap().push(l.to_owned())
        }));
        sink
    }

    #[test]
    fn stdout_lines_are_tagged_and_bounded() {
        let (sink, lines) = collecting();
        let stream = GuestStream::new(PluginLog::new("p", sink), "stdout");
        stream.push(b"hello\nwor");
        // What Python's print does: a write and a flush per piece.
        let mut handle = stream.clone_stream();
        handle.flush().unwrap();
        stream.push(b"ld");
        handle.flush().unwrap();
        stream.push(b"\n");
        stream.push(b"unfinished");
        assert_eq!(
            *lines.lock().unwrap(),
            ["[p] stdout: hello", "[p] stdout: world"]
        );
        drop(handle);
        drop(stream);
        assert_eq!(lines.lock().unwrap()[2], "[p] stdout: unfinished");
        lines.lock().unwrap().clear();
        let stream = GuestStream::new(PluginLog::new("p", lines_sink(&lines)), "stdout");
        for _ in 0..2 * MAX_LINES {
            stream.push(b"spam\n");
        }
        assert_eq!(lines.lock().unwrap().len(), MAX_LINES + 1);
    }

    #[test]
    fn escaped_lines_stay_within_the_byte_budget() {
        let (sink, lines) = collecting();
        let log = PluginLog::new("p", sink);
        // Every byte escapes to six: a cut before escaping would show 24 KiB
        // per line.
        let hostile = "\x1b".repeat(MAX_TEXT);
        for _ in 0..MAX_LINES {
            log.line("info", &hostile);
        }
        let lines = lines.lock().unwrap();
        assert!(lines.iter().all(|l| l.len() <= MAX_TEXT + 64));
        let total: usize = lines.iter().map(String::len).sum();
        assert!(total <= MAX_SHOWN_BYTES + 64 * lines.len(), "{total}");
        assert!(lines.last().unwrap().contains("the rest is dropped"));
        assert!(lines.iter().all(|l| !l.contains('\x1b')));
    }
}
