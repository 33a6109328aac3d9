//! The `otlp` receiver: OTLP/gRPC (TraceService, MetricsService, LogsService) and OTLP/HTTP
//! (POST /v1/traces, /v1/metrics, /v1/logs with protobuf or JSON), answering as the OTLP
//! specification says: partial success for invalid spans, INVALID_ARGUMENT / 400 for malformed
//! input, a non-retryable code / 413 for oversize input, and UNAVAILABLE + RetryInfo / 503 +
//! Retry-After when the pipeline is full.

mod grpc;
pub mod http;
mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use ingest::{Consumers, drop_invalid_spans};

use crate::config::{Problems, Validate, duration};
use crate::pipeline::WhenFull;
use crate::telemetry::SelfMetrics;
use crate::tls::{ServerTls, TlsIncoming, TlsServerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// Both protocols on their default addresses when omitted.
    #[serde(default)]
    pub protocols: Protocols,
    /// When a pipeline's queue is full: `refuse` (default; UNAVAILABLE + RetryInfo / 503 +
    /// Retry-After, so the client retries) or `block` (wait for room).
    #[serde(default)]
    pub when_full: WhenFull,
    /// The retry delay suggested to clients when refusing (default 1s).
    #[serde(default = "default_retry_after", with = "duration")]
    pub retry_after: Duration,
    /// Require `Authorization: Bearer <token>` on both protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub bearer_token: crate::config::Secret,
}

/// Whether an `Authorization` header value carries the token, compared in constant time.
pub fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(h) = header else {
        return false;
    };
    let Some(given) = h
        .strip_prefix(b"Bearer ")
        .or_else(|| h.strip_prefix(b"bearer "))
    else {
        return false;
    };
    // ct_eq on slices of different lengths is false without looking at the contents.
    bool::from(given.ct_eq(token.as_bytes()))
}

fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// `grpc:` with nothing under it turns gRPC on with defaults.
    #[serde(
        default,
        deserialize_with = "present_means_on",
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc: Option<GrpcConfig>,
    #[serde(
        default,
        deserialize_with = "present_means_on",
        skip_serializing_if = "Option::is_none"
    )]
    pub http: Option<HttpConfig>,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols {
            grpc: Some(GrpcConfig::default()),
            http: Some(HttpConfig::default()),
        }
    }
}

fn present_means_on<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Default 127.0.0.1:4317.
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    /// Largest decoded message, in MiB (default 4), checked after decompression.
    #[serde(default = "default_grpc_max")]
    pub max_recv_msg_size_mib: usize,
    /// Serve over TLS (ALPN `h2`); plaintext when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsServerConfig>>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_grpc_max(),
            tls: None,
        }
    }
}

fn default_grpc_endpoint() -> String {
    "127.0.0.1:4317".into()
}
fn default_grpc_max() -> usize {
    4
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Default 127.0.0.1:4318.
    #[serde(default = "default_http_endpoint")]
    pub endpoint: String,
    /// Largest body in bytes (default 20 MiB), checked before and after decompression.
    #[serde(default = "default_http_max")]
    pub max_request_body_size: usize,
    /// CORS for browser clients; off unless configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    /// Serve over TLS (ALPN `h2` and `http/1.1`); plaintext when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsServerConfig>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: default_http_endpoint(),
            max_request_body_size: default_http_max(),
            cors: None,
            tls: None,
        }
    }
}

fn default_http_endpoint() -> String {
    "127.0.0.1:4318".into()
}
fn default_http_max() -> usize {
    20 * 1024 * 1024
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to send, e.g. `https://app.example.com`; `*` allows any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond the CORS-safelisted ones.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache the preflight answer.
    #[serde(default)]
    pub max_age: u64,
}

impl Validate for OtlpReceiverConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        let p = format!("{path}.protocols");
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            problems.push(&p, "turn on at least one of grpc and http");
        }
        if let Some(g) = &self.protocols.grpc {
            if let Err(e) = crate::net::parse_listen_address(&g.endpoint) {
                problems.push(&format!("{p}.grpc.endpoint"), e);
            }
            if g.max_recv_msg_size_mib == 0 {
                problems.push(
                    &format!("{p}.grpc.max_recv_msg_size_mib"),
                    "must be greater than zero",
                );
            }
            if let Some(t) = &g.tls {
                t.validate(&format!("{p}.grpc.tls"), problems);
            }
        }
        if let Some(h) = &self.protocols.http {
            if let Err(e) = crate::net::parse_listen_address(&h.endpoint) {
                problems.push(&format!("{p}.http.endpoint"), e);
            }
            if h.max_request_body_size == 0 {
                problems.push(
                    &format!("{p}.http.max_request_body_size"),
                    "must be greater than zero",
                );
            }
            if let Some(t) = &h.tls {
                t.validate(&format!("{p}.http.tls"), problems);
            }
            if let Some(c) = &h.cors {
                for (i, o) in c.allowed_origins.iter().enumerate() {
                    if o != "*" && ::http::HeaderValue::from_str(o).is_err() {
                        problems.push(
                            &format!("{p}.http.cors.allowed_origins.{i}"),
                            "not a valid origin",
                        );
                    }
                }
            }
        }
        if self.retry_after.is_zero() {
            problems.push(&format!("{path}.retry_after"), "must be greater than zero");
        }
        if let Some(a) = &self.auth
            && a.bearer_token.expose().len() < 16
        {
            problems.push(
                &format!("{path}.auth.bearer_token"),
                "must be at least 16 characters",
            );
        }
    }
}

