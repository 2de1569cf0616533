//! [`Policies`]: the three policy slots the engine calls. Loading picks the
//! components (see `catalog`), instantiates each in its own sandboxed store
//! and configures it; the calls then apply the failure semantics:
//!
//! - a scheduler that fails (error, trap, deadline, invalid plan) is named
//!   in a warning and the built-in scheduler plans instead;
//! - a reporter that fails is named in an error, dropped for the rest of
//!   the run (a trapped instance can't be entered again), and the other
//!   reporters carry on; the caller makes the run non-zero;
//! - a quarantine policy that fails changes nothing (the caller warns).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::PolicyError;
use super::SandboxLimits;
use super::catalog::{self, Candidate, PluginInfo, Slot};
use super::engine::PolicyEngine;
use super::output::OutputDir;
use super::quarantine::Quarantine;
use super::reporter::Reporter;
use super::scheduler::Scheduler;
use crate::model::{Plan, PlanContext, ReporterEvent, TestCase, TestHistory, Verdict};

/// One `--policy-opt NAME.KEY=VALUE` (or a config-file entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOption {
    pub plugin: String,
    pub key: String,
    pub value: String,
}

/// Everything that decides which policies run and how.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// Components given with `--policy`, in order.
    pub policies: Vec<PathBuf>,
    /// The project's plugins directory; every `*.wasm` in it is loaded.
    pub plugins_dir: Option<PathBuf>,
    /// Options for the components, in order (a later one for the same key wins).
    pub options: Vec<PolicyOption>,
    /// Where the default reporter writes JUnit XML (absolute); default
    /// `<state dir>/junit.xml`.
    pub junitxml: Option<PathBuf>,
    pub limits: SandboxLimits,
    /// Where compiled components are cached (None = no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// The file holding the key cache entries are verified with; default
    /// `key` in the cache directory (see `cache`).
    pub cache_key: Option<PathBuf>,
}

/// The loaded policies. Each runs in its own sandboxed store; calls are
/// synchronous for the caller (from inside a multi-threaded tokio runtime
/// or outside any), each bounded by the deadline and by what is left of the
/// policy's time budget for the run.
pub struct Policies {
    scheduler: Scheduler,
    /// Whether `scheduler` is the built-in one (nothing to fall back to).
    builtin_scheduler: bool,
    reporters: Vec<Slotted<Reporter>>,
    quarantine: Quarantine,
    infos: Vec<PluginInfo>,
    /// What the caller should tell the user (a fallback, a replaced plugin).
    warnings: Vec<String>,
    /// Declared last so the engine's ticker stops after the stores are gone.
    engine: PolicyEngine,
}

/// A reporter and whether it is still in the run.
struct Slotted<R> {
    policy: R,
    name: String,
    failed: bool,
}

impl Policies {
    /// The policies `config` selects, without instantiating them: what
    /// `runner plugins` shows.
    pub fn list(config: &PolicyConfig) -> Result<Vec<PluginInfo>, PolicyError> {
        let engine = PolicyEngine::new(
            config.cache_dir.clone(),
            config.cache_key.clone(),
            config.limits,
        )?;
        let selection = catalog::select(&engine, &config.policies, config.plugins_dir.as_deref())?;
        Ok(selection.infos())
    }

    /// Picks, compiles (or loads from the cache), instantiates and
    /// configures the policies. Reporters can't write until
    /// [`Policies::open_outputs`].
    pub fn load(config: &PolicyConfig) -> Result<Policies, PolicyError> {
        let engine = PolicyEngine::new(
            config.cache_dir.clone(),
            config.cache_key.clone(),
            config.limits,
        )?;
        let selection = catalog::select(&engine, &config.policies, config.plugins_dir.as_deref())?;
        let infos = selection.infos();
        let mut options = options_by_plugin(&config.options, &infos)?;
        if let Some(name) = config.junitxml.as_deref().and_then(Path::file_name) {
            options
                .entry("builtin:reporter".to_owned())
                .or_default()
                .insert(0, ("junitxml-name".into(), name.to_string_lossy().into()));
        }
        let mut opts = |name: &str| options.remove(name).unwrap_or_default();

        let scheduler = load_scheduler(
            &engine,
            &selection.scheduler,
            &opts(&selection.scheduler.info.name),
        )?;
        let mut reporters = Vec::new();
        for candidate in &selection.reporters {
            let name = candidate.info.name.clone();
            let policy = Reporter::load(&engine, &name, candidate, &opts(&name))?;
            reporters.push(Slotted {
                policy,
                name,
                failed: false,
            });
        }
        let quarantine = Quarantine::load(
            &engine,
            &selection.quarantine.info.name,
            &selection.quarantine,
            &opts(&selection.quarantine.info.name),
        )?;
        Ok(Policies {
            scheduler,
            builtin_scheduler: selection.scheduler.info.source == catalog::Source::Embedded,
            reporters,
            quarantine,
            infos,
            warnings: selection.notes,
            engine,
        })
    }

