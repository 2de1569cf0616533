//! The disk cache of compiled components. Compiling is the slow part of
//! loading a policy (tens of milliseconds for the defaults, seconds for an
//! interpreted-language policy); loading a cached artifact takes well under
//! a millisecond.
//!
//! An artifact is native code that runner maps and runs as it is, so an
//! entry is only used if it is one this user's runner wrote: each starts
//! with an HMAC-SHA256, under a random key of the user's, of the entry's
//! name and the artifact. A damaged entry, one written by another tool or
//! copied from elsewhere (a CI cache restored on a machine without the
//! key) does not verify and is compiled again. The key lives outside the
//! cache directory (see `lib.rs`), so whoever can only write the cache
//! can't forge an entry. Entries are named by the sha256 of the component
//! and of the engine's compatibility hash, so a new runner version or
//! engine setting never picks up a stale one.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;

type HmacSha256 = Hmac<Sha256>;

/// The entry format: a tag, then the artifact.
const FORMAT: &[u8] = b"runner-cache-2";
/// Bytes of the tag in front of each entry.
const TAG: usize = 32;
/// Bytes of the key.
const KEY: usize = 32;

/// Where compiled components are kept, and the key their tags are made with.
pub(crate) struct Cache {
    dir: PathBuf,
    key_file: PathBuf,
    /// Read (or made) on first use; `None` if that failed.
    key: std::sync::OnceLock<Option<[u8; KEY]>>,
}

impl Cache {
    /// A cache in `dir`, its entries keyed by `key_file` (created if
    /// missing; default: `key` in `dir`, which then only guards against
    /// damage and other tools, not against someone who can read `dir`).
    pub(crate) fn new(dir: PathBuf, key_file: Option<PathBuf>) -> Cache {
        let key_file = key_file.unwrap_or_else(|| dir.join("key"));
        Cache {
            dir,
            key_file,
            key: std::sync::OnceLock::new(),
        }
    }

    /// The artifact cached for `wasm`, if there is one and it verifies. A
    /// present entry that doesn't verify is named in a warning.
    pub(crate) fn get(&self, engine: &Engine, plugin: &str, wasm: &[u8]) -> Option<Vec<u8>> {
        let path = self.entry(engine, wasm);
        let mut entry = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut entry))
            .ok()?;
        let key = self.key()?;
        let verified = entry.len() >= TAG && {
            let (tag, artifact) = entry.split_at(TAG);
            tagger(key, &path)
                .chain_update(artifact)
                .verify_slice(tag)
                .is_ok()
        };
        if !verified {
            warn_unusable(
                plugin,
                &path,
                "it is damaged or was not written by this user's runner",
            );
            return None;
        }
        entry.drain(..TAG);
        Some(entry)
    }

    /// Stores `artifact` for `wasm`, under a temporary name renamed into
    /// place, so a concurrent run never reads half an entry. A cache that
    /// can't be written is only a slower next run.
    pub(crate) fn put(&self, engine: &Engine, plugin: &str, wasm: &[u8], artifact: &[u8]) {
        let Some(key) = self.key() else { return };
        let path = self.entry(engine, wasm);
        let tag = tagger(key, &path).chain_update(artifact).finalize();
        let stored = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
            file.write_all(&tag.into_bytes())?;
            file.write_all(artifact)?;
            file.persist(&path)?;
            Ok(())
        });
        if let Err(e) = stored {
            crate::errln!(
                "runner: warning: failed to cache compiled policy `{plugin}` in {}: {e}",
                super::text::safe_path(&self.dir)
            );
        }
    }

    /// Tells the user an entry that verified was still refused by wasmtime
    /// (it checks the format and the engine settings again).
    pub(crate) fn rejected(&self, engine: &Engine, plugin: &str, wasm: &[u8], why: &str) {
        warn_unusable(plugin, &self.entry(engine, wasm), why);
    }

    fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = ShaHasher(Sha256::new());
        // Entries of the untagged format before it are never looked at.
        hasher.0.update(FORMAT);
        hasher.0.update(wasm);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let mut name = String::with_capacity(70);
        for byte in hasher.0.finalize() {
            let _ = write!(name, "{byte:02x}");
        }
        name.push_str(".cwasm");
        self.dir.join(name)
    }

    fn key(&self) -> Option<&[u8; KEY]> {
        self.key
            .get_or_init(|| match read_or_make_key(&self.key_file) {
                Ok(key) => Some(key),
                Err(e) => {
                    crate::errln!(
                        "runner: warning: compiled policies are not cached: the cache key {} \
                         can't be read or made: {e}",
                        super::text::safe_path(&self.key_file)
                    );
                    None
                }
            })
            .as_ref()
    }
}

/// The tag of the entry at `path`: its name (the component and engine it
/// was compiled from) comes first, so an entry can't pass for another.
fn tagger(key: &[u8; KEY], path: &Path) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    let name = path.file_name().unwrap_or_default().as_encoded_bytes();
    mac.update(&(name.len() as u64).to_le_bytes());
    mac.update(name);
    mac
}

fn warn_unusable(plugin: &str, path: &Path, why: &str) {
    crate::errln!(
        "runner: warning: recompiling policy `{plugin}`: its cached artifact {} is unusable: {}",
        super::text::safe_path(path),
        super::text::safe(why)
    );
}

/// The key in `file`, or a new random one written there (readable by the
/// user only). Two runs making it at once agree on the first written.
fn read_or_make_key(file: &Path) -> std::io::Result<[u8; KEY]> {
    let read = |file: &Path| -> std::io::Result<[u8; KEY]> {
        let bytes = std::fs::read(file)?;
        bytes.try_into().map_err(|_| {
            std::io::Error::other(format!(
                "it is not {KEY} bytes long; delete it and a new one is made"
            ))
        })
    };
    match read(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = [0; KEY];
    getrandom::fill(&mut key).map_err(std::io::Error::other)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&key)?;
    match tmp.persist_noclobber(file) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read(file),
        Err(e) => Err(e.error),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::new(&super::super::engine::config()).unwrap()
    }

    #[test]
    fn entries_verify_only_with_the_key_that_wrote_them() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let mine = Cache::new(root.path().join("cache"), Some(root.path().join("a/key")));
        mine.put(&engine, "p", b"wasm", b"compiled code");
        assert_eq!(mine.get(&engine, "p", b"wasm").unwrap(), b"compiled code");
        // Another component's entry can't stand in for this one.
        let entry = mine.entry(&engine, b"wasm");
        std::fs::copy(&entry, mine.entry(&engine, b"other")).unwrap();
        assert_eq!(mine.get(&engine, "p", b"other"), None);
        // Nor can the same cache read with another key (another user, a
        // CI cache restored elsewhere).
        let theirs = Cache::new(root.path().join("cache"), Some(root.path().join("b/key")));
        assert_eq!(theirs.get(&engine, "p", b"wasm"), None);
        // Any changed byte is caught.
        let mut bytes = std::fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&entry, bytes).unwrap();
        assert_eq!(mine.get(&engine, "p", b"wasm"), None);
        std::fs::write(&entry, b"short").unwrap();
        assert_eq!(mine.get(&engine, "p", b"wasm"), None);
    }

    #[test]
    fn the_key_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("state/runner/cache-key");
        let key = read_or_make_key(&file).unwrap();
        assert_eq!(read_or_make_key(&file).unwrap(), key);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::write(&file, b"short").unwrap();
        assert!(read_or_make_key(&file).is_err());
    }
}
