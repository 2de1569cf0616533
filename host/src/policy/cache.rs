//! The disk cache of compiled components. Compiling is the slow part of
//! loading a policy (tens of milliseconds per component); deserializing a
//! cached artifact takes well under one. Artifacts are keyed by the sha256
//! of the component and of the engine's compatibility hash, so a new runner
//! version or engine setting never picks up a stale one.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Loads the compiled form of `wasm` from `cache_dir`, or compiles it and
/// stores the result there. A cache that can't be read or written is only a
/// slower load, never an error.
pub(crate) fn load(
    engine: &Engine,
    plugin: &str,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm);
    };
    let path = artifact_path(engine, wasm, dir);
    if path.is_file() {
        // SAFETY: the file is one this function wrote (keyed by content and
        // engine hash, in the runner's own cache directory), never an
        // artifact from a plugin author; wasmtime rejects artifacts from
        // another version or configuration with an error.
        #[allow(unsafe_code)]
        let cached = unsafe { Component::deserialize_file(engine, &path) };
        match cached {
            Ok(component) => return Ok(component),
            Err(e) => eprintln!(
                "runner: warning: recompiling policy `{plugin}`, its cached artifact {} is unusable: {e:#}",
                path.display()
            ),
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store(&component, dir, &path) {
        eprintln!(
            "runner: warning: failed to cache compiled policy `{plugin}` in {}: {e}",
            dir.display()
        );
    }
    Ok(component)
}

fn artifact_path(engine: &Engine, wasm: &[u8], dir: &Path) -> PathBuf {
    let mut hasher = ShaHasher(Sha256::new());
    hasher.0.update(wasm);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut name = String::with_capacity(70);
    for byte in hasher.0.finalize() {
        let _ = write!(name, "{byte:02x}");
    }
    name.push_str(".cwasm");
    dir.join(name)
}

/// Writes the artifact under a temporary name and renames it into place, so
/// a concurrent run never maps a half-written file.
fn store(component: &Component, dir: &Path, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&bytes)?;
    file.persist(path)?;
    Ok(())
}

/// Feeds a `Hash` value into sha256, since the compatibility hash is only
/// exposed through `Hash`.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// `Hash` impls only call `write*`; the digest is read from `self.0`.
    fn finish(&self) -> u64 {
        0
    }
}
