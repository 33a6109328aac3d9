//! Sending pre-encoded export requests over OTLP/gRPC or OTLP/HTTP (protobuf), and what the
//! answer means.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{LoadgenError, Protocol};

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted; `rejected` spans were refused in a partial success.
    Acked { rejected: u64, message: String },
    /// Refused retryably by the server (UNAVAILABLE, RESOURCE_EXHAUSTED, HTTP 429/502/503/504).
    Refused {
        retry_after: Option<Duration>,
        message: String,
    },
    /// No answer: connection refused or lost, timed out. Retried like a refusal.
    Transport(String),
    /// Rejected for good.
    Permanent(String),
}

/// A client for one worker: a gRPC channel of its own (one HTTP/2 connection) or a shared
/// HTTP client.
#[derive(Clone)]
pub enum Transport {
    Grpc {
        channel: Channel,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        timeout: Duration,
    },
}

/// The URL for an endpoint and protocol: a scheme is added when missing; for HTTP,
/// `/v1/traces` is appended unless the path already names it.
pub fn endpoint_url(endpoint: Option<&str>, protocol: Protocol) -> Result<String, LoadgenError> {
    let default = match protocol {
        Protocol::Grpc => "http://127.0.0.1:4317",
        Protocol::Http => "http://127.0.0.1:4318",
    };
    let e = endpoint.unwrap_or(default).trim();
    let e = if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    };
    let uri: http::Uri = e
        .parse()
        .map_err(|err| LoadgenError::Usage(format!("--endpoint `{e}`: {err}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(LoadgenError::Usage(format!(
                "--endpoint `{e}`: the scheme must be http or https"
            )));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(LoadgenError::Usage(format!(
            "--endpoint `{e}` names no host"
        )));
    }
    Ok(match protocol {
        Protocol::Grpc => e,
        Protocol::Http if e.trim_end_matches('/').ends_with("/v1/traces") => e,
        Protocol::Http => format!("{}/v1/traces", e.trim_end_matches('/')),
    })
}

impl Transport {
    pub fn grpc(url: &str, timeout: Duration) -> Result<Transport, LoadgenError> {
        let mut ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| LoadgenError::Usage(format!("--endpoint `{url}`: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            ep = ep
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| LoadgenError::Setup(format!("TLS: {e}")))?;
        }
        Ok(Transport::Grpc {
            channel: ep.connect_lazy(),
            timeout,
        })
    }

    pub fn http(
        url: &str,
        timeout: Duration,
        connections: usize,
    ) -> Result<Transport, LoadgenError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| LoadgenError::Setup(format!("HTTP client: {e}")))?;
        Ok(Transport::Http {
            client,
            url: url.to_string(),
            timeout,
        })
    }

    /// One attempt.
    pub async fn send(&self, body: Bytes) -> Outcome {
        match self {
            Transport::Grpc { channel, timeout } => {
                let attempt = grpc_export(channel.clone(), body, *timeout);
                match tokio::time::timeout(*timeout, attempt).await {
                    Err(_) => Outcome::Transport(format!("no answer within {timeout:?}")),
                    Ok(Ok(r)) => acked(r),
                    Ok(Err(s)) => classify_grpc(&s),
                }
            }
            Transport::Http {
                client,
                url,
                timeout,
            } => http_export(client, url, body, *timeout).await,
        }
    }
}

fn acked(r: ExportTraceServiceResponse) -> Outcome {
    match r.partial_success {
        Some(p) => Outcome::Acked {
            rejected: p.rejected_spans.max(0) as u64,
            message: p.error_message,
        },
        None => Outcome::Acked {
            rejected: 0,
            message: String::new(),
        },
    }
}

async fn grpc_export(
    channel: Channel,
    body: Bytes,
    timeout: Duration,
) -> Result<ExportTraceServiceResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect: {e}")))?;
    let mut req = tonic::Request::new(body);
    req.set_timeout(timeout);
    grpc.unary(
        req,
        http::uri::PathAndQuery::from_static(TRACE_EXPORT),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn classify_grpc(s: &Status) -> Outcome {
    let message = format!("{:?}: {}", s.code(), s.message());
    // A status made by the client from a connection error carries that error as its source;
    // one sent by the server does not.
    let from_transport = std::error::Error::source(s).is_some();
    match s.code() {
        Code::Unavailable | Code::ResourceExhausted if !from_transport => Outcome::Refused {
            retry_after: s.get_details_retry_info().and_then(|r| r.retry_delay),
            message,
        },
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Unknown
            if from_transport || s.code() != Code::Unknown =>
        {
            Outcome::Transport(message)
        }
        _ => Outcome::Permanent(message),
    }
}

async fn http_export(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Outcome {
    let resp = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(error_chain(&e)),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Transport(error_chain(&e)),
    };
    match status {
        200..=299 => match ExportTraceServiceResponse::decode(body) {
            Ok(r) => acked(r),
            Err(e) => Outcome::Permanent(format!("HTTP {status}: undecodable response: {e}")),
        },
        429 | 502 | 503 | 504 => Outcome::Refused {
            retry_after,
            message: format!("HTTP {status}: {}", snippet(&body)),
        },
        _ => Outcome::Permanent(format!("HTTP {status}: {}", snippet(&body))),
    }
}

fn snippet(b: &[u8]) -> String {
    // The body is a google.rpc.Status in protobuf, or text.
    if let Ok(s) = ragwatch::rpc_status::RpcStatus::decode(b)
        && !s.message.is_empty()
    {
        return s.message;
    }
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Sends bytes that are already protobuf-encoded; decodes the typed response.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder(PhantomData)
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

struct ResponseDecoder(PhantomData<ExportTraceServiceResponse>);

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let g = |e: Option<&str>| endpoint_url(e, Protocol::Grpc).ok();
        let h = |e: Option<&str>| endpoint_url(e, Protocol::Http).ok();
        assert_eq!(g(None).as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(h(None).as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        assert_eq!(
            g(Some("10.0.0.1:4317")).as_deref(),
            Some("http://10.0.0.1:4317")
        );
        assert_eq!(
            h(Some("http://x:4318/")).as_deref(),
            Some("http://x:4318/v1/traces")
        );
        assert_eq!(
            h(Some("https://x/otlp/v1/traces")).as_deref(),
            Some("https://x/otlp/v1/traces")
        );
        assert_eq!(g(Some("ftp://x:1")), None);
    }

    #[test]
    fn grpc_answers_are_classified() {
        assert!(matches!(
            classify_grpc(&Status::unavailable("full")),
            Outcome::Refused { .. }
        ));
        assert!(matches!(
            classify_grpc(&Status::resource_exhausted("slow down")),
            Outcome::Refused { .. }
        ));
        assert!(matches!(
            classify_grpc(&Status::invalid_argument("bad")),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            classify_grpc(&Status::deadline_exceeded("late")),
            Outcome::Transport(_)
        ));
    }
}
