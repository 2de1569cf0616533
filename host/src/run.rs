//! One run, start to end: start the zygote, wait for its collection, ask
//! the scheduler for a plan, fork the workers, hand out batches to
//! whichever worker asks, and record every result as it arrives.
//!
//! A single task owns all run state; connection readers only forward
//! decoded messages to it over a channel.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::connections::ConnEvent;
use crate::connections::{ConnId, accept_connections};
use crate::descendants::Descendants;
use crate::exit_code;
use crate::guardian::Guardian;
use crate::model::PlanContext;
use crate::policy::Policies;
use crate::pool::{Limits, Pool, StopReason, StopSignals};
use crate::recorder::Recorder;
use crate::state::{History, RunLog};
use crate::ui::{Terminal, Verbosity};
use crate::wire::{self, Collected, Inbound, Outbound};
use crate::zygote::{NO_PYTEST_EXIT, Zygote, ZygoteSpec};

/// Everything a run needs, resolved from the command line.
pub struct RunSettings {
    pub python: PathBuf,
    pub workers: Option<u32>,
    pub pytest_args: Vec<String>,
    pub junitxml: Option<PathBuf>,
    pub run_log: Option<PathBuf>,
    /// The policies, loaded and configured before collection starts.
    pub policies: Policies,
    pub verbosity: Verbosity,
    /// Timeouts, slow notices, maxfail (filled from pytest's config later).
    pub limits: Limits,
    /// Replacement workers allowed [default: 4 × workers, like xdist].
    pub max_worker_restart: Option<u32>,
}

pub async fn run(settings: RunSettings) -> Result<i32> {
    let started = Instant::now();
    let run_id = new_run_id();
    let run_dir = tempfile::Builder::new()
        .prefix("runner-")
        .tempdir()
        .context("failed to create a temporary directory")?;
    let socket = run_dir.path().join("socket");
    let listener = UnixListener::bind(&socket).context("failed to listen on a unix socket")?;
    let guardian = Guardian::start(&run_id)
        .inspect_err(|error| {
            crate::errln!(
                "warning: could not start runner's guardian process ({error}); if runner is killed, processes of this run may outlive it"
            )
        })
        .ok();
    let mut zygote = Zygote::spawn(&ZygoteSpec {
        python: &settings.python,
        run_dir: run_dir.path(),
        socket: &socket,
        run_id: &run_id,
        pytest_args: &settings.pytest_args,
    })
    .with_context(|| format!("failed to start Python ({})", settings.python.display()))?;
    let mut descendants = Descendants::new(
        zygote.pid,
        guardian.as_ref().map(Guardian::pid),
        run_dir.path(),
    );
    let result = supervise(
        settings,
        started,
        &run_id,
        listener,
        &mut zygote,
        &mut descendants,
    )
    .await;
    // However the run ended, none of its processes outlives it. (The normal
    // end has already done this, with notes in the report.)
    zygote.stop().await;
    for note in descendants.sweep().await.notes() {
        crate::errln!("warning: {note}");
    }
    if let Some(guardian) = guardian {
        guardian.dismiss();
    }
    result
}

