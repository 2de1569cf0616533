//! The workers of a run and their supervision: hands out batches to
//! whichever worker asks, records results, and turns every way a worker can
//! go wrong (a hang past the timeout, a crash, an exit) into an outcome for
//! the test it was running, with the evidence, then replaces the worker.
//! One task owns all of this state; see `run` for the phases around it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::clock::{RunClock, RunInstant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::net::unix::OwnedWriteHalf;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::connections::{ConnEvent, ConnId};
use crate::descendants::Descendants;
use crate::outcome::synthetic_report;
use crate::recorder::Recorder;
use crate::wire::{self, Inbound, Outbound, Role, SessionStop, WireError};
use crate::zygote::Zygote;

/// After the traceback dump, how long a timed-out worker gets before SIGTERM.
const DUMP_WAIT: Duration = Duration::from_millis(300);
/// Between SIGTERM and SIGKILL of a hung test's processes.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a lost worker's exit status and last evidence.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);
/// How long the zygote has to fork a worker: it does nothing else, so
/// missing this means it is stopped (SIGSTOP) or wedged.
const FORK_DEADLINE: Duration = Duration::from_secs(10);
/// Evidence kept per worker.
const EVIDENCE_LIMIT: usize = 1024 * 1024;
const TICK: Duration = Duration::from_millis(50);

/// Supervision settings, from the command line and pytest's config.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Per-test timeout in seconds, unless a test's marker says otherwise.
    pub timeout: Option<f64>,
    /// Print a notice for tests running longer than this.
    pub slow: Option<f64>,
    /// Stop the whole run after this long.
    pub global_timeout: Option<f64>,
    /// Replacement workers allowed before the run stops.
    pub max_worker_restart: u32,
    /// Stop after this many failures (pytest's --maxfail; 0 = never).
    pub maxfail: u32,
}

/// SIGINT (Ctrl-C), SIGTERM and a closed output, which stop a run at any
/// phase.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
        })
    }

    /// Waits for either, or for the reader of runner's output to go away
    /// (`runner | head`), which stops a run the same way; returns how pytest
    /// would name it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "KeyboardInterrupt",
            _ = self.terminate.recv() => "SIGTERM",
            _ = crate::stdio::closed() => "the output was closed",
        }
    }
}

/// Why the run stopped dispatching before the plan was done.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    MaxFail(u32),
    GlobalTimeout(f64),
    RestartLimit(u32),
    ZygoteDied(String),
    /// The zygote missed the fork deadline.
    ZygoteStuck,
    Signal(&'static str),
    /// A test stopped pytest's session: pytest runs nothing more either.
    Session(SessionStop),
}

impl StopReason {
    pub fn describe(&self) -> String {
        match self {
            StopReason::MaxFail(n) => format!("stopping after {n} failures"),
            StopReason::GlobalTimeout(secs) => format!("global timeout of {secs}s reached"),
            StopReason::RestartLimit(n) => {
                format!("workers crashed {n} times, the --max-worker-restart limit; stopping")
            }
            StopReason::ZygoteDied(status) => format!("the zygote died ({status})"),
            StopReason::ZygoteStuck => "the zygote can't fork workers; stopping".to_owned(),
            StopReason::Signal(name) => name.to_string(),
            StopReason::Session(stop) => stop.reason.clone(),
        }
    }
}

