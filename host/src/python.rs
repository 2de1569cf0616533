//! Finding the Python interpreter to run pytest with.

use std::env;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("the Python given with --python does not exist: {0}")]
    Missing(PathBuf),
    #[error(
        "no Python interpreter found\n  hint: pass --python PATH, activate a virtualenv, or put python3 on PATH"
    )]
    NotFound,
}

/// `--python`, then the active virtualenv, then `python3` on PATH.
pub fn find_python(explicit: Option<&Path>) -> Result<PathBuf, PythonError> {
    if let Some(path) = explicit {
        // A bare name ("python3.12") is looked up on PATH like a shell would.
        if path.components().count() == 1 && !path.exists() {
            return search_path(path.as_os_str()).ok_or_else(|| PythonError::Missing(path.into()));
        }
        return if path.exists() {
            Ok(path.into())
        } else {
            Err(PythonError::Missing(path.into()))
        };
    }
    if let Some(venv) = env::var_os("VIRTUAL_ENV") {
        let candidate = Path::new(&venv).join("bin").join("python");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    search_path("python3".as_ref()).ok_or(PythonError::NotFound)
}

fn search_path(name: &std::ffi::OsStr) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_must_exist() {
        let missing = Path::new("/definitely/not/python");
        assert!(matches!(
            find_python(Some(missing)),
            Err(PythonError::Missing(_))
        ));
        assert!(matches!(
            find_python(Some(Path::new("no-such-python-name"))),
            Err(PythonError::Missing(_))
        ));
    }

    #[test]
    fn bare_names_are_looked_up_on_path() {
        let found = find_python(Some(Path::new("sh"))).expect("sh is on PATH");
        assert!(found.is_absolute(), "{found:?}");
    }
}
