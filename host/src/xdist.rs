//! pytest-xdist's options, taken over by runner. pytest parses them in the
//! zygote (after `--`, in the ini file's `addopts`, in `PYTEST_ADDOPTS`);
//! the shim (`xdist_options.py`) records them, keeps xdist from acting on
//! them and reports them here. `-n`, `--maxprocesses` and
//! `--max-worker-restart` feed `settings`' decisions; what runner cannot do
//! (a `--dist` mode its scheduler does not have, `--tx`, `--looponfail`) is
//! said in a warning, never ignored in silence.

use serde::Deserialize;

use crate::workers::{CpuCounts, Workers};

/// What pytest parsed of xdist's options, as the zygote reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct XdistOptions {
    /// `-n/--numprocesses`, if given.
    pub numprocesses: Option<Workers>,
    /// `--maxprocesses`: caps the workers `-n` asks for (0: no cap).
    pub maxprocesses: Option<u32>,
    /// `--max-worker-restart`.
    pub maxworkerrestart: Option<u32>,
    /// `--dist` (`-d` is `load`); `no` when not given.
    pub dist: Option<String>,
    /// `--tx` specs: remote or subprocess environments.
    pub tx: Vec<String>,
    /// `-f/--looponfail`.
    pub looponfail: bool,
    /// What `auto` and `logical` come to, for whichever was asked.
    pub cpus: CpuCounts,
    /// What the counting said (xdist's warning about a bad
    /// `PYTEST_XDIST_AUTO_NUM_WORKERS`).
    pub notes: Vec<String>,
}

/// `--dist` modes that mean what runner does anyway: load balancing.
const LOAD_BALANCED: &[&str] = &["no", "load"];

impl XdistOptions {
    /// The workers pytest's `-n` asks for, capped by `--maxprocesses` as
    /// xdist caps them; none without `-n`.
    pub fn workers(&self) -> Option<Workers> {
        let asked = self.numprocesses?;
        let cap = self.maxprocesses.filter(|&cap| cap > 0);
        Some(match (asked, cap) {
            // xdist's -n 0 is "no distribution": one worker, nothing to cap.
            (Workers::Count(0), _) | (_, None) => asked,
            (asked, Some(cap)) => Workers::Count(asked.count(&self.cpus).min(cap)),
        })
    }

    /// One line for each option runner does not honour, saying what it
    /// does instead.
    pub fn warnings(&self) -> Vec<String> {
        let mut lines = self.notes.clone();
        match self.dist.as_deref() {
            None => {}
            Some(mode) if LOAD_BALANCED.contains(&mode) => {}
            Some("each") => lines.push(
                "--dist each is not supported; each test runs once, on one worker (see \"Coming from pytest-xdist\" in runner's README)".into(),
            ),
            Some(mode) => lines.push(format!(
                "--dist {mode} is not supported yet; tests are load-balanced one by one (the scheduler policy decides; see \"Coming from pytest-xdist\" in runner's README)"
            )),
        }
        if !self.tx.is_empty() {
            lines.push(format!(
                "--tx {} is not supported; runner's workers are local processes it forks (their number is -n)",
                self.tx.join(" --tx ")
            ));
        }
        if self.looponfail {
            lines.push(
                "--looponfail is not supported; the suite runs once (`runner --watch` reruns the failed tests, then all, on every change)".into(),
            );
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: &str) -> XdistOptions {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn read_as_the_zygote_reports_them() {
        let read = options(
            r#"{"numprocesses": "auto", "maxprocesses": 2, "maxworkerrestart": 3, "dist": "loadfile",
                "tx": ["popen"], "looponfail": true, "cpus": {"auto": 8}, "notes": ["x"]}"#,
        );
        assert_eq!(read.numprocesses, Some(Workers::Auto));
        assert_eq!(read.cpus.auto, Some(8));
        assert_eq!(read.cpus.logical, None);
        assert_eq!(options("{}"), XdistOptions::default());
        assert!(serde_json::from_str::<XdistOptions>(r#"{"numprocesses": -1}"#).is_err());
    }

    #[test]
    fn maxprocesses_caps_what_n_asks_for() {
        let cpus = CpuCounts {
            auto: Some(8),
            logical: Some(16),
        };
        let asked = |numprocesses, maxprocesses| XdistOptions {
            numprocesses,
            maxprocesses,
            cpus,
            ..Default::default()
        };
        assert_eq!(asked(None, Some(2)).workers(), None);
        assert_eq!(
            asked(Some(Workers::Auto), None).workers(),
            Some(Workers::Auto)
        );
        assert_eq!(
            asked(Some(Workers::Auto), Some(3)).workers(),
            Some(Workers::Count(3))
        );
        assert_eq!(
            asked(Some(Workers::Logical), Some(0)).workers(),
            Some(Workers::Logical)
        );
        assert_eq!(
            asked(Some(Workers::Count(2)), Some(4)).workers(),
            Some(Workers::Count(2))
        );
        assert_eq!(
            asked(Some(Workers::Count(0)), Some(4)).workers(),
            Some(Workers::Count(0))
        );
    }

    #[test]
    fn load_balancing_is_silent_every_other_mode_is_one_warning() {
        for quiet in [None, Some("no"), Some("load")] {
            let options = XdistOptions {
                dist: quiet.map(str::to_owned),
                ..Default::default()
            };
            assert_eq!(options.warnings(), Vec::<String>::new(), "{quiet:?}");
        }
        for mode in ["loadfile", "loadscope", "loadgroup", "worksteal", "each"] {
            let options = XdistOptions {
                dist: Some(mode.into()),
                ..Default::default()
            };
            let warnings = options.warnings();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].starts_with(&format!("--dist {mode} is not supported")));
            assert!(warnings[0].contains("README"), "{warnings:?}");
        }
        let options = XdistOptions {
            tx: vec!["2*popen".into(), "ssh=host".into()],
            looponfail: true,
            notes: vec!["PYTEST_XDIST_AUTO_NUM_WORKERS is not a number".into()],
            ..Default::default()
        };
        let warnings = options.warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[1].contains("--tx 2*popen --tx ssh=host"));
        assert!(warnings[2].contains("runner --watch"));
    }
}
