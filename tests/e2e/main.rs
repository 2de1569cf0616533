//! End-to-end tests of the `runner` binary against the real pytest projects in
//! tests/fixtures. Each test copies its fixture into a temporary directory, so
//! runs never write .runner/ into the repository.
//!
//! They need python3 on PATH with pytest (and pytest-xdist, for the
//! `worker_id` fixture) importable; if either is missing they fail with a
//! message saying so, they are never skipped.

mod bad_input;
mod cache;
mod debugger;
mod example_policy;
mod exit_codes;
mod faults;
mod fidelity;
mod guests;
mod hostile;
mod json_stream;
mod live;
mod live_output;
mod plugins;
mod pytest_semantics;
mod reports;
mod reruns;
mod shim;
mod supervision;
mod support;
mod terminal;
mod watch;
mod xdist_options;
