//! pytest-xdist's options mean what they mean: `-n N|auto|logical`,
//! `--maxprocesses`, `--dist` given after `--`, in addopts (pytest.ini,
//! pyproject.toml) or in `PYTEST_ADDOPTS` are taken over by runner, xdist
//! itself never distributes inside the zygote or the workers, runner's own
//! `-n` takes the same forms and wins, and what runner can't do is one
//! warning line, never silence. With and without xdist installed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::support::*;

/// One run of runner and what it shows of its workers.
struct Run {
    ran: Ran,
    /// From the header line (`· 4 workers ·`).
    header_workers: u32,
}

/// Runs runner in `dir`; checks what every run must show: the exit code,
/// every test exactly once in the run log (and `tests` of them), the
/// header's worker count equal to the run log's and to the count every
/// test saw, a bounded time and no process left.
fn run_checked(
    dir: &Path,
    python: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
    code: i32,
    tests: usize,
) -> Run {
    require_python();
    let tag = tag();
    let record = tempfile::tempdir().unwrap();
    let log = record.path().join("run.jsonl");
    let seen_dir = record.path().join("seen");
    std::fs::create_dir(&seen_dir).unwrap();
    let mut cmd = Command::new(runner_bin());
    if let Some(python) = python {
        cmd.arg("--python").arg(python);
    }
    cmd.arg("--run-log")
        .arg(&log)
        .args(args)
        .env("RUNNER_E2E_TAG", &tag)
        .env("XDIST_RECORD", &seen_dir)
        .envs(env.iter().copied());
    let started = Instant::now();
    let ran = run(cmd, dir);
    let secs = started.elapsed().as_secs_f64();
    ran.assert_code(code);
    assert!(secs < 60.0, "took {secs:.1}s\n{}", ran.describe());
    assert_no_leftovers(&tag);

    let (_, lines) = read_log(&log);
    let mut finished: HashMap<&str, usize> = HashMap::new();
    for line in lines.iter().filter(|l| l["type"] == "test-finished") {
        *finished.entry(line["id"].as_str().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = finished.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "ran more than once: {twice:?}\n{}",
        ran.describe()
    );
    assert_eq!(finished.len(), tests, "{}", ran.describe());
    assert!(
        !lines.iter().any(|l| l["type"] == "not-run"),
        "{}",
        ran.describe()
    );
    let started_line = lines.iter().find(|l| l["type"] == "run-started").unwrap();
    let header_workers = header_workers(&ran);
    assert_eq!(
        started_line["workers"].as_u64(),
        Some(header_workers as u64),
        "{}",
        ran.describe()
    );

    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&seen_dir).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let (worker, count) = text.trim().split_once(' ').expect("worker and count");
        let count: u32 = count.parse().unwrap();
        let index: u32 = worker
            .strip_prefix("gw")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a runner worker: {worker:?}"));
        assert!(index < count, "{worker} of {count}");
        assert_eq!(count, header_workers, "{text}\n{}", ran.describe());
        seen.insert(
            entry.file_name().into_string().unwrap(),
            (worker.to_owned(), count),
        );
    }
    assert_eq!(
        seen.len(),
        tests,
        "tests that ran in a worker\n{}",
        ran.describe()
    );
    Run {
        ran,
        header_workers,
    }
}

/// `N workers` from runner's header line.
fn header_workers(ran: &Ran) -> u32 {
    let header = ran
        .stderr
        .lines()
        .find(|l| l.starts_with("runner ") && l.contains(" tests · "))
        .unwrap_or_else(|| panic!("no header\n{}", ran.describe()));
    let part = header
        .split(" · ")
        .find(|p| p.ends_with(" worker") || p.ends_with(" workers"))
        .unwrap_or_else(|| panic!("no worker count in {header:?}"));
    part.split(' ').next().unwrap().parse().unwrap()
}

/// The lines of stderr that say `--dist MODE` is not supported.
fn dist_warnings<'a>(ran: &'a Ran, mode: &str) -> Vec<&'a str> {
    let needle = format!("--dist {mode} is not supported");
    ran.stderr.lines().filter(|l| l.contains(&needle)).collect()
}

/// What xdist's own code gives for `-n MODE` on this machine, run by
/// `python`'s copy of xdist, or (`python` without xdist) by the shim's
/// copy of xdist's rule; `env` as runner's.
fn xdist_count(mode: &str, env: &[(&str, &str)]) -> u32 {
    let code = format!(
        "import types\n\
         from xdist.plugin import pytest_xdist_auto_num_workers as count\n\
         print(count(types.SimpleNamespace(option=types.SimpleNamespace(numprocesses={mode:?}))))"
    );
    let mut cmd = Command::new(require_python());
    cmd.arg("-c").arg(code).envs(env.iter().copied());
    let ran = run(cmd, &repo_root());
    ran.assert_code(0);
    ran.stdout.trim().parse().unwrap()
}

