//! A session: the warm zygote (one Python process that imported the
//! project and ran pytest's collection once), the collected tests and the
//! loaded policies. It starts any number of runs over a selection of its
//! tests, each with fresh workers forked from the zygote, and outlives them
//! (watch mode reruns in the same session). Starting and closing it owns
//! the run's processes: the guardian, the zygote, whatever tests leave
//! behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::connections::{ConnEvent, Peers, accept_connections};
use crate::debugger::{Foreground, TerminalFds};
use crate::descendants::Descendants;
use crate::events::{RunEvent, SCHEMA_VERSION, StopReason};
use crate::exit_code;
use crate::guardian::Guardian;
use crate::model::PlanContext;
use crate::outcome::signal_name;
use crate::policy::Policies;
use crate::report::{RunLogFile, Sinks, TerminalSink};
use crate::run::{Limits, Run, RunCommand, RunContext, RunPlan};
use crate::settings::{self, Layered};
use crate::signals::StopSignals;
use crate::state::History;
use crate::ui::Verbosity;
use crate::wire::{Collected, Inbound, Outbound, OutputMode, RunEnd};
use crate::workers::Workers;
use crate::zygote::{NO_PYTEST_EXIT, Output, Zygote, ZygoteSpec};

/// Everything a session needs, resolved from the command line and the
/// config file.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub python: PathBuf,
    /// `-n` from runner's command line and config file (pytest's own `-n`
    /// comes with the collection; `settings::worker_count` decides).
    pub workers: Layered<Workers>,
    pub pytest_args: Vec<String>,
    pub junitxml: Option<PathBuf>,
    pub run_log: Option<PathBuf>,
    pub verbosity: Verbosity,
    /// Timeouts, slow notices (maxfail and the ini timeout come from
    /// pytest's config).
    pub limits: Limits,
    /// Replacement workers allowed [default: 4 × workers, like xdist].
    pub max_worker_restart: Layered<u32>,
    /// Also write the run's events as JSON lines on stdout.
    pub json: bool,
}

/// Which collected tests a run runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    /// These node ids, in collection order (unknown ids are ignored).
    Ids(Vec<String>),
}

/// How a run of a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub exit_code: i32,
    /// The tests that failed (pytest's "last failed" from this run).
    pub failed: Vec<String>,
    /// Stopped by Ctrl-C or SIGTERM: the user wants out.
    pub interrupted: bool,
}

/// How starting a session ended.
pub enum Started {
    /// Collection is done; runs can start.
    Ready(Box<Session>),
    /// pytest ended without a run (usage error, `--help`, `--collect-only`,
    /// a conftest that fails to import, an interruption): its exit code,
    /// and the policies back for another try.
    Ended(i32, Box<Policies>),
    /// Ctrl-C or SIGTERM came during collection.
    Interrupted,
}

pub struct Session {
    settings: SessionSettings,
    /// Kept open for the socket; removed with the session.
    _run_dir: tempfile::TempDir,
    guardian: Option<Guardian>,
    zygote: Zygote,
    descendants: Descendants,
    peers: Peers,
    signals: StopSignals,
    collected: Arc<Collected>,
    policies: Option<Policies>,
    history_warning: bool,
    started: Instant,
    /// Seconds from runner's start to the end of collection.
    collected_after: f64,
    /// The id of the session, and of its first run.
    id: String,
    runs: u32,
    /// The zygote can fork for another run.
    usable: bool,
    /// The zygote answers: it can write pytest's report, and end pytest's
    /// session (its plugins finish, its cache is saved).
    answers: bool,
}

