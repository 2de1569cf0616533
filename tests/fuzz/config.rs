//! The config parser (`config::parse`, for runner.toml and for
//! `[tool.runner]` of pyproject.toml) against documents built from every
//! known key with values of every TOML type and range, unknown keys, damaged
//! text and deep nesting.
//!
//! Properties: nothing panics; a document is accepted exactly when a model
//! of the rules (types, ranges, known keys) accepts it, with the same
//! values; a refusal names a key at fault; the `[policy.NAME]` options
//! convert or are refused likewise.

use std::path::PathBuf;

use proptest::prelude::*;
use runner::config::{FileConfig, FileKind, MAX_SECS, ProjectConfig, parse};
use runner::workers::Workers;
use toml::{Table, Value};

use crate::{cases, text};

const SECS: &[&str] = &["timeout", "slow", "global-timeout", "policy-deadline"];
const KEYS: &[&str] = &[
    "workers",
    "timeout",
    "slow",
    "global-timeout",
    "max-worker-restart",
    "junitxml",
    "policies",
    "plugins-dir",
    "policy-memory-mib",
    "policy-deadline",
    "policy",
];

fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        prop::sample::select(vec![
            -1,
            0,
            1,
            4096,
            4097,
            1_000_000_000,
            1_000_000_001,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            i64::MIN,
            i64::MAX,
        ]),
        0i64..100,
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            5e-324,
            MAX_SECS,
            MAX_SECS + 1.0,
            1e300,
        ]),
        (1u32..100_000).prop_map(|ms| ms as f64 / 1000.0),
    ]
}

/// Any TOML value, nested a little.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        integer().prop_map(Value::Integer),
        float().prop_map(Value::Float),
        text().prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
        Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..3)
                .prop_map(|kv| Value::Table(kv.into_iter().collect())),
        ]
    })
}

