//! The `output` interface: a reporter writes files only inside its own
//! directory. The directory is opened once as a cap-std `Dir`, which can't
//! reach outside itself; paths are also checked first so a guest gets a
//! clear refusal rather than an I/O error. A reporter's writes are bounded
//! per run in bytes and in the files and directories they name, since an
//! empty file costs no bytes but still an inode and a directory entry.

use std::collections::HashSet;
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use super::bindings::output;
use super::engine::PluginState;
use super::text::{safe, safe_path};

/// Bytes one reporter may write in a run, so a runaway plugin can't fill
/// the disk.
const MAX_OUTPUT_BYTES: u64 = 1 << 30;
/// Longest path a reporter may name.
const MAX_PATH: usize = 1024;
/// Files and directories one reporter may name in a run: enough for a
/// report per test of a large suite, not for filling a disk with inodes.
const MAX_ENTRIES: usize = 10_000;

/// A reporter's output directory.
pub(crate) struct OutputDir {
    dir: Dir,
    path: PathBuf,
    written: u64,
    /// Every file and directory the reporter has named this run.
    entries: HashSet<PathBuf>,
}

impl OutputDir {
    /// Opens `path`, creating it if needed, and checks that a file can be
    /// created in it, so that a read-only directory is found before the run
    /// rather than at the reporter's first write.
    pub(crate) fn open(path: &Path) -> io::Result<OutputDir> {
        std::fs::create_dir_all(path)?;
        tempfile::tempfile_in(path)?;
        Ok(OutputDir {
            dir: Dir::open_ambient_dir(path, ambient_authority())?,
            path: path.to_owned(),
            written: 0,
            entries: HashSet::new(),
        })
    }

    /// Replaces `rel` with `contents`, through a temporary file and a rename.
    pub(crate) fn write(&mut self, rel: &str, contents: &[u8]) -> Result<(), String> {
        let path = self.admit(rel, contents.len())?;
        let tmp = match path.file_name() {
            Some(name) => path.with_file_name(format!(".{}.tmp", name.to_string_lossy())),
            None => return Err(format!("`{rel}` does not name a file")),
        };
        self.create_parent(path)
            .and_then(|()| self.dir.write(&tmp, contents))
            .and_then(|()| self.dir.rename(&tmp, &self.dir, path))
            .map_err(|e| self.io_error(rel, e))
    }

    /// Appends `contents` to `rel`, creating it if missing.
    pub(crate) fn append(&mut self, rel: &str, contents: &[u8]) -> Result<(), String> {
        let path = self.admit(rel, contents.len())?;
        self.create_parent(path)
            .and_then(|()| {
                let options = OpenOptions::new().append(true).create(true).clone();
                self.dir.open_with(path, &options)?.write_all(contents)
            })
            .map_err(|e| self.io_error(rel, e))
    }

    /// Checks that `rel` stays inside the directory and that `len` more bytes
    /// and the entries it names fit the budgets, and counts them.
    fn admit<'a>(&mut self, rel: &'a str, len: usize) -> Result<&'a Path, String> {
        let path = Path::new(rel);
        let shown = || safe(&rel.chars().take(MAX_PATH).collect::<String>());
        if rel.len() > MAX_PATH
            || rel.is_empty()
            || !path.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "refused path `{}`: it must be relative, without `..` or `.`",
                shown()
            ));
        }
        let written = self.written.saturating_add(len as u64);
        if written > MAX_OUTPUT_BYTES {
            return Err(format!(
                "refused to write `{}`: the reporter output limit of {} MiB is reached",
                shown(),
                MAX_OUTPUT_BYTES >> 20
            ));
        }
        // The file and each directory above it, once each per run.
        let new: Vec<&Path> = path
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty() && !self.entries.contains(*a))
            .collect();
        if self.entries.len() + new.len() > MAX_ENTRIES {
            return Err(format!(
                "refused to write `{}`: a reporter may create at most {MAX_ENTRIES} files and \
                 directories in a run",
                shown()
            ));
        }
        self.entries.extend(new.into_iter().map(Path::to_owned));
        self.written = written;
        Ok(path)
    }

    fn create_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => self.dir.create_dir_all(parent),
            _ => Ok(()),
        }
    }

    fn io_error(&self, rel: &str, e: io::Error) -> String {
        format!(
            "failed to write `{}` in {}: {e}",
            safe(rel),
            safe_path(&self.path)
        )
    }
}

