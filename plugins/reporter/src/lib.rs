//! The default reporter: a JUnit XML file in the shape pytest's `--junitxml`
//! writes (the xunit2 family), so CI systems that read pytest's file read
//! this one the same way.
//!
//! Each result is rendered as it arrives and buffered; `finish` writes the
//! whole file once, because the `<testsuite>` totals come before the cases.
//! Option: `junitxml-name`, the file name in the output directory
//! (default `junit.xml`).

#![no_std]

extern crate alloc;

mod xml;

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

wit_bindgen::generate!({ world: "reporter", path: "../../wit" });

use runner::policy::output;

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

const DEFAULT_NAME: &str = "junit.xml";

/// The run being reported, between calls.
struct Global(RefCell<Report>);

// SAFETY: a component instance is entered by one thread at a time and its
// memory is never shared, so nothing can reach the RefCell concurrently.
unsafe impl Sync for Global {}

static REPORT: Global = Global(RefCell::new(Report::new()));

struct Report {
    file_name: Option<String>,
    suite: xml::Suite,
}

impl Report {
    const fn new() -> Self {
        Report {
            file_name: None,
            suite: xml::Suite::new(),
        }
    }
}

struct JUnit;

impl Guest for JUnit {
    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        let mut report = REPORT.0.borrow_mut();
        for (key, value) in options {
            match key.as_str() {
                "junitxml-name" => report.file_name = Some(value),
                _ => return Err(alloc::format!("unknown option `{key}`")),
            }
        }
        Ok(())
    }

    fn on_event(event: Event) -> Result<(), String> {
        let mut report = REPORT.0.borrow_mut();
        match event {
            Event::RunStarted(_) => report.suite = xml::Suite::new(),
            Event::TestFinished(result) => report.suite.add(&result),
            Event::RunFinished(finished) => report.suite.set_duration(finished.duration),
        }
        Ok(())
    }

    fn finish() -> Result<(), String> {
        let report = REPORT.0.borrow();
        let name = report.file_name.as_deref().unwrap_or(DEFAULT_NAME);
        output::write(name, report.suite.render().as_bytes())
    }
}

export!(JUnit);
