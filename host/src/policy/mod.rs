//! The policy host: loads the scheduler, reporter and quarantine components
//! (the embedded defaults, built from plugins/ by build.rs) into wasmtime and
//! calls them. The engine has no policy logic of its own; it only calls
//! [`Policies`].
//!
//! Layout: `engine` (wasmtime engine, stores, limits, deadlines), `cache`
//! (compiled components on disk), `bindings` (WIT types and conversions),
//! one module per slot (`scheduler`, `reporter`, `quarantine`), `output`
//! (the reporter's confined directory), `policies` (the API the engine uses).

mod bindings;
mod cache;
mod engine;
mod error;
mod output;
mod policies;
mod quarantine;
mod reporter;
mod scheduler;

pub use error::{IdProblem, PolicyError};
pub use policies::{Policies, PolicyOptions};

#[cfg(test)]
mod tests;
