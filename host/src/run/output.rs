//! What workers and tests write to their stdout and stderr. Each output
//! connection is one stream of bytes from one worker: its own, between
//! tests, or one test's (when pytest's capture lets a test's output
//! through, each test writes on a connection of its own, see the shim's
//! output.py). Each stream is cut into whole lines as bytes arrive, so two
//! workers' bytes never meet in one line. A line without its newline (a
//! prompt, a progress dot) waits a moment for the rest, then is shown cut
//! short; the end of its stream (its test ended) shows it at once. The last
//! bytes each running test wrote are kept for its crashed or hung section.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::connections::ConnId;

/// How long a line without its newline waits for the rest before it is
/// shown as it is.
pub const PARTIAL_WAIT: Duration = Duration::from_millis(500);
/// A line longer than this is shown in pieces: a test that writes without
/// a newline must not grow runner's memory without bound.
const LINE_LIMIT: usize = 1024 * 1024;
/// Bytes of a running test's output kept for its crashed or hung section.
const TAIL_LIMIT: usize = 64 * 1024;

/// A line of a stream, without its newline.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub worker: String,
    /// The test that wrote it; none for the worker's own output.
    pub test: Option<String>,
    pub text: String,
    /// Shown before its newline came (or without one).
    pub partial: bool,
}

struct Stream {
    worker: String,
    test: Option<String>,
    /// The start of a line whose newline has not come yet.
    pending: Vec<u8>,
    /// When `pending` began to wait.
    since: Instant,
}

impl Stream {
    fn line(&self, bytes: &[u8], partial: bool) -> Line {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        Line {
            worker: self.worker.clone(),
            test: self.test.clone(),
            text: String::from_utf8_lossy(bytes).into_owned(),
            partial,
        }
    }

    /// The pending bytes as a line cut short, if there are any.
    fn flush(&mut self) -> Option<Line> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        Some(self.line(&pending, true))
    }
}

/// The end of what one test wrote, while it runs.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    /// Bytes dropped from its front.
    dropped: usize,
}

impl Tail {
    fn keep(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        // Trimmed by halves, so that each byte is moved at most twice.
        if self.bytes.len() > 2 * TAIL_LIMIT {
            let cut = self.bytes.len() - TAIL_LIMIT;
            self.bytes.drain(..cut);
            self.dropped += cut;
        }
    }

    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL_LIMIT);
        let mut kept = &self.bytes[start..];
        let dropped = self.dropped + start;
        if dropped > 0 {
            // Begin at a line's start.
            if let Some(newline) = kept.iter().position(|b| *b == b'\n') {
                kept = &kept[newline + 1..];
            }
            let shown = String::from_utf8_lossy(kept);
            return format!(
                "[runner: {} earlier bytes not shown]\n{shown}",
                self.bytes.len() + self.dropped - kept.len()
            );
        }
        String::from_utf8_lossy(kept).into_owned()
    }
}

#[derive(Default)]
pub struct OutputStreams {
    streams: HashMap<ConnId, Stream>,
    /// What each test that has not finished wrote, by (worker, test).
    tails: HashMap<(String, String), Tail>,
}

impl OutputStreams {
    /// A new stream, of `test` or of the worker itself.
    pub fn open(&mut self, conn: ConnId, worker: String, test: Option<String>, now: Instant) {
        if let Some(test) = &test {
            self.tails
                .entry((worker.clone(), test.clone()))
                .or_default();
        }
        self.streams.insert(
            conn,
            Stream {
                worker,
                test,
                pending: Vec::new(),
                since: now,
            },
        );
    }

    pub fn is_stream(&self, conn: ConnId) -> bool {
        self.streams.contains_key(&conn)
    }