/// Before the run's output directory is known (during `configure`), every
/// write is refused.
impl output::Host for PluginState<Option<OutputDir>> {
    fn write(&mut self, path: String, contents: Vec<u8>) -> Result<(), String> {
        match &mut self.data {
            Some(dir) => dir.write(&path, &contents),
            None => Err(NOT_OPEN.to_owned()),
        }
    }

    fn append(&mut self, path: String, contents: Vec<u8>) -> Result<(), String> {
        match &mut self.data {
            Some(dir) => dir.append(&path, &contents),
            None => Err(NOT_OPEN.to_owned()),
        }
    }
}

const NOT_OPEN: &str = "the output directory is not open yet: write from `on-event` or `finish`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_leave_the_dir() {
        let root = tempfile::tempdir().unwrap();
        let mut out = OutputDir::open(&root.path().join("out")).unwrap();
        for path in ["../x", "/etc/x", "a/../../x", "./x", ""] {
            let err = out.write(path, b"x").unwrap_err();
            assert!(err.starts_with("refused path"), "{path}: {err}");
            let err = out.append(path, b"x").unwrap_err();
            assert!(err.starts_with("refused path"), "{path}: {err}");
        }
        assert!(!root.path().join("x").exists());
    }

    #[test]
    fn writes_replace_and_appends_extend() {
        let root = tempfile::tempdir().unwrap();
        let mut out = OutputDir::open(root.path()).unwrap();
        out.write("sub/r.xml", b"old").unwrap();
        out.write("sub/r.xml", b"new").unwrap();
        out.append("log.txt", b"a").unwrap();
        out.append("log.txt", b"b").unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("sub/r.xml"), "new");
        assert_eq!(read("log.txt"), "ab");
        let names: Vec<_> = std::fs::read_dir(root.path().join("sub"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn caps_files_and_directories_empty_or_not() {
        let root = tempfile::tempdir().unwrap();
        let mut out = OutputDir::open(root.path()).unwrap();
        for i in 0..MAX_ENTRIES - 1 {
            out.write(&format!("f{i}"), b"").unwrap();
        }
        // Rewriting a file names nothing new.
        out.write("f0", b"").unwrap();
        // A file in a new directory names two entries: one left is too few.
        let err = out.append("d/x", b"").unwrap_err();
        assert!(err.contains("at most 10000 files and directories"), "{err}");
        assert!(!root.path().join("d").exists());
        out.write("last", b"").unwrap();
        let err = out.write("one-more", b"").unwrap_err();
        assert!(err.contains("at most 10000"), "{err}");
        let count = std::fs::read_dir(root.path()).unwrap().count();
        assert_eq!(count, MAX_ENTRIES);
    }

    #[test]
    fn refusals_escape_the_path() {
        let root = tempfile::tempdir().unwrap();
        let mut out = OutputDir::open(root.path()).unwrap();
        let err = out.write("../\x1b[2J", b"x").unwrap_err();
        assert!(err.contains("`../\\u{1b}[2J`"), "{err}");
    }

    #[test]
    fn caps_total_bytes() {
        let root = tempfile::tempdir().unwrap();
        let mut out = OutputDir::open(root.path()).unwrap();
        out.written = MAX_OUTPUT_BYTES - 1;
        let err = out.append("x", b"too much").unwrap_err();
        assert!(err.contains("output limit"), "{err}");
    }
}
