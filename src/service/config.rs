//! The whole configuration file: the components it declares, the `service` section (pipelines,
//! self-telemetry, shutdown), alerting, and the checks that span components (a pipeline names
//! only defined components that handle its signal).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::registry::{ExporterConfig, ProcessorConfig, ReceiverConfig};
use crate::admin::TelemetryMetricsConfig;
use crate::config::{
    ConfigError, Declared, Problems, Validate, components, deserialize_collecting, duration, env,
    kind_of, yaml,
};
use crate::derived::DerivedMetricsLimits;
use crate::page::Targets;
use crate::signal::Signal;
use crate::telemetry::logging::TelemetryLogsConfig;

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

impl Config {
    /// The SLOs and budgets of every `slo` processor of a configuration.
    pub fn page_targets(&self) -> Targets {
        let mut t = Targets::default();
        for p in self.processors.values() {
            if let ProcessorConfig::Slo(c) = p {
                for s in &c.slos {
                    let kind = serde_json::to_value(s.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    t.slos.push((s.name.clone(), s.objective, kind));
                }
                for b in &c.budgets {
                    t.budgets
                        .push((b.name.clone(), b.limit_usd, b.period.as_secs()));
                }
            }
        }
        t
    }

    /// Whether the page taps traces pipeline `p` of `config`, and if so whether its roots are its
    /// requests: the pipelines that assemble traces (`trace_assembly`) when there are any, else
    /// every traces pipeline; in stream mode a request is its `ragwatch.analysis` span.
    pub fn page_watches(&self, p: &PipelineConfig) -> Option<bool> {
        use crate::processor::trace_assembly::Mode;
        let assembly = |p: &PipelineConfig| {
            p.processors
                .iter()
                .find_map(|n| match self.processors.get(n) {
                    Some(ProcessorConfig::TraceAssembly(c)) => Some(c.mode),
                    _ => None,
                })
        };
        let any_assembles = self.service.pipelines.iter().any(|(id, q)| {
            PipelineConfig::signal_of(id) == Some(crate::signal::Signal::Traces)
                && assembly(q).is_some()
        });
        match assembly(p) {
            Some(mode) => Some(mode != Mode::Stream),
            None if !any_assembles => Some(true),
            None => None,
        }
    }

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `traces`, `metrics`, `logs`, or a named one such as `traces/analysis`.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// How long shutdown may take to drain pipelines and exporter queues (default 30s).
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
    /// Bounds of the metrics derived from spans.
    #[serde(default)]
    pub derived_metrics: DerivedMetricsLimits,
    /// Refuse (retryably) and flush held traces above a memory limit; off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limiter: Option<crate::memory::MemoryLimiterConfig>,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub receivers: Vec<String>,
    #[serde(default)]
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
    /// Capacity of the pipeline's input queue in items (spans, points or records; default
    /// 50,000). When it is full, receivers refuse retryably or wait (their `when_full`).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// The input queue's byte budget, in MiB of the queued requests' OTLP encoding (default
    /// 8; decoded, a request takes about three to five times its encoding in memory). Whichever
    /// of `queue_size` and this fills first makes receivers refuse retryably or wait.
    #[serde(default = "default_queue_max_mib")]
    pub queue_max_mib: u64,
    /// Parallel copies of the pipeline's processors, with spans routed by trace id so each copy
    /// sees whole traces. Default: the number of cores for a traces pipeline with
    /// `trace_assembly`, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// A directory for the pipeline's write-ahead log: every request is written there before
    /// its client is answered, and released once every exporter has its data (delivered, given
    /// up on and counted, or in its own on-disk queue); the next start replays what was not.
    /// The pipeline uses `<storage>/pipeline-<id>/`. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<std::path::PathBuf>,
    /// The most the log may take (default 1024 MiB); when it (or the disk) is full, receivers
    /// refuse retryably until deliveries make room.
    #[serde(default = "default_storage_mib")]
    pub storage_max_mib: u64,
    /// How often what was written is fsynced (default 200ms; at most 500ms). A killed process
    /// loses nothing either way; this bounds what a power loss can take.
    #[serde(default = "default_sync_interval", with = "duration")]
    pub storage_sync_interval: Duration,
}

fn default_queue_size() -> usize {
    50_000
}

fn default_storage_mib() -> u64 {
    1024
}

fn default_queue_max_mib() -> u64 {
    8
}

fn default_sync_interval() -> Duration {
    Duration::from_millis(200)
}

impl PipelineConfig {
    /// The signal of a pipeline id (`traces/x` → traces); None for an invalid id.
    pub fn signal_of(id: &str) -> Option<Signal> {
        Signal::parse(crate::config::component_type(id))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub metrics: TelemetryMetricsConfig,
    #[serde(default)]
    pub logs: TelemetryLogsConfig,
}

impl Validate for ServiceConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(m) = &self.memory_limiter {
            m.validate(&format!("{path}.memory_limiter"), problems);
        }
        if self.derived_metrics.max_series_per_metric == 0 {
            problems.push(
                &format!("{path}.derived_metrics.max_series_per_metric"),
                "must be greater than zero",
            );
        }
        if self.derived_metrics.series_ttl.is_zero() {
            problems.push(
                &format!("{path}.derived_metrics.series_ttl"),
                "must be greater than zero",
            );
        }
        if self.shutdown_timeout.is_zero() {
            problems.push(
                &format!("{path}.shutdown_timeout"),
                "must be greater than zero",
            );
        }
        let admin = &self.telemetry.metrics;
        if let Err(e) = crate::net::parse_listen_address(&admin.address) {
            problems.push(&format!("{path}.telemetry.metrics.address"), e);
        }
        if let Some(t) = &admin.tls {
            t.validate(&format!("{path}.telemetry.metrics.tls"), problems);
        }
        if let Some(a) = &admin.auth
            && a.bearer_token.expose().len() < 16
        {
            problems.push(
                &format!("{path}.telemetry.metrics.auth.bearer_token"),
                "must be at least 16 characters",
            );
        }
        admin
            .page
            .validate(&format!("{path}.telemetry.metrics.page"), problems);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.logs.level) {
            problems.push(
                &format!("{path}.telemetry.logs.level"),
                format!("not a log filter: {e}"),
            );
        }
        if self.pipelines.is_empty() {
            problems.push(
                &format!("{path}.pipelines"),
                "at least one pipeline is needed",
            );
        }
        for (id, p) in &self.pipelines {
            let pp = format!("{path}.pipelines.{id}");
            if PipelineConfig::signal_of(id).is_none() {
                problems.push(
                    &pp,
                    "a pipeline id is traces, metrics or logs, optionally followed by /name",
                );
            }
            if p.receivers.is_empty() {
                problems.push(
                    &format!("{pp}.receivers"),
                    "at least one receiver is needed",
                );
            }
            if p.exporters.is_empty() {
                problems.push(
                    &format!("{pp}.exporters"),
                    "at least one exporter is needed",
                );
            }
            if p.shards == Some(0) {
                problems.push(&format!("{pp}.shards"), "must be greater than zero");
            }
            if p.queue_size == 0 {
                problems.push(&format!("{pp}.queue_size"), "must be greater than zero");
            }
            if p.queue_max_mib == 0 {
                problems.push(&format!("{pp}.queue_max_mib"), "must be greater than zero");
            }
            crate::config::validate_storage(
                &pp,
                p.storage.as_deref(),
                p.storage_max_mib,
                p.storage_sync_interval,
                problems,
            );
            for (list, name) in [
                (&p.receivers, "receivers"),
                (&p.processors, "processors"),
                (&p.exporters, "exporters"),
            ] {
                let mut seen = BTreeSet::new();
                for (i, c) in list.iter().enumerate() {
                    if !seen.insert(c) {
                        problems.push(
                            &format!("{pp}.{name}.{i}"),
                            format!("`{c}` is listed twice"),
                        );
                    }
                }
            }
        }
    }
}

