//! A fake downstream OTLP backend (gRPC and HTTP) with scripted answers, recording everything.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use ragwatch::signal::{Batch, log_record_count, metric_point_count, span_count};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Status};

/// How the backend answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    Accept,
    /// UNAVAILABLE (+RetryInfo) / 503 (+Retry-After) this many times, then accept.
    FailRetryable {
        times: usize,
        retry_after: Option<Duration>,
    },
    /// INVALID_ARGUMENT / 400, always.
    FailPermanent,
    /// Wait this long, then accept.
    Delay(Duration),
}

enum Outcome {
    Accept,
    Retryable(Option<Duration>),
    Permanent,
}

#[derive(Default)]
struct Recorded {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
    spans: usize,
    points: usize,
    records: usize,
    attempts: usize,
    last_headers: HeaderMap,
    last_encoding: Option<String>,
}

struct Inner {
    behavior: Mutex<Behavior>,
    rec: Mutex<Recorded>,
    changed: watch::Sender<u64>,
}

impl Inner {
    async fn decide(&self, headers: HeaderMap, encoding: Option<String>) -> Outcome {
        let behavior = {
            let mut rec = self.rec.lock().expect("lock");
            rec.attempts += 1;
            rec.last_headers = headers;
            rec.last_encoding = encoding;
            let mut b = self.behavior.lock().expect("lock");
            let now = b.clone();
            if let Behavior::FailRetryable { times, retry_after } = &*b {
                *b = if *times <= 1 {
                    Behavior::Accept
                } else {
                    Behavior::FailRetryable {
                        times: times - 1,
                        retry_after: *retry_after,
                    }
                };
            }
            now
        };
        self.changed.send_modify(|v| *v += 1);
        match behavior {
            Behavior::Accept => Outcome::Accept,
            Behavior::FailRetryable { retry_after, .. } => Outcome::Retryable(retry_after),
            Behavior::FailPermanent => Outcome::Permanent,
            Behavior::Delay(d) => {
                tokio::time::sleep(d).await;
                Outcome::Accept
            }
        }
    }

    fn record(&self, b: Batch) {
        {
            let mut rec = self.rec.lock().expect("lock");
            match b {
                Batch::Traces(r) => {
                    rec.spans += span_count(&r);
                    rec.traces.push(r);
                }
                Batch::Metrics(r) => {
                    rec.points += metric_point_count(&r);
                    rec.metrics.push(r);
                }
                Batch::Logs(r) => {
                    rec.records += log_record_count(&r);
                    rec.logs.push(r);
                }
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }
}

pub struct Backend {
    inner: Arc<Inner>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: CancellationToken,
}

impl Backend {
    pub async fn start() -> Backend {
        Backend::start_at(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
    }

    /// Start on given addresses (for a backend that comes up late on a port ragwatch already uses).
    pub async fn start_at(grpc: SocketAddr, http: SocketAddr) -> Backend {
        let inner = Arc::new(Inner {
            behavior: Mutex::new(Behavior::Accept),
            rec: Mutex::new(Recorded::default()),
            changed: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        let gl = tokio::net::TcpListener::bind(grpc)
            .await
            .expect("bind grpc");
        let hl = tokio::net::TcpListener::bind(http)
            .await
            .expect("bind http");
        let (grpc_addr, http_addr) = (
            gl.local_addr().expect("addr"),
            hl.local_addr().expect("addr"),
        );
        let svc = Svc(inner.clone());
        const MAX: usize = 64 * 1024 * 1024;
        let router = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(svc.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(MAX),
            )
            .add_service(
                MetricsServiceServer::new(svc.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(MAX),
            )
            .add_service(
                LogsServiceServer::new(svc)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(MAX),
            );
        let s1 = stop.clone();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(gl);
            let _ = router
                .serve_with_incoming_shutdown(incoming, s1.cancelled_owned())
                .await;
        });
        let app = axum::Router::new()
            .route("/v1/traces", post(http_traces))
            .route("/v1/metrics", post(http_metrics))
            .route("/v1/logs", post(http_logs))
            .with_state(inner.clone());
        let s2 = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(hl, app)
                .with_graceful_shutdown(s2.cancelled_owned())
                .await;
        });
        Backend {
            inner,
            grpc_addr,
            http_addr,
            stop,
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn set_behavior(&self, b: Behavior) {
        *self.inner.behavior.lock().expect("lock") = b;
    }

    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        self.inner.rec.lock().expect("lock").traces.clone()
    }
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.inner.rec.lock().expect("lock").metrics.clone()
    }
    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.inner.rec.lock().expect("lock").logs.clone()
    }
    /// Every span received, in arrival order.
    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.inner
            .rec
            .lock()
            .expect("lock")
            .traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }
    pub fn span_count(&self) -> usize {
        self.inner.rec.lock().expect("lock").spans
    }
    pub fn point_count(&self) -> usize {
        self.inner.rec.lock().expect("lock").points
    }
    pub fn record_count(&self) -> usize {
        self.inner.rec.lock().expect("lock").records
    }
    pub fn attempts(&self) -> usize {
        self.inner.rec.lock().expect("lock").attempts
    }
    pub fn last_headers(&self) -> HeaderMap {
        self.inner.rec.lock().expect("lock").last_headers.clone()
    }
    pub fn last_encoding(&self) -> Option<String> {
        self.inner.rec.lock().expect("lock").last_encoding.clone()
    }

