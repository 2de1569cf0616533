//! Text that comes from a plugin, made safe for a terminal: its log lines,
//! the errors and reasons it returns, its name, and the paths it names.
//! Everything a plugin can make runner print goes through [`safe`], so no
//! plugin can send an escape sequence (clear the screen, move the cursor,
//! colour a fake "ALL PASSED"), forge a line of its own with a newline, or
//! reorder what is shown with bidirectional controls.

use std::path::Path;

/// Longest text shown, in bytes once escaped; the rest is cut.
pub(crate) const MAX_TEXT: usize = 4096;

/// Whether `c` could change what a terminal shows beyond printing itself:
/// control characters (escape sequences, carriage returns, newlines, the C1
/// controls) and the invisible characters that reorder or split text (the
/// bidirectional marks, embeddings, overrides and isolates, and the Unicode
/// line and paragraph separators).
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` on one line, with each character [`needs_escape`] accepts shown
/// escaped (`\u{1b}`, `\n`), cut to [`MAX_TEXT`] bytes.
pub(crate) fn safe(text: &str) -> String {
    safe_within(text, MAX_TEXT)
}

/// A path for messages, escaped like any other text (a file name is
/// chosen by whoever wrote the plugin directory).
pub(crate) fn safe_path(path: &Path) -> String {
    safe(&path.to_string_lossy())
}

/// Like [`safe`], cut to `max` bytes. Escaping comes first, so the bound
/// holds for what is printed, however many characters need escaping; the
/// input is only read as far as the bound.
pub(crate) fn safe_within(text: &str, max: usize) -> String {
    let mut shown = String::with_capacity(text.len().min(max) + 32);
    for (at, c) in text.char_indices() {
        let before = shown.len();
        if needs_escape(c) {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
        if shown.len() > max {
            shown.truncate(before);
            shown.push_str(&format!(" [... {} more bytes cut]", text.len() - at));
            break;
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_newlines_and_bidi() {
        assert_eq!(safe("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(
            safe("ok\n=== ALL PASSED ===\r"),
            "ok\\n=== ALL PASSED ===\\r"
        );
        assert_eq!(safe("\u{9b}31m"), "\\u{9b}31m");
        for bidi in ['\u{202E}', '\u{2066}', '\u{2069}', '\u{200F}', '\u{061C}'] {
            let shown = safe(&format!("x{bidi}y"));
            assert!(!shown.contains(bidi), "{shown:?}");
            assert!(shown.starts_with("x\\u{"), "{shown:?}");
        }
        assert_eq!(safe("tab\there, é ✓"), "tab\\there, é ✓");
    }

    #[test]
    fn cuts_after_escaping() {
        let long = "x".repeat(MAX_TEXT + 10);
        let shown = safe(&long);
        assert!(shown.ends_with(" [... 10 more bytes cut]"), "{shown}");
        // Each escape char grows sixfold; the bound is on what is shown.
        let escapes = "\x1b".repeat(MAX_TEXT);
        let shown = safe(&escapes);
        assert!(shown.len() <= MAX_TEXT + 32, "{} bytes", shown.len());
        assert!(shown.starts_with("\\u{1b}\\u{1b}"));
        assert!(shown.ends_with("more bytes cut]"));
        // Multi-byte characters are never split.
        let wide = "é".repeat(MAX_TEXT);
        assert!(safe(&wide).len() <= MAX_TEXT + 32);
    }
}
