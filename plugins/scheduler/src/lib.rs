//! The default scheduler: one test per batch, longest files first, and
//! pytest's order within each file.
//!
//! Files are ordered, tests are not: many real suites have tests that only
//! pass after an earlier test of the same module (a warmed cache, a
//! monkeypatched global), so reordering them would change outcomes (seen on
//! packaging 25.0). Files with a test of unknown duration come first, in
//! collection order: a new test is the likeliest to fail (fast feedback)
//! and could be slow. Then files by their total mean duration, longest
//! first (the LPT rule at file level, which keeps workers evenly loaded to
//! the end). Every sort is stable, so ties keep collection order. Each test
//! is its own batch, so workers still share the files between them.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;

use hashbrown::HashMap;

wit_bindgen::generate!({ world: "scheduler", path: "../../wit" });

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

struct LongestFirst;

impl Guest for LongestFirst {
    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        match options.first() {
            Some((key, _)) => Err(alloc::format!("unknown option `{key}`")),
            None => Ok(()),
        }
    }

    fn plan(
        _context: PlanContext,
        tests: Vec<TestCase>,
        history: Vec<TestHistory>,
    ) -> Result<Plan, String> {
        let durations: HashMap<&str, f64> = history
            .iter()
            .filter_map(|h| Some((h.id.as_str(), h.mean_duration.filter(|d| d.is_finite())?)))
            .collect();
        // Files in collection order, each with its tests in collection order
        // and its total duration (None if a test is new).
        let mut files: Vec<(Option<f64>, Vec<String>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for test in tests {
            let known = durations.get(test.id.as_str()).copied();
            let slot = match index.get(test.file.as_str()) {
                Some(&slot) => slot,
                None => {
                    files.push((Some(0.0), Vec::new()));
                    index.insert(test.file, files.len() - 1);
                    files.len() - 1
                }
            };
            let (total, ids) = &mut files[slot];
            *total = total.zip(known).map(|(sum, d)| sum + d);
            ids.push(test.id);
        }
        files.sort_by(|(a, _), (b, _)| match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => b.total_cmp(a),
        });
        let order = files.into_iter().flat_map(|(_, ids)| ids);
        Ok(Plan {
            batches: order.map(|id| alloc::vec![id]).collect(),
            deselected: Vec::new(),
        })
    }
}

export!(LongestFirst);
