//! OTLP/gRPC: TraceService, MetricsService and LogsService on one port.

use std::sync::Arc;

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
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::ingest::{Accepted, Ingest, IngestError};
use super::{GrpcConfig, Incoming};
use crate::receiver::events::{RequestAnswered, RequestRefused};
use crate::signal::Batch;

pub(crate) fn serve(
    incoming: Incoming,
    config: &GrpcConfig,
    ingest: Arc<Ingest>,
    token: Option<String>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let limit = config.max_recv_msg_size_mib.saturating_mul(1024 * 1024);
    let early = ingest.clone();
    // Before the message is decoded: the bearer token, then the memory limit.
    let auth = move |req: Request<()>| -> Result<Request<()>, Status> {
        if let Some(t) = &token {
            let header = req.metadata().get("authorization").map(|v| v.as_bytes());
            if !super::bearer_matches(header, t) {
                RequestAnswered {
                    outcome: "unauthenticated",
                }
                .emit(&early.counters);
                return Err(Status::unauthenticated(
                    "missing or wrong bearer token (Authorization: Bearer <token>)",
                ));
            }
        }
        if let Some(after) = early.refuse_for_memory() {
            RequestAnswered { outcome: "refused" }.emit(&early.counters);
            return Err(Status::with_error_details(
                Code::Unavailable,
                IngestError::Memory(after).message(),
                ErrorDetails::with_retry_info(Some(after)),
            ));
        }
        Ok(req)
    };
    let svc = Svc(ingest.clone());
    let traces = TraceServiceServer::new(svc.clone())
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(svc.clone())
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let logs = LogsServiceServer::new(svc)
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let counters = ingest.counters.clone();
    let zstd = ZstdLayer {
        limit,
        counters: counters.clone(),
    };
    let map = move |resp| map_decode_errors(resp, &counters);
    tokio::spawn(async move {
        let router = tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(auth))
            .layer(tower::util::MapResponseLayer::new(map))
            .layer(zstd)
            .add_service(traces)
            .add_service(metrics)
            .add_service(logs);
        let result = match incoming {
            Incoming::Plain(listener) => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
            }
            Incoming::Tls(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.into_stream(), stop.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(receiver = %ingest.counters.receiver, error = %e, "gRPC server failed");
        }
    })
}

/// tonic answers an oversize message with OUT_OF_RANGE, which OTLP clients retry forever, and an
/// undecodable one with INTERNAL; OTLP wants non-retryable RESOURCE_EXHAUSTED (without RetryInfo)
/// and INVALID_ARGUMENT. Our own handlers never answer with either code, so every such status
/// comes from tonic's decoding and is rewritten (and counted) here. A message that inflates past
/// the limit (a gzip bomb) already gets RESOURCE_EXHAUSTED from tonic; it is only counted.
fn map_decode_errors(
    mut resp: http::Response<tonic::body::Body>,
    counters: &crate::receiver::events::ReceiverCounters,
) -> http::Response<tonic::body::Body> {
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from_i32);
    let (replacement, outcome) = match code {
        Some(Code::OutOfRange) => (Code::ResourceExhausted, "too_large"),
        Some(Code::ResourceExhausted) => (Code::ResourceExhausted, "too_large"),
        Some(Code::Internal) => (Code::InvalidArgument, "invalid"),
        _ => return resp,
    };
    RequestAnswered { outcome }.emit(counters);
    let reason = resp
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    RequestRefused {
        status: &format!("{replacement:?}"),
        reason: &reason,
    }
    .emit(counters);
    resp.headers_mut()
        .insert("grpc-status", http::HeaderValue::from(replacement as i32));
    resp
}

/// zstd-compressed gRPC messages are decompressed here, not by tonic: tonic's zstd decoder
/// allocates whatever window a frame asks for (up to 128 MiB) before it decodes a byte, so a
/// 20-byte message could take that much memory whatever `max_recv_msg_size_mib` says. Here the
/// body is read up to the limit, each message inflated with the window held to the limit (as
/// the HTTP receiver does) and stopped one byte past it, and passed on uncompressed.
#[derive(Clone)]
struct ZstdLayer {
    limit: usize,
    counters: crate::receiver::events::ReceiverCounters,
}

impl<S> tower::Layer<S> for ZstdLayer {
    type Service = Zstd<S>;
    fn layer(&self, inner: S) -> Zstd<S> {
        Zstd {
            inner,
            limit: self.limit,
            counters: self.counters.clone(),
        }
    }
}