    /// Bytes on a stream: the lines they complete.
    pub fn receive(&mut self, conn: ConnId, bytes: &[u8], now: Instant) -> Vec<Line> {
        let Some(stream) = self.streams.get_mut(&conn) else {
            return Vec::new();
        };
        if let Some(test) = &stream.test
            && let Some(tail) = self.tails.get_mut(&(stream.worker.clone(), test.clone()))
        {
            tail.keep(bytes);
        }
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(newline);
            if stream.pending.is_empty() {
                lines.push(stream.line(head, false));
            } else {
                stream.pending.extend_from_slice(head);
                let whole = std::mem::take(&mut stream.pending);
                lines.push(stream.line(&whole, false));
            }
            rest = &tail[1..];
        }
        if !rest.is_empty() {
            if stream.pending.is_empty() {
                stream.since = now;
            }
            stream.pending.extend_from_slice(rest);
            if stream.pending.len() >= LINE_LIMIT {
                lines.extend(stream.flush());
            }
        }
        lines
    }

    /// The stream's end: its last line, if cut short.
    pub fn close(&mut self, conn: ConnId) -> Option<Line> {
        self.streams.remove(&conn)?.flush()
    }

    /// Lines that waited [`PARTIAL_WAIT`] for their newline, as they are.
    pub fn flush_waiting(&mut self, now: Instant) -> Vec<Line> {
        let mut lines: Vec<(ConnId, Line)> = self
            .streams
            .iter_mut()
            .filter(|(_, s)| !s.pending.is_empty() && now - s.since >= PARTIAL_WAIT)
            .filter_map(|(conn, s)| Some((*conn, s.flush()?)))
            .collect();
        lines.sort_by_key(|(conn, _)| *conn);
        lines.into_iter().map(|(_, line)| line).collect()
    }

    /// Every line still waiting (the run ends).
    pub fn flush_all(&mut self) -> Vec<Line> {
        let mut conns: Vec<ConnId> = self.streams.keys().copied().collect();
        conns.sort();
        conns
            .into_iter()
            .filter_map(|conn| self.streams.get_mut(&conn)?.flush())
            .collect()
    }

    /// Whether a stream of this test is still open (more may come).
    pub fn is_open(&self, worker: &str, test: &str) -> bool {
        self.streams
            .values()
            .any(|s| s.worker == worker && s.test.as_deref() == Some(test))
    }

    /// The test has a result: what it wrote need not be kept any more.
    /// Returns the end of it (empty if it wrote nothing).
    pub fn finished(&mut self, worker: &str, test: &str) -> String {
        self.tails
            .remove(&(worker.to_owned(), test.to_owned()))
            .map(|tail| tail.text())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams() -> (OutputStreams, Instant) {
        let mut streams = OutputStreams::default();
        let now = Instant::now();
        streams.open(1, "gw0".into(), Some("t.py::a".into()), now);
        streams.open(2, "gw1".into(), Some("t.py::b".into()), now);
        (streams, now)
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let (mut streams, now) = streams();
        assert_eq!(texts(&streams.receive(1, b"one\ntw", now)), ["one"]);
        // Another worker's bytes in between change nothing.
        assert_eq!(texts(&streams.receive(2, b"xx", now)), Vec::<&str>::new());
        assert_eq!(
            texts(&streams.receive(1, b"o\r\nthree\n\n", now)),
            ["two", "three", ""]
        );
        assert_eq!(texts(&streams.receive(2, b"yy\n", now)), ["xxyy"]);
        let line = &streams.receive(1, b"four\n", now)[0];
        assert_eq!(
            (line.worker.as_str(), line.test.as_deref(), line.partial),
            ("gw0", Some("t.py::a"), false)
        );
    }

    #[test]
    fn a_line_without_its_newline_waits_then_shows() {
        let (mut streams, now) = streams();
        streams.receive(1, b"Password: ", now);
        assert!(streams.flush_waiting(now + PARTIAL_WAIT / 2).is_empty());
        let lines = streams.flush_waiting(now + PARTIAL_WAIT);
        assert_eq!(texts(&lines), ["Password: "]);
        assert!(lines[0].partial);
        // The rest of it is a line of its own.
        assert_eq!(texts(&streams.receive(1, b"ok\n", now)), ["ok"]);
    }

    #[test]
    fn the_end_of_a_stream_shows_its_last_line() {
        let (mut streams, now) = streams();
        streams.receive(1, b"done", now);
        let line = streams.close(1).unwrap();
        assert_eq!((line.text.as_str(), line.partial), ("done", true));
        assert!(!streams.is_open("gw0", "t.py::a"));
        assert!(streams.is_open("gw1", "t.py::b"));
        assert_eq!(streams.close(2), None);
    }

    #[test]
    fn a_huge_line_is_shown_in_pieces() {
        let (mut streams, now) = streams();
        let lines = streams.receive(1, &vec![b'x'; LINE_LIMIT + 10], now);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), LINE_LIMIT + 10);
        assert!(lines[0].partial);
    }

    #[test]
    fn the_tail_of_a_test_is_kept_until_it_finishes() {
        let (mut streams, now) = streams();
        streams.receive(1, b"first\nsecond\n", now);
        streams.close(1);
        assert_eq!(streams.finished("gw0", "t.py::a"), "first\nsecond\n");
        assert_eq!(streams.finished("gw0", "t.py::a"), "");
        // A chatty test: the end is kept, from a line's start.
        for i in 0..20_000 {
            streams.receive(2, format!("line {i}\n").as_bytes(), now);
        }
        let tail = streams.finished("gw1", "t.py::b");
        assert!(tail.starts_with("[runner: "), "{}", &tail[..80]);
        assert!(tail.ends_with("line 19999\n"));
        assert!(tail.len() <= TAIL_LIMIT + 64);
        let first_shown = tail.lines().nth(1).unwrap();
        assert!(first_shown.starts_with("line "), "{first_shown}");
    }
}