/// A started receiver: its bound addresses and server tasks.
pub struct RunningReceiver {
    pub id: String,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Bind and start the receiver. Servers stop accepting when `stop` fires and finish the
/// requests in flight; the returned tasks end when they have.
pub async fn start(
    id: &str,
    config: &OtlpReceiverConfig,
    consumers: Consumers,
    metrics: &SelfMetrics,
    limiter: Option<Arc<crate::memory::MemoryLimiter>>,
    stop: CancellationToken,
) -> std::io::Result<RunningReceiver> {
    if config.auth.is_some() {
        let plaintext: Vec<&str> = [
            (
                "grpc",
                config.protocols.grpc.as_ref().map(|g| g.tls.is_none()),
            ),
            (
                "http",
                config.protocols.http.as_ref().map(|h| h.tls.is_none()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, plain)| (plain == Some(true)).then_some(name))
        .collect();
        if !plaintext.is_empty() {
            tracing::warn!(
                receiver = id,
                transports = ?plaintext,
                "a bearer token is set but these transports have no TLS: the token crosses the network in clear text; configure tls, keep the receiver on loopback or put it behind a TLS proxy"
            );
        }
    }
    let token = config
        .auth
        .as_ref()
        .map(|a| a.bearer_token.expose().to_string());
    let mut running = RunningReceiver {
        id: id.to_string(),
        grpc_addr: None,
        http_addr: None,
        tasks: Vec::new(),
    };
    if let Some(g) = &config.protocols.grpc {
        let mut ingest = ingest::Ingest::new(id, "grpc", consumers.clone(), config, metrics);
        ingest.limiter = limiter.clone();
        let ingest = Arc::new(ingest);
        let (incoming, addr) = listen(
            id,
            "grpc",
            &g.endpoint,
            g.tls.as_deref(),
            &[b"h2"],
            metrics,
            &stop,
            &mut running.tasks,
        )
        .await?;
        running.grpc_addr = Some(addr);
        running.tasks.push(grpc::serve(
            incoming,
            g,
            ingest,
            token.clone(),
            stop.clone(),
        ));
    }
    if let Some(h) = &config.protocols.http {
        let mut ingest = ingest::Ingest::new(id, "http", consumers.clone(), config, metrics);
        ingest.limiter = limiter.clone();
        let ingest = Arc::new(ingest);
        let (incoming, addr) = listen(
            id,
            "http",
            &h.endpoint,
            h.tls.as_deref(),
            &[b"h2", b"http/1.1"],
            metrics,
            &stop,
            &mut running.tasks,
        )
        .await?;
        running.http_addr = Some(addr);
        running.tasks.push(http::serve(
            incoming,
            h,
            ingest,
            token.clone(),
            stop.clone(),
        ));
    }
    Ok(running)
}

/// Where a server takes its connections from: plain TCP, or TLS with the handshake done.
pub(crate) enum Incoming {
    Plain(tokio::net::TcpListener),
    Tls(TlsIncoming),
}

/// Bind one protocol's endpoint and, with `tls`, load the certificate, start the handshakes and
/// the reload task (pushed onto `tasks`; it ends when `stop` fires).
#[allow(clippy::too_many_arguments)]
async fn listen(
    id: &str,
    transport: &str,
    endpoint: &str,
    tls: Option<&TlsServerConfig>,
    alpn: &[&[u8]],
    metrics: &SelfMetrics,
    stop: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> std::io::Result<(Incoming, SocketAddr)> {
    let what = format!("receiver {id} ({transport})");
    let server_tls = match tls {
        Some(t) => {
            Some(Arc::new(ServerTls::load(t, alpn).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e)
            })?))
        }
        None => None,
    };
    let listener = crate::net::bind(&what, endpoint).await?;
    let addr = listener.local_addr()?;
    let Some(server_tls) = server_tls else {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                component = %what,
                address = %addr,
                "plaintext on a non-loopback address: telemetry (and any bearer token) crosses the network unencrypted; configure tls"
            );
        }
        return Ok((Incoming::Plain(listener), addr));
    };
    if let Some(t) = tls {
        tracing::info!(
            component = %what,
            address = %addr,
            cert_file = %t.cert_file,
            mutual_tls = t.client_ca_file.is_some(),
            min_version = %t.min_version,
            reload_interval = %crate::config::duration::format(t.reload_interval),
            "serving TLS"
        );
    }
    let counters = metrics.tls(id, transport);
    tasks.push(
        server_tls
            .clone()
            .spawn_reloader(what.clone(), counters.clone(), stop.clone()),
    );
    let incoming = TlsIncoming::start(listener, server_tls, what, counters, stop.clone())?;
    Ok((Incoming::Tls(incoming), addr))
}
