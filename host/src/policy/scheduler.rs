//! The scheduler slot: asks the component for a plan and checks it covers
//! every collected test exactly once before the engine acts on it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use wasmtime::Store;
use wasmtime::component::{ComponentType, HasSelf, Instance, Lower};

use super::bindings::{self, types};
use super::catalog::Candidate;
use super::engine::{PluginState, PolicyEngine, call};
use super::text::safe;
use super::{IdProblem, PolicyError};
use crate::model::{Plan, PlanContext, TestCase, TestHistory};

pub(crate) struct Scheduler {
    store: Store<PluginState<()>>,
    /// The raw instance: `plan` is called through a typed function that
    /// lowers borrowed tests (see [`CaseRef`]) instead of cloning them.
    instance: Instance,
}

/// A `test-case` lowered straight from the host's own [`TestCase`]: no
/// copy of 100,000 ids before they are copied into the guest.
#[derive(ComponentType, Lower)]
#[component(record)]
struct CaseRef<'a> {
    id: &'a str,
    file: &'a str,
    line: Option<u32>,
    markers: &'a [String],
    group: Option<&'a str>,
}

/// A `test-history` lowered from the host's [`TestHistory`].
#[derive(ComponentType, Lower)]
#[component(record)]
struct HistoryRef<'a> {
    id: &'a str,
    recent: Vec<types::Outcome>,
    #[component(name = "mean-duration")]
    mean_duration: Option<f64>,
    quarantined: bool,
}

type PlanParams<'a> = (types::PlanContext, &'a [CaseRef<'a>], &'a [HistoryRef<'a>]);

impl Scheduler {
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
            |linker| bindings::Scheduler::add_to_linker::<_, HasSelf<_>>(linker, |s| s),
            async |store, component, linker| {
                let instance = linker.instantiate_async(&mut *store, component).await?;
                // Checks the exports' types, once.
                let bound = bindings::Scheduler::new(&mut *store, &instance)?;
                Ok((instance, bound))
            },
        )?;
        let (instance, bound) = instance;
        call(&mut store, "configure", async |s| {
            bound.call_configure(s, options).await
        })?;
        Ok(Scheduler { store, instance })
    }

    pub(crate) fn plan(
        &mut self,
        ctx: &PlanContext,
        tests: &[TestCase],
        history: &[TestHistory],
    ) -> Result<Plan, PolicyError> {
        let context = types::PlanContext {
            workers: ctx.workers,
        };
        let cases: Vec<CaseRef> = tests.iter().map(case_ref).collect();
        let history: Vec<HistoryRef> = history.iter().map(history_ref).collect();
        let instance = self.instance;
        let plan = call(&mut self.store, "plan", async |s| {
            let plan = instance
                .get_typed_func::<PlanParams, (Result<types::Plan, String>,)>(&mut *s, "plan")?;
            Ok(plan.call_async(s, (context, &cases, &history)).await?.0)
        })?;
        let mut plan = Plan {
            // An empty batch is harmless; dropping it spares the dispatcher.
            batches: plan.batches.into_iter().filter(|b| !b.is_empty()).collect(),
            deselected: plan.deselected,
        };
        validate(&plan, tests).map_err(|problem| PolicyError::InvalidAnswer {
            plugin: self.store.data().plugin().to_owned(),
            func: "plan",
            problem,
        })?;
        // Reasons are shown, one line per deselected test: they count
        // against the plugin's output budget like its log lines.
        let log = &self.store.data().log;
        for (_, reason) in &mut plan.deselected {
            *reason = log.charge(reason).unwrap_or_else(|| {
                "reason not shown: the scheduler's output budget is used up".into()
            });
        }
        Ok(plan)
    }
}

fn case_ref(t: &TestCase) -> CaseRef<'_> {
    CaseRef {
        id: &t.id,
        file: &t.file,
        line: t.line,
        markers: &t.markers,
        group: t.group.as_deref(),
    }
}

fn history_ref(h: &TestHistory) -> HistoryRef<'_> {
    HistoryRef {
        id: &h.id,
        recent: h.recent.iter().map(|&o| o.into()).collect(),
        mean_duration: h.mean_duration_secs,
        quarantined: h.quarantined,
    }
}

/// FNV-1a: test ids are not attacker-chosen hash keys here (a plan naming
/// ids the host doesn't know is rejected at the first one), and SipHash
/// costs a third of the plan check for 100,000 tests.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Checks that every collected test is planned or deselected exactly once
/// and that the plan names no other test.
fn validate(plan: &Plan, tests: &[TestCase]) -> Result<(), IdProblem> {
    let mut seen: HashMap<&str, bool, BuildHasherDefault<Fnv>> =
        tests.iter().map(|t| (t.id.as_str(), false)).collect();
    let planned = plan.batches.iter().flatten();
    let deselected = plan.deselected.iter().map(|(id, _)| id);
    for id in planned.chain(deselected) {
        match seen.get_mut(id.as_str()) {
            None => return Err(IdProblem::Unknown(safe(id))),
            Some(true) => return Err(IdProblem::Duplicate(id.clone())),
            Some(placed) => *placed = true,
        }
    }
    let mut missing = tests.iter().filter(|t| !seen[t.id.as_str()]);
    match missing.next() {
        None => Ok(()),
        Some(first) => Err(IdProblem::Missing {
            count: 1 + missing.count(),
            example: first.id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tests(ids: &[&str]) -> Vec<TestCase> {
        ids.iter()
            .map(|id| crate::policy::tests::case(id))
            .collect()
    }

    fn plan(batches: &[&[&str]], deselected: &[&str]) -> Plan {
        Plan {
            batches: batches
                .iter()
                .map(|b| b.iter().map(|id| (*id).to_owned()).collect())
                .collect(),
            deselected: deselected
                .iter()
                .map(|id| ((*id).to_owned(), "why".to_owned()))
                .collect(),
        }
    }

    #[test]
    fn accepts_a_plan_covering_each_test_once() {
        let tests = tests(&["a", "b", "c"]);
        assert_eq!(validate(&plan(&[&["b", "a"]], &["c"]), &tests), Ok(()));
    }

    #[test]
    fn rejects_unknown_duplicate_and_missing_tests() {
        let tests = tests(&["a", "b", "c"]);
        assert_eq!(
            validate(&plan(&[&["a", "zz"]], &[]), &tests),
            Err(IdProblem::Unknown("zz".into()))
        );
        assert_eq!(
            validate(&plan(&[&["a"], &["b"]], &["a"]), &tests),
            Err(IdProblem::Duplicate("a".into()))
        );
        assert_eq!(
            validate(&plan(&[&["b"]], &[]), &tests),
            Err(IdProblem::Missing {
                count: 2,
                example: "a".into()
            })
        );
    }

    #[test]
    fn invalid_plan_error_names_the_plugin_and_the_test() {
        let err = PolicyError::InvalidAnswer {
            plugin: "builtin:scheduler".into(),
            func: "plan",
            problem: validate(&plan(&[&["a"]], &[]), &tests(&["a", "b"])).unwrap_err(),
        };
        assert_eq!(
            err.to_string(),
            "policy `builtin:scheduler` returned an invalid answer from `plan`: \
             1 collected test(s) neither planned nor deselected, e.g. `b`"
        );
    }
}
