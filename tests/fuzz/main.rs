//! Property-based fuzzing of runner's decoders of outside input: the wire
//! decoder (frames from the Python side), the run-log reader and the config
//! file parser. Inputs are generated with structure (valid values of every
//! kind, then cut, mutated, nested, oversized) and each target checks a
//! property, not only the absence of a panic.
//!
//! A run is bounded by its number of cases, small enough for CI; run longer
//! with `PROPTEST_CASES=100000 cargo test --release -p runner --test fuzz`.

mod alloc;
mod config;
mod run_log;
mod wire;

use proptest::prelude::*;
use proptest::test_runner::Config;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// `default` cases per property, or `PROPTEST_CASES` when set.
fn cases(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Failures print their minimal input; no files in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Text as the outside sends it: any characters, the ones JSON and TOML
/// escape, and long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z_./:\\[\\]-]{0,12}",
        2 => "[\\x00-\\x1f\"'\\\\\u{7f}\u{80}\u{2028}\u{202e}\u{feff}\u{10ffff}]{0,8}",
        1 => ".{200,2000}",
    ]
}
