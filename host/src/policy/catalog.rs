//! Which components fill which slot: the embedded defaults, every `*.wasm`
//! in the project's plugins directory, and each `--policy FILE`. A
//! component's slot and WIT version are read from what it imports and
//! exports, without running any of its code.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::PolicyError;
use super::engine::PolicyEngine;
use super::text::{needs_escape, safe, safe_path};

/// The built-in policies, built from plugins/ by build.rs.
pub(crate) const SCHEDULER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/scheduler.wasm"));
pub(crate) const REPORTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reporter.wasm"));
pub(crate) const QUARANTINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/quarantine.wasm"));

/// The WIT package policies are written against.
const PACKAGE: &str = "runner:policy";
/// The versions this host links: wasmtime links any `0.1.y` import to the
/// host's `0.1.z` (see wit/worlds.wit).
pub const SUPPORTED_VERSIONS: &str = "0.1.x";
/// Larger files are refused before compiling: compiling is not bounded by
/// the sandbox (an interpreted-language policy is 15–35 MB).
const MAX_WASM_BYTES: usize = 100 << 20;

/// The role a policy plays in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Scheduler,
    Reporter,
    Quarantine,
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::Scheduler => "scheduler",
            Slot::Reporter => "reporter",
            Slot::Quarantine => "quarantine",
        })
    }
}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built into the runner binary.
    Embedded,
    /// Found in the project's plugins directory.
    PluginsDir(PathBuf),
    /// Given with `--policy` (or `policies` in the config file).
    Explicit(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => f.write_str("embedded"),
            Source::PluginsDir(p) => write!(f, "plugins dir ({})", safe_path(p)),
            Source::Explicit(p) => write!(f, "--policy ({})", safe_path(p)),
        }
    }
}

/// What a reviewer needs to know about a policy before allowing it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// The name used in messages and in `--policy-opt NAME.KEY=VALUE`.
    pub name: String,
    pub slot: Slot,
    /// The `runner:policy` version it was built against, if it names one.
    pub version: Option<String>,
    /// Size of the component in bytes.
    pub size: usize,
    pub source: Source,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// Every interface it imports, e.g. `runner:policy/host@0.1.0`.
    pub imports: Vec<String>,
}

impl PluginInfo {
    /// Whether it imports any WASI interface (it then gets a WASI context
    /// that grants nothing).
    pub fn imports_wasi(&self) -> bool {
        self.imports.iter().any(|i| i.starts_with("wasi:"))
    }
}

/// What an import gives a policy, for `runner plugins`.
pub fn describe_import(name: &str) -> &'static str {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "runner:policy/types" => "type definitions only",
        "runner:policy/host" => "log lines, shown tagged with the plugin's name",
        "runner:policy/output" => "writes files in its own output directory, nothing else",
        "wasi:cli/stdout" | "wasi:cli/stderr" => "becomes log lines tagged with its name",
        "wasi:cli/stdin" => "empty",
        "wasi:cli/environment" => "empty: no variables, no args, no cwd",
        "wasi:cli/exit" => "ends the call with an error",
        "wasi:filesystem/preopens" => "no directories: no file can be opened",
        "wasi:filesystem/types" => "no descriptors to use",
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => "reads the clock",
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            "random bytes"
        }
        i if i.starts_with("wasi:sockets/") => "denied: no network",
        i if i.starts_with("wasi:io/") => "stream plumbing for the above",
        i if i.starts_with("wasi:cli/") => "terminal queries: none is a terminal",
        i if i.starts_with("wasi:") => "not provided: the policy will not load",
        _ => "not provided: the policy will not load",
    }
}

/// A policy read and compiled, not yet instantiated.
pub(crate) struct Candidate {
    pub(crate) info: PluginInfo,
    pub(crate) component: Component,
}

/// The policies chosen for a run.
pub(crate) struct Selection {
    pub(crate) scheduler: Candidate,
    pub(crate) reporters: Vec<Candidate>,
    pub(crate) quarantine: Candidate,
    /// Things the user should know (a plugins-dir policy replaced by one
    /// given explicitly).
    pub(crate) notes: Vec<String>,
}

impl Selection {
    pub(crate) fn infos(&self) -> Vec<PluginInfo> {
        std::iter::once(&self.scheduler)
            .chain(&self.reporters)
            .chain(std::iter::once(&self.quarantine))
            .map(|c| c.info.clone())
            .collect()
    }
}