/// What woke the run loop.
enum Wake {
    Signal(&'static str),
    Event(ConnEvent),
    ZygoteExited(std::io::Result<std::process::ExitStatus>),
    Tick,
}

/// How a run's worker phase ended.
pub struct PoolEnd {
    pub stop: Option<StopReason>,
    /// Planned tests that never ran.
    pub not_run: Vec<String>,
    /// Reasons the run's result can't be trusted (lost results, workers that
    /// died outside a test).
    pub untrusted: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Running,
    /// SIGUSR1 sent: faulthandler dumps every thread's traceback.
    Dumped(RunInstant),
    /// SIGTERM sent; the SIGKILL that follows is `Descendants`' to send,
    /// as it must come even if the worker dies of the SIGTERM.
    Terminated,
}

struct Running {
    id: String,
    since: RunInstant,
    timeout: Option<Duration>,
    stage: Stage,
    slow_notices: u32,
    /// Set when the global timeout, not the test's own, stopped it.
    global: bool,
}

#[derive(Debug, Clone, Copy)]
enum ExitStatus {
    Code(i32),
    Signal(i32),
}

#[derive(Default)]
struct Worker {
    /// When the zygote was asked to fork it.
    asked_at: RunInstant,
    pid: Option<i32>,
    conn: Option<ConnId>,
    assigned: VecDeque<String>,
    running: Option<Running>,
    evidence: Vec<u8>,
    evidence_open: bool,
    exit: Option<ExitStatus>,
    /// When its command connection closed.
    lost_at: Option<RunInstant>,
    /// Told to shut down: leaving now is expected.
    released: bool,
    /// Its test timed out and it is being stopped: whatever it still sends
    /// is void (the dump signal itself can make a blocked test return).
    condemned: bool,
}

pub struct Pool<'a> {
    recorder: &'a mut Recorder,
    zygote: &'a mut Zygote,
    descendants: &'a mut Descendants,
    writers: HashMap<ConnId, OwnedWriteHalf>,
    zygote_conn: ConnId,
    zygote_alive: bool,
    /// The zygote missed the fork deadline: it answers nothing more.
    zygote_stuck: bool,
    limits: Limits,
    worker_count: u32,
    next_worker: u32,
    restarts: u32,
    workers: HashMap<String, Worker>,
    /// Connection → (worker id, is the evidence connection).
    conns: HashMap<ConnId, (String, bool)>,
    queue: Queue,
    planned: HashSet<String>,
    timeouts: HashMap<String, f64>,
    finished: usize,
    failures: u32,
    stop: Option<StopReason>,
    /// Whether the workers were told to stop (see `release_all`).
    stop_told: bool,
    not_run: Vec<String>,
    untrusted: Vec<String>,
    /// Timeouts, the global deadline and slow notices are on this clock.
    clock: RunClock,
    /// runner was stopped since the last tick: judge no deadline until
    /// what arrived meanwhile has been read.
    resumed: bool,
}

