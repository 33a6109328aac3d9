//! The quality processor on a real capture, against values computed by hand.

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use harness::fixtures;
use ragwatch::attributes::get_f64;
use ragwatch::signal::Batch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_library_capture_is_scored_as_computed_by_hand() {
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let s = harness::start(&format!(
        r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    wait_after_root: 300ms
  quality:
    feedback:
      - event: app.user_feedback
        attribute: feedback.score
        min: -1
        max: 1
exporters:
  otlp:
    endpoint: {}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai, trace_assembly, quality], exporters: [otlp] }}
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint()
    ))
    .await;
    let mut n = 0;
    let mut first_trace = None;
    for (b, json) in fixtures::load(&fixtures::dir().join("otel-v2-normal.jsonl")) {
        let Batch::Traces(r) = &b else { continue };
        n += b.item_count();
        if first_trace.is_none() {
            first_trace = r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .find(|s| s.name == "rag.query")
                .map(|s| s.trace_id.clone());
        }
        let resp = reqwest::Client::new()
            .post(harness::http_url(&s, "/v1/traces"))
            .header("content-type", "application/json")
            .body(json)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert!(down.wait_for_spans(n, Duration::from_secs(20)).await);
    let trace = first_trace.expect("a rag.query root");
    let root = down
        .spans()
        .into_iter()
        .find(|s| s.trace_id == trace && s.parent_span_id.is_empty())
        .expect("root");
    let q = |k: &str| get_f64(&root.attributes, &format!("rag.quality.{k}")).unwrap_or(f64::NAN);
    // The capture's retrieval returned doc-3 0.9287, doc-6 0.911, doc-8 0.8808, doc-11 0.8361;
    // the root carries an evaluation of 0.907 and a thumbs-up (1 on -1..1); the answer stopped.
    // It asked for db.vector.query.top_k = 4 and got 4 documents: coverage 1.
    let mean = (0.9287 + 0.911 + 0.8808 + 0.8361) / 4.0;
    assert!((q("retrieval_top") - 0.9287).abs() < 1e-12);
    assert!((q("retrieval_mean") - mean).abs() < 1e-12);
    assert!((q("retrieval_coverage") - 1.0).abs() < 1e-12);
    assert!((q("evaluation") - 0.907).abs() < 1e-12);
    assert!((q("feedback") - 1.0).abs() < 1e-12);
    assert!((q("answer") - 1.0).abs() < 1e-12);
    assert!((q("score") - (0.9287 + mean + 1.0 + 0.907 + 1.0 + 1.0) / 6.0).abs() < 1e-12);
    assert_eq!(q("signals"), 6.0);
    s.shutdown().await;
}
