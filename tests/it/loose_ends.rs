//! Loose ends of issue #18: zstd over gRPC within the message limit, SIGTERM during start-up.

use crate::harness;

use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

fn spans(n: u8) -> Vec<Span> {
    (1..=n)
        .map(|i| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: "zstd".into(),
            ..Default::default()
        })
        .collect()
}

/// A zstd frame of `data` asking for a window of 2^`window_log` bytes, without a content size
/// (so the decoder cannot size the window from it).
fn zstd_with_window(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    e.window_log(window_log).expect("window");
    e.include_contentsize(false).expect("no content size");
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

/// POST one compressed gRPC message to the trace service; the grpc-status it answers.
async fn raw_grpc(addr: &str, message: Vec<u8>) -> (Option<i32>, String) {
    let mut body = vec![1u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let resp = client
        .post(format!(
            "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "zstd")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let message = resp
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, message)
}

#[tokio::test]
async fn a_tiny_zstd_message_cannot_make_the_grpc_receiver_allocate_its_window() {
    let backend = harness::backend::Backend::start().await;
    let s = harness::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0, max_recv_msg_size_mib: 1 }}
exporters:
  otlp: {{ endpoint: {} }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}"#,
        backend.grpc_endpoint()
    ))
    .await;
    let addr = s.grpc_addr("otlp").expect("grpc").to_string();
    // 100 bytes in a frame asking for a 128 MiB window: refused before the window is allocated.
    let bomb = zstd_with_window(&[0; 100], 27);
    assert!(bomb.len() < 32, "a tiny message: {} bytes", bomb.len());
    let (status, message) = raw_grpc(&addr, bomb).await;
    assert_eq!(
        status,
        Some(tonic::Code::InvalidArgument as i32),
        "{message}"
    );
    assert!(message.contains("decompressed"), "says why: {message}");
    // Inflating past the limit (1 MiB) is too large, not retried.
    let big = zstd::bulk::compress(
        &harness::traces_request(vec![Span {
            name: "x".repeat(2 << 20),
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            ..Default::default()
        }])
        .encode_to_vec(),
        3,
    )
    .expect("zstd");
    let (status, _) = raw_grpc(&addr, big).await;
    assert_eq!(status, Some(tonic::Code::ResourceExhausted as i32));
    // An ordinary zstd request from a real client is accepted and delivered.
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .send_compressed(tonic::codec::CompressionEncoding::Zstd);
    client
        .export(harness::traces_request(spans(3)))
        .await
        .expect("a zstd request is accepted");
    assert!(backend.wait_for_spans(3, Duration::from_secs(10)).await);
    let m = s.metrics().encode();
    assert_eq!(
        harness::sample_in(
            &m,
            r#"ragwatch_receiver_requests_total{receiver="otlp",transport="grpc",outcome="invalid"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        harness::sample_in(
            &m,
            r#"ragwatch_receiver_requests_total{receiver="otlp",transport="grpc",outcome="too_large"}"#
        ),
        1.0,
        "{m}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("ragwatch.yaml");
    // Opening a pipeline log, binding ports: start-up takes a few milliseconds.
    std::fs::write(
        &cfg,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0 }}
exporters:
  debug: {{ verbosity: basic }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
      storage: {}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"#,
            dir.path().join("log").display()
        ),
    )
    .expect("config");
    let args = ["--config", cfg.to_str().expect("utf-8")];
    // The first line ragwatch logs comes after its signal handlers are in place: SIGTERM then,
    // while it is still starting.
    let rw = harness::child::Ragwatch::spawn(dir.path(), &args);
    let started = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if !rw.log_lines().is_empty() || std::time::Instant::now() > deadline {
                break !rw.log_lines().is_empty();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    assert!(started, "ragwatch logged a line");
    rw.sigterm();
    let (code, log) = rw.wait();
    assert_eq!(code, Some(0), "a clean exit:\n{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}
