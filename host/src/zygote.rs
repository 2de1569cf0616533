//! The zygote: one Python process that imports the project, runs pytest's
//! collection once and forks the workers. This module starts it with the
//! embedded shim and keeps what it prints, to show when it fails.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::debugger::{TERMINAL_ENV, TerminalFds};

/// `(file name, source)` of each named module of the shim.
macro_rules! shim_modules {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../python/runner_shim/", $name)))),*]
    };
}

/// The shim: the Python package `host/python/runner_shim/`, each module
/// embedded here and written to a private directory of the run at start.
const SHIM_MODULES: &[(&str, &str)] = shim_modules![
    "__init__.py",
    "controller.py",
    "coverage_fork.py",
    "framing.py",
    "output.py",
    "plugin.py",
    "processes.py",
    "worker.py",
    "xdist_compat.py",
    "xdist_options.py",
    "zygote.py",
];

/// Tells the zygote that runner's own `-n` is `auto` or `logical`.
const CPU_MODE_VAR: &str = "RUNNER_COUNT_CPUS";

/// Where the shim is written, inside the run directory.
const SHIM_DIR: &str = "runner_shim";

/// Exit status the bootstrap uses when `import pytest` fails.
pub const NO_PYTEST_EXIT: i32 = 97;

/// Imports the shim by its path as the package `_runner_shim`, never through
/// `sys.path`: it shadows no module of the project, and the project's
/// `sys.path` (which pytest's import modes and rootdir work from) is as
/// plain pytest would have it. Then hands the arguments to pytest.
const BOOTSTRAP: &str = r#"
import faulthandler, importlib.util, os, sys
# A crash while pytest imports the project must leave a traceback: write it
# to a copy of stderr, which pytest's output capture does not redirect. A
# bare descriptor, not a file object: one left unclosed at exit would be a
# ResourceWarning, an error under `-W error`.
faulthandler.enable(file=os.dup(2), all_threads=True)
try:
    import pytest
except ImportError as error:
    print(f"runner: cannot import pytest: {error}", file=sys.stderr)
    sys.exit(97)
package = os.environ["RUNNER_SHIM"]
# Its modules import each other relatively, through the package's __path__.
spec = importlib.util.spec_from_file_location(
    "_runner_shim", os.path.join(package, "__init__.py"), submodule_search_locations=[package]
)
shim = importlib.util.module_from_spec(spec)
sys.modules["_runner_shim"] = shim
spec.loader.exec_module(shim)
sys.exit(shim.main(sys.argv[1:]))
"#;

/// Bytes of each stream kept: enough for any collection error or `--help`.
const OUTPUT_LIMIT: usize = 8 * 1024 * 1024;

pub struct Zygote {
    child: Child,
    pub pid: i32,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
    /// The tasks reading its stdout and stderr into the buffers above.
    readers: Vec<JoinHandle<()>>,
}

pub struct ZygoteSpec<'a> {
    pub python: &'a Path,
    pub run_dir: &'a Path,
    pub socket: &'a Path,
    pub run_id: &'a str,
    pub pytest_args: &'a [String],
    /// Where what pytest prints goes, as it prints it: its header, its
    /// progress and its report are what the user reads.
    pub output: Output,
    /// runner's terminal, for a worker a debugger runs in (see debugger.rs).
    pub terminal: Option<&'a TerminalFds>,
    /// runner's own `-n auto` or `-n logical`: the zygote counts it as
    /// xdist would (see `xdist_options.py`).
    pub cpu_mode: Option<&'static str>,
}

/// runner's stream for the zygote's stdout (its stderr goes to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    /// stdout carries `--format json`.
    Stderr,
}

impl Zygote {
    /// Must be called on runner's main thread (see `die_with_runner`).
    pub fn spawn(spec: &ZygoteSpec) -> std::io::Result<Zygote> {
        let shim = write_shim(spec.run_dir)?;
        let mut command = Command::new(spec.python);
        die_with_runner(&mut command)?;
        if let Some(terminal) = spec.terminal {
            pass_terminal(&mut command, terminal);
        }
        match spec.cpu_mode {
            Some(mode) => command.env(CPU_MODE_VAR, mode),
            None => command.env_remove(CPU_MODE_VAR),
        };
        let mut child = command
            .arg("-c")
            .arg(BOOTSTRAP)
            .args(spec.pytest_args)
            .env("RUNNER_SOCKET", spec.socket)
            .env("RUNNER_SHIM", &shim)
            .env("RUNNER_RUN_ID", spec.run_id)
            .envs(terminal_env(spec.output))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the terminal's Ctrl-C goes to runner
            // alone, and runner can stop the zygote and every worker at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        let (stdout, stdout_reader) = keep_output(child.stdout.take().expect("piped"), spec.output);
        let (stderr, stderr_reader) =
            keep_output(child.stderr.take().expect("piped"), Output::Stderr);
        Ok(Zygote {
            child,
            pid,
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        })
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        // Let the readers drain what it printed. Workers share its pipes, so
        // if any outlived it there is no end of file to wait for: bound it.
        let readers = std::mem::take(&mut self.readers);
        let drained = async {
            for reader in readers {
                let _ = reader.await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), drained).await;
        Ok(status)
    }

