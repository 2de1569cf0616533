//! Snapshot tests of what users see in the terminal: runner's stdout
//! (pytest's report, written by the zygote's pytest: its header, progress,
//! ERRORS, FAILURES with hung and crashed tests, warnings summary, runner's
//! notes, the short summary, the closing line) and its stderr (runner's
//! header line, slow tests, warnings and notes during the run), each kept
//! whole in a `.snap` file under `snapshots/` and compared line for line.
//!
//! Each case runs the real binary on a copy of a fixture suite with `-n 1`,
//! so that the live lines and the sections come in one order. What varies
//! from run to run is replaced before the comparison: the project's path,
//! durations, pids, addresses, the Python, pytest and runner versions, and
//! the frames of a faulthandler dump outside the project (Python's, pytest's
//! and the shim's, whose line numbers change with their versions).
//!
//! A mismatch fails the test and prints the diff; insta writes the new
//! output next to the snapshot as `.snap.new` (never in CI, where
//! `INSTA_UPDATE=no`). Review and accept a change on purpose with
//! `cargo insta review`, or `INSTA_UPDATE=always cargo test --release -p
//! runner --test e2e terminal::` and a look at `git diff`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::support::{self, Ran};

/// The terminal width of every case (pytest's and runner's separators).
const WIDTH: usize = 80;
/// A bound on each run's wall time, generous for a loaded machine: the
/// slowest case (a hung test with a 1 s timeout) takes about 2 s idle.
const WALL_LIMIT_SECS: f64 = 60.0;

/// What a run of runner showed, made comparable.
struct Screen {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Screen {
    /// The snapshot's text: the command, the exit code, then each stream.
    fn render(&self, args: &[&str]) -> String {
        format!(
            "$ runner {}\nexit code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            args.join(" "),
            self.code.map_or_else(
                || "none (killed by a signal)".to_string(),
                |c| c.to_string()
            ),
            self.stdout,
            self.stderr,
        )
    }
}

/// Runs runner with `args` on a fresh copy of `fixture` and checks what
/// every run must hold (a bounded wall time, no process left, separators
/// as wide as the terminal), then returns its output made comparable.
fn run_fixture(fixture: &str, args: &[&str]) -> Screen {
    let project = support::copy_fixture(fixture);
    let tag = support::tag();
    let mut cmd = Command::new(support::runner_bin());
    cmd.args(args).env("RUNNER_E2E_TAG", &tag);
    terminal_environment(&mut cmd, project.dir.parent().expect("a tempdir"));
    let started = Instant::now();
    let ran = support::run(cmd, &project.dir);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        elapsed < WALL_LIMIT_SECS,
        "took {elapsed:.1}s\n{}",
        ran.describe()
    );
    support::assert_no_leftovers(&tag);
    assert_fits_the_width(&ran);
    Screen {
        code: ran.code,
        stdout: normalize(&ran.stdout, &project.dir),
        stderr: normalize(&ran.stderr, &project.dir),
    }
}

