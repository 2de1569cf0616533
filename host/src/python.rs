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

/// `--python`, then the active virtualenv, then `python3` on PATH. A
/// `VIRTUAL_ENV` without a Python is reported through `warn` with the Python
/// used instead: it usually means a deleted or moved virtualenv is still
/// activated, and pytest would otherwise run against other packages unnoticed.
pub fn find_python(
    explicit: Option<&Path>,
    warn: &mut dyn FnMut(String),
) -> Result<PathBuf, PythonError> {
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
    // An empty VIRTUAL_ENV is unset, not the current directory.
    let venv = env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty());
    let ignored = match venv {
        Some(venv) => {
            let venv = PathBuf::from(venv);
            let candidate = venv.join("bin").join("python");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
            let why = if venv.is_dir() {
                format!("it has no Python at {}", candidate.display())
            } else {
                "that directory does not exist".to_string()
            };
            Some(format!("VIRTUAL_ENV is {}, but {why}", venv.display()))
        }
        None => None,
    };
    let found = search_path("python3".as_ref());
    if let Some(ignored) = ignored {
        let instead = match &found {
            Some(python) => format!("using {} from PATH instead", python.display()),
            None => "and there is no python3 on PATH".to_string(),
        };
        warn(format!(
            "{ignored}; ignoring it and {instead} (deactivate the virtualenv or pass --python)"
        ));
    }
    found.ok_or(PythonError::NotFound)
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
            find_python(Some(missing), &mut |_| {}),
            Err(PythonError::Missing(_))
        ));
        assert!(matches!(
            find_python(Some(Path::new("no-such-python-name")), &mut |_| {}),
            Err(PythonError::Missing(_))
        ));
    }

    #[test]
    fn bare_names_are_looked_up_on_path() {
        let found = find_python(Some(Path::new("sh")), &mut |_| {}).expect("sh is on PATH");
        assert!(found.is_absolute(), "{found:?}");
    }
}