    /// Wait (on a change signal, not a sleep loop) until `cond` holds or `limit` passes.
    pub async fn wait(&self, limit: Duration, cond: impl Fn(&Backend) -> bool) -> bool {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return cond(self),
            }
        }
    }

    pub async fn wait_for_spans(&self, n: usize, limit: Duration) -> bool {
        self.wait(limit, |b| b.span_count() >= n).await
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Svc(Arc<Inner>);

impl Svc {
    async fn handle<T>(&self, req: Request<T>, wrap: fn(T) -> Batch) -> Result<(), Status> {
        let mut headers = req.metadata().clone().into_headers();
        let encoding = headers
            .remove("grpc-encoding")
            .and_then(|v| v.to_str().ok().map(str::to_string));
        match self.0.decide(headers, encoding).await {
            Outcome::Accept => {
                self.0.record(wrap(req.into_inner()));
                Ok(())
            }
            Outcome::Retryable(after) => Err(Status::with_error_details(
                tonic::Code::Unavailable,
                "backend unavailable (scripted)",
                tonic_types::ErrorDetails::with_retry_info(after),
            )),
            Outcome::Permanent => Err(Status::invalid_argument("backend rejects this (scripted)")),
        }
    }
}

use tonic_types::StatusExt;

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        self.handle(r, Batch::Traces).await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        self.handle(r, Batch::Metrics).await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        self.handle(r, Batch::Logs).await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn inflate(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| e.to_string()),
        Some("zstd") => zstd::stream::decode_all(body).map_err(|e| e.to_string()),
        _ => Ok(body.to_vec()),
    }
}

async fn http_handle(
    inner: &Inner,
    headers: HeaderMap,
    body: Bytes,
    decode: fn(&[u8]) -> Option<Batch>,
) -> Response {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let data = match inflate(&headers, &body) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    match inner.decide(headers, encoding).await {
        Outcome::Accept => match decode(&data) {
            Some(b) => {
                inner.record(b);
                (
                    StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
                    .into_response()
            }
            None => (StatusCode::BAD_REQUEST, "undecodable").into_response(),
        },
        Outcome::Retryable(after) => {
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, "scripted").into_response();
            if let Some(a) = after {
                r.headers_mut().insert("retry-after", a.as_secs().into());
            }
            r
        }
        Outcome::Permanent => {
            (StatusCode::BAD_REQUEST, "scripted permanent failure").into_response()
        }
    }
}

async fn http_traces(State(i): State<Arc<Inner>>, h: HeaderMap, b: Bytes) -> Response {
    http_handle(&i, h, b, |d| {
        ExportTraceServiceRequest::decode(d).ok().map(Batch::Traces)
    })
    .await
}
async fn http_metrics(State(i): State<Arc<Inner>>, h: HeaderMap, b: Bytes) -> Response {
    http_handle(&i, h, b, |d| {
        ExportMetricsServiceRequest::decode(d)
            .ok()
            .map(Batch::Metrics)
    })
    .await
}
async fn http_logs(State(i): State<Arc<Inner>>, h: HeaderMap, b: Bytes) -> Response {
    http_handle(&i, h, b, |d| {
        ExportLogsServiceRequest::decode(d).ok().map(Batch::Logs)
    })
    .await
}
