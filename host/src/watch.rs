//! `runner --watch`: run, then wait for changes under pytest's rootdir and
//! run again, as xdist's looponfail does. A change respawns the session
//! (the changed code must be imported afresh), reruns the tests that failed
//! last, and the whole selection once they pass. Enter reruns without a
//! change, in the same warm session. Ctrl-C ends it, with every process
//! gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::policy::Policies;
use crate::session::{RunOutcome, Selection, Session, SessionSettings, Started};
use crate::signals::StopSignals;

/// Changes closer together than this are one change.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Directories whose changes never mean the code changed: runner's and
/// tools' state, caches, version control, virtual environments.
const IGNORED_DIRS: &[&str] = &[
    ".runner",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".git",
    ".hg",
    ".svn",
    ".tox",
    ".nox",
    ".venv",
    "venv",
    "node_modules",
];

/// The files whose change means the code or its configuration changed.
const WATCHED_EXTENSIONS: &[&str] = &["py", "pyi", "pyx", "pxd", "so", "pth", "toml", "ini", "cfg"];

/// What ends a wait between runs.
enum Wake {
    /// Files changed (the first one, for the message).
    Changed(PathBuf),
    /// Enter was pressed.
    Rerun,
    /// Ctrl-C or SIGTERM.
    Quit,
}

/// Runs the suite, then again on every change until Ctrl-C; returns the
/// exit code (0 when ended by Ctrl-C between runs).
pub async fn watch(settings: SessionSettings, policies: Policies) -> Result<i32> {
    let cwd = std::env::current_dir().context("no current directory")?;
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let mut watcher = None;
    let mut keys = read_keys();
    let mut signals = StopSignals::new()?;
    let mut policies = Some(policies);
    let mut failed: Vec<String> = Vec::new();
    loop {
        let started = Session::start(
            settings.clone(),
            policies.take().context("the policies are gone")?,
        )
        .await?;
        let mut session = match started {
            Started::Ready(session) => session,
            Started::Interrupted => return Ok(crate::exit_code::OK),
            Started::Ended(_, back) => {
                // Collection failed (its output is above): wait for a fix.
                policies = Some(*back);
                let root = cwd.clone();
                watcher.get_or_insert(start_watcher(&root, changes_tx.clone())?);
                say(&format!(
                    "watching {} for changes; Ctrl-C quits",
                    root.display()
                ));
                match wait(&mut changes, &mut keys, signals.recv()).await {
                    Wake::Quit => return Ok(crate::exit_code::OK),
                    Wake::Changed(path) => say(&format!("{} changed", shown(&path, &root))),
                    Wake::Rerun => {}
                }
                continue;
            }
        };
        let root = PathBuf::from(session.rootdir());
        watcher.get_or_insert(start_watcher(&root, changes_tx.clone())?);
        loop {
            let outcome = run_until_green(&mut session, &failed).await?;
            if outcome.interrupted {
                session.close().await;
                return Ok(crate::exit_code::OK);
            }
            failed = outcome.failed;
            // Keys pressed while the run went on are not a request for
            // another run.
            if let Some(keys) = keys.as_mut() {
                while keys.try_recv().is_ok() {}
            }
            say(&format!(
                "watching {} for changes; Enter reruns, Ctrl-C quits",
                root.display()
            ));
            let wake = if session.usable() {
                let signal = session.stop_signal();
                wait(&mut changes, &mut keys, signal).await
            } else {
                // The zygote is gone: a new session, on the next change.
                wait(&mut changes, &mut keys, signals.recv()).await
            };
            match wake {
                Wake::Quit => {
                    session.close().await;
                    return Ok(crate::exit_code::OK);
                }
                Wake::Rerun if session.usable() => continue,
                Wake::Rerun => say("the session can't run again; restarting it"),
                Wake::Changed(path) => say(&format!(
                    "{} changed; restarting the session",
                    shown(&path, &root)
                )),
            }
            break;
        }
        policies = session.close().await;
    }
}