/// From collection to the report: everything but starting and ending the
/// run's processes.
async fn supervise(
    settings: RunSettings,
    started: Instant,
    run_id: &str,
    listener: UnixListener,
    zygote: &mut Zygote,
    descendants: &mut Descendants,
) -> Result<i32> {
    let mut signals = StopSignals::new()?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(accept_connections(listener, events_tx));
    let terminal = Terminal::new(settings.verbosity);
    let mut writers: HashMap<ConnId, OwnedWriteHalf> = HashMap::new();
    // The global timeout covers the whole run, collection included (a
    // conftest can loop forever).
    let global_deadline = settings
        .limits
        .global_timeout
        .map(|secs| tokio::time::Instant::from_std(started) + Duration::from_secs_f64(secs));

    // Collection: until the zygote reports, or exits without reporting
    // (usage errors, --help, --collect-only, a conftest that fails to import).
    let (zygote_conn, collected) = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ConnEvent::Opened(conn, writer)) => { writers.insert(conn, writer); }
                Some(ConnEvent::Message(conn, Inbound::Collected(collected))) => break (conn, collected),
                Some(ConnEvent::Message(..) | ConnEvent::Closed(_) | ConnEvent::Evidence(..)) => {}
                Some(ConnEvent::Broken(_, error)) => anyhow::bail!("the zygote sent a bad message: {error}"),
                None => unreachable!("the accept task holds a sender"),
            },
            status = zygote.wait() => {
                let status = status?;
                let (stdout, stderr) = zygote.output();
                let code = status.code().unwrap_or(exit_code::INTERRUPTED);
                if code == NO_PYTEST_EXIT {
                    crate::stdio::err(&stderr);
                    crate::errln!(
                        "error: pytest is not installed for {}\n  hint: install it with `{} -m pip install pytest`, or choose another interpreter with --python",
                        settings.python.display(), settings.python.display()
                    );
                    return Ok(exit_code::USAGE_ERROR);
                }
                crate::stdio::out(&stdout);
                crate::stdio::err(&stderr);
                if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
                    crate::errln!(
                        "error: Python crashed during collection: killed by {}\n  (its output is above)",
                        crate::pool::signal_name(signal)
                    );
                    return Ok(exit_code::INTERRUPTED);
                }
                return Ok(code);
            }
            name = signals.recv() => return Ok(interrupt_collection(zygote, name).await),
            _ = sleep_until_deadline(global_deadline) => {
                let secs = settings.limits.global_timeout.unwrap_or_default();
                zygote.kill_all();
                let _ = tokio::time::timeout(Duration::from_secs(5), zygote.wait()).await;
                let (stdout, stderr) = zygote.output();
                crate::stdio::out(&stdout);
                crate::stdio::err(&stderr);
                crate::errln!(
                    "error: the global timeout of {secs}s was reached during collection; no test ran\n  hint: pytest's collection (importing the test modules and conftest files) did not finish in time: run `pytest --collect-only` to see where it stops, or raise --global-timeout"
                );
                return Ok(exit_code::INTERRUPTED);
            }
        }
    };

    let Collected {
        rootdir,
        python,
        pytest,
        tests,
        errors,
        warnings,
        deselected,
        interrupted,
        maxfail,
        timeout: ini_timeout,
    } = collected;
    let state_dir = PathBuf::from(&rootdir).join(".runner");
    let workers = settings
        .workers
        .unwrap_or_else(default_workers)
        .min(tests.len().max(1) as u32);
    terminal.header(&format!(
        "runner {} · Python {python} · pytest {pytest} · {} tests · {workers} worker{} · rootdir {rootdir}",
        env!("CARGO_PKG_VERSION"),
        tests.len(),
        if workers == 1 { "" } else { "s" },
    ));
    let junitxml = settings
        .junitxml
        .as_ref()
        .map(std::path::absolute)
        .transpose()?;
    let mut policies = settings.policies;
    for error in policies.open_outputs(&state_dir, junitxml.as_deref()) {
        terminal.warn(&format!("{error}; its report is not written this run"));
    }
    policies.set_log_sink(terminal.log_sink());
    let history = History::load(&state_dir, &mut |warning| terminal.warn(&warning));
    let log = RunLog::create(
        &state_dir,
        run_id,
        settings.run_log.as_deref(),
        &mut |warning| terminal.warn(&warning),
    );
    let plan_history = history.for_tests(tests.iter().map(|t| t.id.as_str()));
    let mut recorder = Recorder::new(terminal, policies, history, log, started);
    recorder.run_started(tests.len(), workers, deselected, &errors);
    recorder.warnings(warnings);

    if let Some(reason) = &interrupted {
        recorder.interrupted(reason.clone());
    }
    if interrupted.is_some() || tests.is_empty() {
        let _ = wire::write_frame(
            zygote_writer_of(&mut writers, zygote_conn)?,
            &Outbound::Shutdown {
                drop_pending: false,
            },
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), zygote.wait()).await;
        end_leftovers(zygote, descendants, &mut recorder).await;
        let code = if interrupted.is_some() {
            exit_code::INTERRUPTED
        } else if !errors.is_empty() {
            exit_code::TESTS_FAILED
        } else {
            exit_code::NO_TESTS_COLLECTED
        };
        return Ok(recorder.finish(code));
    }

    let plan = recorder
        .policies
        .plan(&PlanContext { workers }, &tests, &plan_history)
        .context("the scheduler failed")?;
    for warning in recorder.policies.take_warnings() {
        recorder.note(warning);
    }
    recorder.deselected_by_scheduler(&plan.deselected);
    let batches: VecDeque<Vec<String>> =
        plan.batches.into_iter().filter(|b| !b.is_empty()).collect();
    let planned: usize = batches.iter().map(Vec::len).sum();
    if planned == 0 {
        // Like pytest when `-k` or `-m` deselects everything: nothing ran.
        let _ = wire::write_frame(
            zygote_writer_of(&mut writers, zygote_conn)?,
            &Outbound::Shutdown {
                drop_pending: false,
            },
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), zygote.wait()).await;
        end_leftovers(zygote, descendants, &mut recorder).await;
        let code = if errors.is_empty() {
            exit_code::NO_TESTS_COLLECTED
        } else {
            exit_code::TESTS_FAILED
        };
        return Ok(recorder.finish(code));
    }
    recorder.terminal.start(planned as u64);

    let timeouts: HashMap<String, f64> = tests
        .iter()
        .filter_map(|t| Some((t.id.clone(), t.timeout?)))
        .collect();
    let limits = Limits {
        timeout: settings.limits.timeout.or(ini_timeout),
        maxfail,
        max_worker_restart: settings.max_worker_restart.unwrap_or(4 * workers),
        ..settings.limits.clone()
    };
    let pool = Pool::new(
        started,
        &mut recorder,
        zygote,
        descendants,
        writers,
        zygote_conn,
        limits,
        workers,
        batches,
        timeouts,
    );
    let end = pool.run(&mut events, &mut signals).await?;
    end_leftovers(zygote, descendants, &mut recorder).await;

    if !end.not_run.is_empty() {
        recorder.not_run(&end.not_run);
    }
    for warning in &end.untrusted {
        recorder.closing_note(format!("this run can't be trusted: {warning}"));
    }
    let code = match &end.stop {
        Some(StopReason::Signal(_)) | Some(StopReason::GlobalTimeout(_)) => exit_code::INTERRUPTED,
        // pytest's own code for the stop, failures or not; but never a
        // green exit for a run that can't be trusted.
        Some(StopReason::Session(stop)) if stop.exit_code != 0 || end.untrusted.is_empty() => {
            stop.exit_code
        }
        _ if recorder.stats.has_failures() || !end.untrusted.is_empty() || end.stop.is_some() => {
            exit_code::TESTS_FAILED
        }
        _ => exit_code::OK,
    };
    Ok(recorder.finish(code))
}

fn zygote_writer_of(
    writers: &mut HashMap<ConnId, OwnedWriteHalf>,
    zygote_conn: ConnId,
) -> Result<&mut OwnedWriteHalf> {
    writers
        .get_mut(&zygote_conn)
        .context("the zygote's connection is gone")
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Kills what the run left running once the zygote is gone, with a note
/// naming the test that started each process.
async fn end_leftovers(
    zygote: &mut Zygote,
    descendants: &mut Descendants,
    recorder: &mut Recorder,
) {
    zygote.stop().await;
    let swept = descendants.sweep().await;
    recorder.leftovers_killed(&swept);
}

async fn interrupt_collection(zygote: &mut Zygote, signal: &str) -> i32 {
    zygote.kill_all();
    let _ = tokio::time::timeout(Duration::from_secs(5), zygote.wait()).await;
    crate::errln!("Interrupted during collection ({signal})");
    exit_code::INTERRUPTED
}

fn default_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Sortable and unique: seconds since the epoch, then the pid.
fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", now.as_secs(), std::process::id())
}
