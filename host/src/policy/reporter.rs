//! The reporter slot: feeds run events to the component and lets it write
//! into its own output directory.

use wasmtime::Store;
use wasmtime::component::HasSelf;

use super::PolicyError;
use super::bindings::{self, types};
use super::catalog::Candidate;
use super::engine::{PluginState, PolicyEngine, call};
use super::output::OutputDir;
use crate::model::{ReporterEvent, TestResult};

pub(crate) struct Reporter {
    store: Store<PluginState<Option<OutputDir>>>,
    instance: bindings::Reporter,
}

impl Reporter {
    pub(crate) fn load(
        engine: &PolicyEngine,
        plugin: &str,
        candidate: &Candidate,
        options: &[(String, String)],
    ) -> Result<Self, PolicyError> {
        let (mut store, instance) = engine.instantiate(
            plugin,
            &candidate.component,
            candidate.info.imports_wasi(),
            None,
            |linker| bindings::Reporter::add_to_linker::<_, HasSelf<_>>(linker, |s| s),
            async |store, component, linker| {
                bindings::Reporter::instantiate_async(store, component, linker).await
            },
        )?;
        call(&mut store, "configure", async |s| {
            instance.call_configure(s, options).await
        })?;
        Ok(Reporter { store, instance })
    }

    /// Gives the reporter its output directory; writes fail until then.
    pub(crate) fn set_output(&mut self, output: OutputDir) {
        self.store.data_mut().data = Some(output);
    }

    pub(crate) fn on_event(&mut self, event: &ReporterEvent) -> Result<(), PolicyError> {
        let event = match event {
            ReporterEvent::RunStarted { tests, workers } => {
                types::Event::RunStarted(types::RunStarted {
                    tests: *tests,
                    workers: *workers,
                })
            }
            ReporterEvent::TestFinished(result) => types::Event::TestFinished(test_result(result)),
            ReporterEvent::RunFinished {
                exit_code,
                duration_secs,
            } => types::Event::RunFinished(types::RunFinished {
                exit_code: *exit_code,
                duration: *duration_secs,
            }),
        };
        let instance = &self.instance;
        call(&mut self.store, "on-event", async |s| {
            instance.call_on_event(s, &event).await
        })
    }

    pub(crate) fn finish(&mut self) -> Result<(), PolicyError> {
        let instance = &self.instance;
        call(&mut self.store, "finish", async |s| {
            instance.call_finish(s).await
        })
    }
}

fn test_result(r: &TestResult) -> types::TestResult {
    types::TestResult {
        id: r.id.clone(),
        outcome: r.outcome.into(),
        duration: r.duration_secs,
        worker: r.worker.clone(),
        longrepr: r.longrepr.clone(),
        sections: r.sections.clone(),
        phases: r.phases.clone(),
    }
}
