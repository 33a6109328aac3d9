//! Every kind of bad input gets its right answer, and the service goes on serving.

use crate::harness;

use std::io::Write;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

fn span(trace: &[u8], id: &[u8], name: &str) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        name: name.to_string(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    harness::traces_request(spans)
}

fn valid() -> ExportTraceServiceRequest {
    request(vec![span(&[1; 16], &[2; 8], "ok")])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

const LIMIT: usize = 64 * 1024;

async fn service() -> ragwatch::Service {
    harness::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        max_recv_msg_size_mib: 1
      http:
        endpoint: 127.0.0.1:0
        max_request_body_size: {LIMIT}
exporters:
  debug:
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [debug] }}
"#
    ))
    .await
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn post(url: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Answer {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.bytes().await.expect("body").to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

fn status_message(a: &Answer) -> String {
    ragwatch::rpc_status::RpcStatus::decode(&a.body[..])
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&a.body).into_owned())
}

#[tokio::test]
async fn http_bad_input_gets_the_right_status_and_the_service_goes_on() {
    let s = service().await;
    let url = harness::http_url(&s, "/v1/traces");
    let pb = "application/x-protobuf";

    let a = post(&url, pb, None, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(a.status, 400);
    assert!(
        status_message(&a).contains("not a valid OTLP protobuf"),
        "{}",
        status_message(&a)
    );

    let a = post(
        &url,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.content_type.starts_with("application/json"));
    let j: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON error body");
    assert_eq!(j["code"], 3);
    assert!(
        j["message"]
            .as_str()
            .unwrap_or("")
            .contains("not valid OTLP/JSON")
    );

    let a = post(&url, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(a.status, 415);

    let a = post(&url, pb, Some("br"), valid().encode_to_vec()).await;
    assert_eq!(a.status, 415, "unknown Content-Encoding");

    // A gzip bomb: 10 MiB of zeros compresses to ~10 KiB, far under the wire limit.
    let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
    assert!(bomb.len() < LIMIT);
    let a = post(&url, pb, Some("gzip"), bomb).await;
    assert_eq!(a.status, 413, "{}", status_message(&a));

    let a = post(&url, pb, None, vec![0u8; LIMIT + 1]).await;
    assert_eq!(a.status, 413);

    // Invalid ids: partial success, the valid rest accepted.
    let mixed = request(vec![
        span(&[1; 16], &[2; 8], "good"),
        span(&[1; 15], &[3; 8], "short trace id"),
        span(&[1; 16], &[0; 8], "zero span id"),
    ]);
    let a = post(&url, pb, None, mixed.encode_to_vec()).await;
    assert_eq!(a.status, 200);
    let r = ExportTraceServiceResponse::decode(&a.body[..]).expect("response");
    let p = r.partial_success.expect("partial success");
    assert_eq!(p.rejected_spans, 2);
    assert!(
        p.error_message.contains("16 non-zero bytes"),
        "{}",
        p.error_message
    );

    // An empty request is valid and answered with success.
    let a = post(&url, pb, None, Vec::new()).await;
    assert_eq!(a.status, 200);
    assert!(
        ExportTraceServiceResponse::decode(&a.body[..])
            .expect("decodes")
            .partial_success
            .is_none()
    );

    // snake_case JSON decodes to nothing: accepted, counted and logged.
    let a = post(
        &url,
        "application/json",
        None,
        br#"{"resource_spans":[{"scope_spans":[]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_empty_json_requests_total{receiver="otlp",transport="http"}"#
        ),
        1.0
    );

    // A valid request in JSON is answered in JSON; then the service still serves.
    let a = post(
        &url,
        "application/json",
        None,
        serde_json::to_vec(&valid()).expect("json"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("application/json"));
    let a = post(&url, pb, Some("gzip"), gzip(&valid().encode_to_vec())).await;
    assert_eq!(a.status, 200);
    let a = post(
        &url,
        pb,
        Some("zstd"),
        zstd::bulk::compress(&valid().encode_to_vec(), 3).expect("zstd"),
    )
    .await;
    assert_eq!(a.status, 200);

    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_accepted_spans_total{receiver="otlp",transport="http"}"#
        ),
        4.0,
        "1 good span of the mixed request + 3 valid requests"
    );
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_refused_spans_total{receiver="otlp",transport="http"}"#
        ),
        2.0
    );
    let outcome = |o: &str| {
        harness::metric(
            &s,
            &format!(
                "ragwatch_receiver_requests_total{{receiver=\"otlp\",transport=\"http\",outcome=\"{o}\"}}"
            ),
        )
    };
    assert_eq!(outcome("invalid"), 2.0);
    assert_eq!(outcome("unsupported"), 2.0);
    assert_eq!(outcome("too_large"), 2.0);
    assert_eq!(outcome("partial"), 1.0);
    s.shutdown().await;
}

#[tokio::test]
async fn cors_is_off_unless_configured() {
    let preflight = |url: String| async move {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .expect("preflight")
    };
    let off = service().await;
    let r = preflight(harness::http_url(&off, "/v1/traces")).await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    off.shutdown().await;

    let on = harness::start(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
        cors:
          allowed_origins: [https://app.example.com]
exporters:
  debug:
service:
  pipelines:
    traces: { receivers: [otlp], exporters: [debug] }
"#,
    )
    .await;
    let r = preflight(harness::http_url(&on, "/v1/traces")).await;
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    let other = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            harness::http_url(&on, "/v1/traces"),
        )
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    on.shutdown().await;
}

/// Sends bytes as they are, so a test can put anything on the wire.
struct RawCodec;
struct RawEncoder;
struct RespDecoder(PhantomData<ExportTraceServiceResponse>);

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = RespDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RespDecoder {
        RespDecoder(PhantomData)
    }
}
impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}
impl Decoder for RespDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

async fn raw_grpc(url: &str, body: Vec<u8>) -> Result<ExportTraceServiceResponse, Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_bad_input_gets_the_right_code_and_the_service_goes_on() {
    let s = service().await;
    let url = harness::grpc_url(&s);

    let e = raw_grpc(&url, vec![0xff, 0xff, 0xff])
        .await
        .expect_err("malformed");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Over 1 MiB decoded: non-retryable RESOURCE_EXHAUSTED without RetryInfo, not OUT_OF_RANGE.
    let big = request(vec![Span {
        name: "x".repeat(1024 * 1024 + 10),
        ..span(&[1; 16], &[2; 8], "")
    }]);
    let mut client = TraceServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let e = client.export(big.clone()).await.expect_err("oversize");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(tonic_types::StatusExt::get_details_retry_info(&e).is_none());

    // A gzip bomb: tiny on the wire, over the limit once inflated.
    assert!(gzip(&big.encode_to_vec()).len() < 64 * 1024);
    let mut gz = TraceServiceClient::connect(url.clone())
        .await
        .expect("connect")
        .send_compressed(CompressionEncoding::Gzip);
    let e = gz.export(big).await.expect_err("bomb");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    let mixed = request(vec![
        span(&[1; 16], &[2; 8], "good"),
        span(&[1; 16], &[2; 7], "short span id"),
    ]);
    let r = client
        .export(mixed)
        .await
        .expect("partial success")
        .into_inner();
    assert_eq!(r.partial_success.map(|p| p.rejected_spans), Some(1));

    let r = client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("empty is fine");
    assert!(r.into_inner().partial_success.is_none());

    let r = client.export(valid()).await.expect("still serving");
    assert!(r.into_inner().partial_success.is_none());
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}"#
        ),
        2.0
    );
    s.shutdown().await;
}
