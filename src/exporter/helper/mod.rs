//! What every exporter shares (the Collector's exporterhelper): each exporter sits behind the
//! same sending queue and retry loop: a bounded queue, N consumers, retries with
//! backoff and jitter honouring RetryInfo / Retry-After, a per-attempt timeout, permanent vs
//! retryable errors per OTLP, and a counter plus a log line for everything dropped.

mod queue;
pub mod tls;
pub(crate) mod wal;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use queue::{ExporterHandle, start};
pub use tls::TlsClientConfig;

use crate::config::{Problems, Secret, duration};
use crate::signal::{Batch, Signal};
use crate::telemetry::SelfMetrics;

/// The network exporters: `otlp` (gRPC) and `otlphttp` (protobuf over HTTP).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// otlp: `host:port` (TLS unless tls.insecure), `https://host:port` or `http://host:port`.
    /// otlphttp: a base URL; requests go to `<endpoint>/v1/<signal>`.
    pub endpoint: String,
    /// otlphttp only: full URLs overriding `<endpoint>/v1/<signal>` for one signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_endpoint: Option<String>,
    /// Extra request headers (for SaaS API keys); values are secrets, never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub compression: Compression,
    /// Per-attempt timeout (default 5s).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub tls: TlsClientConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl OtlpExporterConfig {
    pub fn signal_endpoints(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("traces_endpoint", self.traces_endpoint.as_ref()),
            ("metrics_endpoint", self.metrics_endpoint.as_ref()),
            ("logs_endpoint", self.logs_endpoint.as_ref()),
        ]
    }

    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.timeout.is_zero() {
            problems.push(&format!("{path}.timeout"), "must be greater than zero");
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                problems.push(&format!("{path}.headers.{k}"), "not a valid header name");
            }
            if http::HeaderValue::from_str(v.expose()).is_err() {
                problems.push(&format!("{path}.headers.{k}"), "not a valid header value");
            }
        }
        self.tls.validate(&format!("{path}.tls"), problems);
        self.sending_queue
            .validate(&format!("{path}.sending_queue"), problems);
        self.retry_on_failure
            .validate(&format!("{path}.retry_on_failure"), problems);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

/// The sending queue in front of an exporter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests the queue holds (default 1000).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// The in-memory queue's byte budget, in MiB of the requests' OTLP encoding (default 8).
    /// Whichever of `queue_size` and this fills first counts as full. Not for `storage`.
    #[serde(default = "default_queue_max_mib")]
    pub queue_max_mib: u64,
    /// Concurrent senders (default 10).
    #[serde(default = "default_consumers")]
    pub num_consumers: usize,
    /// When the queue is full: true (default) makes the pipeline wait, which fills the pipeline
    /// queue and makes receivers refuse retryably, so nothing is lost; false drops the request and
    /// counts it in ragwatch_exporter_enqueue_failed_*.
    #[serde(default = "yes")]
    pub block_on_overflow: bool,
    /// A directory for an on-disk queue (`otlp` and `otlphttp`): every request is written there
    /// before it is sent, survives a restart or a crash, and is removed once delivered. Each
    /// exporter uses its own subdirectory; `queue_size` does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<std::path::PathBuf>,
    /// The most the on-disk queue may take (default 1024 MiB); when full, the same rule as
    /// `block_on_overflow` applies.
    #[serde(default = "default_storage_mib")]
    pub storage_max_mib: u64,
    /// How often what was written is fsynced (default 200ms; at most 500ms). A killed process
    /// loses nothing either way; this bounds what a power loss can take.
    #[serde(default = "default_sync_interval", with = "duration")]
    pub storage_sync_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: default_queue_size(),
            queue_max_mib: default_queue_max_mib(),
            num_consumers: default_consumers(),
            block_on_overflow: true,
            storage: None,
            storage_max_mib: default_storage_mib(),
            storage_sync_interval: default_sync_interval(),
        }
    }
}

fn default_storage_mib() -> u64 {
    1024
}
fn default_sync_interval() -> Duration {
    Duration::from_millis(200)
}

fn default_queue_size() -> usize {
    1000
}
fn default_queue_max_mib() -> u64 {
    8
}
fn default_consumers() -> usize {
    10
}
fn yes() -> bool {
    true
}

impl QueueConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.queue_size == 0 {
            problems.push(&format!("{path}.queue_size"), "must be greater than zero");
        }
        if self.queue_max_mib == 0 {
            problems.push(
                &format!("{path}.queue_max_mib"),
                "must be greater than zero",
            );
        }
        if self.num_consumers == 0 {
            problems.push(
                &format!("{path}.num_consumers"),
                "must be greater than zero",
            );
        }
        crate::config::validate_storage(
            path,
            self.storage.as_deref(),
            self.storage_max_mib,
            self.storage_sync_interval,
            problems,
        );
    }
}