/// Arguments that make plain pytest run a suite whose addopts say `-n ...`
/// in one process, as the reference.
const IN_ONE_PROCESS: &[&str] = &["-p", "no:xdist", "-o", "addopts="];

#[test]
fn addopts_n_auto_runs_every_test_once_with_plain_pytests_outcomes() {
    // Before: "no tests ran", exit 5 (xdist activated inside the zygote).
    let p = copy_fixture("xdist_auto");
    compare(&Comparison {
        dir: &p.dir,
        workers: "none",
        plain_pytest_args: IN_ONE_PROCESS,
        ..Default::default()
    });
    let run = run_checked(&p.dir, None, &[], &[], 1, 14);
    assert_eq!(run.header_workers, xdist_count("auto", &[]).min(14));
    assert!(
        !run.ran.stderr.contains("not supported"),
        "{}",
        run.ran.describe()
    );
    assert_eq!(
        closing_line(&run.ran.stdout).unwrap().0,
        "2 failed, 8 passed, 1 skipped, 1 xfailed, 1 xpassed, 1 error",
        "{}",
        run.ran.describe()
    );
}

#[test]
fn addopts_n_4_dist_loadfile_in_pyproject_is_four_workers_and_one_warning() {
    let p = copy_fixture("xdist_loadfile");
    // Plain pytest with xdist really distributing (4 workers, by file).
    compare(&Comparison {
        dir: &p.dir,
        workers: "none",
        ..Default::default()
    });
    let run = run_checked(&p.dir, None, &[], &[], 0, 18);
    assert_eq!(run.header_workers, 4);
    let warnings = dist_warnings(&run.ran, "loadfile");
    assert_eq!(warnings.len(), 1, "{}", run.ran.describe());
    assert!(
        warnings[0].starts_with("warning: ") && warnings[0].contains("load-balanced one by one"),
        "{warnings:?}"
    );
    assert!(!run.ran.stdout.contains("not supported"));
}

#[test]
fn where_the_worker_count_comes_from() {
    // pyproject.toml: addopts = "-n 4 --dist loadfile"; its conftest's
    // pytest_xdist_auto_num_workers says auto = 3, logical = 5.
    let p = copy_fixture("xdist_loadfile");
    let workers = |args: &[&str], env: &[(&str, &str)]| {
        run_checked(&p.dir, None, args, env, 0, 18).header_workers
    };
    // pytest's -n after `--` overrides addopts' (as in pytest).
    assert_eq!(workers(&["--", "-n", "3"], &[]), 3);
    assert_eq!(workers(&["--", "--numprocesses=1"], &[]), 1);
    // runner's own -n wins over pytest's, wherever that comes from.
    assert_eq!(workers(&["-n", "2"], &[]), 2);
    assert_eq!(workers(&["-n", "2", "--", "-n", "3"], &[]), 2);
    assert_eq!(workers(&["--workers", "auto", "--", "-n", "1"], &[]), 3);
    // PYTEST_ADDOPTS comes after the ini file's addopts.
    assert_eq!(workers(&[], &[("PYTEST_ADDOPTS", "-n 2")]), 2);
    // xdist's -n 0 (no distribution) is one worker.
    assert_eq!(workers(&["--", "-n", "0"], &[]), 1);
    assert_eq!(workers(&["-n", "0"], &[]), 1);
    // auto and logical are what xdist's hook says, the project's here.
    assert_eq!(workers(&["--", "-n", "auto"], &[]), 3);
    assert_eq!(workers(&["--", "-n", "logical"], &[]), 5);
    assert_eq!(workers(&["-n", "logical"], &[]), 5);
    // --maxprocesses caps pytest's -n, as xdist does.
    assert_eq!(workers(&["--", "--maxprocesses", "2"], &[]), 2);
    assert_eq!(
        workers(&["--", "-n", "logical", "--maxprocesses=4"], &[]),
        4
    );
    // pytest's -n wins over runner's config file, which wins over the
    // default when pytest says nothing.
    std::fs::write(p.dir.join("runner.toml"), "workers = 'logical'\n").unwrap();
    assert_eq!(workers(&[], &[]), 4);
    assert_eq!(workers(&["--", "-o", "addopts="], &[]), 5);
    std::fs::write(p.dir.join("runner.toml"), "workers = 0\n").unwrap();
    assert_eq!(workers(&["--", "-o", "addopts="], &[]), 1);
    std::fs::remove_file(p.dir.join("runner.toml")).unwrap();
    // `--dist load` after `--` overrides addopts' loadfile: nothing to say.
    let run = run_checked(&p.dir, None, &["--", "--dist", "load"], &[], 0, 18);
    assert!(
        !run.ran.stderr.contains("not supported"),
        "{}",
        run.ran.describe()
    );
    for mode in ["loadscope", "loadgroup", "worksteal", "each"] {
        let run = run_checked(&p.dir, None, &["--", "--dist", mode], &[], 0, 18);
        assert_eq!(
            dist_warnings(&run.ran, mode).len(),
            1,
            "{}",
            run.ran.describe()
        );
        assert!(dist_warnings(&run.ran, "loadfile").is_empty());
    }
}

