//! Runs guest code. Every entry into a policy (instantiation included) is
//! an async wasmtime call, driven to completion here on the calling thread
//! by a small runtime of the policy host's own, under the call's deadline
//! and what is left of the policy's time budget for the run.
//!
//! Why async: wasmtime-wasi's synchronous bindings run each blocking WASI
//! call (a write to stdout, waiting on a pollable) with `Handle::block_on`,
//! which panics when the caller is itself inside a tokio runtime, as the
//! run loop is; and a guest blocked inside a host call runs no wasm, so
//! epoch interruption can't stop it. Here a blocking WASI call is a future
//! like any other, and the deadline is a timeout around the whole call: a
//! guest spinning in wasm yields to it at every epoch tick, a guest
//! waiting in a host call is dropped when it fires.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use wasmtime::Trap;

/// The runtime guest calls are driven on.
pub(crate) struct Driver {
    /// Only `None` while dropping.
    runtime: Option<Runtime>,
}

impl Driver {
    pub(crate) fn new() -> std::io::Result<Driver> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        Ok(Driver {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` to completion on the calling thread. A caller inside a
    /// multi-threaded tokio runtime (the run loop) tells it that this thread
    /// blocks for a while; a caller inside a current-thread runtime can't
    /// block at all, which is an error rather than a panic.
    fn block_on<F: Future>(&self, future: F) -> wasmtime::Result<F::Output> {
        let Some(runtime) = &self.runtime else {
            wasmtime::bail!("the policy host is shutting down");
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => Ok(runtime.block_on(future)),
            Ok(RuntimeFlavor::CurrentThread) => {
                wasmtime::bail!("policies can't be called from a current-thread tokio runtime")
            }
            Ok(_) => Ok(tokio::task::block_in_place(|| runtime.block_on(future))),
        }
    }
}

impl Drop for Driver {
    /// Dropping a runtime waits for its blocking threads, which panics
    /// inside an async context (the run loop drops the policies).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One policy's time: what its calls have spent this run, and when the
/// call in progress must end.
pub(crate) struct Clock {
    deadline: Duration,
    budget: Duration,
    spent: Duration,
    /// When the call in progress must end, if one is.
    ends: Option<Instant>,
    /// Whether the call in progress ends at the budget, not the deadline.
    ends_at_budget: bool,
}

impl Clock {
    pub(crate) fn new(deadline: Duration, budget: Duration) -> Clock {
        Clock {
            deadline,
            budget,
            spent: Duration::ZERO,
            ends: None,
            ends_at_budget: false,
        }
    }

    /// Whether the call in progress is past its end (asked at every epoch
    /// tick).
    pub(crate) fn past_end(&self) -> bool {
        self.ends.is_some_and(|ends| Instant::now() >= ends)
    }

    /// Why the last call was interrupted, in words.
    pub(crate) fn interrupted(&self) -> String {
        if self.ends_at_budget {
            format!(
                "used up its time budget of {}s for the run (--policy-budget)",
                self.budget.as_secs_f64()
            )
        } else {
            format!(
                "exceeded its {}s deadline (interrupted)",
                self.deadline.as_secs_f64()
            )
        }
    }

    /// Starts a call: how long it may take, or `None` if the budget is gone.
    fn start(&mut self) -> Option<Duration> {
        let left = self.budget.saturating_sub(self.spent);
        self.ends_at_budget = left <= self.deadline;
        let limit = left.min(self.deadline);
        if limit.is_zero() {
            return None;
        }
        self.ends = Some(Instant::now() + limit);
        Some(limit)
    }

    fn stop(&mut self, took: Duration) {
        self.spent += took;
        self.ends = None;
    }
}

/// Where [`run`] finds what it needs in a store's data.
pub(crate) trait Timed {
    fn clock(&mut self) -> &mut Clock;
    fn driver(&self) -> &std::sync::Arc<Driver>;
}

/// Runs `f` (a guest call on `store`) to completion under the clock: past
/// the call's end it fails with [`Trap::Interrupt`], whether the guest
/// was running wasm or waiting in a host call.
pub(crate) fn run<S, R>(
    store: &mut wasmtime::Store<S>,
    f: impl AsyncFnOnce(&mut wasmtime::Store<S>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R>
where
    S: Timed,
{
    let driver = store.data().driver().clone();
    let Some(limit) = store.data_mut().clock().start() else {
        return Err(Trap::Interrupt.into());
    };
    // The epoch callback checks the clock at every tick.
    store.set_epoch_deadline(1);
    let started = Instant::now();
    let result = driver.block_on(async {
        match tokio::time::timeout(limit, f(store)).await {
            Ok(result) => result,
            Err(_) => Err(Trap::Interrupt.into()),
        }
    });
    store.data_mut().clock().stop(started.elapsed());
    result?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_ends_at_the_deadline_or_the_rest_of_the_budget() {
        let mut clock = Clock::new(Duration::from_secs(5), Duration::from_secs(12));
        assert_eq!(clock.start(), Some(Duration::from_secs(5)));
        clock.stop(Duration::from_secs(5));
        assert_eq!(clock.start(), Some(Duration::from_secs(5)));
        assert!(clock.interrupted().contains("5s deadline"));
        clock.stop(Duration::from_secs(5));
        assert_eq!(clock.start(), Some(Duration::from_secs(2)));
        assert!(clock.interrupted().contains("time budget of 12s"));
        clock.stop(Duration::from_secs(2));
        assert_eq!(clock.start(), None);
    }

    #[test]
    fn drives_futures_inside_and_outside_a_runtime() {
        let driver = Driver::new().unwrap();
        let sleep = || async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            7
        };
        assert_eq!(driver.block_on(sleep()).unwrap(), 7);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            multi.block_on(async { driver.block_on(sleep()).unwrap() }),
            7
        );
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = single.block_on(async { driver.block_on(sleep()).unwrap_err() });
        assert!(err.to_string().contains("current-thread"), "{err}");
        // Dropped inside an async context, without a panic.
        multi.block_on(async { drop(driver) });
    }
}
