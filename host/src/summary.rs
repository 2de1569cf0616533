//! pytest's end-of-run summary, reproduced exactly: the per-category counts
//! (from each report's `pytest_report_teststatus` category), the closing line
//! ("1 failed, 3 passed, 1 skipped in 0.12s") and its colour.

use std::collections::BTreeMap;
use std::time::Duration;

/// The order pytest's terminal reporter lists the known categories in;
/// other categories (a plugin's own, or runner's hung/crashed) follow in the
/// order first seen.
const KNOWN_CATEGORIES: [&str; 8] = [
    "failed",
    "passed",
    "skipped",
    "deselected",
    "xfailed",
    "xpassed",
    "warnings",
    "error",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Green,
    Yellow,
    Red,
}

/// Report counts per category, in first-seen order for unknown ones.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    counts: BTreeMap<String, u32>,
    extra_order: Vec<String>,
}

impl Stats {
    pub fn add(&mut self, category: &str, count: u32) {
        if category.is_empty() || count == 0 {
            return;
        }
        if !KNOWN_CATEGORIES.contains(&category) && !self.counts.contains_key(category) {
            self.extra_order.push(category.to_string());
        }
        *self.counts.entry(category.to_string()).or_default() += count;
    }

    pub fn get(&self, category: &str) -> u32 {
        self.counts.get(category).copied().unwrap_or(0)
    }

    /// Whether pytest would exit with "tests failed" (runner adds hung and crashed).
    pub fn has_failures(&self) -> bool {
        ["failed", "error", "hung", "crashed"]
            .iter()
            .any(|c| self.get(c) > 0)
    }

    /// `(count, noun)` pairs in pytest's order, e.g. `(2, "errors")`.
    pub fn parts(&self) -> Vec<(u32, String)> {
        KNOWN_CATEGORIES
            .iter()
            .map(|c| c.to_string())
            .chain(self.extra_order.iter().cloned())
            .filter_map(|category| {
                let count = self.get(&category);
                (count > 0).then(|| (count, pluralize(count, &category)))
            })
            .collect()
    }

    /// pytest's `_get_main_color`: red on any failure, yellow when something
    /// deserves a look (xpassed, warnings, unknown categories, nothing ran).
    pub fn color(&self) -> Color {
        if self.has_failures() {
            return Color::Red;
        }
        let known_yellow = ["warnings", "xpassed"].iter().any(|c| self.get(c) > 0);
        let unknown = self.extra_order.iter().any(|c| self.get(c) > 0);
        if known_yellow || unknown || self.get("passed") == 0 {
            return Color::Yellow;
        }
        Color::Green
    }

    /// The text of pytest's closing line, without the `=` padding.
    pub fn closing_line(&self, elapsed: Duration) -> String {
        let parts = self.parts();
        let counts = if parts.is_empty() {
            "no tests ran".to_string()
        } else {
            parts
                .iter()
                .map(|(count, noun)| format!("{count} {noun}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{counts} in {}", format_duration(elapsed))
    }
}

fn pluralize(count: u32, category: &str) -> String {
    match category {
        "error" if count != 1 => "errors".into(),
        "warnings" if count == 1 => "warning".into(),
        _ => category.into(),
    }
}

/// pytest's `format_session_duration`.
pub fn format_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.2}s")
    } else {
        let whole = elapsed.as_secs();
        format!(
            "{seconds:.2}s ({}:{:02}:{:02})",
            whole / 3600,
            whole / 60 % 60,
            whole % 60
        )
    }
}

/// Centre `title` in a line of `fill` characters `width` wide, exactly as
/// pytest's `write_sep` does.
pub fn separator(fill: char, title: &str, width: usize) -> String {
    if title.is_empty() {
        return fill.to_string().repeat(width);
    }
    let n = (width.saturating_sub(title.chars().count() + 2) / 2).max(1);
    let side = fill.to_string().repeat(n);
    let mut line = format!("{side} {title} {side}");
    if line.chars().count() < width {
        line.push(fill);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_line_follows_pytest_order_and_plurals() {
        let mut stats = Stats::default();
        for category in [
            "passed", "error", "failed", "passed", "skipped", "xfailed", "error", "", "hung",
        ] {
            stats.add(category, 1);
        }
        stats.add("deselected", 3);
        assert_eq!(
            stats.closing_line(Duration::from_millis(1234)),
            "1 failed, 2 passed, 1 skipped, 3 deselected, 1 xfailed, 2 errors, 1 hung in 1.23s"
        );
        assert_eq!(stats.color(), Color::Red);
    }

    #[test]
    fn empty_runs_say_no_tests_ran() {
        let stats = Stats::default();
        assert_eq!(
            stats.closing_line(Duration::from_millis(10)),
            "no tests ran in 0.01s"
        );
        assert_eq!(stats.color(), Color::Yellow);
        let mut deselected = Stats::default();
        deselected.add("deselected", 4);
        assert_eq!(
            deselected.closing_line(Duration::from_millis(10)),
            "4 deselected in 0.01s"
        );
    }

    #[test]
    fn colours_match_pytest() {
        let mut green = Stats::default();
        green.add("passed", 2);
        green.add("skipped", 1);
        assert_eq!(green.color(), Color::Green);
        let mut yellow = green.clone();
        yellow.add("xpassed", 1);
        assert_eq!(yellow.color(), Color::Yellow);
    }

    #[test]
    fn long_durations_show_clock_time() {
        assert_eq!(
            format_duration(Duration::from_secs_f64(65.31)),
            "65.31s (0:01:05)"
        );
    }

    #[test]
    fn separators_are_centred_to_the_width() {
        let line = separator('=', "1 passed in 0.01s", 80);
        assert_eq!(line.chars().count(), 80);
        assert!(line.starts_with(&format!("{} 1 passed", "=".repeat(30))));
    }
}