/// The same environment on every machine, CI or not: what changes pytest's
/// or runner's output (CI makes pytest leave long assertion explanations
/// uncut; colours can be forced; the width) is set or removed, and the
/// compiled-policy cache is the run's own (a shared cache may warn).
fn terminal_environment(cmd: &mut Command, scratch: &Path) {
    for var in [
        "CI",
        "BUILD_NUMBER",
        "TF_BUILD",
        "PY_COLORS",
        "FORCE_COLOR",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "PYTEST_THEME",
        "PYTEST_THEME_MODE",
        "RUNNER_PYTHON",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("COLUMNS", WIDTH.to_string())
        .env("PYTHONHASHSEED", "0")
        .env("RUNNER_CACHE_DIR", scratch.join("cache"))
        .env("XDG_STATE_HOME", scratch.join("state"));
}

/// Every separator line on stdout (`==== title ====`, `____ title ____`,
/// `!!!! title !!!!`, `---- title ----`) is centred in the terminal's width
/// exactly as pytest centres it, and the short summary's lines are cut to
/// the width; the snapshots can then show them with placeholders of other
/// widths (the closing line's duration, a pid).
fn assert_fits_the_width(ran: &Ran) {
    let mut in_short_summary = false;
    for line in ran.stdout.lines() {
        let Some((fill, title)) = separator_parts(line) else {
            // With -q the closing line is bare, and pytest does not cut it.
            let bare_closing_line = support::closing_line(line).is_some();
            assert!(
                !in_short_summary || bare_closing_line || line.chars().count() <= WIDTH,
                "a short summary line wider than the terminal: {line:?}\n{}",
                ran.describe()
            );
            continue;
        };
        in_short_summary = title == "short test summary info";
        assert_eq!(
            line,
            pytest_separator(fill, title, WIDTH),
            "a separator that pytest would centre otherwise\n{}",
            ran.describe()
        );
    }
}

/// The fill character and the title of a separator line.
fn separator_parts(line: &str) -> Option<(char, &str)> {
    let fill = line.chars().next()?;
    if !"=_!-".contains(fill) {
        return None;
    }
    let (left, rest) = line.split_once(' ')?;
    let (title, right) = rest.rsplit_once(' ')?;
    let all_fill = |s: &str| !s.is_empty() && s.chars().all(|c| c == fill);
    (all_fill(left) && all_fill(right) && !title.is_empty()).then_some((fill, title))
}

/// pytest's `TerminalWriter.sep` for a one-character fill.
fn pytest_separator(fill: char, title: &str, width: usize) -> String {
    let n = (width.saturating_sub(title.chars().count() + 2) / 2).max(1);
    let side = fill.to_string().repeat(n);
    let mut line = format!("{side} {title} {side}");
    if line.chars().count() < width {
        line.push(fill);
    }
    line
}

/// What varies from run to run, replaced by placeholders. The rest
/// (durations, pids, versions) is done by the insta filters in `snapshot`.
fn normalize(text: &str, project: &Path) -> String {
    let mut text = text.to_string();
    for path in [project.to_path_buf(), project.canonicalize().unwrap()] {
        text = text.replace(&*path.to_string_lossy(), "[PROJECT]");
    }
    let mut lines = Vec::new();
    let mut outside = false;
    for line in text.lines() {
        // Only the project's frames of a faulthandler dump: each run of
        // other frames becomes one line.
        if line.starts_with("  File \"") && !line.starts_with("  File \"[PROJECT]/") {
            if !outside {
                lines.push("  [frames outside the project]".to_string());
            }
            outside = true;
            continue;
        }
        outside = false;
        let line = closing_separator_without_time(line)
            .or_else(|| bare_closing_line_without_time(line))
            .or_else(|| cut_after_pid(line))
            .unwrap_or_else(|| line.to_string());
        lines.push(line);
    }
    let mut normalized = lines.join("\n");
    if text.ends_with('\n') {
        normalized.push('\n');
    }
    normalized
}

/// The closing line (`==== 2 passed in 0.41s ====`) with its duration
/// replaced, re-centred as pytest would centre it: its width depends on
/// the duration's.
fn closing_separator_without_time(line: &str) -> Option<String> {
    let (fill, title) = separator_parts(line)?;
    let (counts, time) = title.rsplit_once(" in ")?;
    let seconds = time.split(' ').next()?.strip_suffix('s')?;
    seconds.parse::<f64>().ok()?;
    Some(pytest_separator(
        fill,
        &format!("{counts} in [TIME]"),
        WIDTH,
    ))
}

/// The closing line of `-q` (`2 passed in 0.41s`, no separator) with
/// its duration replaced.
fn bare_closing_line_without_time(line: &str) -> Option<String> {
    let (counts, _) = support::closing_line(line)?;
    (line.trim() == line && !line.starts_with('=')).then(|| format!("{counts} in [TIME]"))
}

/// A short summary line cut to the terminal's width (`... (pid 4242) was
/// kil...`) ends at a place that depends on the pid's digits: it is shown
/// cut right after the pid instead.
fn cut_after_pid(line: &str) -> Option<String> {
    if !line.ends_with("...") {
        return None;
    }
    let start = line.find("(pid ")?;
    let end = start + line[start..].find(')')?;
    Some(format!("{} ...", &line[..=end]))
}

/// Compares `screen` with the snapshot `name`, after the filters.
fn snapshot(name: &str, args: &[&str], screen: &Screen) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (pattern, replacement) in [
        // A live line's duration: `[  0.401s]`.
        (r"\[ *\d+\.\d{3}s\]", "[DURATION]"),
        // pytest's format elsewhere: `0.52s`, `65.31s (0:01:05)`.
        (r"\b\d+\.\d\ds( \(\d+:\d\d:\d\d\))?", "[TIME]"),
        (r"\bpid \d+", "pid [PID]"),
        (r"\bpids \[[\d, ]*\]", "pids [PIDS]"),
        (r"\b0x[0-9a-f]{8,16}\b", "0x[ADDRESS]"),
        (r"(?m)^runner \d+\.\d+\.\d+\S*", "runner [VERSION]"),
        (r"\bPython \d+\.\d+\.\d+\S*", "Python [VERSION]"),
        (r"\bpytest \d+\.\d+\.\d+\S*", "pytest [VERSION]"),
        // A run id: seconds since the epoch and runner's pid.
        (r"\b\d{10}-\d+\b", "[RUN_ID]"),
        // pytest's header: the machine and the plugins installed there.
        (r"(?m)^platform .*$", "platform [PLATFORM]"),
        (r"(?m)^plugins: .*$", "plugins: [PLUGINS]"),
    ] {
        settings.add_filter(pattern, replacement);
    }
    settings.bind(|| insta::assert_snapshot!(name, screen.render(args)));
}

