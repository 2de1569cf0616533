//! One run: the only owner of run state. A single `select!` loop over the
//! workers' messages, a tick, OS signals and a command channel hands out
//! the plan to whichever worker asks, supervises every running test, turns
//! every way a worker can go wrong into an outcome for the test it was
//! running, replaces lost workers, and emits what happens as events. It
//! writes no prose and never reads from the sinks.
//!
//! Layout: `queue` (the batches not yet handed out), `stop` (the rules that
//! end a run early), `supervise` (a running test's time limit and its
//! escalation), `worker` (what the run knows of one worker), `output` (what
//! workers and tests write to their stdout and stderr, cut into lines).

mod output;
mod queue;
mod stop;
mod supervise;
mod worker;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;

pub use queue::Queue;
pub use stop::Limits;

use crate::clock::{RunClock, RunInstant};
use crate::connections::{ConnEvent, ConnId, Peers};
use crate::descendants::Descendants;
use crate::events::{LostCause, RunEvent, StopReason, UntrustedCause};
use crate::outcome::{lost_test_report, test_result};
use crate::report::Sinks;
use crate::signals::StopSignals;
use crate::wire::{Inbound, Outbound, PhaseReport, Role, WireError};
use crate::zygote::Zygote;
use output::{Line, OutputStreams};
use supervise::{Action, Running, TERM_GRACE};
use worker::{ExitStatus, Worker};

/// How long to wait for a lost worker's exit status and last evidence.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);
/// How long the zygote has to fork a worker: it does nothing else, so
/// missing this means it is stopped (SIGSTOP) or wedged.
const FORK_DEADLINE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(50);

/// Commands to a run from outside it (a job API, watch mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunCommand {
    /// Start nothing new; tests already running finish.
    Stop,
    /// Stop now: tests in flight are killed.
    Cancel,
}

/// What a run is asked to do.
pub struct RunPlan {
    pub workers: u32,
    pub batches: Vec<Vec<String>>,
    /// Per-test timeouts from markers, in seconds.
    pub timeouts: HashMap<String, f64>,
    pub limits: Limits,
    /// Show what workers write to their stdout and stderr (`-s`). Without
    /// it, pytest's capture keeps tests' output, and what a worker writes
    /// outside it is not shown, as under xdist.
    pub live_output: bool,
}

/// How a run ended, for its exit code and for the session.
#[derive(Debug)]
pub struct RunEnd {
    pub stop: Option<StopReason>,
    /// Failed reports, as pytest counts them (`testsfailed`).
    pub failures: u32,
    /// Something makes the results untrustworthy.
    pub untrusted: bool,
    /// The zygote still answers and may fork for another run.
    pub zygote_usable: bool,
    /// The zygote still answers (it can write pytest's report).
    pub zygote_answers: bool,
}

/// What woke the run loop.
enum Wake {
    Signal(&'static str),
    Command(Option<RunCommand>),
    Event(ConnEvent),
    ZygoteExited(std::io::Result<std::process::ExitStatus>),
    Tick,
}

/// The processes and channels a run borrows from its session.
pub struct RunContext<'a> {
    pub peers: &'a mut Peers,
    pub zygote: &'a mut Zygote,
    pub descendants: &'a mut Descendants,
    pub signals: &'a mut StopSignals,
    pub sinks: &'a mut Sinks,
    pub commands: Option<&'a mut mpsc::UnboundedReceiver<RunCommand>>,
    /// When runner started: the global timeout counts from there.
    pub started: Instant,
}

pub struct Run<'a> {
    cx: RunContext<'a>,
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
    planned: usize,
    timeouts: HashMap<String, f64>,
    finished: usize,
    failures: u32,
    stop: Option<StopReason>,
    /// Whether the workers were told to stop (see `release_all`).
    stop_told: bool,
    not_run: Vec<String>,
    untrusted: bool,
    /// Stopped from outside, now (a signal, a cancel command): the workers
    /// were killed.
    cancelled: bool,
    clock: RunClock,
    /// runner was stopped since the last tick: judge no deadline until
    /// what arrived meanwhile has been read.
    resumed: bool,
    /// The workers' stdout and stderr.
    output: OutputStreams,
    live_output: bool,
}