impl ServiceConfig {
    /// Every pipeline names only components that are defined and support its signal.
    fn check_references(
        &self,
        declared: &Declared,
        receivers: &BTreeMap<String, ReceiverConfig>,
        processors: &BTreeMap<String, ProcessorConfig>,
        exporters: &BTreeMap<String, ExporterConfig>,
        problems: &mut Problems,
    ) {
        for (id, p) in &self.pipelines {
            let pp = format!("service.pipelines.{id}");
            let signal = PipelineConfig::signal_of(id);
            for (i, r) in p.receivers.iter().enumerate() {
                match receivers.get(r) {
                    None if declared.receivers.contains(r) => {}
                    None => problems.push(
                        &format!("{pp}.receivers.{i}"),
                        format!("receiver `{r}` is not defined under receivers"),
                    ),
                    Some(rc) => {
                        if let Some(s) = signal
                            && !rc.supports(s)
                        {
                            problems.push(
                                &format!("{pp}.receivers.{i}"),
                                format!("receiver `{r}` does not produce {s}"),
                            );
                        }
                    }
                }
            }
            crate::processor::tail_sampling::check_placement(&pp, &p.processors, problems);
            for (i, r) in p.processors.iter().enumerate() {
                match processors.get(r) {
                    None if declared.processors.contains(r) => {}
                    None => problems.push(
                        &format!("{pp}.processors.{i}"),
                        format!("processor `{r}` is not defined under processors"),
                    ),
                    Some(proc) => {
                        if let Some(s) = signal
                            && !proc.supports(s)
                        {
                            problems.push(
                                &format!("{pp}.processors.{i}"),
                                format!("processor `{r}` does not handle {s}"),
                            );
                        }
                    }
                }
            }
            for (i, r) in p.exporters.iter().enumerate() {
                match exporters.get(r) {
                    None if declared.exporters.contains(r) => {}
                    None => problems.push(
                        &format!("{pp}.exporters.{i}"),
                        format!("exporter `{r}` is not defined under exporters"),
                    ),
                    Some(e) => {
                        if let Some(s) = signal
                            && !e.supports(s)
                        {
                            problems.push(
                                &format!("{pp}.exporters.{i}"),
                                format!("exporter `{r}` does not handle {s}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
