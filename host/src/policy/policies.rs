//! [`Policies`]: the three policy slots the engine calls, loaded with the
//! built-in components embedded in the binary.

use std::path::PathBuf;

use super::PolicyError;
use super::engine::PolicyEngine;
use super::output::OutputDir;
use super::quarantine::Quarantine;
use super::reporter::Reporter;
use super::scheduler::Scheduler;
use crate::model::{Plan, PlanContext, RunEvent, TestCase, TestHistory, Verdict};

/// The built-in policies, built from plugins/ by build.rs.
const SCHEDULER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/scheduler.wasm"));
pub(super) const REPORTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reporter.wasm"));
const QUARANTINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/quarantine.wasm"));

pub struct PolicyOptions {
    /// Where the default reporter writes JUnit XML; default `<state_dir>/junit.xml`.
    pub junitxml: Option<PathBuf>,
    /// Project state dir, e.g. `<rootdir>/.runner`.
    pub state_dir: PathBuf,
    /// Where compiled components are cached (None = no disk cache).
    pub cache_dir: Option<PathBuf>,
}

/// The loaded policies. Each runs in its own sandboxed store; calls are
/// synchronous and bounded by a deadline.
pub struct Policies {
    scheduler: Scheduler,
    reporter: Reporter,
    quarantine: Quarantine,
    /// Declared last so the engine's ticker stops after the stores are gone.
    _engine: PolicyEngine,
}

impl Policies {
    pub fn load(opts: &PolicyOptions) -> Result<Policies, PolicyError> {
        let engine = PolicyEngine::new(opts.cache_dir.clone())?;
        let junitxml = opts
            .junitxml
            .clone()
            .unwrap_or_else(|| opts.state_dir.join("junit.xml"));
        let (Some(dir), Some(name)) = (junitxml.parent(), junitxml.file_name()) else {
            return Err(PolicyError::JunitPath(junitxml));
        };
        // `report.xml` has the empty parent: the current directory.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_owned()
        };
        let output = OutputDir::open(&dir).map_err(|source| PolicyError::OutputDir {
            path: dir.clone(),
            source,
        })?;
        let reporter_options = [(
            "junitxml-name".to_owned(),
            name.to_string_lossy().into_owned(),
        )];
        Ok(Policies {
            scheduler: Scheduler::load(&engine, "builtin:scheduler", SCHEDULER, &[])?,
            reporter: Reporter::load(
                &engine,
                "builtin:reporter",
                REPORTER,
                output,
                &reporter_options,
            )?,
            quarantine: Quarantine::load(&engine, "builtin:quarantine", QUARANTINE, &[])?,
            _engine: engine,
        })
    }

    /// The scheduler's plan, checked to cover every test exactly once.
    pub fn plan(
        &mut self,
        ctx: &PlanContext,
        tests: &[TestCase],
        history: &[TestHistory],
    ) -> Result<Plan, PolicyError> {
        self.scheduler.plan(ctx, tests, history)
    }

    /// Passes one event to every reporter.
    pub fn report(&mut self, event: &RunEvent) -> Result<(), PolicyError> {
        self.reporter.on_event(event)
    }

    /// Tells every reporter the run is over, so it writes its files.
    pub fn finish(&mut self) -> Result<(), PolicyError> {
        self.reporter.finish()
    }

    /// The quarantine policy's verdicts, for the tests whose state changes.
    pub fn decide(&mut self, history: &[TestHistory]) -> Result<Vec<Verdict>, PolicyError> {
        self.quarantine.decide(history)
    }
}
