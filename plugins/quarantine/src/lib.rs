//! The default quarantine policy: it quarantines nothing and releases
//! nothing, leaving every test's state as it was.

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

wit_bindgen::generate!({ world: "quarantine", path: "../../wit" });

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

struct Never;

impl Guest for Never {
    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        match options.first() {
            Some((key, _)) => Err(alloc::format!("unknown option `{key}`")),
            None => Ok(()),
        }
    }

    fn decide(_history: Vec<TestHistory>) -> Result<Vec<Verdict>, String> {
        Ok(Vec::new())
    }
}

export!(Never);
