//! SLOs and anomaly detection end to end: synthetic RAG traces over gRPC into the real service
//! (genai → trace_assembly → quality → anomaly → slo), a fake OTLP backend downstream, and the
//! Prometheus exporter scraped over HTTP.

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use ragwatch::attributes::get;
use ragwatch_loadgen::synth::{Fault, Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_retrieval_is_an_anomaly_and_burns_the_latency_slo() {
    let _heavy = harness::heavy().await;
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let s = harness::start(&format!(
        r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    wait_after_root: 100ms
  quality:
  anomaly:
    warmup: 20
  slo:
    resolution: 100ms
    evaluation_interval: 200ms
    burn_rules:
      - {{ severity: critical, long: 30s, short: 2s, burn_rate: 2 }}
    slos:
      - name: fast-answers
        kind: latency
        objective: 0.9
        threshold: 4s
exporters:
  otlp:
    endpoint: {}
  prometheus:
    endpoint: 127.0.0.1:0
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo]
      exporters: [otlp, prometheus]
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint()
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    let profile = Profile {
        error_rate: 0.0,
        ..Profile::new("rag-api", "gpt-4o-mini")
    };
    let mut rng = StdRng::seed_from_u64(42);
    let mut send = async |fault: Option<Fault>, n: usize| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: (0..n)
                .map(|_| rag_trace(&mut rng, &profile, fault, now))
                .collect(),
        };
        c.export(req).await.expect("export");
    };
    // 40 clean traces (4 spans each), in four requests; all through before the fault.
    for _ in 0..4 {
        send(None, 10).await;
    }
    assert!(down.wait_for_spans(160, Duration::from_secs(20)).await);
    // A clean request takes about 2 s (the answer's 200 tokens take 1.6 s); seeded, none of these
    // reaches 4 s. Then retrieval 40x slower (80 ms → 3.2 s): every request breaks 4 s.
    send(Some(Fault::SlowRetrieval(40.0)), 10).await;
    assert!(down.wait_for_spans(200, Duration::from_secs(20)).await);

    // The slow retrievals are marked downstream.
    let marked: Vec<_> = down
        .spans()
        .into_iter()
        .filter(|s| {
            matches!(
                get(&s.attributes, "rag.anomaly"),
                Some(Value::BoolValue(true))
            )
        })
        .collect();
    assert!(
        marked.iter().any(|s| s.name.starts_with("retrieval")),
        "a retrieval span is marked: {:?}",
        marked.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // 10 bad of 50 in the 30 s window: burn (10/50)/0.1 = 2... the short window holds the 10 bad
    // only (burn 10); the long one 0.2/0.1 = 2.0 does not exceed 2 until more come. Send 10 more.
    send(Some(Fault::SlowRetrieval(40.0)), 10).await;
    assert!(down.wait_for_spans(240, Duration::from_secs(20)).await);
    // Now 20 bad of 60: long burn (1/3)/0.1 = 3.33 > 2, short 10 > 2: a page.
    let found = harness::eventually(Duration::from_secs(10), || {
        s.findings().recent().iter().any(|f| f.name == "slo_burn")
    })
    .await;
    assert!(found, "slo_burn finding: {:?}", s.findings().recent());
    let f = s.findings().recent();
    let burn = f.iter().find(|f| f.name == "slo_burn").expect("burn");
    assert_eq!(
        burn.labels.get("slo").map(String::as_str),
        Some("fast-answers")
    );
    assert_eq!(
        burn.labels.get("service").map(String::as_str),
        Some("rag-api")
    );
    assert!(
        f.iter().any(|f| f.name == "anomaly"
            && f.labels.get("stage").map(String::as_str) == Some("retrieval"))
    );

    // The gauges and counters on the Prometheus endpoint. Every span has been exported, so the
    // SLO stage has counted all 60 requests; the gauge shows them from its next evaluation
    // (every 200 ms).
    let addr = s.exporter_addr("prometheus").expect("prometheus addr");
    let scrape = || async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    };
    let sample = |text: &str, prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    const LONG: &str =
        r#"rag_slo_burn_rate{slo="fast-answers",service="rag-api",scope="",window="30s"}"#;
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape().await;
        if sample(&text, LONG).is_some_and(|v| (v - 10.0 / 3.0).abs() < 1e-9) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let long = sample(&text, LONG).expect("long window burn rate");
    assert!((long - 10.0 / 3.0).abs() < 1e-9, "{long}\n{text}");
    assert!(
        sample(
            &text,
            r#"rag_anomalies_total{signal="stage_latency",service="rag-api"}"#
        )
        .is_some()
    );
    s.shutdown().await;
}
