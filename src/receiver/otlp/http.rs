//! OTLP/HTTP: POST /v1/traces, /v1/metrics and /v1/logs with protobuf or JSON bodies (by
//! Content-Type), optionally gzip or zstd (by Content-Encoding), answered in the request's
//! encoding.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ingest::{Accepted, Ingest, IngestError};
use super::{CorsConfig, HttpConfig, Incoming};
use crate::receiver::events::{EmptyJson, RequestAnswered, RequestRefused};
use crate::rpc_status::RpcStatus;
use crate::signal::{Batch, Signal};

struct HttpState {
    ingest: Arc<Ingest>,
    limit: usize,
}

pub(crate) fn serve(
    incoming: Incoming,
    config: &HttpConfig,
    ingest: Arc<Ingest>,
    token: Option<String>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let auth_counters = ingest.counters.clone();
    let state = Arc::new(HttpState {
        ingest,
        limit: config.max_request_body_size,
    });
    let receiver = state.ingest.counters.receiver.clone();
    let mut app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .with_state(state);
    if let Some(token) = token {
        let check = move |req: axum::extract::Request, next: axum::middleware::Next| {
            let ok = super::bearer_matches(
                req.headers()
                    .get(::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                &token,
            );
            let counters = auth_counters.clone();
            async move {
                if ok {
                    next.run(req).await
                } else {
                    RequestAnswered {
                        outcome: "unauthenticated",
                    }
                    .emit(&counters);
                    (
                        ::http::StatusCode::UNAUTHORIZED,
                        [(::http::header::WWW_AUTHENTICATE, "Bearer")],
                        "missing or wrong bearer token (Authorization: Bearer <token>)\n",
                    )
                        .into_response()
                }
            }
        };
        app = app.layer(axum::middleware::from_fn(check));
    }
    if let Some(c) = &config.cors {
        app = app.layer(cors_layer(c));
    }
    tokio::spawn(async move {
        let result = match incoming {
            Incoming::Plain(listener) => {
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
            // TCP_NODELAY is set where the TLS connections are accepted.
            Incoming::Tls(tls) => {
                axum::serve(tls, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(receiver = %receiver, error = %e, "HTTP server failed");
        }
    })
}

fn cors_layer(c: &CorsConfig) -> CorsLayer {
    let origins = if c.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            c.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let mut headers: Vec<http::HeaderName> = vec![CONTENT_TYPE, CONTENT_ENCODING];
    headers.extend(
        c.allowed_headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
    );
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([http::Method::POST])
        .allow_headers(headers)
        .max_age(Duration::from_secs(c.max_age))
}

async fn traces(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    handle(&s, Signal::Traces, &headers, body).await
}
async fn metrics(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    handle(&s, Signal::Metrics, &headers, body).await
}
async fn logs(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    handle(&s, Signal::Logs, &headers, body).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A refusal: status, google.rpc.Status code and message, and an optional Retry-After.
pub struct Refusal {
    status: StatusCode,
    grpc_code: tonic::Code,
    message: String,
    retry_after: Option<Duration>,
    outcome: &'static str,
}

impl Refusal {
    /// Too large (after decompression) rather than malformed.
    pub(crate) fn is_too_large(&self) -> bool {
        self.status == StatusCode::PAYLOAD_TOO_LARGE
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn new(
        status: StatusCode,
        grpc_code: tonic::Code,
        outcome: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Refusal {
            status,
            grpc_code,
            message: message.into(),
            retry_after: None,
            outcome,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "invalid",
            message,
        )
    }
    fn too_large(limit: usize) -> Self {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            "too_large",
            format!(
                "the request body is larger than max_request_body_size ({limit} bytes) after decompression"
            ),
        )
    }
}

async fn handle(s: &HttpState, signal: Signal, headers: &HeaderMap, body: Body) -> Response {
    let encoding = match content_type(headers) {
        Ok(e) => e,
        Err(r) => return refuse(s, Encoding::Protobuf, r),
    };
    match receive(s, signal, encoding, headers, body).await {
        Ok(accepted) => {
            RequestAnswered {
                outcome: if accepted.rejected > 0 {
                    "partial"
                } else {
                    "ok"
                },
            }
            .emit(&s.ingest.counters);
            success(signal, encoding, accepted)
        }
        Err(r) => refuse(s, encoding, r),
    }
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let raw = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            "unsupported",
            format!(
                "Content-Type `{raw}` is not supported; send application/x-protobuf or application/json"
            ),
        )),
    }
}

async fn receive(
    s: &HttpState,
    signal: Signal,
    encoding: Encoding,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, Refusal> {
    if let Some(after) = s.ingest.refuse_for_memory() {
        return Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            grpc_code: tonic::Code::Unavailable,
            message: IngestError::Memory(after).message(),
            retry_after: Some(after),
            outcome: "refused",
        });
    }
    let raw = read_body(body, s.limit).await?;
    let content_encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let data: Bytes = match content_encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" => Bytes::from(inflate(
            flate2::read::MultiGzDecoder::new(&raw[..]),
            s.limit,
        )?),
        "zstd" => Bytes::from(inflate(zstd_decoder(&raw, s.limit)?, s.limit)?),
        other => {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                "unsupported",
                format!("Content-Encoding `{other}` is not supported; use gzip, zstd or none"),
            ));
        }
    };
    let batch = decode(signal, encoding, &data)?;
    if encoding == Encoding::Json && batch.item_count() == 0 {
        let hint = if looks_snake_case(&data) {
            "the body has snake_case keys such as resource_spans"
        } else {
            "the body holds no items"
        };
        EmptyJson { signal, hint }.emit(&s.ingest.counters);
    }
    s.ingest.ingest(batch).await.map_err(|e| {
        let message = e.message();
        match e {
            IngestError::NoPipeline(_) => Refusal::new(
                StatusCode::NOT_FOUND,
                tonic::Code::Unimplemented,
                "no_pipeline",
                message,
            ),
            IngestError::TooLarge(_) => Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                tonic::Code::ResourceExhausted,
                "too_large",
                message,
            ),
            IngestError::Full(after)
            | IngestError::Closed(after)
            | IngestError::Memory(after)
            | IngestError::Storage(after, _) => Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                grpc_code: tonic::Code::Unavailable,
                message,
                retry_after: Some(after),
                outcome: "refused",
            },
        }
    })
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Refusal::too_large(limit))
        }
        Err(e) => Err(Refusal::bad(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Decompress, stopping one byte past the limit, so a small bomb cannot take memory.
pub fn inflate(reader: impl Read, limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Refusal::bad(format!("the body could not be decompressed: {e}")))?;
    if out.len() > limit {
        return Err(Refusal::too_large(limit));
    }
    Ok(out)
}

/// zstd allocates the window a frame asks for before decoding anything, up to 128 MiB by
/// default: a 21-byte body could take that much memory whatever the limit. The window is held to
/// the limit, but not below 8 MiB, the most that zstd's standard levels (1-19) ask for, so a body
/// from any ordinary encoder decodes; a frame asking for more is refused as undecompressable.
pub fn zstd_decoder(
    raw: &[u8],
    limit: usize,
) -> Result<zstd::stream::read::Decoder<'static, std::io::BufReader<&[u8]>>, Refusal> {
    let bad = |e: std::io::Error| Refusal::bad(format!("bad zstd body: {e}"));
    let mut d = zstd::stream::read::Decoder::new(raw).map_err(bad)?;
    d.window_log_max(limit.clamp(8 << 20, 1 << 27).ilog2())
        .map_err(bad)?;
    Ok(d)
}