impl<'a> Run<'a> {
    pub fn new(cx: RunContext<'a>, plan: RunPlan) -> Run<'a> {
        let batches: std::collections::VecDeque<Vec<String>> =
            plan.batches.into_iter().filter(|b| !b.is_empty()).collect();
        let planned = batches.iter().map(Vec::len).sum();
        let clock = RunClock::starting_at(cx.started);
        Run {
            cx,
            zygote_alive: true,
            zygote_stuck: false,
            limits: plan.limits,
            worker_count: plan.workers,
            next_worker: 0,
            restarts: 0,
            workers: HashMap::new(),
            conns: HashMap::new(),
            queue: Queue::new(batches),
            planned,
            timeouts: plan.timeouts,
            finished: 0,
            failures: 0,
            stop: None,
            stop_told: false,
            not_run: Vec::new(),
            untrusted: false,
            cancelled: false,
            clock,
            resumed: false,
            output: OutputStreams::default(),
            live_output: plan.live_output,
        }
    }

    /// Runs every planned test, or stops early; returns how it ended.
    pub async fn run(mut self) -> Result<RunEnd> {
        let mut tick = tokio::time::interval(TICK);
        // After runner was stopped, one prompt tick, not a burst of them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..self.worker_count.min(self.planned as u32) {
            self.fork().await?;
        }
        while !self.done() {
            // What is ready is handled before the tick, so that no deadline
            // is judged while a result that arrived waits in the channel.
            let commands = self.cx.commands.as_deref_mut();
            let wake = tokio::select! {
                biased;
                name = self.cx.signals.recv() => Wake::Signal(name),
                command = next_command(commands) => Wake::Command(command),
                event = self.cx.peers.events.recv() => match event {
                    Some(event) => Wake::Event(event),
                    None => anyhow::bail!("the connection listener stopped"),
                },
                status = self.cx.zygote.wait(), if self.zygote_alive => Wake::ZygoteExited(status),
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
                    let (_, stderr) = self.cx.zygote.output();
                    self.stop_dispatching(StopReason::ZygoteDied {
                        status: status.to_string(),
                        last_output: tail(&stderr, 40),
                    });
                    self.kill_workers();
                }
                Wake::Signal(name) => self.cancel(StopReason::Signal { name: name.into() }),
                Wake::Command(Some(RunCommand::Cancel)) => self.cancel(StopReason::Command {
                    name: "cancelled".into(),
                }),
                Wake::Command(Some(RunCommand::Stop)) => {
                    self.stop_dispatching(StopReason::Command {
                        name: "stopped".into(),
                    })
                }
                // The command channel closed: nobody can send one any more.
                Wake::Command(None) => self.cx.commands = None,
            }
            if self.cancelled {
                break;
            }
            if self.stop.is_some() && !self.stop_told {
                self.stop_told = true;
                self.release_all().await;
            }
        }
        self.end()
    }

    fn end(mut self) -> Result<RunEnd> {
        let waiting = self.output.flush_all();
        self.show_output(waiting);
        let accounted = self.finished + self.not_run.len();
        for id in std::mem::take(&mut self.not_run) {
            self.emit(RunEvent::NotRun { id });
        }
        if accounted != self.planned {
            self.distrust(UntrustedCause::Unaccounted {
                planned: self.planned as u64,
                results: self.finished as u64,
                not_run: (accounted - self.finished) as u64,
            });
        }
        Ok(RunEnd {
            zygote_usable: self.zygote_answers() && !self.cancelled,
            zygote_answers: self.zygote_answers(),
            stop: self.stop,
            failures: self.failures,
            untrusted: self.untrusted,
        })
    }

    fn emit(&mut self, event: RunEvent) {
        self.cx.sinks.emit(event);
    }

    fn show_output(&mut self, lines: impl IntoIterator<Item = Line>) {
        if !self.live_output {
            return;
        }
        for line in lines {
            self.emit(RunEvent::Output {
                worker: line.worker,
                test: line.test,
                line: line.text,
                partial: line.partial,
            });
        }
    }

    fn distrust(&mut self, cause: UntrustedCause) {
        self.untrusted = true;
        self.emit(RunEvent::Untrusted { cause });
    }

    fn done(&self) -> bool {
        self.workers.is_empty() && (self.queue.is_empty() || self.stop.is_some())
    }

    async fn send(&mut self, conn: ConnId, message: &Outbound<'_>) -> bool {
        self.cx.peers.send(conn, message).await
    }

    async fn fork(&mut self) -> Result<()> {
        let id = format!("gw{}", self.next_worker);
        self.next_worker += 1;
        let message = Outbound::Fork {
            worker: &id,
            count: self.worker_count,
        };
        let zygote = self.cx.peers.zygote_conn;
        if !self.send(zygote, &message).await {
            anyhow::bail!("failed to ask the zygote for a worker: its connection is gone");
        }
        let asked_at = self.clock.now();
        self.workers.insert(id, Worker::asked(asked_at));
        Ok(())
    }

    async fn on_event(&mut self, event: ConnEvent) -> Result<()> {
        match event {
            ConnEvent::Opened(conn, writer) => self.cx.peers.opened(conn, writer),
            ConnEvent::Message(conn, message) => self.on_message(conn, message).await?,
            ConnEvent::Evidence(conn, bytes) => {
                if let Some(worker) = self.worker_of(conn) {
                    worker.keep_evidence(&bytes);
                }
            }
            ConnEvent::Output(conn, bytes) => {
                let lines = self.output.receive(conn, &bytes, Instant::now());
                self.show_output(lines);
            }
            ConnEvent::Closed(conn) => self.on_closed(conn).await?,
            // A peer killed mid-write resets its connection: that is a loss
            // (settled like any other), not a protocol error.
            ConnEvent::Broken(conn, WireError::Io(_)) => self.on_closed(conn).await?,
            ConnEvent::Broken(conn, error) => {
                let from = self
                    .conns
                    .get(&conn)
                    .map_or("an unknown peer".into(), |(w, _)| format!("worker {w}"));
                self.distrust(UntrustedCause::BadMessage {
                    from,
                    error: error.to_string(),
                });
                self.on_closed(conn).await?;
            }
        }
        Ok(())
    }

    fn worker_of(&mut self, conn: ConnId) -> Option<&mut Worker> {
        let (id, _) = self.conns.get(&conn)?;
        self.workers.get_mut(id)
    }

    fn worker_name(&self, conn: ConnId) -> Option<String> {
        self.conns.get(&conn).map(|(id, _)| id.clone())
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
                test,
            } if role != Role::Zygote => {
                let Some(worker) = self.workers.get_mut(&id) else {
                    // A worker of an earlier run of the session, late: not ours.
                    return Ok(());
                };
                if role == Role::Output {
                    self.output.open(conn, id, test, Instant::now());
                    return Ok(());
                }
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
                let Some(name) = self.worker_name(conn) else {
                    return Ok(());
                };
                if let Some(worker) = self.workers.get_mut(&name) {
                    worker.running = Some(Running::new(id.clone(), since, timeout));
                }
                self.emit(RunEvent::TestStarted {
                    id,
                    worker: name,
                    attempt: 1,
                });
            }
            Inbound::Result {
                id,
                reports,
                warnings,
            } => {
                for warning in warnings {
                    let replay = warning
                        .pytest
                        .map(|raw| (warning.when.unwrap_or_else(|| "runtest".into()), raw));
                    self.emit(RunEvent::Warning {
                        nodeid: warning.nodeid,
                        message: warning.message,
                        replay,
                    });
                }
                let Some(name) = self.worker_name(conn) else {
                    return Ok(());
                };
                let Some(worker) = self.workers.get_mut(&name) else {
                    return Ok(());
                };
                let Some(position) = worker.assigned.iter().position(|a| *a == id) else {
                    self.distrust(UntrustedCause::BadMessage {
                        from: format!("worker {name}"),
                        error: format!("it reported a test it was not given: {id}"),
                    });
                    return Ok(());
                };
                worker.assigned.remove(position);
                worker.running = None;
                self.finish_test(&id, &name, reports);
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
                pid,
                code,
                signal,
            } => {
                // Matched by pid too: a late report about a worker of the
                // same name from an earlier run of the session is not ours.
                if let Some(state) = self
                    .workers
                    .get_mut(&worker)
                    .filter(|w| w.pid.is_none_or(|known| known == pid))
                {
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
            Inbound::Hello { .. } | Inbound::Collected(_) | Inbound::Reported => {
                let from = self
                    .worker_name(conn)
                    .map_or("the Python side".into(), |w| format!("worker {w}"));
                self.distrust(UntrustedCause::BadMessage {
                    from,
                    error: "an unexpected message".into(),
                });
            }
        }
        Ok(())
    }

    /// Records a test's reports, and counts its failures as pytest does.
    fn finish_test(&mut self, id: &str, worker: &str, reports: Vec<PhaseReport>) {
        let failed = reports
            .iter()
            .filter(|r| r.outcome == "failed" && r.wasxfail.is_none())
            .count() as u32;
        let result = test_result(id, worker, &reports);
        let attempts = crate::outcome::attempts_of(&reports);
        self.output.finished(worker, id);
        crate::panic::injected("result");
        self.emit(RunEvent::TestFinished {
            id: result.id,
            worker: result.worker,
            attempt: 1,
            outcome: result.outcome,
            duration_secs: result.duration_secs,
            phases: result.phases,
            longrepr: result.longrepr,
            reports,
            attempts: attempts.count,
            flaky: attempts.flaky,
        });
        self.finished += 1;
        self.failures += failed;
        if let Some(reason) = self.limits.after_failures(self.failures) {
            self.stop_dispatching(reason);
        }
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
        let stopping = self.stop.is_some();
        let Some(worker) = self.worker_of(conn) else {
            return;
        };
        let message = if ids.is_empty() {
            worker.released = true;
            Outbound::Shutdown {
                drop_pending: stopping,
                end: None,
                silent: false,
                kill_workers: false,
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

    /// Settles each lost worker whose evidence is all in.
    async fn settle_lost_workers(&mut self) -> Result<()> {
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

    async fn on_closed(&mut self, conn: ConnId) -> Result<()> {
        self.cx.peers.closed(conn);
        if self.output.is_stream(conn) {
            let last = self.output.close(conn);
            self.show_output(last);
            // A lost worker's test may have waited for the end of its output.
            self.settle_lost_workers().await?;
            return Ok(());
        }
        let Some((id, evidence)) = self.conns.remove(&conn) else {
            return Ok(());
        };
        let zygote_alive = self.zygote_alive;
        let now = self.clock.now();
        if let Some(worker) = self.workers.get_mut(&id) {
            if evidence {
                worker.evidence_open = false;
            } else {
                worker.lost_at = Some(now);
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
        // All it had to say has arrived once its connections closed (its
        // test's output too), or once it has no test left to report on.
        let output_open = worker
            .running
            .as_ref()
            .is_some_and(|running| self.output.is_open(id, &running.id));
        let heard = (worker.conn.is_none() && !worker.evidence_open && !output_open)
            || (worker.assigned.is_empty() && worker.running.is_none());
        let settled = worker.exit.is_some() && heard;
        let waited = self.clock.now().saturating_sub(lost_at);
        if !settled && self.zygote_answers() && waited < EXIT_STATUS_WAIT {
            return Ok(());
        }
        let mut worker = self.workers.remove(id).expect("checked above");
        let cause = worker.loss(self.zygote_alive);
        if let Some(running) = worker.running.take() {
            worker.assigned.retain(|a| *a != running.id);
            self.lost_test(id, &worker, running, cause);
        } else if !worker.exited_cleanly() && !self.cancelled && self.zygote_answers() {
            self.emit(RunEvent::WorkerLost {
                worker: id.to_owned(),
                pid: worker.pid,
                test: None,
                cause: cause.clone(),
            });
            self.distrust(UntrustedCause::WorkerLostOutsideTest {
                worker: id.to_owned(),
                cause,
            });
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

    /// A worker lost while running a test: the test is hung or crashed, with
    /// the evidence.
    fn lost_test(&mut self, worker_id: &str, worker: &Worker, running: Running, cause: LostCause) {
        let elapsed = self.clock.now().saturating_sub(running.since).as_secs_f64();
        let evidence = String::from_utf8_lossy(&worker.evidence);
        let output = self.output.finished(worker_id, &running.id);
        self.emit(RunEvent::WorkerLost {
            worker: worker_id.to_owned(),
            pid: worker.pid,
            test: Some(running.id.clone()),
            cause: cause.clone(),
        });
        let report = lost_test_report(
            &running.id,
            worker_id,
            worker.pid,
            &cause,
            elapsed,
            &evidence,
            &output,
        );
        self.finish_test(&running.id, worker_id, vec![report]);
    }

    async fn replace_worker(&mut self) -> Result<()> {
        if !self.zygote_alive {
            let (_, stderr) = self.cx.zygote.output();
            self.stop_dispatching(StopReason::ZygoteDied {
                status: "gone".into(),
                last_output: tail(&stderr, 40),
            });
            return Ok(());
        }
        if let Some(reason) = self.limits.before_restart(self.restarts) {
            self.stop_dispatching(reason);
            return Ok(());
        }
        self.restarts += 1;
        self.fork().await
    }

    fn stop_dispatching(&mut self, reason: StopReason) {
        if self.stop.is_some() {
            return;
        }
        self.not_run.extend(self.queue.drain());
        self.emit(RunEvent::RunStopping {
            reason: reason.clone(),
        });
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
            self.send(
                conn,
                &Outbound::Shutdown {
                    drop_pending: true,
                    end: None,
                    silent: false,
                    kill_workers: false,
                },
            )
            .await;
        }
    }

    /// Stops the run now: dispatching ends and the workers are killed.
    /// The tests the workers held, those in flight included, do not run
    /// (to their end): they are `not-run`, so the run still adds up.
    fn cancel(&mut self, reason: StopReason) {
        self.stop_dispatching(reason);
        self.cancelled = true;
        self.kill_workers();
        let mut workers: Vec<(String, Worker)> = self.workers.drain().collect();
        // In the order they were forked (gw0, gw1, ..., gw10).
        workers.sort_by_key(|(name, _)| name.trim_start_matches("gw").parse::<u32>().ok());
        for (_, mut worker) in workers {
            self.not_run.extend(worker.assigned.drain(..));
        }
    }

    async fn on_tick(&mut self) -> Result<()> {
        let waited = self.output.flush_waiting(Instant::now());
        self.show_output(waited);
        if std::mem::take(&mut self.resumed) {
            return Ok(());
        }
        let now = self.clock.now();
        if self.stop.is_none()
            && let Some(reason) = self.limits.at(now)
        {
            self.stop_dispatching(reason);
            for running in self.workers.values_mut().filter_map(|w| w.running.as_mut()) {
                running.stop_now(now);
            }
        }
        self.check_forks(now);
        let slow = self.limits.slow;
        let mut events = Vec::new();
        for (name, worker) in &mut self.workers {
            let (Some(running), Some(pid)) = (&mut worker.running, worker.pid) else {
                continue;
            };
            for action in running.check(now, slow) {
                match action {
                    Action::Slow(after_secs) => events.push(RunEvent::TestSlow {
                        id: running.id.clone(),
                        worker: name.clone(),
                        after_secs,
                    }),
                    Action::Dump => {
                        worker.condemned = true;
                        let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
                    }
                    Action::Terminate => {
                        self.cx.descendants.stop_test(pid, &running.id, TERM_GRACE)
                    }
                }
            }
        }
        for event in events {
            self.emit(event);
        }
        self.check_leftovers();
        self.settle_lost_workers().await?;
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
        let pid = self.cx.zygote.pid;
        self.stop_dispatching(StopReason::ZygoteStuck {
            pid,
            stopped: matches!(process_state(pid), Some('T' | 't')),
            waited_secs: FORK_DEADLINE.as_secs_f64(),
        });
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
        let leaked = self.cx.descendants.check(pids, running);
        for leftover in leaked {
            self.emit(RunEvent::LeakedProcess {
                test: leftover.test().map(str::to_owned),
                pid: leftover.pid,
                command: leftover.command,
            });
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
    }
}

/// The next command, or never when there is no channel.
async fn next_command(
    commands: Option<&mut mpsc::UnboundedReceiver<RunCommand>>,
) -> Option<RunCommand> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