impl<'a> Pool<'a> {
    #[expect(clippy::too_many_arguments)]
    pub fn new(
        started: Instant,
        recorder: &'a mut Recorder,
        zygote: &'a mut Zygote,
        descendants: &'a mut Descendants,
        writers: HashMap<ConnId, OwnedWriteHalf>,
        zygote_conn: ConnId,
        limits: Limits,
        worker_count: u32,
        batches: VecDeque<Vec<String>>,
        timeouts: HashMap<String, f64>,
    ) -> Pool<'a> {
        let planned = batches.iter().flatten().cloned().collect();
        Pool {
            recorder,
            zygote,
            descendants,
            writers,
            zygote_conn,
            zygote_alive: true,
            zygote_stuck: false,
            limits,
            worker_count,
            next_worker: 0,
            restarts: 0,
            workers: HashMap::new(),
            conns: HashMap::new(),
            queue: Queue::new(batches),
            planned,
            timeouts,
            finished: 0,
            failures: 0,
            stop: None,
            stop_told: false,
            not_run: Vec::new(),
            untrusted: Vec::new(),
            clock: RunClock::starting_at(started),
            resumed: false,
        }
    }

    /// Runs every planned test, or stops early; returns how it ended.
    pub async fn run(
        mut self,
        events: &mut mpsc::UnboundedReceiver<ConnEvent>,
        signals: &mut StopSignals,
    ) -> Result<PoolEnd> {
        let mut tick = tokio::time::interval(TICK);
        // After runner was stopped, one prompt tick, not a burst of them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..self.worker_count {
            self.fork().await?;
        }
        while !self.done() {
            // What is ready is handled before the tick, so that no deadline
            // is judged while a result that arrived waits in the channel.
            let wake = tokio::select! {
                biased;
                name = signals.recv() => Wake::Signal(name),
                event = events.recv() => Wake::Event(event.expect("the accept task holds a sender")),
                status = self.zygote.wait(), if self.zygote_alive => Wake::ZygoteExited(status),
                _ = tick.tick() => Wake::Tick,
            };
            if self.clock.observe(TICK) {
                self.resumed = true;
            }
            match wake {
                Wake::Event(event) => self.on_event(event).await?,
                Wake::Tick => self.on_tick().await?,
                Wake::ZygoteExited(status) => {
                    self.zygote_alive = false;
                    let status = status?;
                    let (_, stderr) = self.zygote.output();
                    let last_output = tail(&stderr, 40);
                    self.recorder.note(if last_output.trim().is_empty() {
                        format!("the zygote exited unexpectedly ({status})")
                    } else {
                        format!("the zygote exited unexpectedly ({status}); its last output:\n{last_output}")
                    });
                    self.stop_dispatching(StopReason::ZygoteDied(status.to_string()));
                    self.kill_workers();
                }
                Wake::Signal(name) => self.interrupt(name),
            }
            if matches!(self.stop, Some(StopReason::Signal(_))) {
                break;
            }
            if self.stop.is_some() && !self.stop_told {
                self.stop_told = true;
                self.release_all().await;
            }
        }
        self.shut_down().await;
        let accounted = self.finished + self.not_run.len();
        if accounted != self.planned.len() && !matches!(self.stop, Some(StopReason::Signal(_))) {
            self.untrusted.push(format!(
                "{} tests were planned but {} were accounted for ({} results, {} not run)",
                self.planned.len(),
                accounted,
                self.finished,
                self.not_run.len()
            ));
        }
        Ok(PoolEnd {
            stop: self.stop,
            not_run: self.not_run,
            untrusted: self.untrusted,
        })
    }

    fn done(&self) -> bool {
        self.workers.is_empty() && (self.queue.is_empty() || self.stop.is_some())
    }

    async fn send(&mut self, conn: ConnId, message: &Outbound<'_>) -> bool {
        match self.writers.get_mut(&conn) {
            Some(writer) => wire::write_frame(writer, message).await.is_ok(),
            None => false,
        }
    }

    async fn fork(&mut self) -> Result<()> {
        let id = format!("gw{}", self.next_worker);
        self.next_worker += 1;
        let message = Outbound::Fork {
            worker: &id,
            count: self.worker_count,
        };
        if !self.send(self.zygote_conn, &message).await {
            anyhow::bail!("failed to ask the zygote for a worker: its connection is gone");
        }
        let asked_at = self.clock.now();
        self.workers.insert(
            id,
            Worker {
                asked_at,
                ..Worker::default()
            },
        );
        Ok(())
    }

    async fn on_event(&mut self, event: ConnEvent) -> Result<()> {
        match event {
            ConnEvent::Opened(conn, writer) => {
                self.writers.insert(conn, writer);
            }
            ConnEvent::Message(conn, message) => self.on_message(conn, message).await?,
            ConnEvent::Evidence(conn, bytes) => {
                if let Some(worker) = self.worker_of(conn) {
                    let room = EVIDENCE_LIMIT.saturating_sub(worker.evidence.len());
                    worker
                        .evidence
                        .extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            ConnEvent::Closed(conn) => self.on_closed(conn).await?,
            // A peer killed mid-write resets its connection: that is a loss
            // (settled like any other), not a protocol error.
            ConnEvent::Broken(conn, WireError::Io(_)) => self.on_closed(conn).await?,
            ConnEvent::Broken(conn, error) => {
                let who = self
                    .conns
                    .get(&conn)
                    .map_or("an unknown peer".into(), |(w, _)| format!("worker {w}"));
                self.recorder
                    .note(format!("bad message from {who}: {error}"));
                self.on_closed(conn).await?;
            }
        }
        Ok(())
    }

    fn worker_of(&mut self, conn: ConnId) -> Option<&mut Worker> {
        let (id, _) = self.conns.get(&conn)?;
        self.workers.get_mut(id)
    }

    async fn on_message(&mut self, conn: ConnId, message: Inbound) -> Result<()> {
        let condemned = self.worker_of(conn).is_some_and(|w| w.condemned);
        if condemned
            && matches!(
                message,
                Inbound::Ready
                    | Inbound::Started { .. }
                    | Inbound::Result { .. }
                    | Inbound::Stop(_)
            )
        {
            return Ok(());
        }
        match message {
            Inbound::Hello {
                role,
                worker: Some(id),
                pid,
            } if role != Role::Zygote => {
                let Some(worker) = self.workers.get_mut(&id) else {
                    self.recorder
                        .note(format!("a worker the run did not fork said hello: {id}"));
                    return Ok(());
                };
                worker.pid = Some(pid);
                match role {
                    Role::Evidence => worker.evidence_open = true,
                    _ => worker.conn = Some(conn),
                }
                self.conns.insert(conn, (id, role == Role::Evidence));
            }
            Inbound::Ready => self.dispatch(conn).await,
            Inbound::Started { id } => {
                let timeout = self.timeouts.get(&id).copied().or(self.limits.timeout);
                let since = self.clock.now();
                if let Some(worker) = self.worker_of(conn) {
                    worker.running = Some(Running {
                        id,
                        since,
                        timeout: timeout.filter(|t| *t > 0.0).map(Duration::from_secs_f64),
                        stage: Stage::Running,
                        slow_notices: 0,
                        global: false,
                    });
                }
            }
            Inbound::Result {
                id,
                reports,
                warnings,
            } => {
                self.recorder.warnings(warnings);
                let Some((name, _)) = self.conns.get(&conn).cloned() else {
                    return Ok(());
                };
                let Some(worker) = self.workers.get_mut(&name) else {
                    return Ok(());
                };
                let Some(position) = worker.assigned.iter().position(|a| *a == id) else {
                    self.recorder.note(format!(
                        "worker {name} reported a test it was not given: {id}"
                    ));
                    return Ok(());
                };
                worker.assigned.remove(position);
                worker.running = None;
                let failed = reports
                    .iter()
                    .filter(|r| r.outcome == "failed" && r.wasxfail.is_none())
                    .count();
                self.recorder.test_finished(&id, &name, reports);
                self.finished += 1;
                self.count_failures(failed as u32);
            }
            Inbound::Stop(stop) => {
                // The worker leaves after this. A test it stopped in before
                // any report stays assigned: it did not run.
                if let Some(worker) = self.worker_of(conn) {
                    worker.running = None;
                    worker.released = true;
                }
                self.stop_dispatching(StopReason::Session(stop));
            }
            Inbound::Forked { worker, pid } => {
                if let Some(worker) = self.workers.get_mut(&worker) {
                    worker.pid = Some(pid);
                }
            }
            Inbound::WorkerExited {
                worker,
                code,
                signal,
                ..
            } => {
                if let Some(state) = self.workers.get_mut(&worker) {
                    state.exit = Some(match (signal, code) {
                        (Some(signal), _) => ExitStatus::Signal(signal),
                        (None, code) => ExitStatus::Code(code.unwrap_or(0)),
                    });
                    // Lost now, even if its connections stay open: a
                    // process it forked (a daemon) may hold them.
                    if state.lost_at.is_none() {
                        state.lost_at = Some(self.clock.now());
                    }
                    self.try_finalize(&worker).await?;
                }
            }
            Inbound::Hello { .. } | Inbound::Collected(_) => {
                self.recorder
                    .note("unexpected message from the Python side".into());
            }
        }
        Ok(())
    }

    /// Answers a worker's request: a share of the queue, or goodbye.
    async fn dispatch(&mut self, conn: ConnId) {
        let Some(worker) = self.worker_of(conn) else {
            return;
        };
        let held = worker.assigned.len();
        let ids = match self.stop {
            Some(_) => Vec::new(),
            None => self.queue.take_share(held, self.worker_count as usize),
        };
        let Some(worker) = self.worker_of(conn) else {
            return;
        };
        let message = if ids.is_empty() {
            worker.released = true;
            Outbound::Shutdown {
                drop_pending: self.stop.is_some(),
            }
        } else {
            worker.assigned.extend(ids.iter().cloned());
            Outbound::Run { ids: &ids }
        };
        if !self.send(conn, &message).await && !ids.is_empty() {
            // The worker is gone: these tests never reached it (what it held
            // before is requeued when its loss is settled).
            if let Some(worker) = self.worker_of(conn) {
                worker.assigned.truncate(held);
            }
            self.queue.push_front(ids);
        }
    }

    fn count_failures(&mut self, failed: u32) {
        self.failures += failed;
        if self.limits.maxfail > 0 && self.failures >= self.limits.maxfail && self.stop.is_none() {
            self.stop_dispatching(StopReason::MaxFail(self.failures));
        }
    }

    async fn on_closed(&mut self, conn: ConnId) -> Result<()> {
        self.writers.remove(&conn);
        let Some((id, evidence)) = self.conns.remove(&conn) else {
            return Ok(());
        };
        let zygote_alive = self.zygote_alive;
        if let Some(worker) = self.workers.get_mut(&id) {
            if evidence {
                worker.evidence_open = false;
            } else {
                worker.lost_at = Some(self.clock.now());
                worker.conn = None;
                if !zygote_alive {
                    // Nobody will report its exit status: it was ours to reap.
                    if let Some(pid) = worker.pid {
                        reap(pid);
                    }
                }
            }
        }
        self.try_finalize(&id).await
    }

    /// Once a worker's connection is gone and its exit status and last
    /// evidence are in (or waiting for them is pointless), settles its
    /// in-flight test and requeues the rest.
    async fn try_finalize(&mut self, id: &str) -> Result<()> {
        let Some(worker) = self.workers.get(id) else {
            return Ok(());
        };
        let Some(lost_at) = worker.lost_at else {
            return Ok(());
        };
        // All it had to say has arrived once its connections closed, or
        // once it has no test left to report on.
        let heard = (worker.conn.is_none() && !worker.evidence_open)
            || (worker.assigned.is_empty() && worker.running.is_none());
        let settled = worker.exit.is_some() && heard;
        let waited = self.clock.now().saturating_sub(lost_at);
        if !settled && self.zygote_answers() && waited < EXIT_STATUS_WAIT {
            return Ok(());
        }
        let mut worker = self.workers.remove(id).expect("checked above");
        let clean_exit = matches!(worker.exit, Some(ExitStatus::Code(0)));
        if let Some(running) = worker.running.take() {
            worker.assigned.retain(|a| *a != running.id);
            self.record_lost_test(id, &worker, running);
        } else if !clean_exit
            && !matches!(self.stop, Some(StopReason::Signal(_)))
            && self.zygote_answers()
        {
            let how = describe_exit(worker.exit);
            self.untrusted
                .push(format!("worker {id} {how} outside a test"));
        }
        let leftover: Vec<String> = worker.assigned.drain(..).collect();
        if self.stop.is_some() {
            self.not_run.extend(leftover);
        } else if !leftover.is_empty() {
            self.queue.push_front(leftover);
        }
        let needed = !self.queue.is_empty() && self.stop.is_none();
        if needed && (!worker.released || self.workers.is_empty()) {
            self.replace_worker().await?;
        }
        Ok(())
    }

    fn record_lost_test(&mut self, worker_id: &str, worker: &Worker, running: Running) {
        let elapsed = self.clock.now().saturating_sub(running.since).as_secs_f64();
        let pid = worker.pid.map_or(String::new(), |p| format!(" (pid {p})"));
        let evidence = String::from_utf8_lossy(&worker.evidence).into_owned();
        let (category, message, mut text) = if running.stage != Stage::Running {
            let limit = running.timeout.map_or(0.0, |t| t.as_secs_f64());
            let why = if running.global {
                format!("the run's global timeout stopped it after {elapsed:.2}s")
            } else {
                format!("Timeout: the test ran longer than {limit}s")
            };
            let how = match worker.exit {
                Some(ExitStatus::Signal(s)) => format!(
                    "its worker {worker_id}{pid} was stopped with {}",
                    signal_name(s)
                ),
                _ => format!("its worker {worker_id}{pid} was stopped"),
            };
            ("hung", why.clone(), format!("{why}; {how}.\n"))
        } else {
            let how = match worker.exit {
                None if !self.zygote_alive => "was stopped when the zygote died".to_string(),
                exit => describe_exit(exit),
            };
            let message = format!("worker {worker_id}{pid} {how} while running this test");
            (
                "crashed",
                message.clone(),
                format!("{message}, {elapsed:.2}s in.\n"),
            )
        };
        if evidence.trim().is_empty() {
            text.push_str("(no traceback: the worker died before Python could write one)\n");
        } else {
            text.push_str("\nTraceback of every thread (faulthandler):\n");
            text.push_str(&evidence);
        }
        let report = synthetic_report(&running.id, category, &message, &text, elapsed);
        self.recorder
            .test_finished(&running.id, worker_id, vec![report]);
        self.finished += 1;
        self.count_failures(1);
    }

    async fn replace_worker(&mut self) -> Result<()> {
        if !self.zygote_alive {
            self.stop_dispatching(StopReason::ZygoteDied("gone".into()));
            return Ok(());
        }
        if self.restarts >= self.limits.max_worker_restart {
            self.stop_dispatching(StopReason::RestartLimit(self.restarts));
            return Ok(());
        }
        self.restarts += 1;
        self.fork().await
    }

    fn stop_dispatching(&mut self, reason: StopReason) {
        if self.stop.is_some() {
            return;
        }
        match &reason {
            StopReason::Session(stop) => self.recorder.session_stopped(stop.clone()),
            _ => self.recorder.interrupted(reason.describe()),
        }
        self.not_run.extend(self.queue.drain());
        self.stop = Some(reason);
    }

    /// Once dispatching stopped: every worker drops the tests it holds but
    /// has not started, and leaves after the one it is running. Told now
    /// rather than at its next request, so that nothing new starts.
    async fn release_all(&mut self) {
        let conns: Vec<ConnId> = self
            .workers
            .values_mut()
            .filter(|w| !w.released)
            .filter_map(|w| {
                w.released = true;
                w.conn
            })
            .collect();
        for conn in conns {
            self.send(conn, &Outbound::Shutdown { drop_pending: true })
                .await;
        }
    }

    fn interrupt(&mut self, name: &'static str) {
        self.stop_dispatching(StopReason::Signal(name));
        self.kill_workers();
    }

    async fn on_tick(&mut self) -> Result<()> {
        if std::mem::take(&mut self.resumed) {
            return Ok(());
        }
        let now = self.clock.now();
        if let Some(limit) = self.limits.global_timeout
            && now.as_secs_f64() > limit
            && self.stop.is_none()
        {
            self.stop_dispatching(StopReason::GlobalTimeout(limit));
            for worker in self.workers.values_mut() {
                if let Some(running) = &mut worker.running {
                    running.global = true;
                    running.timeout = Some(now.saturating_sub(running.since));
                }
            }
        }
        self.check_forks(now);
        let slow = self.limits.slow;
        let mut notices = Vec::new();
        for (id, worker) in &mut self.workers {
            let (Some(running), Some(pid)) = (&mut worker.running, worker.pid) else {
                continue;
            };
            let elapsed = now.saturating_sub(running.since);
            if let Some(slow) = slow.filter(|s| *s > 0.0) {
                let crossed = (elapsed.as_secs_f64() / slow) as u32;
                if crossed > running.slow_notices {
                    running.slow_notices = crossed;
                    notices.push(format!(
                        "SLOW [> {:.1}s] {id} {}",
                        crossed as f64 * slow,
                        running.id
                    ));
                }
            }
            let Some(timeout) = running.timeout else {
                continue;
            };
            running.stage = match running.stage {
                Stage::Running if elapsed >= timeout => {
                    worker.condemned = true;
                    let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
                    Stage::Dumped(now)
                }
                Stage::Dumped(at) if now.saturating_sub(at) >= DUMP_WAIT => {
                    self.descendants.stop_test(pid, &running.id, TERM_GRACE);
                    Stage::Terminated
                }
                stage => stage,
            };
        }
        for notice in notices {
            self.recorder.terminal.notice(&notice);
        }
        self.check_leftovers();
        let lost: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.lost_at.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            self.try_finalize(&id).await?;
        }
        Ok(())
    }

    /// A worker the zygote has not forked by the deadline means the zygote
    /// can't fork (stopped, wedged): no new test can start, so the run
    /// stops dispatching; the tests already running finish.
    fn check_forks(&mut self, now: RunInstant) {
        if self.zygote_stuck || !self.zygote_alive {
            return;
        }
        let late = |w: &Worker| w.pid.is_none() && now.saturating_sub(w.asked_at) > FORK_DEADLINE;
        if !self.workers.values().any(late) {
            return;
        }
        self.zygote_stuck = true;
        self.workers.retain(|_, w| !late(w));
        let state = match process_state(self.zygote.pid) {
            Some('T' | 't') => " (it is stopped: SIGSTOP or a debugger)",
            _ => "",
        };
        self.recorder.note(format!(
            "the zygote (pid {}) did not fork a worker within {}s{state}; no new test starts",
            self.zygote.pid,
            FORK_DEADLINE.as_secs()
        ));
        self.stop_dispatching(StopReason::ZygoteStuck);
    }

    /// Whether the zygote still answers: forks workers, reports their exits.
    fn zygote_answers(&self) -> bool {
        self.zygote_alive && !self.zygote_stuck
    }

    /// Reports the processes tests left running once they ended.
    fn check_leftovers(&mut self) {
        let workers = &self.workers;
        let pids = workers
            .iter()
            .filter_map(|(id, w)| Some((w.pid?, id.as_str())));
        let running = |test: &str| {
            workers
                .values()
                .any(|w| w.running.as_ref().is_some_and(|r| r.id == test))
        };
        for leftover in self.descendants.check(pids, running) {
            self.recorder.leaked(&leftover);
        }
    }

    fn kill_workers(&mut self) {
        for worker in self.workers.values() {
            if let Some(pid) = worker.pid {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                if !self.zygote_alive {
                    reap(pid);
                }
            }
        }
        if matches!(self.stop, Some(StopReason::Signal(_))) {
            self.workers.clear();
        }
    }

    /// Ends the worker phase: a clean goodbye to the zygote, or no mercy.
    async fn shut_down(&mut self) {
        let clean = self.zygote_answers() && !matches!(self.stop, Some(StopReason::Signal(_)));
        if clean {
            let (failed, passed) = self.recorder.last_failed();
            let message = Outbound::LastFailed {
                failed: &failed,
                passed: &passed,
            };
            self.send(self.zygote_conn, &message).await;
            self.send(
                self.zygote_conn,
                &Outbound::Shutdown {
                    drop_pending: false,
                },
            )
            .await;
            if tokio::time::timeout(Duration::from_secs(30), self.zygote.wait())
                .await
                .is_ok()
            {
                return;
            }
            self.recorder
                .note("the zygote did not exit within 30s of the run's end; killed it".into());
        }
        self.kill_workers();
        self.zygote.kill_all();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.zygote.wait()).await;
    }
}