impl Session {
    /// Starts the guardian and the zygote, and waits for pytest's
    /// collection. The policies are loaded and configured before.
    pub async fn start(settings: SessionSettings, policies: Policies) -> Result<Started> {
        let started = Instant::now();
        let id = new_run_id();
        let run_dir = tempfile::Builder::new()
            .prefix("runner-")
            .tempdir()
            .context("failed to create a temporary directory")?;
        let socket = run_dir.path().join("socket");
        let listener = UnixListener::bind(&socket).context("failed to listen on a unix socket")?;
        let guardian = Guardian::start(&id)
            .inspect_err(|error| {
                crate::errln!(
                    "warning: could not start runner's guardian process ({error}); if runner is killed, processes of this run may outlive it"
                )
            })
            .ok();
        // Only a worker under a debugger uses it; pytest's options say
        // whether there is one once it has parsed them.
        let terminal = TerminalFds::of_runner(settings.json);
        let mut zygote = Zygote::spawn(&ZygoteSpec {
            python: &settings.python,
            run_dir: run_dir.path(),
            socket: &socket,
            run_id: &id,
            pytest_args: &settings.pytest_args,
            output: if settings.json {
                Output::Stderr
            } else {
                Output::Stdout
            },
            terminal: terminal.as_ref(),
            cpu_mode: settings.workers.runners().and_then(Workers::cpu_mode),
        })
        .with_context(|| format!("failed to start Python ({})", settings.python.display()))?;
        let mut descendants = Descendants::new(
            zygote.pid,
            guardian.as_ref().map(Guardian::pid),
            run_dir.path(),
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(accept_connections(listener, events_tx));
        let mut peers = Peers::new(events);
        let mut signals = StopSignals::new()?;
        let collected = collect(&settings, started, &mut zygote, &mut peers, &mut signals).await;
        let collected = match collected {
            Ok(Ok(collected)) => collected,
            Ok(Err(ended)) => {
                abandon(&mut zygote, &mut descendants, guardian).await;
                return Ok(match ended {
                    Collection::Ended(code) => Started::Ended(code, Box::new(policies)),
                    Collection::Interrupted => Started::Interrupted,
                });
            }
            Err(error) => {
                abandon(&mut zygote, &mut descendants, guardian).await;
                return Err(error);
            }
        };
        Ok(Started::Ready(Box::new(Session {
            settings,
            _run_dir: run_dir,
            guardian,
            zygote,
            descendants,
            peers,
            signals,
            collected: Arc::new(collected),
            policies: Some(policies),
            history_warning: false,
            started,
            collected_after: started.elapsed().as_secs_f64(),
            id,
            runs: 0,
            usable: true,
            answers: true,
        })))
    }

    /// The collected tests' ids, in pytest's order.
    pub fn test_ids(&self) -> impl Iterator<Item = &str> {
        self.collected.tests.iter().map(|t| t.id.as_str())
    }

    /// Waits for Ctrl-C or SIGTERM between runs; returns its name.
    pub async fn stop_signal(&mut self) -> &'static str {
        self.signals.recv().await
    }

    /// pytest's rootdir.
    pub fn rootdir(&self) -> &str {
        &self.collected.rootdir
    }

    /// Whether another run can start (the zygote still forks).
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Runs the selected tests with fresh workers and reports them; returns
    /// the run's exit code. `commands` can stop or cancel it from outside.
    /// The session stays for more runs.
    pub async fn run(
        &mut self,
        selection: &Selection,
        commands: Option<&mut mpsc::UnboundedReceiver<RunCommand>>,
    ) -> Result<RunOutcome> {
        self.run_inner(selection, commands, false).await
    }

    /// The session's last run: the session ends with it, and what it leaves
    /// (processes killed, pytest's cache saved) is reported in this run.
    pub async fn run_last(mut self, selection: &Selection) -> Result<RunOutcome> {
        let result = self.run_inner(selection, None, true).await;
        // Whatever happened, nothing of the session outlives it.
        self.zygote.stop().await;
        for note in self.descendants.sweep().await.notes() {
            crate::errln!("warning: {note}");
        }
        if let Some(guardian) = self.guardian.take() {
            guardian.dismiss();
        }
        result
    }