    /// Makes sure the zygote is gone: kills it if it still runs, and waits.
    pub async fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_all();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.wait()).await;
        }
    }

    /// Kills the zygote and everything in its process group (the workers).
    pub fn kill_all(&self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }

    pub fn output(&self) -> (String, String) {
        let text = |buffer: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
        };
        (text(&self.stdout), text(&self.stderr))
    }
}

/// Writes the shim's package into `run_dir` (private to this user: only its
/// owner may replace what Python will import) and returns its directory.
fn write_shim(run_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = run_dir.join(SHIM_DIR);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    for (name, source) in SHIM_MODULES {
        std::fs::write(dir.join(name), source)?;
    }
    Ok(dir)
}

/// The zygote gets SIGKILL when runner dies, however it dies (the workers
/// have the same tie to the zygote, see the shim). The kernel sends this
/// parent-death signal when the *thread* that spawned the child exits, so
/// the zygote must be spawned from the main thread, which lives as long as
/// runner: `run::run` runs there, in `Runtime::block_on`, not in a task.
fn die_with_runner(command: &mut Command) -> std::io::Result<()> {
    use nix::unistd::{getpid, getppid, gettid};
    if gettid() != getpid() {
        return Err(std::io::Error::other(
            "the zygote must be started from runner's main thread",
        ));
    }
    let runner = getpid();
    // SAFETY: the closure runs in the forked child before exec; it makes two
    // system calls and allocates nothing, so it is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // runner may have died before the signal was armed.
            if getppid() != runner {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Gives the zygote runner's terminal, kept open across its exec.
fn pass_terminal(command: &mut Command, terminal: &TerminalFds) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::BorrowedFd;
    command.env(TERMINAL_ENV, terminal.env_value());
    let fds = terminal.raw();
    // SAFETY: the closure runs in the forked child before exec, where the
    // descriptors are open (the parent holds them until the spawn is done);
    // it only makes system calls, so it is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            for fd in fds {
                fcntl(
                    BorrowedFd::borrow_raw(fd),
                    FcntlArg::F_SETFD(FdFlag::empty()),
                )?;
            }
            Ok(())
        });
    }
}

/// What pytest can't see through the pipe its output goes through: whether
/// the user reads it on a terminal (colour, as pytest's `--color=auto`
/// would decide; `CLICOLOR_FORCE` forces it, as for runner's own lines)
/// and how wide that terminal is.
fn terminal_env(output: Output) -> Vec<(&'static str, String)> {
    let term = match output {
        Output::Stdout => console::Term::stdout(),
        Output::Stderr => console::Term::stderr(),
    };
    let forced = std::env::var("CLICOLOR_FORCE").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut env = Vec::new();
    if term.is_term() || forced {
        env.push(("RUNNER_COLOR", "1".to_owned()));
    }
    if let Some((_, columns)) = term.size_checked() {
        env.push(("RUNNER_COLUMNS", columns.to_string()));
    }
    env
}

/// Passes what the zygote prints on to `output` as it comes, and keeps it
/// (up to a bound) for error messages.
fn keep_output(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    output: Output,
) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = buffer.clone();
    let reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            match output {
                Output::Stdout => crate::stdio::out_bytes(&chunk[..n]),
                Output::Stderr => crate::stdio::err_bytes(&chunk[..n]),
            }
            let mut kept = sink.lock().unwrap();
            let room = OUTPUT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
    });
    (buffer, reader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A module added to the package but not to `SHIM_MODULES` would be
    /// missing at run time, and its import would fail in every run.
    #[test]
    fn every_module_of_the_shim_is_embedded() {
        let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/runner_shim");
        let mut on_disk: Vec<String> = std::fs::read_dir(&package)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<&str> = SHIM_MODULES.iter().map(|(name, _)| *name).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_shim_is_written_whole_into_a_private_directory() {
        let run_dir = tempfile::tempdir().unwrap();
        let package = write_shim(run_dir.path()).unwrap();
        let mode = std::fs::metadata(&package).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        for (name, source) in SHIM_MODULES {
            assert_eq!(
                std::fs::read_to_string(package.join(name)).unwrap(),
                *source
            );
        }
    }
}
