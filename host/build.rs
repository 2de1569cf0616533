//! Builds the built-in policies: compiles the plugins/ workspace for
//! wasm32-unknown-unknown, turns each core module into a component with
//! wit-component, and writes `<name>.wasm` into OUT_DIR for `include_bytes!`.
//!
//! The inner cargo gets its own target dir under OUT_DIR, so it never waits
//! on the outer build's lock. The toolchain is chosen by `RUNNER_WASM_BUILD`:
//!
//! - unset or `auto`: the installed wasm32 target; else `rustup target add`
//!   (with a timeout, as it can hang); else the build-std recipe.
//! - `target`: only the installed target or rustup.
//! - `build-std`: only the recipe from shared/TOOLCHAIN.md: Debian's
//!   rustc-web and rust-web-src build core and alloc from source
//!   (`RUSTC_BOOTSTRAP=1 -Zbuild-std`), linked with rustup's rust-lld.
//!
//! build.rs never installs system packages; scripts/install-wasm-toolchain.sh
//! does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const PLUGINS: [&str; 3] = ["scheduler", "reporter", "quarantine"];
const RUSTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Where Debian's rustc-web installs the compiler whose sources
/// rust-web-src ships.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

const INSTALL_HINT: &str = "\
install one of:
  - the rustup target:  rustup target add wasm32-unknown-unknown
  - Debian's compiler with its sources:  apt-get install rustc-web rust-web-src
    (plus rustup's stable toolchain for cargo and rust-lld)
or run scripts/install-wasm-toolchain.sh, which tries both";

/// How the guests get compiled.
enum Toolchain {
    /// The wasm32 target's prebuilt core and alloc, from rustup.
    Target,
    /// core and alloc built from source by Debian's compiler.
    BuildStd { rustc: PathBuf, linker: PathBuf },
}

fn main() {
    if let Err(message) = run() {
        eprintln!("error: failed to build the built-in policies: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().ok_or("host/ has no parent")?;
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);

    rerun_if_changed(root, &plugins);

    let toolchain = choose_toolchain()?;
    let target_dir = out_dir.join("plugins-target");
    build_guests(&plugins, &target_dir, &toolchain)?;

    for name in PLUGINS {
        let module_path = target_dir
            .join(WASM_TARGET)
            .join("release")
            .join(format!("{name}.wasm"));
        let module = fs::read(&module_path)
            .map_err(|e| format!("failed to read {}: {e}", module_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)
            .and_then(|mut encoder| encoder.encode())
            .map_err(|e| format!("failed to componentize {name}: {e:#}"))?;
        let dest = out_dir.join(format!("{name}.wasm"));
        fs::write(&dest, component)
            .map_err(|e| format!("failed to write {}: {e}", dest.display()))?;
    }
    Ok(())
}

fn rerun_if_changed(root: &Path, plugins: &Path) {
    println!("cargo::rerun-if-env-changed=RUNNER_WASM_BUILD");
    // Cargo scans directories recursively; plugins/target is never built into.
    println!("cargo::rerun-if-changed={}", root.join("wit").display());
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo::rerun-if-changed={}", plugins.join(file).display());
    }
    for name in PLUGINS {
        println!("cargo::rerun-if-changed={}", plugins.join(name).display());
    }
}

fn choose_toolchain() -> Result<Toolchain, String> {
    let mode = env::var("RUNNER_WASM_BUILD").unwrap_or_default();
    match mode.as_str() {
        "" | "auto" => match rustup_target() {
            Ok(()) => Ok(Toolchain::Target),
            Err(why_not) => build_std_toolchain().map_err(|e| {
                format!("no way to build for {WASM_TARGET}:\n  {why_not}\n  {e}\n{INSTALL_HINT}")
            }),
        },
        "target" => rustup_target()
            .map(|()| Toolchain::Target)
            .map_err(|e| format!("{e}\n{INSTALL_HINT}")),
        "build-std" => build_std_toolchain().map_err(|e| format!("{e}\n{INSTALL_HINT}")),
        other => Err(format!(
            "RUNNER_WASM_BUILD={other:?}: expected `auto`, `target` or `build-std`"
        )),
    }
}

/// Checks for the rustup target, installing it if rustup answers in time.
fn rustup_target() -> Result<(), String> {
    if target_installed() {
        return Ok(());
    }
    let mut child = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("the {WASM_TARGET} target is missing and rustup can't run: {e}"))?;
    let deadline = Instant::now() + RUSTUP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if !status.success() => {
                return Err(format!("`rustup target add` failed: {status}"));
            }
            Ok(Some(_)) if target_installed() => return Ok(()),
            Ok(Some(_)) => {
                return Err(format!(
                    "`rustup target add` succeeded but the compiler cargo uses still lacks \
                     {WASM_TARGET} (is it rustup's?)"
                ));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`rustup target add` gave no answer in {}s",
                    RUSTUP_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("failed to wait for rustup: {e}")),
        }
    }
}

/// Whether the compiler cargo uses has core for the wasm target.
fn target_installed() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Some(libdir) = rustc_print(
        Path::new(&rustc),
        &["target-libdir", "--target", WASM_TARGET],
    ) else {
        return false;
    };
    fs::read_dir(libdir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn build_std_toolchain() -> Result<Toolchain, String> {
    let rustc = PathBuf::from(DEBIAN_RUSTC);
    let sysroot = rustc_print(&rustc, &["sysroot"])
        .ok_or_else(|| format!("{DEBIAN_RUSTC} is missing (Debian package rustc-web)"))?;
    let library = Path::new(&sysroot).join("lib/rustlib/src/rust/library");
    if !library.is_dir() {
        return Err(format!(
            "{} is missing (Debian package rust-web-src)",
            library.display()
        ));
    }
    // Debian's compiler has no rust-lld; the one from rustup's toolchain
    // (the compiler running this build) links wasm.
    let host_rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let host = env_var("HOST")?;
    let linker = rustc_print(Path::new(&host_rustc), &["sysroot"])
        .map(|root| Path::new(&root).join(format!("lib/rustlib/{host}/bin/rust-lld")))
        .filter(|lld| lld.is_file())
        .ok_or("rust-lld is missing from the rustup toolchain")?;
    Ok(Toolchain::BuildStd { rustc, linker })
}

fn build_guests(plugins: &Path, target_dir: &Path, toolchain: &Toolchain) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--locked", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // Settings meant for the outer (host) build must not leak into the guests.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    if let Toolchain::BuildStd { rustc, linker } = toolchain {
        cmd.arg("-Zbuild-std=core,alloc,panic_abort")
            .env("RUSTC", rustc)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", linker);
    }
    // Cargo reads this script's stdout for directives; keep the inner
    // cargo's output on stderr.
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("failed to run cargo for plugins/: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of plugins/ failed: {status}"));
    }
    Ok(())
}

/// `rustc --print WHAT`, or None if that compiler can't run.
fn rustc_print(rustc: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new(rustc)
        .arg("--print")
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