    async fn run_inner(
        &mut self,
        selection: &Selection,
        commands: Option<&mut mpsc::UnboundedReceiver<RunCommand>>,
        closing: bool,
    ) -> Result<RunOutcome> {
        self.runs += 1;
        let run_id = match self.runs {
            1 => self.id.clone(),
            n => format!("{}-{n}", self.id),
        };
        let run_started = if self.runs == 1 {
            self.started
        } else {
            Instant::now()
        };
        let collected = self.collected.clone();
        let state_dir = PathBuf::from(&collected.rootdir).join(".runner");
        let tests: Vec<_> = match selection {
            Selection::All => collected.tests.clone(),
            Selection::Ids(ids) => {
                let wanted: std::collections::HashSet<&str> =
                    ids.iter().map(String::as_str).collect();
                collected
                    .tests
                    .iter()
                    .filter(|t| wanted.contains(t.id.as_str()))
                    .cloned()
                    .collect()
            }
        };
        // Under a debugger (--pdb, --trace) the run has one worker, attached
        // to runner's terminal (see debugger.rs).
        let debugger = collected.debugger;
        let workers = match debugger {
            Some(_) => 1,
            None => settings::worker_count(&self.settings.workers, &collected.xdist, tests.len()),
        };
        let mut terminal = TerminalSink::new(self.settings.verbosity);
        if self.settings.json {
            terminal.report_to_stderr();
        }
        // pytest-xdist's options runner does not honour: said once, as the
        // session starts (they come from its collection).
        if self.runs == 1 {
            for warning in collected.xdist.warnings() {
                terminal.warn(&warning);
            }
        }
        let junitxml = self
            .settings
            .junitxml
            .as_ref()
            .map(std::path::absolute)
            .transpose()?;
        let mut policies = self.policies.take().context("the policies are in use")?;
        for error in policies.open_outputs(&state_dir, junitxml.as_deref()) {
            terminal.warn(&format!("{error}; its report is not written this run"));
        }
        let history = History::load(&state_dir, &mut |warning| {
            if !self.history_warning {
                terminal.warn(&warning);
            }
        });
        self.history_warning = true;
        let log = RunLogFile::create(
            &state_dir,
            &run_id,
            self.settings.run_log.as_deref(),
            &mut |warning| terminal.warn(&warning),
        );
        let plan_history = history.for_tests(tests.iter().map(|t| t.id.as_str()));
        let stopped = collected.interrupted.is_some();
        let plan = if stopped || tests.is_empty() {
            Default::default()
        } else {
            policies
                .plan(&PlanContext { workers }, &tests, &plan_history)
                .context("the scheduler failed")?
        };
        let notices: Vec<String> = policies.take_warnings();
        let mut sinks = Sinks::new(
            log,
            self.settings.json,
            terminal,
            history,
            policies,
            self.peers.zygote_link(),
        );
        let batches: Vec<Vec<String>> =
            plan.batches.into_iter().filter(|b| !b.is_empty()).collect();
        let planned: usize = batches.iter().map(Vec::len).sum();
        sinks.emit(RunEvent::RunStarted {
            schema: SCHEMA_VERSION,
            run_id,
            runner: env!("CARGO_PKG_VERSION").to_owned(),
            rootdir: collected.rootdir.clone(),
            python: collected.python.clone(),
            pytest: collected.pytest.clone(),
            tests: tests.len() as u64,
            workers,
            deselected: collected.deselected,
            collected_after_secs: self.collected_after,
            plan: batches.clone(),
            debugger: debugger.map(|d| d.option().to_owned()),
        });
        // Said once per session: they belong to its collection.
        if self.runs == 1 {
            for error in &collected.errors {
                sinks.emit(RunEvent::CollectionError {
                    id: error.id.clone(),
                    longrepr: error.longrepr.clone(),
                    message: error.message.clone(),
                });
            }
            for warning in &collected.warnings {
                sinks.emit(RunEvent::Warning {
                    nodeid: warning.nodeid.clone(),
                    message: warning.message.clone(),
                    // The zygote's own: its pytest has it already.
                    replay: None,
                });
            }
        }
        for message in notices {
            sinks.emit(RunEvent::Notice { message });
        }
        for (id, reason) in plan.deselected {
            sinks.emit(RunEvent::Deselected { id, reason });
        }
        let end = if let Some(reason) = &collected.interrupted {
            // pytest stopped on collection errors: nothing runs.
            sinks.emit(RunEvent::RunStopping {
                reason: StopReason::Collection {
                    reason: reason.clone(),
                },
            });
            None
        } else if planned == 0 {
            None
        } else {
            let mut timeouts: HashMap<String, f64> = tests
                .iter()
                .filter_map(|t| Some((t.id.clone(), t.timeout?)))
                .collect();
            let mut limits = Limits {
                timeout: self.settings.limits.timeout.or(collected.timeout),
                maxfail: collected.maxfail,
                max_worker_restart: settings::max_worker_restart(
                    &self.settings.max_worker_restart,
                    &collected.xdist,
                    workers,
                ),
                ..self.settings.limits.clone()
            };
            // A test may wait at the debugger's prompt as long as the person
            // at it likes: no time limit of any kind.
            let _foreground = debugger.is_some().then(|| {
                timeouts.clear();
                limits.timeout = None;
                limits.global_timeout = None;
                limits.slow = None;
                Foreground::lend()
            });
            let run = Run::new(
                RunContext {
                    peers: &mut self.peers,
                    zygote: &mut self.zygote,
                    descendants: &mut self.descendants,
                    signals: &mut self.signals,
                    sinks: &mut sinks,
                    commands,
                    started: run_started,
                },
                RunPlan {
                    workers,
                    batches,
                    timeouts,
                    limits,
                    live_output: collected.output == OutputMode::Live,
                },
            );
            let end = run.run().await?;
            self.usable = end.zygote_usable;
            self.answers = end.zygote_answers;
            Some(end)
        };
        // pytest's cache learns what this run failed and cleared (it saves
        // it when the zygote exits).
        if self.usable {
            let last_failed = sinks.last_failed();
            let message = Outbound::LastFailed {
                failed: &last_failed.failed(),
                passed: &last_failed.passed(),
            };
            self.peers.to_zygote(&message).await;
        }
        // pytest's report of the run: the zygote writes it, at the end of
        // pytest's session if this is the session's last run.
        let notes = sinks.terminal.report_notes();
        let (stopped, session_stop) = sinks.pytest.stopped();
        let session_stop = session_stop.cloned();
        let run_end = RunEnd {
            notes: &notes,
            stopped: stopped.as_deref(),
            session_stop: session_stop.as_ref(),
            untrusted: end.as_ref().is_some_and(|end| end.untrusted),
        };
        let reported = if closing || !self.usable {
            self.end_processes(&mut sinks, &run_end).await
        } else {
            self.report_run(&run_end).await
        };
        if !reported || !sinks.pytest.connected() {
            sinks.terminal.report_instead_of_pytest();
        }
        let collection_errors = !collected.errors.is_empty() && self.runs == 1;
        let interrupted = collected.interrupted.is_some();
        let duration = run_started.elapsed().as_secs_f64();
        let code = sinks.finish(duration, |verdict| {
            exit_code::of_run(&exit_code::RunVerdict {
                collection_interrupted: interrupted,
                collection_errors,
                end: end.as_ref(),
                reporter_failed: verdict.reporter_failed,
            })
        });
        let failed = sinks.last_failed().failed();
        self.policies = Some(sinks.into_policies());
        Ok(RunOutcome {
            exit_code: code,
            failed,
            interrupted: end
                .as_ref()
                .is_some_and(|end| matches!(end.stop, Some(StopReason::Signal { .. }))),
        })
    }

