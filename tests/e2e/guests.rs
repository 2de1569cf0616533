//! Policy components built from source at test time: core modules written
//! in WAT, given their WIT world with wit-component, as a third party's
//! toolchain would. No compiled `.wasm` lives in the repository.
//!
//! Each guest is a few lines of WAT around a shared scaffold (a bump
//! allocator for the canonical ABI, `configure` that accepts anything).
//! Memory layout: static data below 1024, the heap above it.

use std::path::{Path, PathBuf};

use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

use crate::support::repo_root;

/// Minimal WASI packages: only the functions the guests call, with the
/// types wasmtime's WASI 0.2 defines for them.
const WASI_WIT: &[&str] = &[
    r#"package wasi:io@0.2.0;
interface error {
    resource error;
}
interface poll {
    resource pollable {
        block: func();
    }
}
interface streams {
    use error.{error};
    variant stream-error {
        last-operation-failed(error),
        closed,
    }
    resource output-stream {
        blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
    }
}"#,
    r#"package wasi:clocks@0.2.0;
interface monotonic-clock {
    use wasi:io/poll@0.2.0.{pollable};
    type instant = u64;
    type duration = u64;
    now: func() -> instant;
    subscribe-duration: func(when: duration) -> pollable;
}"#,
    r#"package wasi:cli@0.2.0;
interface environment {
    get-environment: func() -> list<tuple<string, string>>;
    get-arguments: func() -> list<string>;
}
interface stdout {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stdout: func() -> output-stream;
}
interface stderr {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stderr: func() -> output-stream;
}"#,
    r#"package wasi:filesystem@0.2.0;
interface types {
    resource descriptor;
}
interface preopens {
    use types.{descriptor};
    get-directories: func() -> list<tuple<descriptor, string>>;
}"#,
];

/// Worlds for guests that import WASI on top of a runner world.
const HOSTILE_WIT: &str = r#"package hostile:guests;
world env-scheduler {
    import wasi:cli/environment@0.2.0;
    include runner:policy/scheduler@0.1.0;
}
world fs-scheduler {
    import wasi:filesystem/preopens@0.2.0;
    include runner:policy/scheduler@0.1.0;
}
world stdio-reporter {
    import wasi:cli/stdout@0.2.0;
    import wasi:cli/stderr@0.2.0;
    import wasi:io/streams@0.2.0;
    include runner:policy/reporter@0.1.0;
}
world clock-scheduler {
    import wasi:clocks/monotonic-clock@0.2.0;
    import wasi:io/poll@0.2.0;
    include runner:policy/scheduler@0.1.0;
}
world clock-reporter {
    import wasi:clocks/monotonic-clock@0.2.0;
    import wasi:io/poll@0.2.0;
    include runner:policy/reporter@0.1.0;
}
world clock-quarantine {
    import wasi:clocks/monotonic-clock@0.2.0;
    import wasi:io/poll@0.2.0;
    include runner:policy/quarantine@0.1.0;
}
"#;

/// The allocator and `configure`, shared by every guest. `$heap` starts
/// at 1024; static data lives below it.
pub const SCAFFOLD: &str = r#"
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "cabi_realloc")
        (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (if (local.get $old_size)
      (then (memory.copy (local.get $p) (local.get $old) (local.get $old_size))))
    (local.get $p))
  ;; result<_, string> = ok, at 16 (zeroed memory)
  (func (export "configure") (param i32 i32) (result i32) (i32.const 16))
  ;; writes result::err(string at $ptr, $len) at 32 and returns 32
  (func $err (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 32) (i32.const 1))
    (i32.store (i32.const 36) (local.get $ptr))
    (i32.store (i32.const 40) (local.get $len))
    (i32.const 32))
"#;

/// A scheduler guest whose `plan` has `body` (params: $workers, $tests,
/// $ntests, $history, $nhistory; returns a pointer to result<plan, string>).
pub fn scheduler(extra: &str, body: &str) -> String {
    format!(
        r#"(module
  {extra}
  {SCAFFOLD}
  (func (export "plan") (param $workers i32) (param $tests i32) (param $ntests i32)
        (param $history i32) (param $nhistory i32) (result i32)
    {body})
)"#
    )
}

