//! runner's exit codes: pytest's own, so CI scripts written for pytest keep working.

/// All tests passed (skips and xfails included).
pub const OK: i32 = 0;
/// Some test failed, errored, hung or crashed, or the run could not be trusted.
pub const TESTS_FAILED: i32 = 1;
/// The run was interrupted: Ctrl-C, or pytest stopped on collection errors.
pub const INTERRUPTED: i32 = 2;
/// runner itself failed.
pub const INTERNAL_ERROR: i32 = 3;
/// Bad command line (runner's or pytest's), or no usable Python/pytest.
pub const USAGE_ERROR: i32 = 4;
/// No tests were collected.
pub const NO_TESTS_COLLECTED: i32 = 5;
