//! Faults of runner's own surroundings: a reader that closes runner's
//! output, a bug in runner (an injected panic), a collection that never
//! ends, a state directory runner can't write. Each run must end by itself
//! within a bound, say what happened, keep what finished, and leave no
//! process behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{assert_no_leftovers, copy_fixture, read_log, runner_bin, runner_tagged, tag};

/// Waits for `child` at most `limit`; kills it and fails if it is still there.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runner did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `runner ARGS 2>&1 | head -N` (or `| head -N` with stderr kept when
/// `both` is false), where the Nth line is the first that contains
/// `until`: returns the exit status and, with `both` false, what runner
/// wrote to stderr.
fn closed_after_line(
    dir: &Path,
    tag: &str,
    args: &[&str],
    both: bool,
    until: &str,
) -> (std::process::ExitStatus, String, Duration) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = Command::new(runner_bin());
    cmd.args(args)
        .current_dir(dir)
        .env("RUNNER_E2E_TAG", tag)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap());
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    if both {
        cmd.stderr(writer);
    } else {
        drop(writer);
        cmd.stderr(stderr_file.reopen().unwrap());
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // the parent's copies of the pipe's write end
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains(until) {
        line.clear();
    }
    // runner's next writes find the pipe closed.
    drop(reader);
    // The reader is dropped here: runner's next writes find the pipe closed.
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(stderr_file.path()).unwrap();
    (status, stderr, started.elapsed())
}

#[test]
fn a_closed_pipe_ends_the_run_quietly_and_takes_every_process() {
    let project = copy_fixture("many");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    // 300 tests of 10 ms on one worker: ~3 s, far longer than the reader.
    let args = ["-v", "-n", "1", "--run-log", log.to_str().unwrap()];
    // Closed once the first test passed (pytest's -v line for it).
    let (status, _, elapsed) = closed_after_line(&project.dir, &tag, &args, true, " PASSED ");
    assert_eq!(status.code(), Some(2), "stopped as on SIGTERM: {status:?}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_no_leftovers(&tag);
    // What finished is kept and the log is closed.
    let (results, lines) = read_log(&log);
    assert!(
        results.len() < 300,
        "the run stopped early: {} results",
        results.len()
    );
    assert_eq!(lines.last().unwrap()["type"], "run-finished");
}

#[test]
fn a_closed_stdout_alone_never_panics() {
    let project = copy_fixture("all_pass");
    let tag = tag();
    // Only stdout, where pytest's report goes, is closed after its first
    // line.
    let (status, stderr, _) = closed_after_line(&project.dir, &tag, &["-v", "-n", "2"], false, "");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        matches!(status.code(), Some(0) | Some(2)),
        "a clean exit, not a crash: {status:?}\n{stderr}"
    );
    assert_no_leftovers(&tag);
}

#[test]
fn a_panic_of_runner_exits_3_asks_for_a_report_and_leaves_nothing() {
    let project = copy_fixture("slow");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let mut cmd = Command::new(runner_bin());
    cmd.args(["-n", "2", "--run-log", log.to_str().unwrap()])
        .env("RUNNER_E2E_TAG", &tag)
        .env("RUNNER_INJECT_PANIC", "result");
    let started = Instant::now();
    let ran = crate::support::run(cmd, &project.dir);
    ran.assert_code(3);
    assert!(
        ran.stderr.contains("runner crashed (a bug in runner")
            && ran.stderr.contains("please report"),
        "{}",
        ran.describe()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The panic came mid-run, with the other worker's test in flight.
    assert_no_leftovers(&tag);
}

#[test]
fn the_global_timeout_covers_a_collection_that_never_ends() {
    let project = copy_fixture("collect_forever");
    let tag = tag();
    let (ran, elapsed) = runner_tagged(&project.dir, &tag, &["--global-timeout", "2"]);
    ran.assert_code(2);
    assert!(
        ran.stderr
            .contains("global timeout of 2s was reached during collection"),
        "{}",
        ran.describe()
    );
    assert!(elapsed < 10.0, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

/// Makes `.runner` unusable: immutable if the machine allows it (root
/// without CAP_LINUX_IMMUTABLE does not), else a plain file in its place.
struct UnwritableState {
    path: std::path::PathBuf,
    immutable: bool,
}

impl UnwritableState {
    fn new(project: &Path) -> UnwritableState {
        let path = project.join(".runner");
        std::fs::create_dir_all(&path).unwrap();
        let immutable = Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success())
            && std::fs::write(path.join("probe"), b"x").is_err();
        if !immutable {
            let _ = Command::new("chattr").arg("-i").arg(&path).status();
            std::fs::remove_dir_all(&path).unwrap();
            std::fs::write(&path, b"not a directory").unwrap();
        }
        UnwritableState { path, immutable }
    }
}

impl Drop for UnwritableState {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        }
    }
}