    /// What was loaded, scheduler first, then reporters, then quarantine.
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.infos
    }

    /// Sends the plugins' log lines (and their stdout/stderr) to `sink`
    /// instead of stderr.
    pub fn set_log_sink(&self, sink: Box<dyn FnMut(&str) + Send>) {
        self.engine.log.set(sink);
    }

    /// Warnings for the user since the last call: a scheduler that failed
    /// and was replaced by the default, a plugin replaced by another.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Opens each reporter's output directory: the default reporter's is the
    /// JUnit XML file's directory (default `state_dir`), any other's is
    /// `<state_dir>/reports/<name>`. A reporter whose directory can't be
    /// opened (a read-only project) is dropped from the run; the errors say
    /// which directory and why, for the caller to show.
    pub fn open_outputs(&mut self, state_dir: &Path, junitxml: Option<&Path>) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        for r in &mut self.reporters {
            if let Err(error) = Self::open_output(r, state_dir, junitxml) {
                r.failed = true;
                errors.push(error);
            }
        }
        errors
    }

    fn open_output(
        r: &mut Slotted<Reporter>,
        state_dir: &Path,
        junitxml: Option<&Path>,
    ) -> Result<(), PolicyError> {
        let dir = if r.name == "builtin:reporter" {
            match junitxml {
                Some(path) => match (path.parent(), path.file_name()) {
                    // `report.xml` has the empty parent: the current directory.
                    (Some(p), Some(_)) if p.as_os_str().is_empty() => PathBuf::from("."),
                    (Some(p), Some(_)) => p.to_owned(),
                    _ => return Err(PolicyError::JunitPath(path.to_owned())),
                },
                None => state_dir.to_owned(),
            }
        } else {
            report_dir(state_dir, &r.name)?
        };
        let output = OutputDir::open(&dir).map_err(|source| PolicyError::OutputDir {
            path: dir.clone(),
            source,
        })?;
        r.policy.set_output(output);
        Ok(())
    }

    /// The scheduler's plan, checked to cover every test exactly once. If a
    /// third-party scheduler fails, the built-in one plans instead and a
    /// warning says why.
    pub fn plan(
        &mut self,
        ctx: &PlanContext,
        tests: &[TestCase],
        history: &[TestHistory],
    ) -> Result<Plan, PolicyError> {
        match self.scheduler.plan(ctx, tests, history) {
            Ok(plan) => Ok(plan),
            Err(error) if !self.builtin_scheduler => {
                self.warnings.push(format!(
                    "scheduler failed, the default scheduler plans this run instead: {error}"
                ));
                let candidate = catalog::embedded(&self.engine, Slot::Scheduler)?;
                self.scheduler = load_scheduler(&self.engine, &candidate, &[])?;
                self.builtin_scheduler = true;
                self.scheduler.plan(ctx, tests, history)
            }
            Err(error) => Err(error),
        }
    }

    /// Passes one event to every reporter still in the run. A reporter that
    /// fails is dropped for the rest of the run; its error is returned once.
    pub fn report(&mut self, event: &ReporterEvent) -> Result<(), PolicyError> {
        self.each_reporter(|r| r.on_event(event))
    }

    /// Tells every reporter still in the run that the run is over, so it
    /// writes its files.
    pub fn finish(&mut self) -> Result<(), PolicyError> {
        self.each_reporter(Reporter::finish)
    }

    fn each_reporter(
        &mut self,
        mut f: impl FnMut(&mut Reporter) -> Result<(), PolicyError>,
    ) -> Result<(), PolicyError> {
        let mut errors = Vec::new();
        for r in self.reporters.iter_mut().filter(|r| !r.failed) {
            if let Err(error) = f(&mut r.policy) {
                r.failed = true;
                errors.push(error);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(PolicyError::Many(errors)),
        }
    }

    /// The quarantine policy's verdicts, for the tests whose state changes.
    pub fn decide(&mut self, history: &[TestHistory]) -> Result<Vec<Verdict>, PolicyError> {
        self.quarantine.decide(history)
    }
}

/// `<state_dir>/reports/<name>`, for a name that is one ordinary path
/// component (catalog refuses any other, this makes sure).
fn report_dir(state_dir: &Path, name: &str) -> Result<PathBuf, PolicyError> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(part)), None) => {
            Ok(state_dir.join("reports").join(part))
        }
        _ => Err(PolicyError::BadName {
            path: super::text::safe(name),
            why: "is not a plain file name".into(),
        }),
    }
}

fn load_scheduler(
    engine: &PolicyEngine,
    candidate: &Candidate,
    options: &[(String, String)],
) -> Result<Scheduler, PolicyError> {
    Scheduler::load(engine, &candidate.info.name, candidate, options)
}

/// Groups options by plugin, checking each names a loaded plugin.
fn options_by_plugin(
    options: &[PolicyOption],
    infos: &[PluginInfo],
) -> Result<BTreeMap<String, Vec<(String, String)>>, PolicyError> {
    let mut by_plugin: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for o in options {
        if !infos.iter().any(|i| i.name == o.plugin) {
            return Err(PolicyError::UnknownPlugin {
                option: format!("{}.{}={}", o.plugin, o.key, o.value),
                plugin: o.plugin.clone(),
                loaded: infos
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let list = by_plugin.entry(o.plugin.clone()).or_default();
        // A later value for the same key (the command line after the
        // config file) replaces the earlier one.
        list.retain(|(k, _)| *k != o.key);
        list.push((o.key.clone(), o.value.clone()));
    }
    Ok(by_plugin)
}
