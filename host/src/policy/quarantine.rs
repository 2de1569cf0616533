//! The quarantine slot: asks the component which tests to quarantine or
//! release, and checks each verdict names a known test once.

use std::collections::HashSet;

use wasmtime::Store;
use wasmtime::component::HasSelf;

use super::bindings;
use super::catalog::Candidate;
use super::engine::{PluginState, PolicyEngine, call};
use super::{IdProblem, PolicyError};
use crate::model::{TestHistory, Verdict};

pub(crate) struct Quarantine {
    store: Store<PluginState<()>>,
    instance: bindings::Quarantine,
}

impl Quarantine {
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
            (),
            |linker| bindings::Quarantine::add_to_linker::<_, HasSelf<_>>(linker, |s| s),
            async |store, component, linker| {
                bindings::Quarantine::instantiate_async(store, component, linker).await
            },
        )?;
        call(&mut store, "configure", async |s| {
            instance.call_configure(s, options).await
        })?;
        Ok(Quarantine { store, instance })
    }

    /// Verdicts for the tests whose state should change; others keep theirs.
    pub(crate) fn decide(&mut self, history: &[TestHistory]) -> Result<Vec<Verdict>, PolicyError> {
        let wit_history = bindings::histories(history);
        let instance = &self.instance;
        let verdicts = call(&mut self.store, "decide", async |s| {
            instance.call_decide(s, &wit_history).await
        })?;
        let known: HashSet<&str> = history.iter().map(|h| h.id.as_str()).collect();
        let mut named = HashSet::with_capacity(verdicts.len());
        for v in &verdicts {
            let problem = if !known.contains(v.id.as_str()) {
                IdProblem::Unknown(super::text::safe(&v.id))
            } else if !named.insert(v.id.as_str()) {
                IdProblem::Duplicate(v.id.clone())
            } else {
                continue;
            };
            return Err(PolicyError::InvalidAnswer {
                plugin: self.store.data().plugin().to_owned(),
                func: "decide",
                problem,
            });
        }
        Ok(verdicts
            .into_iter()
            .map(|v| Verdict {
                id: v.id,
                quarantined: v.quarantined,
                reason: super::text::safe(&v.reason),
            })
            .collect())
    }
}