#[test]
fn runner_n_auto_logical_and_zero() {
    let p = copy_fixture("xdist_loadfile");
    // Without the conftest's auto hook, or addopts: xdist's own counting.
    let conftest = p.dir.join("conftest.py");
    let text = std::fs::read_to_string(&conftest).unwrap();
    let unhooked = text.replace("def pytest_xdist_auto_num_workers(", "def not_a_hook(");
    assert_ne!(text, unhooked);
    std::fs::write(&conftest, unhooked).unwrap();
    std::fs::write(p.dir.join("pyproject.toml"), "[project]\nname = 'x'\n").unwrap();
    let workers = |args: &[&str], env: &[(&str, &str)]| {
        let run = run_checked(&p.dir, None, args, env, 0, 18);
        (run.header_workers, run.ran)
    };
    assert_eq!(
        workers(&["-n", "auto"], &[]).0,
        xdist_count("auto", &[]).min(18)
    );
    assert_eq!(
        workers(&["-n", "logical"], &[]).0,
        xdist_count("logical", &[]).min(18)
    );
    assert_eq!(workers(&["-n", "0"], &[]).0, 1);
    // xdist's environment variable for auto, honoured as xdist does.
    let env = [("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")];
    assert_eq!(xdist_count("auto", &env), 3);
    assert_eq!(workers(&["-n", "auto"], &env).0, 3);
    assert_eq!(workers(&["--", "-n", "logical"], &env).0, 3);
    // Not a number: xdist's warning, shown, and the CPUs counted instead.
    let env = [("PYTEST_XDIST_AUTO_NUM_WORKERS", "lots")];
    let (count, ran) = workers(&["-n", "auto"], &env);
    assert_eq!(count, xdist_count("auto", &[]).min(18));
    let warned: Vec<_> = ran
        .stderr
        .lines()
        .filter(|l| l.contains("PYTEST_XDIST_AUTO_NUM_WORKERS is not a number"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", ran.describe());
    // Never more workers than tests.
    assert_eq!(workers(&["-n", "50"], &[]).0, 18);
    // addopts from the other ini files pytest reads.
    std::fs::write(p.dir.join("tox.ini"), "[pytest]\naddopts = -n 3\n").unwrap();
    assert_eq!(workers(&[], &[]).0, 3);
    std::fs::remove_file(p.dir.join("tox.ini")).unwrap();
    std::fs::write(
        p.dir.join("setup.cfg"),
        "[tool:pytest]\naddopts = --dist=loadscope --numprocesses=2\n",
    )
    .unwrap();
    let (count, ran) = workers(&[], &[]);
    assert_eq!(count, 2);
    assert_eq!(
        dist_warnings(&ran, "loadscope").len(),
        1,
        "{}",
        ran.describe()
    );
}

#[test]
fn bad_worker_counts_are_usage_errors_naming_the_accepted_forms() {
    let p = copy_fixture("all_pass");
    for args in [
        &["-n", "-1"][..],
        &["-n", "many"],
        &["-n", "1.5"],
        &["--workers="],
        &["-n", "Auto"],
    ] {
        let tag = tag();
        let (ran, secs) = runner_tagged(&p.dir, &tag, args);
        ran.assert_code(4);
        let value = args.last().unwrap().trim_start_matches("--workers=");
        for needle in [
            &format!("{value:?}")[..],
            "expected a number of workers (0 means one)",
            "`auto`",
            "`logical`",
        ] {
            assert!(
                ran.stderr.contains(needle),
                "no {needle:?}\n{}",
                ran.describe()
            );
        }
        assert!(!p.dir.join(".runner").exists(), "{}", ran.describe());
        assert!(secs < 10.0, "took {secs:.1}s");
        assert_no_leftovers(&tag);
    }
    // pytest's side: usage errors from pytest (exit 4), the value named.
    for (args, needle) in [
        (&["--", "-n", "many"][..], "'many'"),
        (&["--", "-n", "-1"], "got -1"),
        (&["--", "--dist", "sideways"], "'sideways'"),
        (&["--", "--max-worker-restart", "x"], "--max-worker-restart"),
    ] {
        let tag = tag();
        let (ran, secs) = runner_tagged(&p.dir, &tag, args);
        ran.assert_code(4);
        assert!(
            ran.combined().contains(needle),
            "no {needle:?}\n{}",
            ran.describe()
        );
        assert!(secs < 30.0, "took {secs:.1}s");
        assert_no_leftovers(&tag);
    }
}

#[test]
fn without_xdist_installed_its_options_still_parse_and_mean_the_same() {
    let p = copy_fixture("xdist_auto");
    let env_dir = tempfile::tempdir().unwrap();
    let python = python_without_xdist(env_dir.path());
    compare(&Comparison {
        dir: &p.dir,
        workers: "none",
        plain_pytest_args: &["-o", "addopts="],
        python: Some(&python),
        ..Default::default()
    });
    let run = run_checked(&p.dir, Some(&python), &[], &[], 1, 14);
    assert_eq!(run.header_workers, xdist_count("auto", &[]).min(14));
    let run = run_checked(
        &p.dir,
        Some(&python),
        &[
            "--",
            "-n",
            "4",
            "--maxprocesses=3",
            "--dist",
            "loadscope",
            "--tx",
            "popen",
            "-f",
            "-d",
        ],
        &[],
        1,
        14,
    );
    assert_eq!(run.header_workers, 3);
    // -d is --dist=load, as in xdist: nothing to say about the mode.
    assert!(dist_warnings(&run.ran, "loadscope").is_empty());
    for needle in [
        "--tx popen is not supported",
        "--looponfail is not supported",
    ] {
        let lines = run
            .ran
            .stderr
            .lines()
            .filter(|l| l.contains(needle))
            .count();
        assert_eq!(lines, 1, "{needle}\n{}", run.ran.describe());
    }
    let run = run_checked(
        &p.dir,
        Some(&python),
        &["--", "--dist=loadfile"],
        &[],
        1,
        14,
    );
    assert_eq!(dist_warnings(&run.ran, "loadfile").len(), 1);
    let run = run_checked(
        &p.dir,
        Some(&python),
        &["--", "-n", "logical"],
        &[("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")],
        1,
        14,
    );
    assert_eq!(run.header_workers, 5);
    let tag = tag();
    let mut cmd = Command::new(runner_bin());
    cmd.arg("--python")
        .arg(&python)
        .args(["--", "-n", "many"])
        .env("RUNNER_E2E_TAG", &tag);
    let ran = crate::support::run(cmd, &p.dir);
    ran.assert_code(4);
    assert!(
        ran.combined()
            .contains("expected a number of workers (0 means one), auto or logical; got 'many'"),
        "{}",
        ran.describe()
    );
    assert_no_leftovers(&tag);
    // xdist installed but disabled: the same.
    let run = run_checked(
        &p.dir,
        None,
        &[
            "--",
            "-p",
            "no:xdist",
            "-p",
            "no:xdist.looponfail",
            "-n",
            "3",
        ],
        &[],
        1,
        14,
    );
    assert_eq!(run.header_workers, 3);
}

/// An interpreter like `python3` without pytest-xdist: a virtualenv in
/// `dir` whose site-packages links every package of python3's but xdist.
fn python_without_xdist(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let mut cmd = Command::new(require_python());
    cmd.args(["-m", "venv", "--without-pip"]).arg(&venv);
    run(cmd, dir).assert_code(0);
    let python = venv.join("bin").join("python");
    let site_packages = |python: &Path| {
        let mut cmd = Command::new(python);
        cmd.args([
            "-c",
            "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])",
        ]);
        let ran = run(cmd, dir);
        ran.assert_code(0);
        ran.stdout.lines().map(PathBuf::from).collect::<Vec<_>>()
    };
    let target = site_packages(&python).remove(0);
    let mut sources = site_packages(Path::new(require_python()));
    sources.dedup();
    for source in sources {
        for entry in std::fs::read_dir(&source).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text.starts_with("xdist") || text.starts_with("pytest_xdist") {
                continue;
            }
            let link = target.join(&name);
            if !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).unwrap();
            }
        }
    }
    let mut check = Command::new(&python);
    check.args([
        "-c",
        "import importlib.util, pytest; assert importlib.util.find_spec('xdist') is None",
    ]);
    run(check, dir).assert_code(0);
    python
}
