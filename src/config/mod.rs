//! Configuration: Collector-shaped YAML (`receivers`, `processors`, `exporters`, `service`), named
//! component instances such as `otlp/jaeger`, `${env:VAR}` expansion after parsing, and a
//! validation pass that collects every problem with its key path.
//!
//! Each component's config struct lives beside the runtime type it builds; this module only knows
//! how to load YAML, expand the environment, dispatch a component id to its type, and report.

pub mod duration;
mod env;
mod problems;
mod service;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use problems::{ConfigError, Problem, Problems};
pub use service::{
    DerivedMetricsLimits, LogEncoding, PipelineConfig, ServiceConfig, TelemetryConfig,
    TelemetryLogsConfig, TelemetryMetricsConfig,
};

use crate::exporter::ExporterConfig;
use crate::processor::ProcessorConfig;
use crate::receiver::ReceiverConfig;

/// The embedded default configuration, used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.yaml");

/// A whole, validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub receivers: BTreeMap<String, ReceiverConfig>,
    pub processors: BTreeMap<String, ProcessorConfig>,
    pub exporters: BTreeMap<String, ExporterConfig>,
    pub service: ServiceConfig,
    /// Alerting (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::alerting::AlertsConfig>,
}

/// Something that can check itself and report every problem under a key path.
pub trait Validate {
    fn validate(&self, path: &str, problems: &mut Problems);
}

/// The type part of a component id: `otlp/jaeger` → `otlp`.
pub fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_yaml(DEFAULT_CONFIG, "<embedded default>")
    }

    /// Load and validate a file; `${env:VAR}` is expanded from the process environment.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    /// Parse and validate YAML text, expanding `${env:VAR}` from the process environment.
    pub fn from_yaml(text: &str, source: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, source, &|name| std::env::var(name).ok())
    }

    /// Parse and validate YAML text, looking environment variables up with `env`.
    pub fn from_yaml_with_env(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut root: Value = yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            source_name: source.to_string(),
            message: e.to_string(),
        })?;
        let mut problems = Problems::default();
        env::expand(&mut root, "", env, &mut problems);
        let config = build(root, &mut problems);
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                source_name: source.to_string(),
                problems: problems.into_vec(),
            }),
        }
    }

    /// The effective configuration as YAML, with every secret redacted.
    pub fn to_redacted_yaml(&self) -> String {
        match yaml::to_string(self) {
            Ok(s) => s,
            Err(e) => format!("# could not render the configuration: {e}\n"),
        }
    }
}

const TOP_LEVEL_KEYS: [&str; 5] = ["receivers", "processors", "exporters", "service", "alerts"];

fn build(root: Value, problems: &mut Problems) -> Option<Config> {
    let mut top = match root {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => {
            problems.push(
                "",
                format!(
                    "expected a mapping at the top level, found {}",
                    kind_of(&other)
                ),
            );
            return None;
        }
    };
    for key in top.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            problems.push(
                key,
                format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
            );
        }
    }
    let mut declared = Declared::default();
    let receivers = components(
        top.remove("receivers"),
        "receivers",
        problems,
        &mut declared.receivers,
        ReceiverConfig::from_value,
    );
    let processors = components(
        top.remove("processors"),
        "processors",
        problems,
        &mut declared.processors,
        ProcessorConfig::from_value,
    );
    let exporters = components(
        top.remove("exporters"),
        "exporters",
        problems,
        &mut declared.exporters,
        ExporterConfig::from_value,
    );
    let service: ServiceConfig = match top.remove("service") {
        Some(v) => deserialize_collecting(v, "service", problems)?,
        None => {
            problems.push("service", "missing; a config needs service.pipelines");
            return None;
        }
    };
    for (id, r) in &receivers {
        r.validate(&format!("receivers.{id}"), problems);
    }
    for (id, p) in &processors {
        p.validate(&format!("processors.{id}"), problems);
    }
    for (id, e) in &exporters {
        e.validate(&format!("exporters.{id}"), problems);
    }
    service.validate("service", problems);
    service.check_references(&declared, &receivers, &processors, &exporters, problems);
    let alerts: Option<crate::alerting::AlertsConfig> = match top.remove("alerts") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let a: crate::alerting::AlertsConfig = deserialize_collecting(v, "alerts", problems)?;
            a.validate("alerts", problems);
            Some(a)
        }
    };
    Some(Config {
        receivers,
        processors,
        exporters,
        service,
        alerts,
    })
}

/// Every component id written in the config, including those whose settings had problems (so a
/// pipeline naming one is not also reported as naming an undefined component).
#[derive(Default)]
pub(crate) struct Declared {
    pub receivers: std::collections::BTreeSet<String>,
    pub processors: std::collections::BTreeSet<String>,
    pub exporters: std::collections::BTreeSet<String>,
}

/// Deserialize every component of one section, dispatching on the type part of its id.
fn components<T>(
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

pub(crate) fn kind_of(v: &Value) -> &'static str {
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
pub(crate) fn unknown_type(
    section: &str,
    ty: &str,
    known: &[&str],
    path: &str,
    problems: &mut Problems,
) {
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

#[cfg(test)]
mod tests;

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
