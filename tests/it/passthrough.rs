//! With no processors, what comes out equals what went in: every fixture, over every transport,
//! through both network exporters.

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use harness::fixtures;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use ragwatch::signal::Batch;

fn config(grpc_backend: &Backend, http_backend: &Backend) -> String {
    format!(
        r#"
receivers:
{}
exporters:
  otlp/down:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms }}
  otlphttp/down:
    endpoint: {}
    compression: zstd
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp/down, otlphttp/down] }}
    metrics: {{ receivers: [otlp], exporters: [otlp/down, otlphttp/down] }}
    logs: {{ receivers: [otlp], exporters: [otlp/down, otlphttp/down] }}
"#,
        harness::otlp_receiver(""),
        grpc_backend.grpc_endpoint(),
        http_backend.http_endpoint()
    )
}

async fn post(url: String, content_type: &str, body: Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_comes_out_unchanged_over_every_transport_and_exporter() {
    let (down_grpc, down_http) = (Backend::start().await, Backend::start().await);
    let s = harness::start(&config(&down_grpc, &down_http)).await;
    let grpc = harness::grpc_url(&s);
    let mut traces = TraceServiceClient::connect(grpc.clone())
        .await
        .expect("connect");
    let mut metrics = MetricsServiceClient::connect(grpc.clone())
        .await
        .expect("connect");
    let mut logs = LogsServiceClient::connect(grpc).await.expect("connect");

    let mut sent: Vec<Batch> = Vec::new();
    for file in fixtures::files() {
        for (batch, json) in fixtures::load(&file) {
            let path = batch.signal().http_path();
            // 1. OTLP/HTTP with the captured JSON text itself.
            post(
                harness::http_url(&s, path),
                "application/json",
                json.into_bytes(),
            )
            .await;
            // 2. OTLP/HTTP protobuf.
            let pb = match &batch {
                Batch::Traces(r) => r.encode_to_vec(),
                Batch::Metrics(r) => r.encode_to_vec(),
                Batch::Logs(r) => r.encode_to_vec(),
            };
            post(harness::http_url(&s, path), "application/x-protobuf", pb).await;
            // 3. OTLP/gRPC.
            match &batch {
                Batch::Traces(r) => {
                    traces.export(r.clone()).await.expect("grpc traces");
                }
                Batch::Metrics(r) => {
                    metrics.export(r.clone()).await.expect("grpc metrics");
                }
                Batch::Logs(r) => {
                    logs.export(r.clone()).await.expect("grpc logs");
                }
            }
            for _ in 0..3 {
                sent.push(batch.clone());
            }
        }
    }
    let (t, m, l) = fixtures::split(&sent);
    let spans: usize = t.iter().map(ragwatch::signal::span_count).sum();
    let points: usize = m.iter().map(ragwatch::signal::metric_point_count).sum();
    let records: usize = l.iter().map(ragwatch::signal::log_record_count).sum();
    assert!(spans > 0 && points > 0 && records > 0);

    for down in [&down_grpc, &down_http] {
        let all = down
            .wait(Duration::from_secs(20), |b| {
                b.span_count() >= spans && b.point_count() >= points && b.record_count() >= records
            })
            .await;
        assert!(all, "backend got {} spans of {spans}", down.span_count());
        assert_eq!(
            fixtures::canonical_traces(&down.traces()),
            fixtures::canonical_traces(&t)
        );
        assert_eq!(
            fixtures::canonical_metrics(&down.metrics()),
            fixtures::canonical_metrics(&m)
        );
        assert_eq!(
            fixtures::canonical_logs(&down.logs()),
            fixtures::canonical_logs(&l)
        );
    }
    assert_eq!(
        down_grpc.last_encoding().as_deref(),
        Some("gzip"),
        "otlp exporter compresses with gzip by default"
    );
    assert_eq!(down_http.last_encoding().as_deref(), Some("zstd"));

    let sent_metric = |e: &str| {
        harness::metric(
            &s,
            &format!("ragwatch_exporter_sent_spans_total{{exporter=\"{e}\"}}"),
        )
    };
    assert_eq!(sent_metric("otlp/down"), spans as f64);
    assert_eq!(sent_metric("otlphttp/down"), spans as f64);
    s.shutdown().await;
}

#[tokio::test]
async fn custom_headers_reach_the_backend_on_both_exporters() {
    let (down_grpc, down_http) = (Backend::start().await, Backend::start().await);
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: {}
    headers: {{ x-api-key: grpc-key }}
    compression: none
  otlphttp:
    endpoint: {}
    headers: {{ x-api-key: http-key }}
service:
  pipelines:
    logs: {{ receivers: [otlp], exporters: [otlp, otlphttp] }}
"#,
        harness::otlp_receiver(""),
        down_grpc.grpc_endpoint(),
        down_http.http_endpoint()
    ))
    .await;
    let file = fixtures::files().into_iter().next().expect("a fixture");
    let logs = fixtures::load(&file)
        .into_iter()
        .find_map(|(b, _)| match b {
            Batch::Logs(r) => Some(r),
            _ => None,
        })
        .expect("a logs line");
    let mut c = LogsServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    c.export(logs).await.expect("export");
    for (down, key) in [(&down_grpc, "grpc-key"), (&down_http, "http-key")] {
        assert!(
            down.wait(Duration::from_secs(10), |b| b.record_count() > 0)
                .await
        );
        assert_eq!(
            down.last_headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok()),
            Some(key)
        );
    }
    assert_eq!(down_grpc.last_encoding(), None, "compression: none");
    s.shutdown().await;
}
