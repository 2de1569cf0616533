//! An example scheduler: each test file is one batch (a worker runs a
//! file's tests in order, so module fixtures are set up once), files with
//! the longest known total duration first; files never seen before go
//! first of all, since new tests are the likeliest to fail.
//!
//! Options (`--policy-opt by-file.KEY=VALUE`, or `[tool.runner.policy.by-file]`):
//! - `max-batch = N`: split a file into batches of at most N tests, so one
//!   huge file doesn't keep a single worker busy to the end.
//! - `skip-marker = NAME`: deselect tests carrying the marker NAME.
//!
//! `#![no_std]` keeps the component free of WASI imports: it needs nothing
//! but what runner's `scheduler` world gives.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

wit_bindgen::generate!({ world: "scheduler", path: "../../../wit" });

use runner::policy::host::{Level, log};

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The options `configure` accepted.
struct Options {
    max_batch: usize,
    skip_marker: Option<String>,
}

/// The instance's state. A component instance runs one call at a time on
/// one thread, so a `RefCell` in a static is enough.
struct State(RefCell<Options>);

// SAFETY: wasm32 without threads: no two calls ever overlap.
unsafe impl Sync for State {}

static OPTIONS: State = State(RefCell::new(Options {
    max_batch: usize::MAX,
    skip_marker: None,
}));

struct ByFile;

impl Guest for ByFile {
    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        let mut opts = OPTIONS.0.borrow_mut();
        for (key, value) in options {
            match key.as_str() {
                "max-batch" => match value.parse::<usize>() {
                    Ok(n) if n > 0 => opts.max_batch = n,
                    _ => {
                        return Err(format!(
                            "max-batch must be a positive integer, got `{value}`"
                        ));
                    }
                },
                "skip-marker" => opts.skip_marker = Some(value),
                _ => {
                    return Err(format!(
                        "unknown option `{key}` (known: max-batch, skip-marker)"
                    ));
                }
            }
        }
        Ok(())
    }

    fn plan(
        _context: PlanContext,
        tests: Vec<TestCase>,
        history: Vec<TestHistory>,
    ) -> Result<Plan, String> {
        let opts = OPTIONS.0.borrow();
        let durations: BTreeMap<&str, f64> = history
            .iter()
            .filter_map(|h| Some((h.id.as_str(), h.mean_duration.filter(|d| d.is_finite())?)))
            .collect();
        // Files in collection order, each with its tests and known total.
        let mut files: Vec<(String, Vec<String>, Option<f64>)> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut deselected = Vec::new();
        for test in &tests {
            if let Some(marker) = &opts.skip_marker {
                if test.markers.iter().any(|m| m == marker) {
                    deselected.push((test.id.clone(), format!("marked `{marker}`")));
                    continue;
                }
            }
            let at = *index.entry(test.file.clone()).or_insert_with(|| {
                files.push((test.file.clone(), Vec::new(), Some(0.0)));
                files.len() - 1
            });
            let file = &mut files[at];
            file.1.push(test.id.clone());
            file.2 = match (file.2, durations.get(test.id.as_str())) {
                (Some(total), Some(d)) => Some(total + d),
                _ => None,
            };
        }
        // Unknown (None) first, then longest first; stable, so ties keep
        // collection order.
        files.sort_by(|a, b| match (a.2, b.2) {
            (None, None) => core::cmp::Ordering::Equal,
            (None, Some(_)) => core::cmp::Ordering::Less,
            (Some(_), None) => core::cmp::Ordering::Greater,
            (Some(a), Some(b)) => b.total_cmp(&a),
        });
        let mut batches = Vec::new();
        for (_, ids, _) in files {
            for chunk in ids.chunks(opts.max_batch) {
                batches.push(chunk.to_vec());
            }
        }
        log(
            Level::Info,
            &format!(
                "{} tests in {} batches, {} deselected",
                tests.len() - deselected.len(),
                batches.len(),
                deselected.len()
            ),
        );
        Ok(Plan {
            batches,
            deselected,
        })
    }
}

export!(ByFile);
