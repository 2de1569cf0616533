//! The policy host: loads the scheduler, reporter and quarantine components
//! (the embedded defaults, built from plugins/ by build.rs, plus any from
//! the project's plugins directory or `--policy`) into wasmtime and calls
//! them. The engine has no policy logic of its own; it only calls
//! [`Policies`].
//!
//! Layout: `catalog` (which component fills which slot, read from its
//! imports and exports), `engine` (wasmtime engine, stores, the empty WASI
//! context), `limits` (memory and time limits, one memory limit per
//! policy), `driver` (runs guest calls to completion under the deadline and
//! the run's time budget), `log` (plugin log lines and stdout/stderr),
//! `text` (plugin text made safe for a terminal), `compile` (compiling in
//! a bounded child process), `cache` (compiled components on disk, verified
//! before use), `bindings` (WIT types and conversions), one module
//! per slot (`scheduler`, `reporter`, `quarantine`), `output` (the
//! reporter's confined directory), `policies` (the API the engine uses).

mod bindings;
mod cache;
mod catalog;
mod compile;
mod driver;
mod engine;
mod error;
mod limits;
mod log;
mod output;
mod policies;
mod quarantine;
mod reporter;
mod scheduler;
pub(crate) mod text;

pub use catalog::{PluginInfo, SUPPORTED_VERSIONS, Slot, Source, describe_import};
pub use compile::{SUBCOMMAND as COMPILE_SUBCOMMAND, child_main as compile_child_main};
pub use error::{IdProblem, PolicyError};
pub use limits::SandboxLimits;
pub use policies::{Policies, PolicyConfig, PolicyOption};

#[cfg(test)]
mod tests;
