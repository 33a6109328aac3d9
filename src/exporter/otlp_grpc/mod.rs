//! `otlp`: OTLP over gRPC to any backend (Jaeger, Tempo, a Collector, another ragwatch).

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::HeaderValue;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::helper::tls::identity_error;
use super::helper::{Compressor, Delivered, ExportError, OtlpExporterConfig, Payload};
use crate::signal::Signal;

/// The URL tonic dials for an endpoint, and whether it is TLS.
pub(crate) fn grpc_url(endpoint: &str, insecure: bool) -> Result<(String, bool), String> {
    let (url, tls) = if endpoint.starts_with("http://") {
        (endpoint.to_string(), false)
    } else if endpoint.starts_with("https://") {
        (endpoint.to_string(), true)
    } else if endpoint.contains("://") {
        return Err(format!("`{endpoint}`: the scheme must be http or https"));
    } else if insecure {
        (format!("http://{endpoint}"), false)
    } else {
        (format!("https://{endpoint}"), true)
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{endpoint}` is not a valid endpoint: {e}"))?;
    match uri.authority() {
        Some(a) if a.port_u16().is_some() || url.starts_with("https://") => Ok((url, tls)),
        Some(_) => Err(format!("`{endpoint}`: give the port, e.g. host:4317")),
        None => Err(format!("`{endpoint}` names no host")),
    }
}

pub(crate) struct GrpcTransport {
    channel: Precompressed,
    metadata: MetadataMap,
    compressor: Compressor,
    timeout: Duration,
}

impl GrpcTransport {
    pub(crate) fn new(c: &OtlpExporterConfig) -> Result<Self, String> {
        let (url, tls) = grpc_url(&c.endpoint, c.tls.insecure)?;
        let mut ep = Endpoint::from_shared(url)
            .map_err(|e| format!("bad endpoint {}: {e}", c.endpoint))?
            .connect_timeout(c.timeout)
            .tcp_nodelay(true);
        if tls {
            let mut t = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = c.tls.read_ca()? {
                t = t.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(id) = c.tls.read_identity().map_err(identity_error)? {
                t = t.identity(Identity::from_pem(&id.cert, &id.key));
            }
            if let Some(name) = &c.tls.server_name_override {
                t = t.domain_name(name.clone());
            }
            ep = ep
                .tls_config(t)
                .map_err(|e| format!("TLS setup failed: {e}"))?;
        }
        let mut metadata = MetadataMap::new();
        for (k, v) in &c.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("header `{k}` is not a valid gRPC metadata key"))?;
            let val = MetadataValue::try_from(v.expose())
                .map_err(|_| format!("header `{k}` has a value gRPC metadata cannot carry"))?;
            metadata.insert(key, val);
        }
        let compressor = c.compressor()?;
        Ok(GrpcTransport {
            channel: Precompressed {
                channel: ep.connect_lazy(),
                encoding: compressor.encoding().map(HeaderValue::from_static),
            },
            metadata,
            compressor,
            timeout: c.timeout,
        })
    }

    pub(crate) async fn send(&self, p: &Payload) -> Result<Delivered, ExportError> {
        let attempt = async {
            match p.signal() {
                Signal::Traces => self
                    .unary::<ExportTraceServiceResponse>(
                        p,
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    )
                    .await
                    .map(|r| {
                        partial(
                            r.partial_success
                                .map(|s| (s.rejected_spans, s.error_message)),
                        )
                    }),
                Signal::Metrics => self
                    .unary::<ExportMetricsServiceResponse>(
                        p,
                        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                    )
                    .await
                    .map(|r| {
                        partial(
                            r.partial_success
                                .map(|s| (s.rejected_data_points, s.error_message)),
                        )
                    }),
                Signal::Logs => self
                    .unary::<ExportLogsServiceResponse>(
                        p,
                        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                    )
                    .await
                    .map(|r| {
                        partial(
                            r.partial_success
                                .map(|s| (s.rejected_log_records, s.error_message)),
                        )
                    }),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Err(ExportError::Retryable {
                message: format!("no answer within {:?}", self.timeout),
                retry_after: None,
            }),
            Ok(Err(status)) => Err(classify(&status)),
            Ok(Ok(d)) => Ok(d),
        }
    }

    async fn unary<R>(&self, p: &Payload, path: &'static str) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
    {
        let message = self
            .compressor
            .compress(p.protobuf())
            .map_err(Status::internal)?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(4 * 1024 * 1024);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the backend: {e}")))?;
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = self.metadata.clone();
        req.set_timeout(self.timeout);
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(req, path, RawCodec::<R>(PhantomData))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// tonic compresses a gRPC message at a level of its own (gzip 6, zstd's default: "FIXME: support
/// customizing the compression level" in tonic 0.14's `codec/compression.rs`) and has no setting
/// for it. So the exporter compresses each message itself, at the configured level, and hands
/// tonic the compressed bytes to frame as they are; this service, between tonic and the channel,
/// then says so: the `grpc-encoding` header, and the frame's compressed flag (tonic writes 0,
/// having compressed nothing).
#[derive(Clone)]
struct Precompressed {
    channel: Channel,
    /// The `grpc-encoding` of the messages; None: not compressed.
    encoding: Option<HeaderValue>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Precompressed {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(encoding) = &self.encoding else {
            return self.channel.call(req);
        };
        let (mut parts, body) = req.into_parts();
        parts.headers.insert("grpc-encoding", encoding.clone());
        let body = tonic::body::Body::new(Flagged {
            inner: body,
            rest: None,
            first: true,
        });
        self.channel.call(http::Request::from_parts(parts, body))
    }
}

/// A unary request's body with the compressed flag set: the first byte of the first chunk (the
/// flag of the message's 5-byte frame header) goes out as 1, the rest of the chunk after it
/// (not copied).
struct Flagged {
    inner: tonic::body::Body,
    /// The first chunk after its first byte, sent next.
    rest: Option<Bytes>,
    first: bool,
}

impl http_body::Body for Flagged {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(rest) = this.rest.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(rest))));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if this.first => frame,
            other => return other,
        };
        match frame.into_data() {
            Ok(mut data) if !data.is_empty() => {
                this.first = false;
                this.rest = Some(data.split_off(1));
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(&[1])))))
            }
            Ok(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            Err(trailers) => Poll::Ready(Some(Ok(trailers))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }
}

fn partial(s: Option<(i64, String)>) -> Delivered {
    match s {
        Some((rejected, message)) => Delivered {
            rejected: rejected.max(0) as u64,
            message,
        },
        None => Delivered::default(),
    }
}

/// Retryable or not, per the OTLP specification's table of gRPC codes.
fn classify(status: &Status) -> ExportError {
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable {
            message,
            retry_after,
        },
        // Only a throttling answer with RetryInfo is worth retrying.
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Retryable {
            message,
            retry_after,
        },
        _ => ExportError::Permanent(message),
    }
}

/// Sends bytes that are already protobuf-encoded (encoded once, reused by every retry) and
/// compressed (see [`Precompressed`]), and decodes the typed response.
struct RawCodec<R>(PhantomData<R>);

impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstDecoder<R> {
        ProstDecoder(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct ProstDecoder<R>(PhantomData<R>);

impl<R: prost::Message + Default> Decoder for ProstDecoder<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable response: {e}")))
    }
}

impl super::helper::Transport for GrpcTransport {
    fn send<'a>(
        &'a self,
        p: &'a Payload,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Delivered, ExportError>> + Send + 'a>,
    > {
        Box::pin(GrpcTransport::send(self, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_the_collector_way() {
        assert_eq!(
            grpc_url("127.0.0.1:4317", true),
            Ok(("http://127.0.0.1:4317".into(), false))
        );
        assert_eq!(
            grpc_url("tempo:4317", false),
            Ok(("https://tempo:4317".into(), true))
        );
        assert_eq!(
            grpc_url("http://jaeger:4317", false),
            Ok(("http://jaeger:4317".into(), false))
        );
        assert!(grpc_url("ftp://x:1", false).is_err());
        assert!(grpc_url("http://jaeger", false).is_err());
    }

    #[test]
    fn retryable_codes_follow_otlp() {
        assert!(matches!(
            classify(&Status::unavailable("x")),
            ExportError::Retryable { .. }
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("x")),
            ExportError::Permanent(_)
        ));
        assert!(matches!(
            classify(&Status::resource_exhausted("x")),
            ExportError::Permanent(_)
        ));
        let throttled = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        match classify(&throttled) {
            ExportError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)))
            }
            other => panic!("{other:?}"),
        }
    }
}