#[test]
fn an_unwritable_state_dir_is_named_and_the_tests_still_run() {
    for variant in ["default", "not a directory"] {
        let project = copy_fixture("all_pass");
        let state = if variant == "default" {
            UnwritableState::new(&project.dir)
        } else {
            let path = project.dir.join(".runner");
            std::fs::write(&path, b"not a directory").unwrap();
            UnwritableState {
                path,
                immutable: false,
            }
        };
        let tag = tag();
        let (ran, _) = runner_tagged(&project.dir, &tag, &["-n", "2"]);
        ran.assert_code(0);
        assert!(ran.stdout.contains("8 passed"), "{}", ran.describe());
        let shown = state.path.display().to_string();
        assert!(
            ran.stderr.contains(&shown),
            "the warning names {shown} ({variant})\n{}",
            ran.describe()
        );
        assert_no_leftovers(&tag);
    }
}

#[test]
fn an_untrusted_run_says_so_once_and_its_closing_line_is_red() {
    let project = copy_fixture("untrusted");
    let mut cmd = Command::new(runner_bin());
    cmd.args(["-n", "1"]).env("CLICOLOR_FORCE", "1");
    let ran = crate::support::run(cmd, &project.dir);
    ran.assert_code(1);
    let all = ran.combined();
    assert_eq!(
        all.matches("can't be trusted").count(),
        1,
        "one message\n{}",
        ran.describe()
    );
    let closing = ran
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && l.contains("passed"))
        .unwrap_or_else(|| panic!("a closing line\n{}", ran.describe()));
    assert!(closing.contains("\x1b[31m"), "red: {closing:?}");
    assert!(!closing.contains("\x1b[32m"), "never green: {closing:?}");
}