/// A reporter guest: `on-event` runs `body` (returns a pointer to
/// result<_, string>), `finish` succeeds.
pub fn reporter(extra: &str, body: &str) -> String {
    format!(
        r#"(module
  {extra}
  {SCAFFOLD}
  (func (export "on-event") (param $kind i32) (param i32) (param i64) (param i32) (param f64)
        (param i32) (param i32) (param i32) (param i32) (param i32) (param i32) (param i32)
        (param i32) (result i32)
    {body})
  (func (export "finish") (result i32) (i32.const 16))
)"#
    )
}

/// A quarantine guest whose `decide` runs `body`.
pub fn quarantine(body: &str) -> String {
    quarantine_with("", body)
}

/// A quarantine guest with `extra` items (imports, data, functions).
pub fn quarantine_with(extra: &str, body: &str) -> String {
    format!(
        r#"(module
  {extra}
  {SCAFFOLD}
  (func (export "decide") (param $history i32) (param $n i32) (result i32)
    {body})
)"#
    )
}

/// Builds `wat` into a component for `world`, in a resolve holding this
/// repository's wit/ (with its version replaced by `version`) and the
/// minimal WASI packages, and writes it to `dir/name.wasm`.
pub fn build(dir: &Path, name: &str, world: &str, version: &str, wat: &str) -> PathBuf {
    let mut resolve = Resolve::default();
    // wit/ as a package directory, at the version asked for.
    let wit = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_root().join("wit")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("runner:policy@0.1.0", &format!("runner:policy@{version}"));
        std::fs::write(wit.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let (runner, _) = resolve.push_dir(wit.path()).expect("wit/ parses");
    for (i, wit) in WASI_WIT.iter().enumerate() {
        resolve.push_str(format!("wasi{i}.wit"), wit).unwrap();
    }
    let guests = resolve
        .push_str("hostile.wit", &HOSTILE_WIT.replace("0.1.0", version))
        .unwrap();
    // The worlds that add WASI are in the guests' package, the others in wit/.
    let world = resolve
        .select_world(&[guests], Some(world))
        .or_else(|_| resolve.select_world(&[runner], Some(world)))
        .unwrap();
    let mut module = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: bad WAT: {e}\n{wat}"));
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut e| e.encode())
        .unwrap_or_else(|e| panic!("{name}: not a valid {world:?} component: {e:#}"));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, component).unwrap();
    path
}

/// Imports and helpers for guests of the `clock-*` worlds: `$now`
/// (monotonic nanoseconds), `$sleep` (waits on a pollable for the given
/// nanoseconds, blocking in the host) and `$spin` (busy-waits, in wasm,
/// for the given nanoseconds).
pub const CLOCK: &str = r#"
  (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func $now (result i64)))
  (import "wasi:clocks/monotonic-clock@0.2.0" "subscribe-duration" (func $subscribe (param i64) (result i32)))
  (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
  (func $sleep (param $ns i64)
    (call $block (call $subscribe (local.get $ns))))
  (func $spin (param $ns i64)
    (local $until i64)
    (local.set $until (i64.add (call $now) (local.get $ns)))
    (loop $l (br_if $l (i64.lt_u (call $now) (local.get $until)))))
"#;

/// Imports and a helper for guests of the `stdio-reporter` world:
/// `$print` writes the `len` bytes at `ptr` to stdout (`stream` 0) or
/// stderr (1) with `blocking-write-and-flush`.
pub const STDIO: &str = r#"
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))
  (import "wasi:cli/stderr@0.2.0" "get-stderr" (func $stderr (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush"
    (func $write_flush (param i32 i32 i32 i32)))
  (func $print (param $stream i32) (param $ptr i32) (param $len i32)
    (call $write_flush
      (if (result i32) (local.get $stream) (then (call $stderr)) (else (call $stdout)))
      (local.get $ptr) (local.get $len) (i32.const 900)))
"#;
