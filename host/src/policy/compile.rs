//! Compiling a component, bounded. wasmtime compiles in-process with no
//! bound on memory or time, and a crafted component of a few MB can make
//! Cranelift want tens of GB. So a component from a file is compiled in a
//! child process, runner itself run again with a hidden subcommand, under
//! an address-space limit and a wall-clock deadline; the child writes the
//! serialized artifact to its stdout and the parent loads it. The built-in
//! policies are part of the binary, as trusted as runner's own code, and
//! compile in-process.

use std::io::{Read, Write as _};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PolicyError;
use super::text::safe;

/// How long compiling one component may take: an 18 MB componentize-py
/// policy takes 10 s of CPU (and 390 MB) on the 2-core development machine.
pub(crate) const COMPILE_TIME: Duration = Duration::from_secs(120);
/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__compile-policy";
/// Largest component the child reads (the catalog refuses larger files).
const MAX_INPUT: u64 = 100 << 20;
/// What is kept of the child's error output.
const MAX_STDERR: u64 = 16 << 10;

/// Compiles `wasm` in a child process that may use `memory` bytes of
/// address space, and returns the serialized artifact.
pub(crate) fn in_child(plugin: &str, wasm: &[u8], memory: u64) -> Result<Vec<u8>, PolicyError> {
    let fail = |why: String| PolicyError::Compile {
        plugin: plugin.to_owned(),
        why,
    };
    let exe = std::env::current_exe().map_err(|e| {
        fail(format!(
            "can't find runner's own executable to compile with: {e}"
        ))
    })?;
    let mut child = Command::new(exe)
        .args([SUBCOMMAND, "--parent", &std::process::id().to_string()])
        .args(["--memory-mib", &(memory >> 20).to_string()])
        // Address space is what the limit counts: two compiler threads and
        // two allocator arenas (64 MiB of address space each) keep what
        // isn't compiling small, however many cores the machine has.
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("can't start the compiler process: {e}")))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three are piped");
    };
    let (status, artifact, errors) = std::thread::scope(|scope| {
        scope.spawn(move || stdin.write_all(wasm));
        let artifact = scope.spawn(move || read_bounded(stdout, memory));
        let errors = scope.spawn(move || read_bounded(stderr, MAX_STDERR));
        let status = wait_until(&mut child, Instant::now() + COMPILE_TIME);
        (
            status,
            artifact.join().unwrap_or_default(),
            errors.join().unwrap_or_default(),
        )
    });
    let errors = String::from_utf8_lossy(&errors);
    match status {
        Some(status) if status.success() => Ok(artifact),
        None => Err(fail(format!(
            "compiling took longer than {}s, the bound for compiling a policy",
            COMPILE_TIME.as_secs()
        ))),
        Some(status) if out_of_memory(status, &errors) => Err(fail(format!(
            "compiling it needs more than the {} MiB of memory a policy may take to compile \
             (4 times --policy-memory, at least 1024 MiB)",
            memory >> 20
        ))),
        Some(status) => Err(fail(
            match std::os::unix::process::ExitStatusExt::signal(&status) {
                Some(signal) => format!(
                    "the compiler process was killed by {}",
                    crate::outcome::signal_name(signal)
                ),
                None => safe(errors.trim()),
            },
        )),
    }
}

/// Waits for `child` until `deadline`, then kills it; `None` if it had to.
fn wait_until(child: &mut std::process::Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Up to `limit` bytes of `from`; the rest is read and dropped so the
/// writer never blocks.
fn read_bounded(mut from: impl Read, limit: u64) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = from.by_ref().take(limit).read_to_end(&mut kept);
    let _ = std::io::copy(&mut from, &mut std::io::sink());
    kept
}

/// Whether the child ran out of its address space: the allocator aborts
/// the process, or wasmtime reports a failed mapping.
fn out_of_memory(status: ExitStatus, errors: &str) -> bool {
    let aborted =
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(Signal::SIGABRT as i32);
    aborted
        || errors.contains("memory allocation of")
        || errors.contains("Cannot allocate memory")
        || errors.contains("out of memory")
}

/// The child: reads a component on stdin, compiles it with the policy
/// engine's settings, writes the artifact to stdout. Returns the exit code.
pub fn child_main(parent: u32, memory_mib: u64) -> i32 {
    // Die with the runner that asked, even if it is killed; if it is
    // already gone, there is nobody to compile for.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return 1;
    }
    let memory = memory_mib << 20;
    let bound = setrlimit(Resource::RLIMIT_AS, memory, memory).and_then(|()| {
        // A backstop for the parent's deadline: CPU time of all threads.
        let cpu = COMPILE_TIME.as_secs() * 4;
        setrlimit(Resource::RLIMIT_CPU, cpu, cpu)
    });
    if let Err(e) = bound {
        crate::errln!("can't bound the compiler process: {e}");
        return 1;
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_INPUT).read_to_end(&mut wasm) {
        crate::errln!("can't read the component: {e}");
        return 1;
    }
    let compiled = Engine::new(&super::engine::config())
        .and_then(|engine| Component::new(&engine, &wasm))
        .and_then(|component| component.serialize());
    match compiled {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => 0,
            Err(e) => {
                crate::errln!("can't hand the artifact over: {e}");
                1
            }
        },
        Err(e) => {
            crate::errln!("{e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiler_past_its_deadline_is_killed_and_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let started = Instant::now();
        assert!(wait_until(&mut child, started + Duration::from_millis(200)).is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        let mut quick = Command::new("true").spawn().unwrap();
        let status = wait_until(&mut quick, Instant::now() + Duration::from_secs(30));
        assert!(status.is_some_and(|s| s.success()));
    }

    #[test]
    fn output_past_the_bound_is_drained_not_kept() {
        let kept = read_bounded(&[7u8; 1000][..], 10);
        assert_eq!(kept, [7; 10]);
    }
}
