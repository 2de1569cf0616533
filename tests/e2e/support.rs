//! Helpers shared by the end-to-end tests.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The runner binary cargo built for this test run.
pub fn runner_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runner"))
}

/// The repository root (host/ is the crate's manifest dir).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

pub fn fixture_dir(name: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(name)
}

/// Checks once that python3 with pytest and pytest-xdist is available and
/// panics with a clear message otherwise.
pub fn require_python() -> &'static str {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECK.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import pytest, xdist, sys; print(sys.version.split()[0], pytest.__version__)",
            ])
            .stdin(Stdio::null())
            .output();
        match out {
            Err(e) => Err(format!(
                "the e2e tests need `python3` on PATH, but running it failed: {e}"
            )),
            Ok(o) if !o.status.success() => Err(format!(
                "the e2e tests need pytest and pytest-xdist importable by `python3` \
                 (pip install pytest pytest-xdist); the import failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(_) => Ok(()),
        }
    });
    if let Err(msg) = result {
        panic!("{msg}");
    }
    "python3"
}

/// A copy of a fixture project in a fresh temporary directory.
pub struct Project {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

pub fn copy_fixture(name: &str) -> Project {
    let src = fixture_dir(name);
    assert!(src.is_dir(), "fixture {} does not exist", src.display());
    let tmp = tempfile::Builder::new()
        .prefix(&format!("runner-e2e-{name}-"))
        .tempdir()
        .expect("create tempdir");
    let dir = tmp.path().join(name);
    copy_tree(&src, &dir);
    Project { _tmp: tmp, dir }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in
        std::fs::read_dir(src).unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display()))
    {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name == ".runner" || name == ".pytest_cache" {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
}

/// What a finished process did.
pub struct Ran {
    pub cmd: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Everything it printed, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }

    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit code\n{}",
            self.describe()
        );
    }
}

const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command in `cwd` with a timeout, capturing both streams.
pub fn run(mut cmd: Command, cwd: &Path) -> Ran {
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd);
    let desc = format!("(cd {} && {:?})", cwd.display(), cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {TIMEOUT:?}: {desc}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        cmd: desc,
        code: status.code(),
        stdout: String::from_utf8_lossy(&out_thread.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned(),
    }
}

/// Keeps the outer environment from changing what pytest does (what the
/// test itself set stays).
pub fn clean_env(cmd: &mut Command) {
    for var in [
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_XDIST_AUTO_NUM_WORKERS",
    ] {
        if !cmd
            .get_envs()
            .any(|(name, value)| name == var && value.is_some())
        {
            cmd.env_remove(var);
        }
    }
}

/// `runner ARGS` in `cwd`.
pub fn runner(cwd: &Path, args: &[&str]) -> Ran {
    require_python();
    let mut cmd = Command::new(runner_bin());
    cmd.args(args);
    run(cmd, cwd)
}

/// `python3 -m pytest -p no:cacheprovider ARGS` in `cwd`.
pub fn pytest(cwd: &Path, args: &[&str]) -> Ran {
    let py = require_python();
    let mut cmd = Command::new(py);
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider"])
        .args(args);
    run(cmd, cwd)
}

/// `python3 -c CODE ARGS`.
pub fn python(code: &str, args: &[&str]) -> Ran {
    let py = require_python();
    let mut cmd = Command::new(py);
    cmd.arg("-c").arg(code).args(args);
    run(cmd, &repo_root())
}

/// A tag in the environment of runner and everything it starts, to find
/// leftovers afterwards.
pub fn tag() -> String {
    format!("runner-e2e-{}-{:?}", std::process::id(), Instant::now())
}

/// Processes (other than zombies) whose environment carries `tag`.
pub fn leftovers(tag: &str) -> Vec<String> {
    let needle = format!("RUNNER_E2E_TAG={tag}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        found.push(format!(
            "{pid}: {}",
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        ));
    }
    found
}

pub fn assert_no_leftovers(tag: &str) {
    // Killed processes take a moment to disappear.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(tag);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn runner_tagged(dir: &Path, tag: &str, args: &[&str]) -> (Ran, f64) {
    let mut cmd = Command::new(runner_bin());
    cmd.args(args).env("RUNNER_E2E_TAG", tag);
    let started = Instant::now();
    let ran = run(cmd, dir);
    (ran, started.elapsed().as_secs_f64())
}

/// pytest's closing line (`3 failed, 10 passed in 0.52s`, with or without the
/// `=` decoration): returns the counts part and the duration part, if any line
/// has that shape.
pub fn closing_line(output: &str) -> Option<(String, String)> {
    for line in output.lines().rev() {
        let line = line.trim().trim_matches('=').trim();
        let Some(pos) = line.rfind(" in ") else {
            continue;
        };
        let (counts, time) = (&line[..pos], &line[pos + 4..]);
        if !is_duration(time) || !is_counts(counts) {
            continue;
        }
        return Some((counts.to_string(), time.to_string()));
    }
    None
}

/// `0.52s`: digits, a dot, digits, `s`.
fn is_duration(s: &str) -> bool {
    let Some(num) = s.strip_suffix('s') else {
        return false;
    };
    let Some((a, b)) = num.split_once('.') else {
        return false;
    };
    !a.is_empty()
        && !b.is_empty()
        && a.chars().all(|c| c.is_ascii_digit())
        && b.chars().all(|c| c.is_ascii_digit())
}