    /// Ends the session without another run: the zygote saves pytest's
    /// cache and exits, and whatever the tests left running is killed.
    /// Gives the policies back, for a new session.
    pub async fn close(mut self) -> Option<Policies> {
        let mut quiet = Vec::new();
        self.stop_zygote(&mut quiet, None).await;
        self.zygote.stop().await;
        for note in self.descendants.sweep().await.notes() {
            crate::errln!("warning: {note}");
        }
        if let Some(guardian) = self.guardian.take() {
            guardian.dismiss();
        }
        self.policies.take()
    }

    /// Asks a zygote that answers to finish: pytest's session ends, with
    /// the report of `last_run` (or none when every run was reported),
    /// its plugins finish and its cache is saved. One that does not exit
    /// within 30 s is killed, with a notice. Returns whether it ended as
    /// asked.
    async fn stop_zygote(
        &mut self,
        notices: &mut Vec<String>,
        last_run: Option<&RunEnd<'_>>,
    ) -> bool {
        if !self.answers {
            return false;
        }
        // A run that was cancelled (or whose zygote can't fork) may leave
        // a worker the run never heard of: forked as it was cancelled.
        let kill_workers = !self.usable;
        self.usable = false;
        self.answers = false;
        self.peers
            .to_zygote(&Outbound::Shutdown {
                drop_pending: false,
                end: last_run.copied(),
                silent: last_run.is_none(),
                kill_workers,
            })
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.zygote.wait()).await {
            // Asked, or on its own (pytest stopped on collection errors):
            // pytest ended its session and wrote its report.
            Ok(Ok(status)) => status.code().is_some(),
            Ok(Err(_)) => false,
            Err(_) => {
                notices
                    .push("the zygote did not exit within 30s of the run's end; killed it".into());
                false
            }
        }
    }

    /// A run that is not the session's last: the zygote writes pytest's
    /// summary of it. Returns whether it did (within 30 s).
    async fn report_run(&mut self, run_end: &RunEnd<'_>) -> bool {
        if !self.peers.to_zygote(&Outbound::RunEnd(*run_end)).await {
            return false;
        }
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match self.peers.events.recv().await {
                    Some(ConnEvent::Message(conn, Inbound::Reported))
                        if conn == self.peers.zygote_conn =>
                    {
                        return true;
                    }
                    Some(ConnEvent::Opened(conn, writer)) => self.peers.opened(conn, writer),
                    Some(ConnEvent::Closed(conn)) if conn == self.peers.zygote_conn => {
                        return false;
                    }
                    Some(_) => {}
                    None => return false,
                }
            }
        })
        .await;
        waited.unwrap_or(false)
    }

    /// The session ends with this run, or the zygote can't fork again
    /// (dead, stuck, or the run was cancelled): the zygote and whatever the
    /// run left running go now, reported in this run. Returns whether the
    /// zygote wrote pytest's report.
    async fn end_processes(&mut self, sinks: &mut Sinks, run_end: &RunEnd<'_>) -> bool {
        let mut notices = Vec::new();
        let reported = self.stop_zygote(&mut notices, Some(run_end)).await;
        for message in notices {
            sinks.emit(RunEvent::Notice { message });
        }
        self.zygote.stop().await;
        let swept = self.descendants.sweep().await;
        for leftover in &swept.killed {
            sinks.emit(RunEvent::LeftoverKilled {
                test: leftover.test().map(str::to_owned),
                origin: leftover.origin.to_string(),
                pid: leftover.pid,
                command: leftover.command.clone(),
            });
        }
        for message in swept.notes() {
            sinks.emit(RunEvent::Notice { message });
        }
        reported
    }
}

