//! Everything the user sees in the terminal: a progress bar while tests run
//! (stderr, only on a terminal), failures as they happen, and at the end
//! pytest's own report: ERRORS, FAILURES, the short summary and the closing
//! line, on stdout.

use std::time::Duration;

use console::{Style, Term};
use indicatif::ProgressBar;

use crate::exit_code::INTERRUPTED;
use crate::summary::{Color, Stats, separator};
use crate::wire::{CollectError, PhaseReport, SessionStop, WarningRecord};

/// How much the user asked to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// A test that did not pass, with the reports needed to explain it.
pub struct Problem {
    pub id: String,
    pub reports: Vec<PhaseReport>,
}

/// What the final report needs to know.
pub struct Summary<'a> {
    pub collect_errors: &'a [CollectError],
    pub warnings: &'a [WarningRecord],
    pub problems: &'a [Problem],
    pub stats: &'a Stats,
    pub elapsed: Duration,
    pub notes: &'a [String],
    /// Why the run stopped early, shown as pytest's `!!! Interrupted: ... !!!`.
    pub interrupted: Option<&'a str>,
    /// The run's exit code, which the closing line's colour must not
    /// contradict.
    pub exit_code: i32,
    /// A test stopped pytest's session (KeyboardInterrupt, pytest.exit).
    pub session_stop: Option<&'a SessionStop>,
}

/// The exit codes after which pytest prints its summary sections (its
/// terminal reporter's `summary_exit_codes`): a `pytest.exit(returncode=3)`
/// ends with the closing line alone.
const SUMMARY_EXIT_CODES: [i32; 6] = [0, 1, 2, 4, 5, 6];

pub struct Terminal {
    bar: ProgressBar,
    width: usize,
    verbosity: Verbosity,
    /// The final report goes to stderr (stdout carries `--format json`).
    pub report_to_stderr: bool,
}

impl Terminal {
    pub fn new(verbosity: Verbosity) -> Terminal {
        let stdout = Term::stdout();
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .or_else(|| stdout.size_checked().map(|(_, w)| w as usize))
            .unwrap_or(80);
        let bar = ProgressBar::hidden();
        Terminal {
            bar,
            width,
            verbosity,
            report_to_stderr: false,
        }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// A note to the user on stderr, kept clear of the progress bar.
    pub fn warn(&self, message: &str) {
        self.bar.suspend(|| {
            crate::errln!(
                "{} {message}",
                Style::new().yellow().bold().apply_to("warning:")
            )
        });
    }

    /// A sink for policy log lines on stderr, kept clear of the progress bar.
    pub fn log_sink(&self) -> Box<dyn FnMut(&str) + Send> {
        let bar = self.bar.clone();
        Box::new(move |line: &str| bar.suspend(|| crate::errln!("{line}")))
    }

    /// A live notice during the run (a slow test), unless quiet.
    pub fn notice(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.bar
                .suspend(|| crate::errln!("{}", Style::new().yellow().apply_to(line)));
        }
    }

