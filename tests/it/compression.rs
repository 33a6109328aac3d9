//! `compression_params.level` changes the bytes both network exporters send: a sink on 127.0.0.1
//! that keeps each request's body as it came (gRPC frame or HTTP body, still compressed) gets,
//! from exporters at gzip levels 1, 9 and the default, and zstd 19, exactly what that
//! compression at that level makes of the request's protobuf encoding.

use crate::harness;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use ragwatch_loadgen::synth::{Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// One request as the sink got it.
#[derive(Clone, Debug)]
struct Got {
    /// `grpc` or `http`.
    transport: &'static str,
    /// The `x-exporter` header the exporter was configured to send.
    exporter: String,
    /// `grpc-encoding` or `content-encoding`.
    encoding: Option<String>,
    body: Bytes,
}

type Kept = Arc<Mutex<Vec<Got>>>;

fn keep(kept: &Kept, transport: &'static str, headers: &HeaderMap, encoding: &str, body: Bytes) {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    kept.lock().expect("lock").push(Got {
        transport,
        exporter: text("x-exporter").unwrap_or_default(),
        encoding: text(encoding),
        body,
    });
}

/// An OTLP/gRPC answer by hand: an empty ExportTraceServiceResponse in a frame, status OK in
/// the trailers.
async fn grpc_export(State(kept): State<Kept>, headers: HeaderMap, body: Bytes) -> Response {
    keep(&kept, "grpc", &headers, "grpc-encoding", body);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = tokio_stream::iter([
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    Response::builder()
        .header("content-type", "application/grpc")
        .body(axum::body::Body::new(http_body_util::StreamBody::new(
            frames,
        )))
        .expect("response")
}

async fn http_export(State(kept): State<Kept>, headers: HeaderMap, body: Bytes) -> Response {
    keep(&kept, "http", &headers, "content-encoding", body);
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(axum::body::Body::empty())
        .expect("response")
}

/// The sink: gRPC (h2c) and HTTP/1.1 on one port.
async fn sink() -> (SocketAddr, Kept) {
    let kept: Kept = Arc::default();
    let app = axum::Router::new()
        .route(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            post(grpc_export),
        )
        .route("/v1/traces", post(http_export))
        .with_state(kept.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, kept)
}

fn gzip(level: u32, data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compression_level_decides_the_bytes_sent_over_grpc_and_http() {
    let (addr, kept) = sink().await;
    let exporter = |kind: &str, name: &str, params: &str| {
        format!(
            "  {kind}/{name}:\n    endpoint: http://{addr}\n    headers: {{ x-exporter: {name} }}\n{params}    retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms }}\n"
        )
    };
    let level = |n: i32| format!("    compression_params: {{ level: {n} }}\n");
    let mut exporters = String::new();
    for kind in ["otlp", "otlphttp"] {
        exporters += &exporter(kind, &format!("{kind}-1"), &level(1));
        exporters += &exporter(kind, &format!("{kind}-9"), &level(9));
        exporters += &exporter(kind, &format!("{kind}-default"), "");
        let zstd = format!("    compression: zstd\n{}", level(19));
        exporters += &exporter(kind, &format!("{kind}-zstd"), &zstd);
    }
    let yaml = format!(
        r#"
receivers:
{}
exporters:
{exporters}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/otlp-1, otlp/otlp-9, otlp/otlp-default, otlp/otlp-zstd, otlphttp/otlphttp-1, otlphttp/otlphttp-9, otlphttp/otlphttp-default, otlphttp/otlphttp-zstd]
"#,
        harness::otlp_receiver("")
    );
    let s = harness::start(&yaml).await;

    // 50 synthetic RAG traces (200 spans): without processors, ragwatch sends this request's
    // encoding, compressed at each exporter's level.
    let mut rng = StdRng::seed_from_u64(11);
    let profile = Profile::new("rag-api", "gpt-4o-mini");
    let request = ExportTraceServiceRequest {
        resource_spans: (0..50)
            .map(|i| rag_trace(&mut rng, &profile, None, 1_700_000_000_000_000_000 + i))
            .collect(),
    };
    let protobuf = request.encode_to_vec();
    let mut client = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    client.export(request).await.expect("export");
    assert!(
        harness::eventually(Duration::from_secs(10), || kept.lock().expect("lock").len()
            >= 8)
        .await,
        "every exporter sent: {:?}",
        kept.lock().expect("lock")
    );
    let got = kept.lock().expect("lock").clone();
    assert_eq!(got.len(), 8, "{got:?}");

    let (fast, small) = (gzip(1, &protobuf), gzip(9, &protobuf));
    assert!(
        small.len() < fast.len(),
        "level 9 ({}) is smaller than level 1 ({})",
        small.len(),
        fast.len()
    );
    // gzip's header says which: XFL 4 for the fastest level, 2 for the smallest.
    assert_eq!((fast[8], small[8]), (4, 2));
    let default = gzip(ragwatch::exporter::helper::DEFAULT_GZIP_LEVEL, &protobuf);
    let zstd = zstd::bulk::compress(&protobuf, 19).expect("zstd");
    for g in &got {
        let kind = if g.transport == "grpc" {
            "otlp"
        } else {
            "otlphttp"
        };
        let (want, encoding) = match g.exporter.strip_prefix(kind) {
            Some("-1") => (&fast, "gzip"),
            Some("-9") => (&small, "gzip"),
            Some("-default") => (&default, "gzip"),
            Some("-zstd") => (&zstd, "zstd"),
            _ => panic!("an exporter of the other transport: {g:?}"),
        };
        assert_eq!(g.encoding.as_deref(), Some(encoding), "{}", g.exporter);
        let sent: &[u8] = if g.transport == "grpc" {
            // One frame: compressed flag 1, the length (big-endian), the message.
            assert_eq!(g.body[0], 1, "{}: the compressed flag", g.exporter);
            let len = u32::from_be_bytes([g.body[1], g.body[2], g.body[3], g.body[4]]);
            assert_eq!(len as usize, g.body.len() - 5, "{}", g.exporter);
            &g.body[5..]
        } else {
            &g.body
        };
        let plain = if encoding == "gzip" {
            gunzip(sent)
        } else {
            zstd::stream::decode_all(sent).expect("zstd")
        };
        assert_eq!(plain, protobuf, "{}", g.exporter);
        assert!(
            sent == want.as_slice(),
            "{}: {} bytes sent, {} expected",
            g.exporter,
            sent.len(),
            want.len()
        );
    }
}