/// However collection ended without a session, none of its processes
/// outlives it.
async fn abandon(zygote: &mut Zygote, descendants: &mut Descendants, guardian: Option<Guardian>) {
    zygote.stop().await;
    for note in descendants.sweep().await.notes() {
        crate::errln!("warning: {note}");
    }
    if let Some(guardian) = guardian {
        guardian.dismiss();
    }
}

/// How collection ended without tests to run.
enum Collection {
    /// pytest exited (its output shown) with this code.
    Ended(i32),
    /// A stop signal came.
    Interrupted,
}

/// Waits for the zygote's collection.
async fn collect(
    settings: &SessionSettings,
    started: Instant,
    zygote: &mut Zygote,
    peers: &mut Peers,
    signals: &mut StopSignals,
) -> Result<Result<Collected, Collection>> {
    // The global timeout covers the whole run, collection included (a
    // conftest can loop forever).
    let deadline = settings
        .limits
        .global_timeout
        .map(|secs| tokio::time::Instant::from_std(started) + Duration::from_secs_f64(secs));
    loop {
        tokio::select! {
            event = peers.events.recv() => match event {
                Some(ConnEvent::Opened(conn, writer)) => peers.opened(conn, writer),
                Some(ConnEvent::Message(conn, Inbound::Collected(collected))) => {
                    peers.set_zygote(conn);
                    return Ok(Ok(*collected));
                }
                Some(
                    ConnEvent::Message(..)
                    | ConnEvent::Closed(_)
                    | ConnEvent::Evidence(..)
                    | ConnEvent::Output(..),
                ) => {}
                Some(ConnEvent::Broken(_, error)) => anyhow::bail!("the zygote sent a bad message: {error}"),
                None => anyhow::bail!("the connection listener stopped"),
            },
            status = zygote.wait() => {
                let status = status?;
                let code = status.code().unwrap_or(exit_code::INTERRUPTED);
                if code == NO_PYTEST_EXIT {
                    crate::errln!(
                        "error: pytest is not installed for {}\n  hint: install it with `{} -m pip install pytest`, or choose another interpreter with --python",
                        settings.python.display(), settings.python.display()
                    );
                    return Ok(Err(Collection::Ended(exit_code::USAGE_ERROR)));
                }
                if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
                    crate::errln!(
                        "error: Python crashed during collection: killed by {}\n  (its output is above)",
                        signal_name(signal)
                    );
                    return Ok(Err(Collection::Ended(exit_code::INTERRUPTED)));
                }
                return Ok(Err(Collection::Ended(code)));
            }
            name = signals.recv() => {
                zygote.kill_all();
                let _ = tokio::time::timeout(Duration::from_secs(5), zygote.wait()).await;
                crate::errln!("Interrupted during collection ({name})");
                return Ok(Err(Collection::Interrupted));
            }
            _ = sleep_until_deadline(deadline) => {
                let secs = settings.limits.global_timeout.unwrap_or_default();
                zygote.kill_all();
                let _ = tokio::time::timeout(Duration::from_secs(5), zygote.wait()).await;
                crate::errln!(
                    "error: the global timeout of {secs}s was reached during collection; no test ran\n  hint: pytest's collection (importing the test modules and conftest files) did not finish in time: run `pytest --collect-only` to see where it stops, or raise --global-timeout"
                );
                return Ok(Err(Collection::Ended(exit_code::INTERRUPTED)));
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sortable and unique: seconds since the epoch, then the pid; a later
/// session of the same process (watch mode) adds its number, since two
/// sessions can start within a second. (The id names the run logs, and
/// tells the guardian and `testrun_uid` one session from another.)
fn new_run_id() -> String {
    static SESSIONS: AtomicU32 = AtomicU32::new(0);
    let session = SESSIONS.fetch_add(1, Ordering::Relaxed) + 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!("{}-{}", now.as_secs(), std::process::id());
    match session {
        1 => id,
        n => format!("{id}.{n}"),
    }
}

/// Runs one session with one run of every collected test: what `runner`
/// does by default. Returns the exit code.
pub async fn run_once(settings: SessionSettings, policies: Policies) -> Result<i32> {
    match Session::start(settings, policies).await? {
        Started::Ready(session) => Ok(session.run_last(&Selection::All).await?.exit_code),
        Started::Ended(code, _) => Ok(code),
        Started::Interrupted => Ok(exit_code::INTERRUPTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_of_a_process_has_its_own_id() {
        let ids: Vec<String> = (0..3).map(|_| new_run_id()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        let pid = std::process::id().to_string();
        assert!(ids.iter().all(|id| id.contains(&pid)), "{ids:?}");
    }
}