/// Runs a case and compares it with its snapshot.
#[track_caller]
fn case(name: &str, fixture: &str, args: &[&str], code: i32) -> Screen {
    let screen = run_fixture(fixture, args);
    snapshot(name, args, &screen);
    assert_eq!(screen.code, Some(code), "{}", screen.render(args));
    screen
}

// --- every outcome pytest reports -------------------------------------------

#[test]
fn report_default() {
    case("report_default", "report", &["-n", "1"], 1);
}

#[test]
fn report_verbose() {
    case("report_verbose", "report", &["-n", "1", "-v"], 1);
}

#[test]
fn report_quiet() {
    case("report_quiet", "report", &["-n", "1", "-q"], 1);
}

#[test]
fn all_pass() {
    case("all_pass", "all_pass", &["-n", "1"], 0);
}

#[test]
fn all_pass_verbose() {
    case("all_pass_verbose", "all_pass", &["-n", "1", "-v"], 0);
}

#[test]
fn no_tests() {
    case("no_tests", "empty", &["-n", "1"], 5);
}

#[test]
fn everything_deselected() {
    case(
        "everything_deselected",
        "all_pass",
        &["-n", "1", "--", "-k", "nothing_matches"],
        5,
    );
}

/// pytest's report, whole, is pytest's own: on one worker (so that tests
/// finish in pytest's order) runner prints what plain pytest prints, from
/// the header to the closing line, for the report suite and the fidelity
/// suite, with the options that change the report. The filters: the
/// project's path and the closing line's duration.
#[test]
fn the_report_is_pytests_line_for_line() {
    let cases: &[(&str, &[&str], i32)] = &[
        ("report", &[], 1),
        ("report", &["-v"], 1),
        ("report", &["-rA"], 1),
        ("report", &["-q", "--tb=short"], 1),
        ("report", &["--tb=line", "-rfE"], 1),
        ("report", &["--no-header", "-rN", "--tb=no"], 1),
        ("fidelity", &[], 1),
        ("fidelity", &["-v", "-rxXs"], 1),
    ];
    for (fixture, args, code) in cases {
        let [from_runner, from_pytest] = [true, false].map(|by_runner| {
            // Each its own copy: pytest's cache (`-v` shows its directory)
            // starts the same for both.
            let project = support::copy_fixture(fixture);
            let mut cmd = if by_runner {
                let mut cmd = Command::new(support::runner_bin());
                cmd.args(["-n", "1", "--"]);
                cmd
            } else {
                let mut cmd = Command::new(support::require_python());
                cmd.args(["-m", "pytest"]);
                cmd
            };
            cmd.args(*args);
            terminal_environment(&mut cmd, project.dir.parent().unwrap());
            let ran = support::run(cmd, &project.dir);
            ran.assert_code(*code);
            without_addresses(&normalize(&ran.stdout, &project.dir))
        });
        println!("{fixture} {args:?}");
        assert_same_lines(&from_runner, &from_pytest);
    }
}

/// Object addresses (`<Counter object at 0x7f8179ea0d10>`) as
/// `0x[ADDRESS]`: they differ from process to process.
fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        let digits = rest[at + 2..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .count();
        out.push_str(&rest[..at]);
        if digits >= 8 {
            out.push_str("0x[ADDRESS]");
        } else {
            out.push_str(&rest[at..at + 2 + digits]);
        }
        rest = &rest[at + 2 + digits..];
    }
    out.push_str(rest);
    out
}