/// `3 failed, 10 passed, 1 xfailed` or `no tests ran`.
fn is_counts(s: &str) -> bool {
    if s == "no tests ran" {
        return true;
    }
    !s.is_empty()
        && s.split(", ").all(|part| {
            let mut words = part.splitn(2, ' ');
            let n = words.next().unwrap_or("");
            let word = words.next().unwrap_or("");
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
                && !word.is_empty()
                && word.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
        })
}

/// Runs tests/compare_outcomes.py against the runner on a copy of a fixture.
pub fn compare_outcomes(fixture: &str, workers: u32, pytest_args: &[&str]) {
    let project = copy_fixture(fixture);
    compare_outcomes_in(&project.dir, workers, pytest_args);
}

/// Runs tests/compare_outcomes.py against the runner in a prepared project.
pub fn compare_outcomes_in(dir: &Path, workers: u32, pytest_args: &[&str]) {
    compare_outcomes_with_env(dir, workers, pytest_args, &[]);
}

/// The same, with extra environment variables for both pytest and runner.
pub fn compare_outcomes_with_env(
    dir: &Path,
    workers: u32,
    pytest_args: &[&str],
    env: &[(&str, &str)],
) {
    compare(&Comparison {
        dir,
        workers: &workers.to_string(),
        pytest_args,
        env,
        ..Default::default()
    });
}

/// How tests/compare_outcomes.py runs plain pytest and runner.
pub struct Comparison<'a> {
    pub dir: &'a Path,
    /// runner's `-n`; `none` for none (pytest's own `-n` decides).
    pub workers: &'a str,
    /// For both.
    pub pytest_args: &'a [&'a str],
    /// For plain pytest only, before `pytest_args`.
    pub plain_pytest_args: &'a [&'a str],
    /// For both.
    pub env: &'a [(&'a str, &'a str)],
    /// The interpreter of both (default: python3).
    pub python: Option<&'a Path>,
}

impl Default for Comparison<'_> {
    fn default() -> Self {
        Comparison {
            dir: Path::new("."),
            workers: "2",
            pytest_args: &[],
            plain_pytest_args: &[],
            env: &[],
            python: None,
        }
    }
}

/// Runs tests/compare_outcomes.py; fails unless runner's outcomes equal
/// plain pytest's.
pub fn compare(how: &Comparison) {
    let py = require_python();
    let script = repo_root().join("tests").join("compare_outcomes.py");
    let mut cmd = Command::new(py);
    cmd.arg(&script)
        .arg("--runner")
        .arg(runner_bin())
        .arg("--suite")
        .arg(how.dir)
        .arg("-n")
        .arg(how.workers);
    if let Some(python) = how.python {
        cmd.arg("--python").arg(python);
    }
    for arg in how.plain_pytest_args {
        cmd.arg(format!("--pytest-arg={arg}"));
    }
    cmd.arg("--")
        .args(how.pytest_args)
        .envs(how.env.iter().copied());
    let ran = run(cmd, &repo_root());
    assert_eq!(
        ran.code,
        Some(0),
        "runner's outcomes differ from plain pytest's ({}, -n {}, pytest args {:?}, plain pytest's {:?}, env {:?})\n{}",
        how.dir.display(),
        how.workers,
        how.pytest_args,
        how.plain_pytest_args,
        how.env,
        ran.describe()
    );
    assert!(
        ran.stdout.contains(" tests compared, 0 differences"),
        "{}",
        ran.describe()
    );
}

#[test]
fn closing_line_parser() {
    assert_eq!(
        closing_line("x\n===== 3 failed, 10 passed, 1 xfailed in 0.52s =====\n"),
        Some(("3 failed, 10 passed, 1 xfailed".into(), "0.52s".into()))
    );
    assert_eq!(
        closing_line("8 passed in 0.01s"),
        Some(("8 passed".into(), "0.01s".into()))
    );
    assert_eq!(
        closing_line("no tests ran in 0.00s"),
        Some(("no tests ran".into(), "0.00s".into()))
    );
    assert_eq!(closing_line("passed in a while"), None);
    assert_eq!(closing_line("tests/test_x.py::test_login in 3s"), None);
}

/// A run-log `result` line, reduced to what the assertions need.
pub struct Logged {
    pub outcome: String,
    pub longrepr: String,
}

/// A run log's `result` lines by test id, and every line in order. Every
/// line must also be one runner's own reader reads (`runner::run_log`).
pub fn read_log(path: &Path) -> (HashMap<String, Logged>, Vec<serde_json::Value>) {
    let typed = runner::run_log::read(path).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no run log at {}: {e}", path.display()));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(typed.lines.len(), lines.len(), "{}", path.display());
    let results = lines
        .iter()
        .filter(|l| l["type"] == "test-finished")
        .map(|l| {
            let logged = Logged {
                outcome: l["outcome"].as_str().unwrap().to_string(),
                longrepr: l["longrepr"].as_str().unwrap_or("").to_string(),
            };
            (l["id"].as_str().unwrap().to_string(), logged)
        })
        .collect();
    (results, lines)
}
