//! What a plugin says: `host.log` calls and WASI stdout/stderr become log
//! lines tagged with the plugin's name, made safe for a terminal, bounded
//! in length and in number, and sent to one [`LogSink`] (stderr until the
//! run's terminal takes over, so lines never garble the progress bar).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest message shown; the rest is cut.
pub(crate) const MAX_MESSAGE: usize = 4096;
/// Log lines one plugin may emit in a run; later ones are dropped.
const MAX_LINES: usize = 1000;
/// Bytes a guest may write to stdout/stderr in one `write` call.
const WRITE_PERMIT: usize = 64 << 10;

type SinkFn = Box<dyn FnMut(&str) + Send>;

/// Where every plugin's log lines go; shared by all plugins, replaceable.
#[derive(Clone)]
pub(crate) struct LogSink(Arc<Mutex<SinkFn>>);

impl Default for LogSink {
    fn default() -> Self {
        LogSink(Arc::new(Mutex::new(Box::new(|line: &str| {
            eprintln!("{line}")
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

/// One plugin's log: its name, the sink, and how many lines it has used.
#[derive(Clone)]
pub(crate) struct PluginLog {
    plugin: Arc<str>,
    sink: LogSink,
    lines: Arc<AtomicUsize>,
}

impl PluginLog {
    pub(crate) fn new(plugin: &str, sink: LogSink) -> PluginLog {
        PluginLog {
            plugin: plugin.into(),
            sink,
            lines: Arc::default(),
        }
    }

    pub(crate) fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Emits `[plugin] level: message`, unless the plugin used up its lines.
    pub(crate) fn line(&self, level: &str, message: &str) {
        let n = self.lines.fetch_add(1, Ordering::Relaxed);
        if n < MAX_LINES {
            self.sink
                .emit(&format!("[{}] {level}: {}", self.plugin, shorten(message)));
        } else if n == MAX_LINES {
            self.sink.emit(&format!(
                "[{}] warning: more than {MAX_LINES} log lines; the rest are dropped",
                self.plugin
            ));
        }
    }
}

/// Makes guest text safe to print: control characters (escape sequences
/// could rewrite the screen) are shown escaped, and the length is capped at
/// [`MAX_MESSAGE`] characters.
pub(crate) fn shorten(message: &str) -> String {
    let mut shown = String::with_capacity(message.len().min(MAX_MESSAGE + 32));
    let mut chars = message.char_indices();
    for (_, c) in chars.by_ref().take(MAX_MESSAGE) {
        match c {
            '\n' | '\t' => shown.push(c),
            c if c.is_control() => shown.extend(c.escape_default()),
            c => shown.push(c),
        }
    }
    if let Some((at, _)) = chars.next() {
        shown.push_str(&format!(" [... {} more bytes cut]", message.len() - at));
    }
    shown
}

/// A guest's stdout or stderr: complete lines become log lines.
pub(crate) struct GuestStream {
    log: PluginLog,
    name: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestStream {
    pub(crate) fn new(log: PluginLog, name: &'static str) -> GuestStream {
        GuestStream {
            log,
            name,
            pending: Arc::default(),
        }
    }

    fn clone_stream(&self) -> GuestStream {
        GuestStream {
            log: self.log.clone(),
            name: self.name,
            pending: self.pending.clone(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.log
                .line(self.name, String::from_utf8_lossy(&line[..end]).as_ref());
        }
        // A line that never ends is shown in pieces rather than hoarded.
        if pending.len() > MAX_MESSAGE {
            let line: Vec<u8> = std::mem::take(&mut *pending);
            self.log.line(self.name, &String::from_utf8_lossy(&line));
        }
    }

    fn flush_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let line: Vec<u8> = std::mem::take(&mut *pending);
            self.log.line(self.name, &String::from_utf8_lossy(&line));
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
        self.flush_pending();
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
        self.flush_pending();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_pending();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting() -> (LogSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink::default();
        let seen = lines.clone();
        sink.set(Box::new(move |l: &str| {
            seen.lock().unwrap().push(l.to_owned())
        }));
        (sink, lines)
    }

    #[test]
    fn shorten_escapes_and_cuts() {
        assert_eq!(shorten("a\x1b[31mb\n"), "a\\u{1b}[31mb\n");
        let long = "x".repeat(MAX_MESSAGE + 10);
        assert!(shorten(&long).ends_with(" [... 10 more bytes cut]"));
    }

    #[test]
    fn stdout_lines_are_tagged_and_bounded() {
        let (sink, lines) = collecting();
        let stream = GuestStream::new(PluginLog::new("p", sink), "stdout");
        stream.push(b"hello\nwor");
        stream.push(b"ld\n");
        assert_eq!(
            *lines.lock().unwrap(),
            ["[p] stdout: hello", "[p] stdout: world"]
        );
        for _ in 0..2 * MAX_LINES {
            stream.push(b"spam\n");
        }
        assert_eq!(lines.lock().unwrap().len(), MAX_LINES + 1);
    }
}
