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

use crate::exit_code;
use crate::model::PlanContext;
use crate::policy::{Policies, PolicyOptions};
use crate::recorder::Recorder;
use crate::state::{History, RunLog};
use crate::ui::{Terminal, Verbosity};
use crate::wire::{self, Collected, Inbound, Outbound, Role, WireError};
use crate::zygote::{NO_PYTEST_EXIT, Zygote, ZygoteSpec};

/// Everything a run needs, resolved from the command line.
pub struct RunSettings {
    pub python: PathBuf,
    pub workers: Option<u32>,
    pub pytest_args: Vec<String>,
    pub junitxml: Option<PathBuf>,
    pub run_log: Option<PathBuf>,
    pub verbosity: Verbosity,
}

type ConnId = u64;

/// What the connection tasks tell the run loop.
enum ConnEvent {
    Opened(ConnId, OwnedWriteHalf),
    Message(ConnId, Inbound),
    Closed(ConnId),
    Broken(ConnId, WireError),
}

/// A forked worker as the run loop sees it.
struct Worker {
    id: String,
    /// Tests sent to it and not yet reported, in the order it runs them.
    assigned: VecDeque<String>,
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
    let mut zygote = Zygote::spawn(&ZygoteSpec {
        python: &settings.python,
        run_dir: run_dir.path(),
        socket: &socket,
        run_id: &run_id,
        pytest_args: &settings.pytest_args,
    })
    .with_context(|| format!("failed to start Python ({})", settings.python.display()))?;