    /// A line runner must say whatever the verbosity, on stderr.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| crate::errln!("{line}"));
    }

    /// A line a worker or a test printed (`-s`), on stderr as it comes, kept
    /// clear of the progress bar: `[gw0] test_a.py::test_x | the line`.
    pub fn output_line(&self, worker: &str, test: Option<&str>, line: &str) {
        let prefix = match test {
            Some(test) => format!("[{worker}] {test} |"),
            None => format!("[{worker}] |"),
        };
        let prefix = Style::new().dim().apply_to(prefix);
        let space = if line.is_empty() { "" } else { " " };
        self.bar.suspend(|| crate::errln!("{prefix}{space}{line}"));
    }

    pub fn header(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.bar
                .suspend(|| crate::errln!("{}", Style::new().dim().apply_to(line)));
        }
    }

    pub fn finish(&mut self, summary: &Summary) {
        self.bar.finish_and_clear();
        let mut out = String::new();
        self.render(&mut out, summary);
        if self.report_to_stderr {
            crate::stdio::err(&out);
        } else {
            crate::stdio::out(&out);
        }
    }

    fn sep(&self, out: &mut String, fill: char, title: &str, style: Style) {
        out.push_str(
            &style
                .apply_to(separator(fill, title, self.width))
                .to_string(),
        );
        out.push('\n');
    }

    fn render(&self, out: &mut String, summary: &Summary) {
        let red = Style::new().red().bold();
        let supervised = |r: &PhaseReport| r.category == "hung" || r.category == "crashed";
        let errors = reports_where(summary.problems, |r| {
            r.category == "error" || (r.outcome == "failed" && r.when != "call")
        });
        let failures = reports_where(summary.problems, |r| {
            r.outcome == "failed" && r.when == "call" && !supervised(r)
        });
        let lost = reports_where(summary.problems, supervised);

        // After pytest.exit(returncode=N), pytest prints its summary
        // sections only for the codes it knows; runner's own always show.
        let stop = summary.session_stop;
        let pytest_sections = stop.is_none_or(|stop| SUMMARY_EXIT_CODES.contains(&stop.exit_code));
        if self.verbosity >= Verbosity::Normal {
            if pytest_sections && (!summary.collect_errors.is_empty() || !errors.is_empty()) {
                self.sep(out, '=', "ERRORS", Style::new());
                for error in summary.collect_errors {
                    self.sep(
                        out,
                        '_',
                        &format!("ERROR collecting {}", error.id),
                        red.clone(),
                    );
                    push_block(out, &error.longrepr);
                }
                for (_, report) in &errors {
                    self.sep(
                        out,
                        '_',
                        &format!("ERROR at {} of {}", report.when, report.head_line),
                        red.clone(),
                    );
                    self.report_body(out, report);
                }
            }
            if pytest_sections && !failures.is_empty() {
                self.sep(out, '=', "FAILURES", Style::new());
                for (_, report) in &failures {
                    self.sep(out, '_', &report.head_line, red.clone());
                    self.report_body(out, report);
                }
            }
            if !lost.is_empty() {
                // runner's own section: tests whose worker hung or died.
                self.sep(out, '=', "HUNG AND CRASHED", Style::new());
                for (_, report) in &lost {
                    let title = format!("{} {}", report.word, report.head_line);
                    self.sep(out, '_', &title, red.clone());
                    self.report_body(out, report);
                }
            }
            if pytest_sections {
                self.warnings_summary(out, summary.warnings);
            }
            let short: Vec<String> = summary
                .collect_errors
                .iter()
                .map(|e| self.short_line("ERROR", &e.id, e.message.as_deref()))
                .chain(
                    failures
                        .iter()
                        .map(|(p, r)| self.short_line("FAILED", &p.id, r.message.as_deref())),
                )
                .chain(
                    errors
                        .iter()
                        .map(|(p, r)| self.short_line("ERROR", &p.id, r.message.as_deref())),
                )
                .chain(
                    lost.iter()
                        .map(|(p, r)| self.short_line(&r.word, &p.id, r.message.as_deref())),
                )
                .collect();
            if pytest_sections && !short.is_empty() {
                self.sep(out, '=', "short test summary info", Style::new().cyan());
                for line in short {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            if let Some(reason) = summary.interrupted {
                self.sep(
                    out,
                    '!',
                    &format!("Interrupted: {reason}"),
                    Style::new().red(),
                );
            }
            // pytest reports an interrupted session (exit code 2) before
            // its closing line, any other stop after it.
            if let Some(stop) = stop.filter(|stop| stop.exit_code == INTERRUPTED) {
                self.session_stop(out, stop);
            }
            for note in summary.notes {
                out.push_str(&format!(
                    "{} {note}\n",
                    Style::new().yellow().bold().apply_to("!")
                ));
            }
        }
        let color = match closing_color(summary.stats, summary.exit_code) {
            Color::Green => Style::new().green(),
            Color::Yellow => Style::new().yellow(),
            Color::Red => Style::new().red(),
        };
        let closing = summary.stats.closing_line(summary.elapsed);
        if self.verbosity == Verbosity::Quiet {
            out.push_str(&color.apply_to(closing).to_string());
            out.push('\n');
        } else {
            self.sep(out, '=', &closing, color);
            if let Some(stop) = stop.filter(|stop| stop.exit_code != INTERRUPTED) {
                self.session_stop(out, stop);
            }
        }
    }

    /// pytest's `!!! KeyboardInterrupt !!!` (or `!!! _pytest.outcomes.Exit:
    /// reason !!!`) and, for a KeyboardInterrupt, where it was raised.
    fn session_stop(&self, out: &mut String, stop: &SessionStop) {
        self.sep(out, '!', &stop.reason, Style::new());
        if !stop.detail.is_empty() {
            push_block(out, &stop.detail);
        }
    }

    /// pytest's "warnings summary": each distinct message once, under the
    /// tests that raised it.
    fn warnings_summary(&self, out: &mut String, warnings: &[WarningRecord]) {
        if warnings.is_empty() {
            return;
        }
        self.sep(out, '=', "warnings summary", Style::new().yellow());
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for warning in warnings {
            match grouped
                .iter_mut()
                .find(|(message, _)| *message == warning.message)
            {
                Some((_, ids)) => ids.push(&warning.nodeid),
                None => grouped.push((&warning.message, vec![&warning.nodeid])),
            }
        }
        for (message, ids) in grouped {
            for id in ids.iter().filter(|id| !id.is_empty()) {
                out.push_str(id);
                out.push('\n');
            }
            for line in message.trim_end().lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
            out.push('\n');
        }
        out.push_str("-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html\n");
    }

    fn report_body(&self, out: &mut String, report: &PhaseReport) {
        push_block(out, &report.longrepr);
        for (name, content) in &report.sections {
            self.sep(out, '-', name, Style::new());
            push_block(out, content);
        }
    }

    /// `FAILED id - message`, the message cut to the terminal width as pytest does.
    fn short_line(&self, word: &str, id: &str, message: Option<&str>) -> String {
        let styled = Style::new().red().apply_to(word);
        let mut line = format!("{styled} {id}");
        if let Some(message) = message.map(|m| first_line(Some(m)).unwrap_or_default()) {
            let used = word.len() + 1 + id.chars().count() + 3;
            let room = self.width.saturating_sub(used);
            let text: String = if message.chars().count() > room && room > 3 {
                message
                    .chars()
                    .take(room - 3)
                    .chain("...".chars())
                    .collect()
            } else {
                message.to_string()
            };
            if !text.is_empty() {
                line.push_str(" - ");
                line.push_str(&text);
            }
        }
        line
    }
}

/// pytest's colour for the counts, unless the exit code says otherwise: a
/// run that can't be trusted or was stopped is never green.
fn closing_color(stats: &Stats, exit_code: i32) -> Color {
    match (stats.color(), exit_code) {
        (color, crate::exit_code::OK) => color,
        (Color::Red, _) => Color::Red,
        (_, crate::exit_code::NO_TESTS_COLLECTED) => Color::Yellow,
        _ => Color::Red,
    }
}

/// Each problem's reports that match, paired with the problem.
fn reports_where(
    problems: &[Problem],
    wanted: impl Fn(&PhaseReport) -> bool,
) -> Vec<(&Problem, &PhaseReport)> {
    problems
        .iter()
        .flat_map(|p| p.reports.iter().filter(|r| wanted(r)).map(move |r| (p, r)))
        .collect()
}

fn first_line(text: Option<&str>) -> Option<&str> {
    text.and_then(|t| t.lines().find(|l| !l.trim().is_empty()))
}

fn push_block(out: &mut String, text: &str) {
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::synthetic_report;

    fn rendered(stop: &SessionStop) -> Vec<String> {
        let mut failed = synthetic_report("t.py::f", "failed", "assert 0", "E  assert 0", 0.1);
        failed.word.clear();
        let problems = [Problem {
            id: "t.py::f".into(),
            reports: vec![failed],
        }];
        let mut stats = Stats::default();
        stats.add("failed", 1);
        stats.add("passed", 2);
        let summary = Summary {
            collect_errors: &[],
            warnings: &[],
            problems: &problems,
            stats: &stats,
            elapsed: Duration::from_millis(120),
            notes: &[],
            interrupted: None,
            exit_code: stop.exit_code,
            session_stop: Some(stop),
        };
        let mut out = String::new();
        Terminal::new(Verbosity::Normal).render(&mut out, &summary);
        console::strip_ansi_codes(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_keyboard_interrupt_is_shown_before_the_closing_line() {
        let lines = rendered(&SessionStop {
            id: Some("t.py::k".into()),
            reason: "KeyboardInterrupt".into(),
            detail: "/p/t.py:3: KeyboardInterrupt\n(to show a full traceback on KeyboardInterrupt use --full-trace)\n".into(),
            exit_code: 2,
        });
        let bang = lines
            .iter()
            .position(|l| l.contains("! KeyboardInterrupt !"))
            .unwrap();
        assert!(lines.iter().any(|l| l.contains("FAILURES")), "{lines:#?}");
        assert_eq!(lines[bang + 1], "/p/t.py:3: KeyboardInterrupt");
        assert!(lines[bang + 3].contains("1 failed, 2 passed"), "{lines:#?}");
    }

    #[test]
    fn pytest_exit_with_another_code_follows_the_closing_line_alone() {
        let lines = rendered(&SessionStop {
            id: Some("t.py::e".into()),
            reason: "_pytest.outcomes.Exit: bye".into(),
            detail: String::new(),
            exit_code: 3,
        });
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("FAILURES") || l.contains("short test summary"))
        );
        let last = lines.last().unwrap();
        assert!(last.starts_with("!!!") && last.contains(" _pytest.outcomes.Exit: bye "));
        assert!(
            lines[lines.len() - 2].contains("1 failed, 2 passed"),
            "{lines:#?}"
        );
    }
}