/// Fails at the first line where runner's text differs from pytest's.
#[track_caller]
fn assert_same_lines(from_runner: &str, from_pytest: &str) {
    let (ours, theirs): (Vec<&str>, Vec<&str>) =
        (from_runner.lines().collect(), from_pytest.lines().collect());
    let differs = (0..ours.len().max(theirs.len())).find(|&i| ours.get(i) != theirs.get(i));
    if let Some(i) = differs {
        panic!(
            "runner's report differs from pytest's at line {}:\n  runner: {:?}\n  pytest: {:?}\n--- runner ---\n{from_runner}\n--- pytest ---\n{from_pytest}",
            i + 1,
            ours.get(i),
            theirs.get(i),
        );
    }
}

// --- hangs and crashes ----------------------------------------------------------

#[test]
fn hung_and_crashed() {
    case(
        "hung_and_crashed",
        "hung_crashed",
        &["-n", "1", "--timeout", "1"],
        1,
    );
}

/// With -s: what the tests print is shown live, and a crashed test's
/// output is in its section too.
#[test]
fn hung_and_crashed_live_output() {
    case(
        "hung_and_crashed_live_output",
        "hung_crashed",
        &["-n", "1", "--timeout", "1", "--", "-s"],
        1,
    );
}

#[test]
fn breakpoint_without_a_terminal() {
    case(
        "breakpoint_without_a_terminal",
        "live_output",
        &["-n", "1", "--", "test_breakpoint.py"],
        1,
    );
}

#[test]
fn hung_and_crashed_quiet() {
    case(
        "hung_and_crashed_quiet",
        "hung_crashed",
        &["-n", "1", "--timeout", "1", "-q"],
        1,
    );
}

// --- collection errors --------------------------------------------------------

#[test]
fn collection_errors() {
    case("collection_errors", "collect_errors", &["-n", "1"], 2);
}

#[test]
fn collection_errors_quiet() {
    case(
        "collection_errors_quiet",
        "collect_errors",
        &["-n", "1", "-q"],
        2,
    );
}

#[test]
fn collection_errors_continued() {
    case(
        "collection_errors_continued",
        "collect_errors",
        &["-n", "1", "--", "--continue-on-collection-errors"],
        1,
    );
}

// --- stopping early -----------------------------------------------------------

#[test]
fn stop_at_first_failure() {
    case(
        "stop_at_first_failure",
        "stop_early",
        &["-n", "1", "--", "-x"],
        1,
    );
}

#[test]
fn stop_at_maxfail() {
    case(
        "stop_at_maxfail",
        "stop_early",
        &["-n", "1", "--", "--maxfail", "2"],
        1,
    );
}

#[test]
fn pytest_exit_in_a_test() {
    case(
        "pytest_exit_in_a_test",
        "session_stop",
        &[
            "-n",
            "1",
            "--",
            "-k",
            "first_ok or failing or (pytest_exit and not with) or after_1",
        ],
        2,
    );
}

#[test]
fn pytest_exit_with_a_code_of_its_own() {
    case(
        "pytest_exit_with_a_code_of_its_own",
        "session_stop",
        &[
            "-n",
            "1",
            "--",
            "-k",
            "first_ok or failing or pytest_exit_with_code or after_1",
        ],
        3,
    );
}

#[test]
fn keyboard_interrupt_in_a_test() {
    case(
        "keyboard_interrupt_in_a_test",
        "session_stop",
        &[
            "-n",
            "1",
            "--",
            "-k",
            "first_ok or keyboard_interrupt or after_1",
        ],
        2,
    );
}

// --- notes ----------------------------------------------------------------------

#[test]
fn leaky_test() {
    case("leaky_test", "leaky", &["-n", "1"], 0);
}

#[test]
fn slow_notice() {
    // The third test sleeps 1 s: one notice at 0.7 s, well before it ends
    // and well before the next one would come (1.4 s).
    case(
        "slow_notice",
        "leaky",
        &["-n", "1", "-v", "--slow", "0.7"],
        0,
    );
}

#[test]
fn pytest_usage_error() {
    case(
        "pytest_usage_error",
        "all_pass",
        &["-n", "1", "--", "--no-such-option"],
        4,
    );
}
