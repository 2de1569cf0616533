//! The default scheduler: one test per batch, longest first.
//!
//! Tests with no known duration run first, in collection order: a new test
//! is the likeliest to fail (fast feedback) and could be slow, and starting
//! it early keeps it from becoming the run's tail. Known tests follow from
//! the longest mean duration down (the LPT rule, which keeps workers evenly
//! loaded to the end). The sort is stable, so ties keep collection order.

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
        let mut order: Vec<(Option<f64>, String)> = tests
            .into_iter()
            .map(|t| (durations.get(t.id.as_str()).copied(), t.id))
            .collect();
        order.sort_by(|(a, _), (b, _)| match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => b.total_cmp(a),
        });
        Ok(Plan {
            batches: order.into_iter().map(|(_, id)| alloc::vec![id]).collect(),
            deselected: Vec::new(),
        })
    }
}

export!(LongestFirst);