/// The tests that failed last, then, once they pass, the whole selection.
async fn run_until_green(session: &mut Session, failed: &[String]) -> Result<RunOutcome> {
    let known: Vec<String> = session
        .test_ids()
        .filter(|id| failed.iter().any(|f| f == id))
        .map(str::to_owned)
        .collect();
    if known.is_empty() {
        return session.run(&Selection::All, None).await;
    }
    let outcome = session.run(&Selection::Ids(known), None).await?;
    if outcome.interrupted || !outcome.failed.is_empty() || !session.usable() {
        return Ok(outcome);
    }
    session.run(&Selection::All, None).await
}

/// Waits for a change, Enter, or a stop signal.
async fn wait(
    changes: &mut mpsc::UnboundedReceiver<PathBuf>,
    keys: &mut Option<mpsc::UnboundedReceiver<()>>,
    signal: impl std::future::Future<Output = &'static str>,
) -> Wake {
    tokio::pin!(signal);
    loop {
        let key = async {
            match keys.as_mut() {
                Some(receiver) => receiver.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut signal => return Wake::Quit,
            path = changes.recv() => return match path {
                Some(path) => {
                    // One change often touches several files (an editor's
                    // save, a checkout): let it settle, then take them all.
                    tokio::time::sleep(DEBOUNCE).await;
                    while changes.try_recv().is_ok() {}
                    Wake::Changed(path)
                }
                None => Wake::Quit,
            },
            key = key => match key {
                Some(()) => return Wake::Rerun,
                // stdin closed: no more keys; changes still count.
                None => *keys = None,
            },
        }
    }
}

/// Lines typed on stdin (Enter), from a thread of their own; none when
/// stdin is not readable.
fn read_keys() -> Option<mpsc::UnboundedReceiver<()>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("watch-keys".into())
        .spawn(move || {
            let mut line = String::new();
            while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
                line.clear();
                if tx.send(()).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(rx)
}

/// Watches `root` recursively; sends each changed path that matters.
/// Only writes, creations, removals and renames count: reading a file (as
/// pytest does with every module) is no change.
fn start_watcher(
    root: &Path,
    changes: mpsc::UnboundedSender<PathBuf>,
) -> Result<notify::RecommendedWatcher> {
    let root_owned = root.to_owned();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else {
            return;
        };
        let changed = match event.kind {
            EventKind::Create(_) | EventKind::Remove(_) => true,
            EventKind::Modify(ModifyKind::Metadata(_)) => false,
            EventKind::Modify(_) => true,
            EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
        };
        if changed {
            for path in event.paths {
                if matters(&path, &root_owned) {
                    let _ = changes.send(path);
                }
            }
        }
    })
    .context("failed to watch for file changes")?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .with_context(|| format!("failed to watch {}", root.display()))?;
    Ok(watcher)
}

/// Whether a change at `path` can change what the tests do: Python sources
/// and extension modules, and the files that configure pytest or the
/// project, anywhere under the root but in runner's and tools' state,
/// caches, version control and virtual environments. (Files tests write,
/// logs and data, would otherwise trigger runs without end.)
fn matters(path: &Path, root: &Path) -> bool {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let ignored_dir = relative.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        IGNORED_DIRS.contains(&name.as_ref()) || name.ends_with(".egg-info")
    });
    let watched = path
        .extension()
        .is_some_and(|ext| WATCHED_EXTENSIONS.iter().any(|w| ext == *w));
    watched && !ignored_dir
}

fn shown(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn say(message: &str) {
    crate::errln!(
        "{}",
        console::Style::new()
            .cyan()
            .apply_to(format!("runner: {message}"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_caches_vcs_and_venvs_do_not_matter() {
        let root = Path::new("/p");
        for path in [
            "/p/.runner/history.json",
            "/p/tests/__pycache__/t.cpython-311.pyc",
            "/p/.git/index",
            "/p/.venv/lib/x.py",
            "/p/pkg.egg-info/PKG-INFO",
            "/p/tests/.test_a.py.swp",
            "/p/tests/test_a.py~",
            "/p/imports.log",
            "/p/data/x.json",
        ] {
            assert!(!matters(Path::new(path), root), "{path}");
        }
        for path in [
            "/p/tests/test_a.py",
            "/p/conftest.py",
            "/p/pyproject.toml",
            "/p/pytest.ini",
        ] {
            assert!(matters(Path::new(path), root), "{path}");
        }
    }
}
