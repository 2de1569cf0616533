//! The example policy in examples/policies/by-file, built from source the
//! way a third party would build it, and loaded with `--policy` and from
//! the config file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{compare_outcomes_in, copy_fixture, repo_root, run, runner};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Builds the example once per test binary: cargo for wasm32, then
/// wit-component (what `wasm-tools component new` does).
fn by_file() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let crate_dir = repo_root().join("examples/policies/by-file");
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-policies");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--release", "--locked", "--target", WASM_TARGET])
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTFLAGS",
            "RUSTC",
        ] {
            cmd.env_remove(var);
        }
        // The same two ways host/build.rs builds the defaults: the rustup
        // target if installed, else core and alloc from Debian's sources.
        if std::env::var("RUNNER_WASM_BUILD").as_deref() == Ok("build-std") || !target_installed() {
            let lld = rustc_print("rustc", &["sysroot"])
                .map(|s| PathBuf::from(s).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"))
                .expect("rustup's rustc");
            cmd.arg("-Zbuild-std=core,alloc,panic_abort")
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", lld);
        }
        let ran = run(cmd, &crate_dir);
        assert_eq!(
            ran.code,
            Some(0),
            "building the example policy failed\n{}",
            ran.describe()
        );
        let module =
            std::fs::read(target_dir.join(WASM_TARGET).join("release/by_file.wasm")).unwrap();
        let component = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)
            .and_then(|mut e| e.encode())
            .unwrap();
        let path = target_dir.join("by-file.wasm");
        std::fs::write(&path, component).unwrap();
        path
    })
}

fn target_installed() -> bool {
    rustc_print("rustc", &["target-libdir", "--target", WASM_TARGET]).is_some_and(|dir| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
    })
}

fn rustc_print(rustc: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(rustc)
        .arg("--print")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn example_policy_keeps_pytests_outcomes() {
    let project = copy_fixture("fidelity");
    // Loaded from the config file, with an option from it too.
    std::fs::write(
        project.dir.join("runner.toml"),
        format!(
            "policies = [{:?}]\n[policy.by-file]\nmax-batch = 3\n",
            by_file().to_str().unwrap()
        ),
    )
    .unwrap();
    compare_outcomes_in(&project.dir, 2, &["--doctest-modules"]);
}

#[test]
fn example_policy_plans_by_file_and_reports_bad_options() {
    let p = copy_fixture("all_pass");
    let policy = by_file().to_str().unwrap();
    let ran = runner(
        &p.dir,
        &[
            "-n",
            "2",
            "--policy",
            policy,
            "--policy-opt",
            "by-file.max-batch=3",
        ],
    );
    ran.assert_code(0);
    assert!(
        ran.stderr
            .contains("[by-file] info: 8 tests in 3 batches, 0 deselected"),
        "{}",
        ran.describe()
    );
    let ran = runner(
        &p.dir,
        &["--policy", policy, "--policy-opt", "by-file.max-batch=zero"],
    );
    ran.assert_code(4);
    assert!(
        ran.stderr.contains(
            "error: policy `by-file` returned an error from `configure`: max-batch must be a positive integer, got `zero`"
        ),
        "{}",
        ran.describe()
    );
}

#[test]
fn plugins_lists_the_defaults_and_a_third_party_policy() {
    let p = copy_fixture("all_pass");
    std::fs::create_dir_all(p.dir.join("plugins")).unwrap();
    std::fs::copy(by_file(), p.dir.join("plugins/by-file.wasm")).unwrap();
    let ran = runner(&p.dir, &["plugins"]);
    ran.assert_code(0);
    for expected in [
        "by-file             scheduler   0.1.0",
        "builtin:reporter    reporter    0.1.0",
        "builtin:quarantine  quarantine  0.1.0",
        "plugins dir (",
        "runner:policy/host@0.1.0   log lines, shown tagged with the plugin's name",
    ] {
        assert!(
            ran.stdout.contains(expected),
            "missing {expected:?}\n{}",
            ran.describe()
        );
    }
    assert!(
        !ran.stdout.contains("builtin:scheduler"),
        "{}",
        ran.describe()
    );
}

#[test]
fn a_scheduler_that_deselects_everything_runs_nothing_and_exits_5() {
    let p = copy_fixture("all_pass");
    // Every test carries the marker the example deselects.
    std::fs::write(
        p.dir.join("conftest.py"),
        "import pytest\n\n\ndef pytest_collection_modifyitems(items):\n    for item in items:\n        item.add_marker(pytest.mark.later)\n",
    )
    .unwrap();
    std::fs::write(
        p.dir.join("pytest.ini"),
        "[pytest]\nmarkers = later: not now\n",
    )
    .unwrap();
    let log = p.dir.join("run.jsonl");
    let ran = runner(
        &p.dir,
        &[
            "--policy",
            by_file().to_str().unwrap(),
            "--policy-opt",
            "by-file.skip-marker=later",
            "--run-log",
            log.to_str().unwrap(),
        ],
    );
    // As pytest does when -m deselects every test.
    let pytest = crate::support::pytest(&p.dir, &["-m", "not later"]);
    pytest.assert_code(5);
    ran.assert_code(5);
    assert!(ran.stdout.contains("8 deselected"), "{}", ran.describe());
    assert!(
        ran.stderr
            .contains("deselected by the scheduler: 8 (marked `later`)"),
        "{}",
        ran.describe()
    );
    let (results, lines) = crate::support::read_log(&log);
    assert!(results.is_empty());
    let deselected: Vec<_> = lines.iter().filter(|l| l["type"] == "deselected").collect();
    assert_eq!(deselected.len(), 8, "{lines:?}");
    assert!(deselected.iter().all(|l| l["reason"] == "marked `later`"));
    assert_eq!(lines.last().unwrap()["type"], "run-finished");
}