/// Retries with exponential backoff and jitter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_initial", with = "duration")]
    pub initial_interval: Duration,
    #[serde(default = "default_max_interval", with = "duration")]
    pub max_interval: Duration,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Each wait is the backoff times a random factor in [1 - r, 1 + r] (default 0.5).
    #[serde(default = "default_randomization")]
    pub randomization_factor: f64,
    /// Give up on a request after this long (default 300s).
    #[serde(default = "default_max_elapsed", with = "duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: default_initial(),
            max_interval: default_max_interval(),
            multiplier: default_multiplier(),
            randomization_factor: default_randomization(),
            max_elapsed_time: default_max_elapsed(),
        }
    }
}

fn default_initial() -> Duration {
    Duration::from_secs(5)
}
fn default_max_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_multiplier() -> f64 {
    1.5
}
fn default_randomization() -> f64 {
    0.5
}
fn default_max_elapsed() -> Duration {
    Duration::from_secs(300)
}

impl RetryConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        for (name, d) in [
            ("initial_interval", self.initial_interval),
            ("max_interval", self.max_interval),
            ("max_elapsed_time", self.max_elapsed_time),
        ] {
            if d.is_zero() {
                problems.push(&format!("{path}.{name}"), "must be greater than zero");
            }
        }
        if self.max_interval < self.initial_interval {
            problems.push(
                &format!("{path}.max_interval"),
                "must not be less than initial_interval",
            );
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            problems.push(&format!("{path}.multiplier"), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            problems.push(
                &format!("{path}.randomization_factor"),
                "must be between 0 and 1",
            );
        }
    }
}

/// Something a payload keeps alive until every exporter is done with it (delivered, given up on
/// and counted, or in the exporter's own on-disk queue): a pipeline log's release of the records
/// the payload came from. Opaque here; dropped with the payload.
pub type Release = Box<dyn Send + Sync>;

/// One batch on its way out, shared by every exporter of a pipeline; encoded at most once.
pub struct Payload {
    pub batch: Batch,
    pub items: usize,
    encoded: OnceLock<Bytes>,
    _release: Option<Release>,
}

impl Payload {
    pub fn new(batch: Batch, release: Option<Release>) -> Arc<Payload> {
        let items = batch.item_count();
        Arc::new(Payload {
            batch,
            items,
            encoded: OnceLock::new(),
            _release: release,
        })
    }

    /// The encoding alone, the decoded batch dropped: for pipelines whose exporters all send
    /// OTLP over the network. A queued request then takes its wire size (about a sixth of the
    /// decoded one), which keeps memory down while a backend is slow.
    pub fn wire(batch: Batch, release: Option<Release>) -> Arc<Payload> {
        let (signal, items) = (batch.signal(), batch.item_count());
        let bytes = Bytes::from(encode(&batch));
        drop(batch);
        let mut p = Payload::encoded(signal, items, bytes);
        p._release = release;
        Arc::new(p)
    }

    /// A request known only by its encoding (read back from the on-disk queue, or made by
    /// [`Payload::wire`]). Only the OTLP exporters get these, and they send only the encoding,
    /// so the batch stays empty.
    fn encoded(signal: Signal, items: usize, bytes: Bytes) -> Payload {
        let batch = match signal {
            Signal::Traces => Batch::Traces(Default::default()),
            Signal::Metrics => Batch::Metrics(Default::default()),
            Signal::Logs => Batch::Logs(Default::default()),
        };
        Payload {
            batch,
            items,
            encoded: OnceLock::from(bytes),
            _release: None,
        }
    }

    pub fn signal(&self) -> Signal {
        self.batch.signal()
    }

    /// The request's OTLP encoded size (computed, not encoded, when not encoded yet).
    pub fn size(&self) -> usize {
        self.encoded
            .get()
            .map_or_else(|| self.batch.encoded_len(), Bytes::len)
    }

    /// The OTLP protobuf encoding of the request.
    pub fn protobuf(&self) -> &Bytes {
        self.encoded
            .get_or_init(|| Bytes::from(encode(&self.batch)))
    }
}

fn encode(batch: &Batch) -> Vec<u8> {
    batch.encode_to_vec()
}

/// What a backend said about a delivered request.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Items the backend rejected in a partial success.
    pub rejected: u64,
    pub message: String,
}

/// Why a send attempt failed, classified the OTLP way.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Permanent(String),
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("exporter {id}: {message}")]
    Exporter { id: String, message: String },
}

/// How one exporter delivers a payload; the sending queue's consumers call it, with retries.
pub trait Transport: Send + Sync + 'static {
    fn send<'a>(
        &'a self,
        p: &'a Payload,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Delivered, ExportError>> + Send + 'a>,
    >;
}

/// A started exporter: the handle pipelines enqueue into, and its consumer tasks.
pub struct RunningExporter {
    pub handle: ExporterHandle,
    pub tasks: Vec<JoinHandle<()>>,
    /// Where it listens, for an exporter that serves (prometheus).
    pub addr: Option<std::net::SocketAddr>,
}

/// What starting an exporter may need from the running service.
pub struct ExporterContext<'a> {
    pub metrics: &'a SelfMetrics,
    pub derived: &'a Arc<crate::derived::DerivedMetrics>,
    /// Fires when the grace period has run out: stop retrying, count what is left as dropped.
    pub hard_stop: CancellationToken,
    /// Fires at the very end of shutdown: stop serving (prometheus).
    pub stop_servers: CancellationToken,
}