/// Most tests a worker is handed at once.
const SHARE_MAX: usize = 64;

/// The planned batches not yet handed out, and how many tests they hold.
struct Queue {
    batches: VecDeque<Vec<String>>,
    tests: usize,
}

impl Queue {
    fn new(batches: VecDeque<Vec<String>>) -> Queue {
        let tests = batches.iter().map(Vec::len).sum();
        Queue { batches, tests }
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn push_front(&mut self, batch: Vec<String>) {
        self.tests += batch.len();
        self.batches.push_front(batch);
    }

    fn drain(&mut self) -> impl Iterator<Item = String> + '_ {
        self.tests = 0;
        self.batches.drain(..).flatten()
    }

    /// Whole batches for a worker holding `held` tests: enough that it
    /// does not wait on runner between fast tests, few enough to keep the
    /// end of the run balanced: a quarter of the queue's share per worker,
    /// at least one batch, at most SHARE_MAX tests (unless one batch is
    /// bigger). Batches keep their order, so concatenating them is safe.
    fn take_share(&mut self, held: usize, workers: usize) -> Vec<String> {
        let target = (self.tests / (4 * workers.max(1))).clamp(2, SHARE_MAX);
        let mut ids = Vec::new();
        while let Some(batch) = self.batches.front() {
            if !ids.is_empty() && held + ids.len() + batch.len() > target {
                break;
            }
            let batch = self.batches.pop_front().expect("front exists");
            self.tests -= batch.len();
            ids.extend(batch);
        }
        ids
    }
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, t, Z...).
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the state follows
    // the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Reaps a worker that became runner's child when the zygote died (runner