    let (events_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(accept_connections(listener, events_tx));
    let terminal = Terminal::new(settings.verbosity);
    let mut writers: HashMap<ConnId, OwnedWriteHalf> = HashMap::new();

    // Collection: until the zygote reports, or exits without reporting
    // (usage errors, --help, --collect-only, a conftest that fails to import).
    let (zygote_conn, collected) = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ConnEvent::Opened(conn, writer)) => { writers.insert(conn, writer); }
                Some(ConnEvent::Message(conn, Inbound::Collected(collected))) => break (conn, collected),
                Some(ConnEvent::Message(_, _)) | Some(ConnEvent::Closed(_)) => {}
                Some(ConnEvent::Broken(_, error)) => anyhow::bail!("the zygote sent a bad message: {error}"),
                None => unreachable!("the accept task holds a sender"),
            },
            status = zygote.wait() => {
                let status = status?;
                let (stdout, stderr) = zygote.output();
                let code = status.code().unwrap_or(exit_code::INTERNAL_ERROR);
                if code == NO_PYTEST_EXIT {
                    eprint!("{stderr}");
                    eprintln!(
                        "error: pytest is not installed for {}\n  hint: install it with `{} -m pip install pytest`, or choose another interpreter with --python",
                        settings.python.display(), settings.python.display()
                    );
                    return Ok(exit_code::USAGE_ERROR);
                }
                print!("{stdout}");
                eprint!("{stderr}");
                if status.code().is_none() {
                    eprintln!("error: Python exited during collection ({status})");
                }
                return Ok(code);
            }
            _ = tokio::signal::ctrl_c() => {
                zygote.kill_all();
                eprintln!("Interrupted during collection");
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
        .map(|path| std::path::absolute(path))
        .transpose()?;
    let policies = Policies::load(&PolicyOptions {
        junitxml,
        state_dir: state_dir.clone(),
        cache_dir: Some(cache_dir()),
    })
    .context("failed to load the policies")?;
    let history = History::load(&state_dir, &mut |warning| terminal.warn(&warning));
    let log = RunLog::create(&state_dir, &run_id, settings.run_log.as_deref())
        .context("failed to create the run log")?;
    let plan_history = history.for_tests(tests.iter().map(|t| t.id.as_str()));
    let mut recorder = Recorder::new(terminal, policies, history, log, started);
    recorder.run_started(tests.len(), workers, deselected, &errors);
    recorder.warnings(warnings);

    let zygote_writer = writers
        .get_mut(&zygote_conn)
        .context("the zygote's connection is gone")?;
    if let Some(reason) = &interrupted {
        recorder.interrupted(reason.clone());
    }
    if interrupted.is_some() || tests.is_empty() {
        let _ = wire::write_frame(zygote_writer, &Outbound::Shutdown).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), zygote.wait()).await;
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
    for (id, reason) in &plan.deselected {
        recorder
            .terminal
            .header(&format!("deselected by the scheduler: {id} ({reason})"));
    }
    let mut batches: VecDeque<Vec<String>> =
        plan.batches.into_iter().filter(|b| !b.is_empty()).collect();
    let planned: usize = batches.iter().map(Vec::len).sum();
    recorder
        .stats
        .add("deselected", plan.deselected.len() as u32);
    recorder.terminal.start(planned as u64);

    let mut next_worker = 0u32;
    let fork = async |writer: &mut OwnedWriteHalf, next: &mut u32| -> Result<(), WireError> {
        let id = format!("gw{next}");
        *next += 1;
        wire::write_frame(
            writer,
            &Outbound::Fork {
                worker: &id,
                count: workers,
            },
        )
        .await
    };
    for _ in 0..workers {
        fork(zygote_writer, &mut next_worker)
            .await
            .context("failed to ask the zygote for a worker")?;
    }

    let mut live: HashMap<ConnId, Worker> = HashMap::new();
    let mut interrupted_by_user = false;
    let mut restarts = 0u32;
    let max_restarts = 4 * workers;
    let mut zygote_alive = true;
    // Runs until every worker has said goodbye after its last test.
    while recorder.recorded < planned || !live.is_empty() {
        tokio::select! {
            event = events.recv() => match event.expect("the accept task holds a sender") {
                ConnEvent::Opened(conn, writer) => { writers.insert(conn, writer); }
                ConnEvent::Message(conn, message) => match message {
                    Inbound::Hello { role: Role::Worker, worker: Some(id), .. } => {
                        live.insert(conn, Worker { id, assigned: VecDeque::new() });
                    }
                    Inbound::Ready => {
                        let Some(writer) = writers.get_mut(&conn) else { continue };
                        let Some(worker) = live.get_mut(&conn) else { continue };
                        let message = match batches.pop_front() {
                            Some(batch) => {
                                worker.assigned.extend(batch.iter().cloned());
                                wire::write_frame(writer, &Outbound::Run { ids: &batch }).await
                            }
                            None => wire::write_frame(writer, &Outbound::Shutdown).await,
                        };
                        if let Err(error) = message {
                            recorder.note(format!("lost the connection to worker {}: {error}", worker.id));
                        }
                    }
                    Inbound::Result { id, reports, warnings } => {
                        recorder.warnings(warnings);
                        let Some(worker) = live.get_mut(&conn) else { continue };
                        if let Some(position) = worker.assigned.iter().position(|a| *a == id) {
                            worker.assigned.remove(position);
                            let name = worker.id.clone();
                            recorder.test_finished(&id, &name, reports);
                        } else {
                            recorder.note(format!("worker {} reported a test it was not given: {id}", worker.id));
                        }
                    }
                    Inbound::Started { .. } | Inbound::Forked { .. } | Inbound::WorkerExited { .. } => {}
                    Inbound::Hello { .. } | Inbound::Collected(_) => {
                        recorder.note("unexpected message from the Python side".into());
                    }
                },
                ConnEvent::Closed(conn) | ConnEvent::Broken(conn, _) => {
                    writers.remove(&conn);
                    let Some(worker) = live.remove(&conn) else { continue };
                    if worker.assigned.is_empty() {
                        continue;
                    }
                    // The worker died with tests in hand: the first was running.
                    let mut assigned = worker.assigned;
                    let running = assigned.pop_front().expect("not empty");
                    recorder.test_finished(&running, &worker.id, vec![crate::outcome::lost_report(&running, &worker.id)]);
                    if !assigned.is_empty() {
                        batches.push_front(assigned.into_iter().collect());
                    }
                    if restarts >= max_restarts {
                        recorder.note(format!("workers crashed {restarts} times; stopping (the limit is 4 × workers)"));
                        break;
                    }
                    if zygote_alive && recorder.recorded < planned {
                        restarts += 1;
                        if let Some(writer) = writers.get_mut(&zygote_conn) {
                            fork(writer, &mut next_worker).await.context("failed to ask the zygote for a worker")?;
                        }
                    }
                }
            },
            status = zygote.wait(), if zygote_alive => {
                zygote_alive = false;
                let status = status?;
                let (_, stderr) = zygote.output();
                recorder.note(format!("the zygote exited unexpectedly ({status}); its last output:\n{}", tail(&stderr, 40)));
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                interrupted_by_user = true;
                break;
            }
        }
    }

    let unfinished = planned - recorder.recorded.min(planned);
    if interrupted_by_user || unfinished > 0 || !zygote_alive {
        zygote.kill_all();
        let _ = tokio::time::timeout(Duration::from_secs(5), zygote.wait()).await;
        if unfinished > 0 {
            recorder.note(format!(
                "{unfinished} of {planned} planned tests did not run"
            ));
        }
    } else {
        if let Some(writer) = writers.get_mut(&zygote_conn) {
            let _ = wire::write_frame(writer, &Outbound::Shutdown).await;
        }
        if tokio::time::timeout(Duration::from_secs(30), zygote.wait())
            .await
            .is_err()
        {
            recorder.note("the zygote did not exit within 30s of the run's end; killed it".into());
            zygote.kill_all();
        }
    }
    let code = if interrupted_by_user {
        recorder.interrupted("KeyboardInterrupt".into());
        exit_code::INTERRUPTED
    } else if recorder.stats.has_failures() || unfinished > 0 || !zygote_alive {
        exit_code::TESTS_FAILED
    } else {
        exit_code::OK
    };
    Ok(recorder.finish(code))
}

async fn accept_connections(listener: UnixListener, events: mpsc::UnboundedSender<ConnEvent>) {
    let mut next: ConnId = 0;
    while let Ok((stream, _)) = listener.accept().await {
        let conn = next;
        next += 1;
        let (mut reader, writer) = stream.into_split();
        if events.send(ConnEvent::Opened(conn, writer)).is_err() {
            return;
        }
        let events = events.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(&mut reader);
            loop {
                let event = match wire::read_frame(&mut reader).await {
                    Ok(Some(message)) => ConnEvent::Message(conn, message),
                    Ok(None) => ConnEvent::Closed(conn),
                    Err(error) => ConnEvent::Broken(conn, error),
                };
                let last = !matches!(event, ConnEvent::Message(..));
                if events.send(event).is_err() || last {
                    return;
                }
            }
        });
    }
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

/// Compiled components are cached per user, not per project.
fn cache_dir() -> PathBuf {
    std::env::var_os("RUNNER_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("runner")))
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache").join("runner"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("runner-cache"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
