//! Configuration: Collector-shaped YAML (`receivers`, `processors`, `exporters`, `service`), named
//! component instances such as `otlp/jaeger`, `${env:VAR}` expansion after parsing, and a
//! validation pass that collects every problem with its key path.
//!
//! This module is the kit every component's configuration uses — problems with key paths,
//! durations, `${env:VAR}` expansion, YAML, secrets, [`Validate`] — and imports nothing else of
//! ragwatch. The whole file's `Config`, which composes the components, is `service::config`.

pub mod duration;
pub mod env;
mod problems;
pub mod yaml;

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use problems::{ConfigError, Problem, Problems};

/// Something that can check itself and report every problem under a key path.
pub trait Validate {
    fn validate(&self, path: &str, problems: &mut Problems);
}

/// The type part of a component id: `otlp/jaeger` → `otlp`.
pub fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

/// Every component id written in the config, including those whose settings had problems (so a
/// pipeline naming one is not also reported as naming an undefined component).
#[derive(Default)]
pub struct Declared {
    pub receivers: std::collections::BTreeSet<String>,
    pub processors: std::collections::BTreeSet<String>,
    pub exporters: std::collections::BTreeSet<String>,
}

/// Deserialize every component of one section, dispatching on the type part of its id.
pub fn components<T>(
    section: Option<Value>,
    name: &str,
    problems: &mut Problems,
    declared: &mut std::collections::BTreeSet<String>,
    from_value: fn(&str, Value, &str, &mut Problems) -> Option<T>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    let map = match section {
        None | Some(Value::Null) => return out,
        Some(Value::Object(m)) => m,
        Some(other) => {
            problems.push(
                name,
                format!(
                    "expected a mapping of components, found {}",
                    kind_of(&other)
                ),
            );
            return out;
        }
    };
    for (id, value) in map {
        declared.insert(id.clone());
        let path = format!("{name}.{id}");
        if let Some((t, n)) = id.split_once('/')
            && (t.is_empty() || n.is_empty())
        {
            problems.push(
                &path,
                "a component id is `type` or `type/name`, both parts non-empty",
            );
            continue;
        }
        // `otlp:` with nothing under it means "all defaults".
        let value = if value.is_null() {
            Value::Object(Default::default())
        } else {
            value
        };
        if let Some(c) = from_value(component_type(&id), value, &path, problems) {
            out.insert(id, c);
        }
    }
    out
}

/// Deserialize `value` as `T`, reporting every problem serde finds with its key path.
///
/// serde stops at the first error inside a struct, so on an error the offending key is removed
/// and deserialization tried again; this lists every unknown key and every ill-typed value of a
/// component, not just the first.
pub fn deserialize_collecting<T: DeserializeOwned>(
    mut value: Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    const MAX_ROUNDS: usize = 64;
    for _ in 0..MAX_ROUNDS {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let mut segments: Vec<String> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = err.into_inner().to_string();
        let unknown = unknown_field_name(&message);
        if let Some(k) = &unknown
            && segments.last() != Some(k)
        {
            segments.push(k.clone());
        }
        let full = join_path(path, &segments);
        let message = if unknown.is_some() {
            match message.split_once(", expected") {
                Some((_, expected)) => format!("unknown key; expected{expected}"),
                None => "unknown key".to_string(),
            }
        } else {
            message
        };
        problems.push(&full, message);
        if !remove_at(&mut value, &segments) {
            return None;
        }
    }
    None
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn join_path(prefix: &str, segments: &[String]) -> String {
    let mut p = prefix.to_string();
    for s in segments {
        if !p.is_empty() {
            p.push('.');
        }
        p.push_str(s);
    }
    p
}

/// Remove the value at `segments`; false if there is nothing to remove (then retrying is useless).
fn remove_at(value: &mut Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for s in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(s) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(a) => match s.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match cur {
        Value::Object(m) => m.remove(last).is_some(),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Report an unknown component type with the known ones.
pub fn unknown_type(section: &str, ty: &str, known: &[&str], path: &str, problems: &mut Problems) {
    problems.push(
        path,
        format!(
            "unknown {section} type `{ty}`; known types: {}",
            known.join(", ")
        ),
    );
}

/// A secret string (a header value, a token): never printed by Debug, logs or print-config.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"[REDACTED]\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[REDACTED]")
    }
}

/// The problems of an on-disk log's settings (an exporter's sending queue, a pipeline's log):
/// a size of 0, a sync interval of 0 or above 500 ms, a path that is not a directory.
pub fn validate_storage(
    path: &str,
    dir: Option<&std::path::Path>,
    max_mib: u64,
    sync_interval: std::time::Duration,
    problems: &mut Problems,
) {
    if max_mib == 0 {
        problems.push(
            &format!("{path}.storage_max_mib"),
            "must be greater than zero",
        );
    }
    if sync_interval.is_zero() || sync_interval > std::time::Duration::from_millis(500) {
        problems.push(
            &format!("{path}.storage_sync_interval"),
            "must be greater than zero and at most 500ms",
        );
    }
    if let Some(dir) = dir
        && dir.exists()
        && !dir.is_dir()
    {
        problems.push(
            &format!("{path}.storage"),
            format!("`{}` exists and is not a directory", dir.display()),
        );
    }
}