/// is a child subreaper).
fn reap(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

fn describe_exit(exit: Option<ExitStatus>) -> String {
    match exit {
        Some(ExitStatus::Signal(signal)) => format!("was killed by {}", signal_name(signal)),
        Some(ExitStatus::Code(code)) => format!("exited with status {code}"),
        None => "disappeared".to_string(),
    }
}

pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(known) => format!("signal {signal} ({})", known.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(tests: usize) -> Queue {
        Queue::new((0..tests).map(|i| vec![format!("t{i}")]).collect())
    }

    #[test]
    fn shares_shrink_as_the_queue_empties() {
        let mut q = queue(1000);
        assert_eq!(
            q.take_share(0, 2).len(),
            SHARE_MAX,
            "capped while the queue is long"
        );
        let mut q2 = queue(40);
        assert_eq!(
            q2.take_share(0, 2).len(),
            5,
            "a quarter of each worker's share"
        );
        let mut q3 = queue(3);
        assert_eq!(q3.take_share(0, 2).len(), 2, "never less than two at hand");
        assert_eq!(
            q3.take_share(5, 2).len(),
            1,
            "at least one batch when asked"
        );
        assert!(q3.is_empty());
        assert_eq!(q.tests, 1000 - SHARE_MAX);
    }

    #[test]
    fn batches_are_never_split_and_keep_their_order() {
        let mut q = Queue::new(VecDeque::from([
            vec!["a".into(), "b".into(), "c".into()],
            vec!["d".into()],
        ]));
        assert_eq!(
            q.take_share(0, 4),
            ["a", "b", "c"],
            "a batch bigger than the share goes whole"
        );
        q.push_front(vec!["x".into()]);
        assert_eq!(q.take_share(0, 4), ["x", "d"]);
        assert_eq!(q.tests, 0);
    }
}