#[derive(Clone)]
struct Zstd<S> {
    inner: S,
    limit: usize,
    counters: crate::receiver::events::ReceiverCounters,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Zstd<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let zstd = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"));
        if !zstd {
            return Box::pin(self.inner.call(req));
        }
        // The service that was made ready takes this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (limit, counters) = (self.limit, self.counters.clone());
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match unzstd(body, limit).await {
                Ok(plain) => {
                    parts.headers.remove("grpc-encoding");
                    let body = tonic::body::Body::new(http_body_util::Full::new(plain));
                    inner.call(http::Request::from_parts(parts, body)).await
                }
                Err(status) => {
                    if status.code() == Code::InvalidArgument {
                        RequestAnswered { outcome: "invalid" }.emit(&counters);
                        RequestRefused {
                            status: "InvalidArgument",
                            reason: status.message(),
                        }
                        .emit(&counters);
                    }
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The gRPC messages of `body`, each zstd-decompressed within `limit`, framed again uncompressed.
async fn unzstd(body: tonic::body::Body, limit: usize) -> Result<bytes::Bytes, Status> {
    use http_body_util::BodyExt;
    let too_large = || {
        Status::resource_exhausted(format!(
            "the message is larger than max_recv_msg_size_mib ({limit} bytes)"
        ))
    };
    // A compressed message larger than the limit will not inflate to less; 5 bytes of framing.
    let raw = match http_body_util::Limited::new(body, limit.saturating_add(5))
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large());
        }
        Err(e) => {
            return Err(Status::invalid_argument(format!(
                "cannot read the request: {e}"
            )));
        }
    };
    let mut out = bytes::BytesMut::new();
    let mut rest = &raw[..];
    while !rest.is_empty() {
        let (Some(&flag), Some(len)) = (rest.first(), rest.get(1..5)) else {
            return Err(Status::invalid_argument("a gRPC frame is cut short"));
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(msg) = rest.get(5..5 + len) else {
            return Err(Status::invalid_argument("a gRPC frame is cut short"));
        };
        rest = &rest[5 + len..];
        let plain = if flag == 1 {
            super::http::zstd_decoder(msg, limit)
                .and_then(|d| super::http::inflate(d, limit))
                .map_err(|r| {
                    if r.is_too_large() {
                        too_large()
                    } else {
                        Status::invalid_argument(r.message().to_string())
                    }
                })?
        } else {
            msg.to_vec()
        };
        if plain.len() > limit {
            return Err(too_large());
        }
        let n = u32::try_from(plain.len()).map_err(|_| too_large())?;
        out.extend_from_slice(&[0]);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&plain);
    }
    Ok(out.freeze())
}

#[derive(Clone)]
struct Svc(Arc<Ingest>);

impl Svc {
    async fn export(&self, batch: Batch) -> Result<Accepted, Status> {
        match self.0.ingest(batch).await {
            Ok(a) => {
                RequestAnswered {
                    outcome: if a.rejected > 0 { "partial" } else { "ok" },
                }
                .emit(&self.0.counters);
                Ok(a)
            }
            Err(e) => {
                let msg = e.message();
                let status = match e {
                    IngestError::NoPipeline(_) => {
                        RequestAnswered {
                            outcome: "no_pipeline",
                        }
                        .emit(&self.0.counters);
                        Status::unimplemented(msg)
                    }
                    // Counted (too_large) and logged with the decoding errors, by the same code.
                    IngestError::TooLarge(_) => Status::resource_exhausted(msg),
                    IngestError::Full(after)
                    | IngestError::Closed(after)
                    | IngestError::Memory(after)
                    | IngestError::Storage(after, _) => {
                        RequestAnswered { outcome: "refused" }.emit(&self.0.counters);
                        Status::with_error_details(
                            Code::Unavailable,
                            msg,
                            ErrorDetails::with_retry_info(Some(after)),
                        )
                    }
                };
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(
            Svc::export(self, Batch::Traces(request.into_inner()))
                .await?
                .traces_response(),
        ))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Ok(Response::new(
            Svc::export(self, Batch::Metrics(request.into_inner()))
                .await?
                .metrics_response(),
        ))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Ok(Response::new(
            Svc::export(self, Batch::Logs(request.into_inner()))
                .await?
                .logs_response(),
        ))
    }
}
