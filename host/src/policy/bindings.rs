//! Rust bindings of the WIT worlds (wit/), and conversions from the host's
//! model types. The `types` and `host` interfaces are generated once, with
//! the scheduler world, and shared by the other two. Exports are called
//! async (see `driver`); the host's own imports never block and stay sync.

use crate::model;

mod generated {
    pub mod scheduler {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "scheduler",
            exports: { default: async },
        });
    }
    pub mod reporter {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "reporter",
            exports: { default: async },
            with: {
                "runner:policy/types": super::scheduler::runner::policy::types,
                "runner:policy/host": super::scheduler::runner::policy::host,
            },
        });
    }
    pub mod quarantine {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "quarantine",
            exports: { default: async },
            with: {
                "runner:policy/types": super::scheduler::runner::policy::types,
                "runner:policy/host": super::scheduler::runner::policy::host,
            },
        });
    }
}

pub(crate) use generated::quarantine::Quarantine;
pub(crate) use generated::reporter::Reporter;
pub(crate) use generated::reporter::runner::policy::output;
pub(crate) use generated::scheduler::Scheduler;
pub(crate) use generated::scheduler::runner::policy::{host, types};

impl From<model::Outcome> for types::Outcome {
    fn from(outcome: model::Outcome) -> Self {
        match outcome {
            model::Outcome::Passed => Self::Passed,
            model::Outcome::Failed => Self::Failed,
            model::Outcome::Skipped => Self::Skipped,
            model::Outcome::Xfailed => Self::Xfailed,
            model::Outcome::Xpassed => Self::Xpassed,
            model::Outcome::Error => Self::Error,
            model::Outcome::Hung => Self::Hung,
            model::Outcome::Crashed => Self::Crashed,
        }
    }
}

impl From<&model::TestHistory> for types::TestHistory {
    fn from(h: &model::TestHistory) -> Self {
        Self {
            id: h.id.clone(),
            recent: h.recent.iter().map(|&o| o.into()).collect(),
            mean_duration: h.mean_duration_secs,
            quarantined: h.quarantined,
        }
    }
}

pub(crate) fn histories(history: &[model::TestHistory]) -> Vec<types::TestHistory> {
    history.iter().map(Into::into).collect()
}
