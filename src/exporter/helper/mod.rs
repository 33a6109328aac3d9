//! What every exporter shares (the Collector's exporterhelper): each exporter sits behind the
//! same sending queue and retry loop: a bounded queue, N consumers, retries with
//! backoff and jitter honouring RetryInfo / Retry-After, a per-attempt timeout, permanent vs
//! retryable errors per OTLP, and a counter plus a log line for everything dropped.

mod queue;
pub mod tls;
pub(crate) mod wal;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use queue::{ExporterHandle, start};
pub use tls::TlsClientConfig;

use crate::config::{Problems, Secret, duration};
use crate::signal::{Batch, Encodable, Signal};
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
    /// The compression level, as the Collector's `compression_params: { level: N }` (see
    /// [`Compressor`]); absent: the default level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_params: Option<CompressionParams>,
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

    /// What to compress with, at which level.
    pub(crate) fn compressor(&self) -> Result<Compressor, String> {
        Compressor::new(self.compression, self.compression_params.map(|p| p.level))
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
        if let Err(e) = self.compressor() {
            problems.push(&format!("{path}.compression_params.level"), e);
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

/// `compression_params` of the network exporters, as the Collector's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    pub level: i32,
}

/// The gzip level when none is given: the best trade of CPU time for size measured on the load
/// generator's traffic (`cargo run --release --example gzip_levels`; README, Exporters).
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
/// The zstd level when none is given: zstd's own default.
pub const DEFAULT_ZSTD_LEVEL: i32 = zstd::DEFAULT_COMPRESSION_LEVEL;

/// A compression and its level, both exporters compressing requests themselves (tonic has no
/// setting for the level: it compresses gRPC messages with gzip at 6, zstd at its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compressor {
    None,
    Gzip(u32),
    Zstd(i32),
}

impl Compressor {
    /// `compression` at `level`, following the Collector's conventions: gzip takes 1 (fastest)
    /// to 9 (smallest), and 0 or -1 (zlib's "default") for the default level; zstd takes its
    /// own levels, 0 for its default; `none` takes no level but 0.
    fn new(compression: Compression, level: Option<i32>) -> Result<Compressor, String> {
        match (compression, level) {
            (Compression::Gzip, None | Some(0 | -1)) => Ok(Compressor::Gzip(DEFAULT_GZIP_LEVEL)),
            (Compression::Gzip, Some(l @ 1..=9)) => Ok(Compressor::Gzip(l.unsigned_abs())),
            (Compression::Gzip, Some(-2)) => Err(
                "gzip level -2 (Huffman-only) is not available here; gzip levels are 1 (fastest) to 9 (smallest)"
                    .into(),
            ),
            (Compression::Gzip, Some(l)) => Err(format!(
                "gzip level {l}: gzip levels are 1 (fastest) to 9 (smallest), or 0 / -1 for the default ({DEFAULT_GZIP_LEVEL})"
            )),
            (Compression::Zstd, None | Some(0)) => Ok(Compressor::Zstd(DEFAULT_ZSTD_LEVEL)),
            (Compression::Zstd, Some(l)) if zstd::compression_level_range().contains(&l) => {
                Ok(Compressor::Zstd(l))
            }
            (Compression::Zstd, Some(l)) => {
                let r = zstd::compression_level_range();
                Err(format!(
                    "zstd level {l}: zstd levels are {} to {} (1 to 19 usual, negative ones faster still), or 0 for the default ({DEFAULT_ZSTD_LEVEL})",
                    r.start(),
                    r.end()
                ))
            }
            (Compression::None, None | Some(0)) => Ok(Compressor::None),
            (Compression::None, Some(l)) => Err(format!(
                "level {l} with compression: none (there is nothing to set a level for)"
            )),
        }
    }

    /// The name of the encoding, for the `grpc-encoding` and `content-encoding` headers.
    pub(crate) fn encoding(self) -> Option<&'static str> {
        match self {
            Compressor::None => None,
            Compressor::Gzip(_) => Some("gzip"),
            Compressor::Zstd(_) => Some("zstd"),
        }
    }

    /// `data` compressed (itself, not copied, without compression).
    pub(crate) fn compress(self, data: &Bytes) -> Result<Bytes, String> {
        match self {
            Compressor::None => Ok(data.clone()),
            Compressor::Gzip(level) => {
                use std::io::Write;
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::new(level),
                );
                enc.write_all(data)
                    .and_then(|()| enc.finish())
                    .map(Bytes::from)
                    .map_err(|e| format!("gzip: {e}"))
            }
            Compressor::Zstd(level) => zstd::bulk::compress(data, level)
                .map(Bytes::from)
                .map_err(|e| format!("zstd: {e}")),
        }
    }
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

/// One batch on its way out, shared by every exporter of a pipeline; its size and encoding are
/// computed at most once (see [`Encodable`]).
pub struct Payload {
    data: Arc<Encodable>,
    pub items: usize,
    _release: Option<Release>,
}

impl Payload {
    pub fn new(batch: Batch, release: Option<Release>) -> Arc<Payload> {
        Payload::of(Arc::new(Encodable::new(batch)), release, false)
    }

    /// A payload of `data`, which may be shared with other pipelines (what they computed of its
    /// encoding is not computed again). With `wire`, for pipelines whose exporters all send OTLP
    /// over the network, the payload keeps the encoding alone and lets go of the decoded batch: a
    /// queued request then takes its wire size (about a sixth of the decoded one), which keeps
    /// memory down while a backend is slow.
    pub fn of(data: Arc<Encodable>, release: Option<Release>, wire: bool) -> Arc<Payload> {
        let items = data.batch().item_count();
        let data = if wire {
            Arc::new(Encodable::encoded(data.signal(), data.encoding().clone()))
        } else {
            data
        };
        Arc::new(Payload {
            data,
            items,
            _release: release,
        })
    }

    /// A request known only by its encoding (read back from the on-disk queue). Only the OTLP
    /// exporters get these, and they send only the encoding, so the batch stays empty.
    fn encoded(signal: Signal, items: usize, bytes: Bytes) -> Payload {
        Payload {
            data: Arc::new(Encodable::encoded(signal, bytes)),
            items,
            _release: None,
        }
    }

    /// The decoded batch (empty in a payload known only by its encoding).
    pub fn batch(&self) -> &Batch {
        self.data.batch()
    }

    pub fn signal(&self) -> Signal {
        self.data.signal()
    }

    /// The request's OTLP encoded size (computed, not encoded, when not encoded yet).
    pub fn size(&self) -> usize {
        self.data.encoded_len()
    }

    /// The OTLP protobuf encoding of the request.
    pub fn protobuf(&self) -> &Bytes {
        self.data.encoding()
    }
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