/// A value for `key`, of the right type more often than not.
fn value_for(key: &'static str) -> BoxedStrategy<Value> {
    let right: BoxedStrategy<Value> = match key {
        "workers" => prop_oneof![
            3 => integer().prop_map(Value::Integer),
            1 => prop::sample::select(vec!["auto", "logical", "Auto", "0", "-1", "many", ""])
                .prop_map(|s| Value::String(s.to_owned())),
        ]
        .boxed(),
        "max-worker-restart" | "policy-memory-mib" => integer().prop_map(Value::Integer).boxed(),
        "junitxml" | "plugins-dir" => text().prop_map(Value::String).boxed(),
        "policies" => prop::collection::vec(text().prop_map(Value::String), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        "policy" => prop::collection::vec(
            (
                "[a-z:.-]{1,10}",
                prop::collection::vec(("[a-z-]{1,8}", value()), 0..3),
            ),
            0..3,
        )
        .prop_map(|plugins| {
            Value::Table(
                plugins
                    .into_iter()
                    .map(|(name, kv)| (name, Value::Table(kv.into_iter().collect())))
                    .collect(),
            )
        })
        .boxed(),
        // Seconds: floats, and integers (TOML's `30`).
        _ => prop_oneof![
            float().prop_map(Value::Float),
            integer().prop_map(Value::Integer)
        ]
        .boxed(),
    };
    prop_oneof![3 => right, 1 => value()].boxed()
}

fn document() -> impl Strategy<Value = Table> {
    let known =
        prop::sample::select(KEYS).prop_flat_map(|key| (Just(key.to_string()), value_for(key)));
    let unknown = ("[a-z-]{1,12}", value());
    prop::collection::vec(prop_oneof![8 => known, 1 => unknown], 0..6)
        .prop_map(|entries| entries.into_iter().collect())
}

/// What the rules make of a document: its values, or the keys at fault.
fn model(doc: &Table) -> Result<FileConfig, Vec<String>> {
    let mut config = FileConfig::default();
    let mut faults = Vec::new();
    let u32_in = |value: &Value, min: i64, max: i64| match value {
        Value::Integer(n) if (min..=max).contains(n) => Some(*n as u32),
        _ => None,
    };
    for (key, value) in doc {
        let ok = match key.as_str() {
            "workers" => {
                let workers = match value {
                    Value::String(s) if s == "auto" => Some(Workers::Auto),
                    Value::String(s) if s == "logical" => Some(Workers::Logical),
                    Value::String(s) => s.parse().ok().map(Workers::Count),
                    _ => u32_in(value, 0, u32::MAX as i64).map(Workers::Count),
                };
                workers.map(|w| config.workers = Some(w))
            }
            "max-worker-restart" => {
                u32_in(value, 0, u32::MAX as i64).map(|n| config.max_worker_restart = Some(n))
            }
            "policy-memory-mib" => {
                u32_in(value, 1, 4096).map(|n| config.policy_memory_mib = Some(n))
            }
            "junitxml" | "plugins-dir" => value.as_str().map(|s| {
                let path = Some(PathBuf::from(s));
                if key == "junitxml" {
                    config.junitxml = path
                } else {
                    config.plugins_dir = path
                }
            }),
            "policies" => value.as_array().and_then(|items| {
                let paths: Option<Vec<PathBuf>> = items
                    .iter()
                    .map(|v| v.as_str().map(PathBuf::from))
                    .collect();
                paths.map(|paths| config.policies = paths)
            }),
            "policy" => value.as_table().and_then(|plugins| {
                let mut all = std::collections::BTreeMap::new();
                for (name, options) in plugins {
                    let options = options.as_table()?;
                    all.insert(name.clone(), options.clone().into_iter().collect());
                }
                config.policy = all;
                Some(())
            }),
            key if SECS.contains(&key) => {
                let secs = match value {
                    Value::Float(x) => Some(*x),
                    Value::Integer(n) => Some(*n as f64),
                    _ => None,
                };
                secs.filter(|s| *s > 0.0 && *s <= MAX_SECS)
                    .map(|s| match key {
                        "timeout" => config.timeout = Some(s),
                        "slow" => config.slow = Some(s),
                        "global-timeout" => config.global_timeout = Some(s),
                        _ => config.policy_deadline = Some(s),
                    })
            }
            _ => None,
        };
        if ok.is_none() {
            faults.push(key.clone());
        }
    }
    if faults.is_empty() {
        Ok(config)
    } else {
        Err(faults)
    }
}

fn same(a: &FileConfig, b: &FileConfig) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// The document as a file of that kind.
fn file_text(doc: &Table, kind: FileKind) -> String {
    match kind {
        FileKind::RunnerToml => toml::to_string(doc).unwrap(),
        FileKind::Pyproject => {
            let pyproject: Table = toml::from_str(
                "[project]\nname = 'x'\n[tool.black]\nline-length = 88\n[tool.pytest.ini_options]\naddopts = '-q'\n",
            )
            .unwrap();
            let mut pyproject = pyproject;
            pyproject["tool"]
                .as_table_mut()
                .unwrap()
                .insert("runner".into(), Value::Table(doc.clone()));
            toml::to_string(&pyproject).unwrap()
        }
    }
}

fn kind() -> impl Strategy<Value = FileKind> {
    prop_oneof![Just(FileKind::RunnerToml), Just(FileKind::Pyproject)]
}

proptest! {
    #![proptest_config(cases(512))]

    /// Accepted exactly when the rules accept it, with the same values; a
    /// refusal names a key at fault; policy options convert or are refused.
    #[test]
    fn documents_are_accepted_exactly_when_valid(doc in document(), kind in kind()) {
        let text = file_text(&doc, kind);
        let parsed = parse(text.as_bytes(), kind);
        match (model(&doc), parsed) {
            (Ok(expected), Ok(values)) => {
                prop_assert!(same(&expected, &values), "model {expected:?}\nparsed {values:?}");
                let project = ProjectConfig { values, ..Default::default() };
                let nested = doc.get("policy").and_then(Value::as_table).is_some_and(|p| {
                    p.values().flat_map(|o| o.as_table().unwrap().values()).any(|v| {
                        matches!(v, Value::Array(_) | Value::Table(_) | Value::Datetime(_))
                    })
                });
                match project.policy_options() {
                    Ok(_) => prop_assert!(!nested),
                    Err(e) => prop_assert!(nested && e.message.contains("expected a string"), "{e}"),
                }
            }
            (Err(faults), Err(message)) => prop_assert!(
                faults.iter().any(|key| message.contains(key.as_str())),
                "refused for none of {faults:?}:\n{message}\n---\n{text}"
            ),
            (expected, parsed) => prop_assert!(
                false,
                "model says {expected:?}, parser says {parsed:?}\n---\n{text}"
            ),
        }
    }

    /// Damaged text: values or a message, never a panic.
    #[test]
    fn damaged_text_is_parsed_or_refused(
        doc in document(),
        kind in kind(),
        cut in any::<prop::sample::Index>(),
        inserts in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(
            prop_oneof![any::<u8>(), Just(b'['), Just(b'{'), Just(b'"'), Just(b'='), Just(b'\n')],
            1..6,
        )), 0..4),
    ) {
        let mut bytes = file_text(&doc, kind).into_bytes();
        for (at, insert) in inserts {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, insert);
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Err(message) = parse(&bytes, kind) {
            prop_assert!(!message.is_empty());
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for depth in [100, 10_000, 1_000_000] {
        for (open, close) in [("[", "]"), ("{a=", "}")] {
            for kind in [FileKind::RunnerToml, FileKind::Pyproject] {
                let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let text = match kind {
                    FileKind::RunnerToml => format!("timeout = {value}\n"),
                    FileKind::Pyproject => format!("[tool.runner]\ntimeout = {value}\n"),
                };
                let err = parse(text.as_bytes(), kind).unwrap_err();
                assert!(!err.is_empty());
            }
        }
    }
}

#[test]
fn out_of_range_values_are_refused_with_the_key_and_line() {
    for (line, key) in [
        ("timeout = -1.0", "timeout"),
        ("slow = nan", "slow"),
        ("global-timeout = inf", "global-timeout"),
        ("policy-deadline = 0", "policy-deadline"),
        ("timeout = 1e300", "timeout"),
        ("workers = -2", "workers"),
        ("workers = 'many'", "workers"),
        ("policy-memory-mib = 4097", "policy-memory-mib"),
        ("max-worker-restart = 4294967296", "max-worker-restart"),
    ] {
        for kind in [FileKind::RunnerToml, FileKind::Pyproject] {
            let text = match kind {
                FileKind::RunnerToml => format!("junitxml = 'j.xml'\n{line}\n"),
                FileKind::Pyproject => format!("[project]\nname = 'x'\n[tool.runner]\n{line}\n"),
            };
            let err = parse(text.as_bytes(), kind).unwrap_err();
            let line_no = text.lines().position(|l| l == line).unwrap() + 1;
            assert!(err.contains(&format!("line {line_no}")), "{err}");
            assert!(err.contains(key), "{err}");
        }
    }
}
