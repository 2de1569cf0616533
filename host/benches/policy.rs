//! Policy host benchmark: loading the default policies cold (compiling)
//! and warm (from the disk cache), planning 100,000 tests with 90,000
//! history entries, and one reporter call per test result.
//!
//!     cargo bench -p runner --bench policy
//!
//! Prints the median and the range of several rounds for each.

use std::time::{Duration, Instant};

use runner::model::{Outcome, PlanContext, ReporterEvent, TestCase, TestHistory, TestResult};
use runner::policy::{Policies, PolicyConfig};

const TESTS: usize = 100_000;
const HISTORY: usize = 90_000;
const EVENTS: usize = 20_000;
const ROUNDS: usize = 7;

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = PolicyConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    };

    let cold = rounds(3, || {
        // A fresh cache every round: every component is compiled.
        let fresh = tempfile::tempdir().unwrap();
        let config = PolicyConfig {
            cache_dir: Some(fresh.path().to_owned()),
            ..Default::default()
        };
        time(|| drop(Policies::load(&config).unwrap()))
    });
    drop(Policies::load(&config).unwrap());
    let warm = rounds(ROUNDS, || time(|| drop(Policies::load(&config).unwrap())));

    let mut policies = Policies::load(&config).unwrap();
    assert!(policies.open_outputs(state.path(), None).is_empty());
    let tests: Vec<TestCase> = (0..TESTS).map(case).collect();
    let history: Vec<TestHistory> = (0..HISTORY).map(history).collect();
    let ctx = PlanContext { workers: 8 };
    let plan = rounds(ROUNDS, || {
        time(|| {
            let plan = policies.plan(&ctx, &tests, &history).unwrap();
            assert_eq!(plan.batches.len(), TESTS);
        })
    });

    policies
        .report(&ReporterEvent::RunStarted {
            tests: EVENTS as u32,
            workers: 8,
        })
        .unwrap();
    let events: Vec<ReporterEvent> = (0..EVENTS).map(result).collect();
    let report = rounds(1, || {
        time(|| {
            for event in &events {
                policies.report(event).unwrap();
            }
        }) / EVENTS as u32
    });
    let finish = time(|| {
        policies
            .report(&ReporterEvent::RunFinished {
                exit_code: 0,
                duration_secs: 1.0,
            })
            .unwrap();
        policies.finish().unwrap();
    });

    println!("policy host benchmark (median [min..max] of rounds)");
    println!(
        "  load defaults, cold (compile 3 components):  {}",
        show(&cold)
    );
    println!(
        "  load defaults, warm (disk cache):            {}",
        show(&warm)
    );
    println!(
        "  plan {TESTS} tests, {HISTORY} history entries: {}",
        show(&plan)
    );
    println!(
        "  report, per test-finished event ({EVENTS} events): {}",
        show(&report)
    );
    println!("  finish (JUnit XML of {EVENTS} results):       {finish:.2?}");
}

fn case(i: usize) -> TestCase {
    let file = format!("tests/pkg{}/test_mod{}.py", i % 50, i % 1000);
    serde_json::from_value(serde_json::json!({
        "id": format!("{file}::TestClass{}::test_case_{i}[param-{}]", i % 7, i % 13),
        "file": file,
        "line": i % 500,
        "markers": if i.is_multiple_of(10) { vec!["slow"] } else { vec![] },
    }))
    .unwrap()
}

fn history(i: usize) -> TestHistory {
    let id = case(i).id;
    TestHistory {
        id,
        recent: vec![Outcome::Passed; 5],
        mean_duration_secs: Some((i % 97) as f64 / 10.0),
        quarantined: false,
    }
}

fn result(i: usize) -> ReporterEvent {
    let failed = i.is_multiple_of(20);
    ReporterEvent::TestFinished(TestResult {
        id: case(i).id,
        outcome: if failed {
            Outcome::Failed
        } else {
            Outcome::Passed
        },
        duration_secs: 0.01,
        worker: format!("gw{}", i % 8),
        longrepr: if failed {
            "    def test():\n>       assert 1 == 2\nE       assert 1 == 2\n".into()
        } else {
            String::new()
        },
        sections: vec![],
        phases: vec![
            ("setup".into(), String::new()),
            (
                "call".into(),
                if failed { "failed" } else { "passed" }.into(),
            ),
            ("teardown".into(), String::new()),
        ],
    })
}

/// Wall time of `f`; with `RUNNER_BENCH_CPU=1`, the calling thread's CPU
/// time instead (steadier on a loaded machine; compiling uses other
/// threads, so the cold load is then undercounted).
fn time(f: impl FnOnce()) -> Duration {
    if std::env::var_os("RUNNER_BENCH_CPU").is_some() {
        let clock = nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID;
        let before = nix::time::clock_gettime(clock).unwrap();
        f();
        let after = nix::time::clock_gettime(clock).unwrap();
        return Duration::from(after) - Duration::from(before);
    }
    let started = Instant::now();
    f();
    started.elapsed()
}

fn rounds(n: usize, mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..n).map(|_| f()).collect();
    times.sort();
    times
}

fn show(times: &[Duration]) -> String {
    format!(
        "{:.2?} [{:.2?}..{:.2?}]",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    )
}
