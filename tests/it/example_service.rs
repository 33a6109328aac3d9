//! The example RAG service (examples/rag_service.rs), run as a real child process against the
//! real ragwatch: what a user copies works, and ragwatch understands it.

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use ragwatch::attributes::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_is_understood() {
    // cargo test builds the examples beside the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().expect("test exe");
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("rag_service"))
        .expect("examples dir");
    assert!(
        example.exists(),
        "{} is built by cargo test",
        example.display()
    );
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
    let endpoint = harness::grpc_url(&s);
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(example)
            .args(["--endpoint", &endpoint, "--requests", "3"])
            .status()
    })
    .await
    .expect("join")
    .expect("run the example");
    assert!(status.success());
    assert!(down.wait_for_spans(12, Duration::from_secs(20)).await);
    let spans = down.spans();
    assert_eq!(spans.len(), 12);
    let stage = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name.starts_with(name))
            .map(|s| match get(&s.attributes, "rag.stage") {
                Some(Value::StringValue(v)) => v.clone(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(stage("embeddings"), vec!["embedding"; 3]);
    assert_eq!(stage("retrieval"), vec!["retrieval"; 3]);
    assert_eq!(stage("chat"), vec!["llm"; 3]);
    // Every root is a complete trace with a quality score (retrieval scores, evaluation, and
    // the answer's outcome at least).
    for root in spans.iter().filter(|s| s.parent_span_id.is_empty()) {
        assert!(matches!(
            get(&root.attributes, "rag.trace.complete"),
            Some(Value::BoolValue(true))
        ));
        assert!(get(&root.attributes, "rag.quality.score").is_some());
    }
    s.shutdown().await;
}