pub fn decode(signal: Signal, encoding: Encoding, data: &[u8]) -> Result<Batch, Refusal> {
    fn pb<T: Message + Default>(d: &[u8]) -> Result<T, Refusal> {
        T::decode(d).map_err(|e| {
            Refusal::bad(format!(
                "the body is not a valid OTLP protobuf message: {e}"
            ))
        })
    }
    fn js<T: serde::de::DeserializeOwned>(d: &[u8]) -> Result<T, Refusal> {
        serde_json::from_slice(d)
            .map_err(|e| Refusal::bad(format!("the body is not valid OTLP/JSON: {e}")))
    }
    Ok(match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => {
            Batch::Traces(pb::<ExportTraceServiceRequest>(data)?)
        }
        (Signal::Traces, Encoding::Json) => Batch::Traces(js::<ExportTraceServiceRequest>(data)?),
        (Signal::Metrics, Encoding::Protobuf) => {
            Batch::Metrics(pb::<ExportMetricsServiceRequest>(data)?)
        }
        (Signal::Metrics, Encoding::Json) => {
            Batch::Metrics(js::<ExportMetricsServiceRequest>(data)?)
        }
        (Signal::Logs, Encoding::Protobuf) => Batch::Logs(pb::<ExportLogsServiceRequest>(data)?),
        (Signal::Logs, Encoding::Json) => Batch::Logs(js::<ExportLogsServiceRequest>(data)?),
    })
}

