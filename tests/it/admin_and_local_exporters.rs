//! The admin endpoint, and the file and debug exporters.

use crate::harness;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn big_request(seed: u8, payload: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![seed; 16],
                    span_id: vec![seed; 8],
                    name: format!("span-{seed}"),
                    attributes: vec![KeyValue {
                        key: "payload".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("p".repeat(payload))),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn admin_endpoint_serves_health_readiness_and_metrics() {
    let s = harness::start(&format!(
        "receivers:\n{}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [debug] }}\n",
        harness::otlp_receiver("")
    ))
    .await;
    let base = format!("http://{}", s.admin_addr());
    let get = |p: &str| reqwest::get(format!("{base}{p}"));
    assert_eq!(
        get("/healthz").await.expect("healthz").status().as_u16(),
        200
    );
    assert_eq!(get("/readyz").await.expect("readyz").status().as_u16(), 200);
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    c.export(big_request(3, 10)).await.expect("export");
    let text = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "ragwatch_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 1",
        "ragwatch_exporter_queue_capacity{exporter=\"debug\"} 1000",
        "ragwatch_pipeline_queue_capacity{pipeline=\"traces\"} 50000",
        "# TYPE ragwatch_exporter_sent_spans_total counter",
        "# TYPE ragwatch_exporter_queue_size gauge",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(
        !text.contains("# EOF"),
        "Prometheus text format 0.0.4 by default"
    );
    // A client asking for OpenMetrics (as Prometheus does) gets it.
    let om = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .expect("metrics");
    assert!(
        om.headers()["content-type"]
            .to_str()
            .is_ok_and(|v| v.starts_with("application/openmetrics-text"))
    );
    let om = om.text().await.expect("text");
    assert!(om.contains("# TYPE ragwatch_exporter_sent_spans counter"));
    assert!(om.trim_end().ends_with("# EOF"));
    s.shutdown().await;
}

#[tokio::test]
async fn file_exporter_writes_otlp_json_lines_and_rotates_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out").join("otlp.jsonl");
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  file:
    path: {}
    rotation: {{ max_megabytes: 1, max_backups: 2 }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [file] }}
"#,
        harness::otlp_receiver(""),
        path.display()
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    // Five requests of ~400 KiB: 1 MiB holds two, so the file rotates twice and the oldest goes.
    let sent: Vec<_> = (1..=5u8).map(|i| big_request(i, 400 * 1024)).collect();
    for r in &sent {
        c.export(r.clone()).await.expect("export");
    }
    assert!(
        harness::eventually(Duration::from_secs(10), || {
            harness::metric(&s, r#"ragwatch_exporter_sent_spans_total{exporter="file"}"#) == 5.0
        })
        .await
    );
    s.shutdown().await;
    let read = |p: std::path::PathBuf| -> Vec<ExportTraceServiceRequest> {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is an OTLP/JSON export request"))
            .collect()
    };
    let current = read(path.clone());
    let backup1 = read(dir.path().join("out").join("otlp.jsonl.1"));
    let backup2 = read(dir.path().join("out").join("otlp.jsonl.2"));
    assert!(
        !dir.path().join("out").join("otlp.jsonl.3").exists(),
        "max_backups is 2"
    );
    assert_eq!(current, sent[4..].to_vec());
    assert_eq!(backup1, sent[2..4].to_vec());
    assert_eq!(backup2, sent[0..2].to_vec());
    let first_line = std::fs::read_to_string(&path).expect("read");
    assert!(
        first_line.starts_with("{\"resourceSpans\":[{"),
        "the Collector's file exporter shape"
    );
    assert!(
        first_line.contains("\"traceId\":\"05050505050505050505050505050505\""),
        "hex ids"
    );
}
