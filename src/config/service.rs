//! The `service` section: pipelines, self-telemetry and shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Problems, Validate, duration};
use crate::exporter::ExporterConfig;
use crate::processor::ProcessorConfig;
use crate::receiver::ReceiverConfig;
use crate::signal::Signal;

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

/// Bounds of the metrics derived from spans: cardinality and expiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedMetricsLimits {
    /// Series per metric (default 2000); label sets beyond it are counted in one overflow series
    /// labelled `otel_metric_overflow="true"`.
    #[serde(default = "default_max_series")]
    pub max_series_per_metric: usize,
    /// A series not updated for this long is dropped (default 10m).
    #[serde(default = "default_series_ttl", with = "duration")]
    pub series_ttl: Duration,
}

impl Default for DerivedMetricsLimits {
    fn default() -> Self {
        DerivedMetricsLimits {
            max_series_per_metric: default_max_series(),
            series_ttl: default_series_ttl(),
        }
    }
}

fn default_max_series() -> usize {
    2000
}

fn default_series_ttl() -> Duration {
    Duration::from_secs(600)
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
        Signal::parse(super::component_type(id))
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

/// The admin endpoint: /metrics, /healthz, /readyz, /api/v1/..., and the page at /.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryMetricsConfig {
    /// Default 127.0.0.1:8888.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Serve over TLS, as the receivers do; plaintext when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<crate::tls::TlsServerConfig>>,
    /// Require `Authorization: Bearer <token>` on everything but /healthz, /readyz and the
    /// page's static files (the page asks for the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::receiver::otlp::AuthConfig>,
    /// The page at / and its API.
    #[serde(default)]
    pub page: crate::page::PageConfig,
}

impl Default for TelemetryMetricsConfig {
    fn default() -> Self {
        TelemetryMetricsConfig {
            address: default_admin_address(),
            tls: None,
            auth: None,
            page: crate::page::PageConfig::default(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:8888".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryLogsConfig {
    /// A tracing filter: `info`, `debug`, `ragwatch=debug,info`. RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub encoding: LogEncoding,
}

impl Default for TelemetryLogsConfig {
    fn default() -> Self {
        TelemetryLogsConfig {
            level: default_log_level(),
            encoding: LogEncoding::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    /// Human-readable lines.
    #[default]
    Console,
    /// One JSON object per line.
    Json,
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
    pub(super) fn check_references(
        &self,
        declared: &super::Declared,
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
