//! What one policy may use: the [`SandboxLimits`] the user sets, and the
//! [`PolicyLimiter`] that holds all of a policy's linear memories and
//! tables to one memory limit (a limit per memory would let a component
//! with sixteen memories use sixteen times as much).

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Core instances one plugin may create (a component made by wit-component
/// has a handful: the module, its shims, the WASI adapter).
const MAX_INSTANCES: usize = 64;
/// Tables and memories per plugin.
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;
/// What wasmtime keeps per table element: a pointer.
const TABLE_ELEMENT_BYTES: usize = size_of::<usize>();

/// The limits every policy runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SandboxLimits {
    /// Bytes all of a plugin's memories and tables may hold together.
    pub memory_bytes: usize,
    /// How long one guest call may run before it is stopped.
    pub deadline: Duration,
    /// How long all of a plugin's calls in one run may take together.
    pub budget: Duration,
}

impl Default for SandboxLimits {
    /// 256 MiB leaves room for interpreted-language policies and 100k-test
    /// suites (a Rust policy needs a few MiB); 5 s is far more than any
    /// sane policy call takes. 30 s for a whole run is 100 times what the
    /// default policies spend on 100,000 tests (a plan and 100,000 events),
    /// and bounds what a policy that stays just under its deadline on every
    /// call can add to a run.
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(5),
            budget: Duration::from_secs(30),
        }
    }
}

impl SandboxLimits {
    /// Address space compiling a policy may take: 4 times what it may use
    /// when running, at least 1 GiB. An 18 MB componentize-py policy
    /// compiles in under 500 MiB; a crafted 6 MB function needs more than
    /// 1 GiB. A large policy that needs more asks for more memory anyway.
    pub fn compile_memory(&self) -> u64 {
        (4 * self.memory_bytes as u64).max(1 << 30)
    }
}

/// A plugin's memories and tables, counted against one limit. Memories
/// and tables only grow and live as long as the store, so a running total
/// is exact.
pub(crate) struct PolicyLimiter {
    limit: usize,
    used: usize,
    /// The growth last allowed, taken back if wasmtime then fails it.
    growing: usize,
}

/// The error a guest traps with when it asks for more than its limit.
#[derive(Debug, thiserror::Error)]
#[error("exceeded its memory limit of {} MiB (all its memories and tables together)", .limit >> 20)]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) limit: usize,
}

impl PolicyLimiter {
    pub(crate) fn new(limit: usize) -> PolicyLimiter {
        PolicyLimiter {
            limit,
            used: 0,
            growing: 0,
        }
    }

    fn grow(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        match self.used.checked_add(bytes) {
            Some(used) if used <= self.limit => {
                self.used = used;
                self.growing = bytes;
                Ok(true)
            }
            // A trap, not a failed `memory.grow`: a policy out of memory
            // can't do its job, and the error says which limit it hit.
            _ => Err(MemoryLimitExceeded { limit: self.limit }.into()),
        }
    }

    fn grow_failed(&mut self) {
        self.used -= std::mem::take(&mut self.growing);
    }
}

impl ResourceLimiter for PolicyLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let elements = desired.saturating_sub(current);
        self.grow(elements.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_limit() {
        let mut limiter = PolicyLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        assert!(limiter.memory_growing(0, 256 << 10, None).unwrap());
        // A third memory alone would fit a per-memory limit; not the total.
        let err = limiter.memory_growing(0, 512 << 10, None).unwrap_err();
        assert!(err.to_string().contains("memory limit of 1 MiB"), "{err}");
        // Tables count too: 256 KiB are left, 32Ki pointers.
        assert!(limiter.table_growing(0, 16 << 10, None).unwrap());
        assert!(limiter.table_growing(16 << 10, 64 << 10, None).is_err());
        // A growth wasmtime then fails is given back.
        assert!(limiter.memory_growing(0, 64 << 10, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("over maximum"))
            .unwrap();
        assert_eq!(limiter.used, (768 << 10) + (128 << 10));
    }
}
