//! How many workers a run asks for, in pytest-xdist's terms: a number
//! (`0` is xdist's "no distribution", which for runner is one worker),
//! `auto` or `logical`. The same forms are accepted by runner's `-n`, by
//! `workers` in runner's config file and by pytest's own `-n` (after `--`
//! or in addopts, reported by the zygote); `settings` decides which one
//! wins.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A request for a number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// This many; 0 means one.
    Count(u32),
    /// What xdist's `-n auto` gives: physical cores (psutil), else the
    /// CPUs runner may use (`PYTEST_XDIST_AUTO_NUM_WORKERS` and a project's
    /// `pytest_xdist_auto_num_workers` hook first).
    Auto,
    /// What xdist's `-n logical` gives: logical CPUs.
    Logical,
}

/// What `auto` and `logical` come to in the project's Python, as xdist
/// computes them; the zygote reports those that were asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CpuCounts {
    pub auto: Option<u32>,
    pub logical: Option<u32>,
}

/// The accepted forms, for error messages.
const FORMS: &str = "a number of workers (0 means one), `auto` (one per physical core) or `logical` (one per logical CPU)";

impl Workers {
    /// The number of workers this asks for, at least one. `auto` or
    /// `logical` the zygote did not count are the CPUs runner may use.
    pub fn count(self, cpus: &CpuCounts) -> u32 {
        let count = match self {
            Workers::Count(n) => n,
            Workers::Auto => cpus.auto.unwrap_or_else(available_cpus),
            Workers::Logical => cpus.logical.unwrap_or_else(available_cpus),
        };
        count.max(1)
    }

    /// `auto` or `logical`: the count the zygote must work out.
    pub fn cpu_mode(self) -> Option<&'static str> {
        match self {
            Workers::Count(_) => None,
            Workers::Auto => Some("auto"),
            Workers::Logical => Some("logical"),
        }
    }
}

/// The CPUs this process may run on (its affinity, cgroup quota).
pub fn available_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

impl FromStr for Workers {
    type Err = String;

    fn from_str(text: &str) -> Result<Workers, String> {
        match text {
            "auto" => Ok(Workers::Auto),
            "logical" => Ok(Workers::Logical),
            number => number
                .parse::<u32>()
                .map(Workers::Count)
                .map_err(|_| format!("expected {FORMS}, got {text:?}")),
        }
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Count(n) => write!(f, "{n}"),
            Workers::Auto => f.write_str("auto"),
            Workers::Logical => f.write_str("logical"),
        }
    }
}

/// A number or one of the words, as TOML and the zygote's JSON write them.
impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Workers, D::Error> {
        struct WorkersVisitor;

        impl Visitor<'_> for WorkersVisitor {
            type Value = Workers;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(FORMS)
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Workers, E> {
                u32::try_from(n)
                    .map(Workers::Count)
                    .map_err(|_| E::custom(format!("expected {FORMS}, got {n}")))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Workers, E> {
                u32::try_from(n)
                    .map(Workers::Count)
                    .map_err(|_| E::custom(format!("expected {FORMS}, got {n}")))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Workers, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(WorkersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_the_two_words_parse() {
        assert_eq!("4".parse(), Ok(Workers::Count(4)));
        assert_eq!("0".parse(), Ok(Workers::Count(0)));
        assert_eq!("auto".parse(), Ok(Workers::Auto));
        assert_eq!("logical".parse(), Ok(Workers::Logical));
    }

    #[test]
    fn anything_else_is_refused_naming_the_accepted_forms() {
        for bad in ["-1", "many", "", "2.5", "Auto", "4294967296", "1e3"] {
            let error = bad.parse::<Workers>().unwrap_err();
            assert!(
                error.contains("`auto`")
                    && error.contains("`logical`")
                    && error.contains("0 means one"),
                "{bad}: {error}"
            );
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn zero_is_one_worker_and_the_words_take_the_zygotes_counts() {
        let cpus = CpuCounts {
            auto: Some(3),
            logical: Some(6),
        };
        assert_eq!(Workers::Count(0).count(&cpus), 1);
        assert_eq!(Workers::Count(7).count(&cpus), 7);
        assert_eq!(Workers::Auto.count(&cpus), 3);
        assert_eq!(Workers::Logical.count(&cpus), 6);
        // A hook that says 0 (xdist: no distribution) is one worker too.
        let zero = CpuCounts {
            auto: Some(0),
            logical: None,
        };
        assert_eq!(Workers::Auto.count(&zero), 1);
        assert_eq!(
            Workers::Logical.count(&CpuCounts::default()),
            available_cpus()
        );
    }

    #[test]
    fn read_from_toml_and_json_as_numbers_or_words() {
        #[derive(Deserialize)]
        struct File {
            workers: Workers,
        }
        let read = |text: &str| toml::from_str::<File>(text).map(|f| f.workers);
        assert_eq!(read("workers = 3").unwrap(), Workers::Count(3));
        assert_eq!(read("workers = 'auto'").unwrap(), Workers::Auto);
        assert!(
            read("workers = -2")
                .unwrap_err()
                .to_string()
                .contains("`auto`")
        );
        assert!(
            read("workers = 'all'")
                .unwrap_err()
                .to_string()
                .contains("`logical`")
        );
        assert_eq!(
            serde_json::from_str::<Workers>("\"logical\"").unwrap(),
            Workers::Logical
        );
        assert_eq!(
            serde_json::from_str::<Workers>("0").unwrap(),
            Workers::Count(0)
        );
        assert!(serde_json::from_str::<Workers>("-1").is_err());
    }
}