/// Reads, compiles and sorts into slots the embedded defaults, the
/// `*.wasm` files of `plugins_dir` (in name order) and `explicit` (in the
/// order given). Reporters stack; a scheduler or quarantine policy given
/// explicitly replaces one from the plugins directory, which replaces the
/// default.
pub(crate) fn select(
    engine: &PolicyEngine,
    explicit: &[PathBuf],
    plugins_dir: Option<&Path>,
) -> Result<Selection, PolicyError> {
    let mut given = Vec::new();
    for path in explicit {
        given.push(read(engine, path, Source::Explicit(path.clone()))?);
    }
    let mut found = Vec::new();
    for path in plugin_files(plugins_dir)? {
        let same = |c: &Candidate| match &c.info.source {
            Source::Explicit(p) => same_file(p, &path),
            _ => false,
        };
        if !given.iter().any(same) {
            found.push(read(engine, &path, Source::PluginsDir(path.clone()))?);
        }
    }
    let mut names = BTreeSet::new();
    for c in found.iter().chain(&given) {
        if !names.insert(c.info.name.clone()) {
            return Err(PolicyError::Conflict(format!(
                "two policies are named `{}` (the name is the file name without `.wasm`); rename one",
                c.info.name
            )));
        }
    }

    let mut notes = Vec::new();
    let mut pick = |slot: Slot,
                    default: &dyn Fn() -> Result<Candidate, PolicyError>|
     -> Result<Candidate, PolicyError> {
        let take = |list: &mut Vec<Candidate>| -> Result<Option<Candidate>, PolicyError> {
            let mut of_slot: Vec<Candidate> = Vec::new();
            let mut rest = Vec::new();
            for c in list.drain(..) {
                if c.info.slot == slot {
                    of_slot.push(c);
                } else {
                    rest.push(c);
                }
            }
            *list = rest;
            match of_slot.len() {
                0 | 1 => Ok(of_slot.pop()),
                _ => Err(PolicyError::Conflict(format!(
                    "only one {slot} can run, but {} were given: {}",
                    of_slot.len(),
                    of_slot
                        .iter()
                        .map(|c| format!("`{}` ({})", c.info.name, c.info.source))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        };
        let explicit = take(&mut given)?;
        let from_dir = take(&mut found)?;
        match (explicit, from_dir) {
            (Some(e), Some(d)) => {
                notes.push(format!(
                    "{slot} `{}` from the plugins dir is replaced by `{}` given with --policy",
                    d.info.name, e.info.name
                ));
                Ok(e)
            }
            (Some(c), None) | (None, Some(c)) => Ok(c),
            (None, None) => default(),
        }
    };
    let scheduler = pick(Slot::Scheduler, &|| embedded(engine, Slot::Scheduler))?;
    let quarantine = pick(Slot::Quarantine, &|| embedded(engine, Slot::Quarantine))?;
    let mut reporters = vec![embedded(engine, Slot::Reporter)?];
    reporters.extend(found);
    reporters.extend(given);
    Ok(Selection {
        scheduler,
        reporters,
        quarantine,
        notes,
    })
}

/// The built-in policy for `slot`.
pub(crate) fn embedded(engine: &PolicyEngine, slot: Slot) -> Result<Candidate, PolicyError> {
    let wasm = match slot {
        Slot::Scheduler => SCHEDULER,
        Slot::Reporter => REPORTER,
        Slot::Quarantine => QUARANTINE,
    };
    inspect(engine, &format!("builtin:{slot}"), wasm, Source::Embedded)
}

fn plugin_files(dir: Option<&Path>) -> Result<Vec<PathBuf>, PolicyError> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PolicyError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn read(engine: &PolicyEngine, path: &Path, source: Source) -> Result<Candidate, PolicyError> {
    let name = name_of(path)?;
    // Read at most one byte past the bound: the size on disk says nothing
    // about a device or a pipe (`--policy /dev/zero`), or a file still growing.
    let mut wasm = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_WASM_BYTES as u64 + 1).read_to_end(&mut wasm))
        .map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
    if wasm.len() > MAX_WASM_BYTES {
        return Err(PolicyError::NotAComponent {
            plugin: name,
            why: format!(
                "{} is larger than the {} MiB a policy may be",
                safe_path(path),
                MAX_WASM_BYTES >> 20
            ),
        });
    }
    inspect(engine, &name, &wasm, source)
}

/// A policy's name: its file name without `.wasm`. The name tags its log
/// lines, keys its options and names its output directory
/// (`reports/NAME`), so it must be one ordinary path component that prints
/// as itself: a file named `...wasm` (name `..`) would otherwise write
/// into `.runner/` itself.
pub(crate) fn name_of(path: &Path) -> Result<String, PolicyError> {
    let refuse = |why: &str| PolicyError::BadName {
        path: safe_path(path),
        why: why.to_owned(),
    };
    let name = match path.file_stem() {
        None => return Err(refuse("is empty")),
        Some(stem) => stem.to_str().ok_or_else(|| refuse("is not valid UTF-8"))?,
    };
    if name.is_empty() {
        return Err(refuse("is empty"));
    }
    if name == "." || name == ".." {
        return Err(refuse("names a directory (`.` or `..`)"));
    }
    if name.contains(['/', '\\']) {
        return Err(refuse("contains a path separator"));
    }
    if name.chars().any(needs_escape) {
        return Err(refuse(
            "contains control or bidirectional characters (shown escaped above)",
        ));
    }
    if name.starts_with("builtin:") {
        return Err(refuse(
            "starts with `builtin:`, reserved for the built-in policies",
        ));
    }
    Ok(name.to_owned())
}

/// Compiles `wasm` (or loads it from the cache) and reads its slot,
/// version and imports from its type.
pub(crate) fn inspect(
    engine: &PolicyEngine,
    name: &str,
    wasm: &[u8],
    source: Source,
) -> Result<Candidate, PolicyError> {
    let not_a_component = |why: &str| PolicyError::NotAComponent {
        plugin: name.to_owned(),
        why: why.to_owned(),
    };
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err(not_a_component(
                "it is a core WebAssembly module, not a component; \
                 turn it into one with `wasm-tools component new`",
            ));
        }
        Some([0, b'a', b's', b'm', ..]) => {}
        _ => return Err(not_a_component("it is not a WebAssembly file")),
    }
    let component = engine.component(name, wasm, source == Source::Embedded)?;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine.engine())
        .map(|(n, _)| n.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine.engine())
        .map(|(n, _)| n.to_owned())
        .collect();

    let mut version = None;
    for item in imports.iter().chain(&exports) {
        let Some((interface, v)) = item.split_once('@') else {
            continue;
        };
        if !interface.starts_with(&format!("{PACKAGE}/")) {
            continue;
        }
        if !supported(v) {
            return Err(PolicyError::UnsupportedVersion {
                plugin: name.to_owned(),
                version: safe(v),
            });
        }
        version.get_or_insert_with(|| v.to_owned());
    }

    let has = |f: &str| exports.iter().any(|e| e == f);
    let slots: Vec<Slot> = [
        (has("plan"), Slot::Scheduler),
        (has("on-event") && has("finish"), Slot::Reporter),
        (has("decide"), Slot::Quarantine),
    ]
    .into_iter()
    .filter_map(|(yes, slot)| yes.then_some(slot))
    .collect();
    let slot = match slots[..] {
        [slot] => slot,
        [] => {
            return Err(PolicyError::NoSlot {
                plugin: name.to_owned(),
                exports: if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports
                        .iter()
                        .map(|e| format!("`{}`", safe(e)))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        _ => {
            return Err(not_a_component(
                "it exports the functions of more than one slot; a component fills one",
            ));
        }
    };
    let sha256 = Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Candidate {
        info: PluginInfo {
            name: name.to_owned(),
            slot,
            version,
            size: wasm.len(),
            source,
            sha256,
            imports,
        },
        component,
    })
}

/// `0.1.y` for any y (build metadata ignored); pre-releases never.
fn supported(version: &str) -> bool {
    let version = version.split('+').next().unwrap_or(version);
    let mut parts = version.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("0"), Some("1"), Some(patch), None) if patch.parse::<u64>().is_ok()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names_that_print_as_themselves() {
        for (file, name) in [
            ("p/by-file.wasm", "by-file"),
            ("a.b.wasm", "a.b"),
            (".wasm", ".wasm"),
        ] {
            assert_eq!(name_of(Path::new(file)).unwrap(), name);
        }
        for (file, why) in [
            ("p/...wasm", "names a directory"),
            ("..wasm", "names a directory"),
            ("p/\x1b[2J.wasm", "control or bidirectional"),
            ("p/a\u{202e}b.wasm", "control or bidirectional"),
            ("p/builtin:x.wasm", "reserved"),
            ("/", "is empty"),
        ] {
            let err = name_of(Path::new(file)).unwrap_err().to_string();
            assert!(err.contains(why), "{file:?}: {err}");
            assert!(!err.contains('\x1b') && !err.contains('\u{202e}'), "{err}");
        }
    }

    #[test]
    fn supports_every_0_1_patch_only() {
        for v in ["0.1.0", "0.1.7", "0.1.0+build"] {
            assert!(supported(v), "{v}");
        }
        for v in ["0.2.0", "1.0.0", "0.0.1", "0.1.0-pre", "0.1"] {
            assert!(!supported(v), "{v}");
        }
    }
}