fn looks_snake_case(data: &[u8]) -> bool {
    const KEYS: [&[u8]; 3] = [
        b"\"resource_spans\"",
        b"\"resource_metrics\"",
        b"\"resource_logs\"",
    ];
    KEYS.iter().any(|k| data.windows(k.len()).any(|w| w == *k))
}

fn success(signal: Signal, encoding: Encoding, a: Accepted) -> Response {
    let body = match signal {
        Signal::Traces => encode(encoding, &a.traces_response()),
        Signal::Metrics => encode(encoding, &a.metrics_response()),
        Signal::Logs => encode(encoding, &a.logs_response()),
    };
    match body {
        Ok(b) => ([(CONTENT_TYPE, encoding.content_type())], b).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the response: {e}"),
        )
            .into_response(),
    }
}

fn encode<T: Message + serde::Serialize>(
    encoding: Encoding,
    msg: &T,
) -> Result<Vec<u8>, serde_json::Error> {
    match encoding {
        Encoding::Protobuf => Ok(msg.encode_to_vec()),
        Encoding::Json => serde_json::to_vec(msg),
    }
}

fn refuse(s: &HttpState, encoding: Encoding, r: Refusal) -> Response {
    RequestAnswered { outcome: r.outcome }.emit(&s.ingest.counters);
    if r.outcome != "refused" && r.outcome != "no_pipeline" {
        RequestRefused {
            status: r.status.as_str(),
            reason: &r.message,
        }
        .emit(&s.ingest.counters);
    }
    let status = RpcStatus {
        code: r.grpc_code as i32,
        message: r.message,
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&status).unwrap_or_default(),
    };
    let mut resp = (r.status, [(CONTENT_TYPE, encoding.content_type())], body).into_response();
    if let Some(after) = r.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zstd_with_window(data: &[u8], window_log: u32) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        e.window_log(window_log).expect("window");
        e.include_contentsize(false).expect("no content size");
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    // Found by fuzz/fuzz_targets/body_decompress.rs: a 21-byte zstd body declaring a 128 MiB window
    // made the receiver allocate 128 MiB, whatever max_request_body_size said.
    #[test]
    fn a_zstd_window_past_the_limit_is_refused_before_it_is_allocated() {
        let bomb = zstd_with_window(&[0; 100], 27);
        assert!(bomb.len() < 32);
        let refused = zstd_decoder(&bomb, 1 << 20).and_then(|d| inflate(d, 1 << 20));
        assert!(refused.is_err());
        // At the default limit (20 MiB) a window of up to 16 MiB decodes, not 32 MiB.
        let limit = 20 << 20;
        let ok = zstd_with_window(b"spans", 24);
        let out = zstd_decoder(&ok, limit).and_then(|d| inflate(d, limit));
        assert_eq!(out.ok().as_deref(), Some(&b"spans"[..]));
        let big = zstd_with_window(b"spans", 25);
        assert!(
            zstd_decoder(&big, limit)
                .and_then(|d| inflate(d, limit))
                .is_err()
        );
    }

    #[test]
    fn a_zstd_body_from_any_standard_level_decodes_under_a_small_limit() {
        // Levels up to 19 ask for windows of up to 8 MiB when the size is not known up front.
        let body = zstd_with_window(b"spans", 23);
        let out = zstd_decoder(&body, 1024).and_then(|d| inflate(d, 1024));
        assert_eq!(out.ok().as_deref(), Some(&b"spans"[..]));
    }
}