/// Runs the `suspend` fixture's test `selected` (and `test_after`) with a
/// 3 s timeout, and stops runner for 3.5 s once the test has started.
fn stopped_while(selected: &str) {
    let project = copy_fixture("suspend");
    let marks = tempfile::tempdir().unwrap();
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let selection = format!("{selected} or test_after");
    let mut child = Command::new(runner_bin())
        .args([
            "-n",
            "1",
            "--timeout",
            "3",
            "--run-log",
            log.to_str().unwrap(),
        ])
        .args(["--", "-k", &selection])
        .current_dir(&project.dir)
        .env("RUNNER_E2E_TAG", &tag)
        .env("SUSPEND_MARKS", marks.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marks.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the test never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let (results, _) = read_log(&log);
    let outcomes: Vec<_> = results
        .iter()
        .map(|(id, r)| format!("{id}: {}", r.outcome))
        .collect();
    assert_eq!(status.code(), Some(0), "{selected}: {outcomes:?}");
    assert_eq!(results.len(), 2, "{selected}: {outcomes:?}");
    assert!(
        results.values().all(|r| r.outcome == "passed"),
        "{selected}: {outcomes:?}"
    );
    assert_no_leftovers(&tag);
}

#[test]
fn time_runner_itself_is_stopped_does_not_count_against_a_running_test() {
    // 4 s against a 3 s timeout, 3.5 s of which runner was stopped: 0.5 s
    // of runner's time.
    stopped_while("test_outlives_the_stop");
}

#[test]
fn a_result_that_arrived_while_runner_was_stopped_is_read_first() {
    // Ended 1 s into a 3.5 s stop: its result waits in the socket when
    // runner resumes past the test's 3 s timeout.
    stopped_while("test_ends_during_the_stop");
}

#[test]
fn a_zygote_that_cannot_fork_ends_the_run_with_every_result_kept() {
    let project = copy_fixture("zygote_stops");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let (ran, elapsed) = runner_tagged(
        &project.dir,
        &tag,
        &["-n", "1", "--run-log", log.to_str().unwrap()],
    );
    ran.assert_code(1);
    assert!(
        ran.combined()
            .contains("did not fork a worker within 10s (it is stopped"),
        "{}",
        ran.describe()
    );
    let (results, lines) = read_log(&log);
    assert_eq!(
        results["test_zygote_stops.py::test_first"].outcome,
        "passed"
    );
    assert_eq!(
        results["test_zygote_stops.py::test_stops_the_zygote_then_dies"].outcome,
        "crashed"
    );
    let not_run = lines.iter().filter(|l| l["type"] == "not-run").count();
    assert_eq!(results.len() + not_run, 5, "{}", ran.describe());
    assert!(elapsed < 30.0, "took {elapsed:.1}s");
    assert_no_leftovers(&tag);
}

#[test]
fn maxfail_starts_nothing_once_the_limit_is_reached() {
    // One worker: it holds the tests after the failing one, and must not
    // start them. pytest -x runs exactly the first six (the sixth fails).
    let project = copy_fixture("slow");
    let log = project.dir.join("run.jsonl");
    let tag = tag();
    let (ran, _) = runner_tagged(
        &project.dir,
        &tag,
        &["-n", "1", "--run-log", log.to_str().unwrap(), "--", "-x"],
    );
    ran.assert_code(1);
    let (results, _) = read_log(&log);
    assert_eq!(results.len(), 6, "{}", ran.describe());
    assert_eq!(results["test_slow.py::test_sleeps[5]"].outcome, "failed");
    // Two workers: once the failure has arrived, the other worker finishes
    // the test it is running (0.4 s at most) and starts no other; what it
    // started in the moment the news took to reach it ends soon after.
    let (ran, _) = runner_tagged(
        &project.dir,
        &tag,
        &["-n", "2", "--run-log", log.to_str().unwrap(), "--", "-x"],
    );
    ran.assert_code(1);
    let (_, lines) = read_log(&log);
    let arrivals: Vec<(f64, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "test-finished")
        .map(|l| (l["at"].as_f64().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    let failed_at = arrivals.iter().find(|(_, o)| *o == "failed").unwrap().0;
    let late: Vec<f64> = arrivals
        .iter()
        .map(|(at, _)| at - failed_at)
        .filter(|after| *after > 0.75)
        .collect();
    assert!(
        late.is_empty(),
        "results {late:?}s after the failure: tests started after it\n{}",
        ran.describe()
    );
    assert!(arrivals.len() <= 9, "{}", ran.describe());
    assert_no_leftovers(&tag);
}

#[test]
fn maxfail_starts_none_of_the_tests_sent_while_the_failing_test_ran() {
    // One worker asks for more tests while it runs test_fails (slow), and
    // the answer arrives before the failure is known; pytest runs exactly
    // the tests up to the failure that reaches the limit, so must runner.
    // (Whether the worker read runner's stop in the same few milliseconds
    // as that answer was luck: each case runs three times.)
    let cases = [
        ("1", &["test_first", "test_fails"][..]),
        (
            "2",
            &["test_first", "test_fails", "test_third", "test_fails_too"][..],
        ),
    ];
    for (maxfail, expected) in cases.iter().flat_map(|case| [case; 3]) {
        let project = copy_fixture("stop_early");
        let log = project.dir.join("run.jsonl");
        let tag = tag();
        let (ran, elapsed) = runner_tagged(
            &project.dir,
            &tag,
            &[
                "-n",
                "1",
                "--run-log",
                log.to_str().unwrap(),
                "--",
                "--maxfail",
                maxfail,
            ],
        );
        ran.assert_code(1);
        let (results, lines) = read_log(&log);
        let mut ran_ids: Vec<&str> = results.keys().map(String::as_str).collect();
        ran_ids.sort();
        let mut expected_ids: Vec<String> = expected
            .iter()
            .map(|name| format!("test_stop_early.py::{name}"))
            .collect();
        expected_ids.sort();
        assert_eq!(
            ran_ids,
            expected_ids,
            "--maxfail {maxfail}\n{}",
            ran.describe()
        );
        // Every other test is in the log as not run.
        let not_run = lines.iter().filter(|l| l["type"] == "not-run").count();
        assert_eq!(results.len() + not_run, 6, "{}", ran.describe());
        assert!(
            ran.stdout
                .contains(&format!("stopping after {maxfail} failures")),
            "{}",
            ran.describe()
        );
        assert!(elapsed < 30.0, "took {elapsed:.1}s");
        assert_no_leftovers(&tag);
    }
}
