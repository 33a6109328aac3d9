//! ragwatch behind ragwatch: the chain A → B delivers exactly what a single ragwatch does — no
//! span lost or changed, nothing enriched, analysed or counted twice.

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use harness::fixtures;
use ragwatch::Service;
use ragwatch::signal::Batch;

fn config(next: &str) -> String {
    format!(
        r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    wait_after_root: 200ms
  quality:
exporters:
  otlp:
    endpoint: {next}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai, trace_assembly, quality], exporters: [otlp] }}
"#,
        harness::otlp_receiver("")
    )
}

async fn send_fixtures(s: &Service) -> usize {
    let mut n = 0;
    for file in [
        "otel-v2-normal.jsonl",
        "openlit-normal.jsonl",
        "openinference-normal-http.jsonl",
    ] {
        for (b, json) in fixtures::load(&fixtures::dir().join(file)) {
            if !matches!(b, Batch::Traces(_)) {
                continue;
            }
            n += b.item_count();
            let resp = reqwest::Client::new()
                .post(harness::http_url(s, "/v1/traces"))
                .header("content-type", "application/json")
                .body(json)
                .send()
                .await
                .expect("post");
            assert_eq!(resp.status().as_u16(), 200);
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_equals_one_ragwatch_and_enriches_once() {
    ragwatch::service::install_crypto_provider();
    // The chain: A → B → end.
    let end = Backend::start().await;
    let b = harness::start(&config(&end.grpc_endpoint())).await;
    let a = harness::start(&config(&harness::grpc_url(&b))).await;
    // One ragwatch: C → single.
    let single = Backend::start().await;
    let c = harness::start(&config(&single.grpc_endpoint())).await;

    let n = send_fixtures(&a).await;
    assert_eq!(send_fixtures(&c).await, n);
    assert!(end.wait_for_spans(n, Duration::from_secs(20)).await);
    assert!(single.wait_for_spans(n, Duration::from_secs(20)).await);
    // Span for span, byte for byte (ids, attributes, events), under the same resources.
    assert_eq!(
        fixtures::canonical_traces(&end.traces()),
        fixtures::canonical_traces(&single.traces())
    );
    // The enriched spans are there, and each attribute once.
    let spans = end.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.attributes.iter().any(|kv| kv.key == "rag.cost.usd"))
    );
    for s in &spans {
        let mut keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
        let before = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), before, "duplicate attributes on {}", s.name);
    }
    // The second hop counted nothing: the first one did.
    let calls = ragwatch::derived::defs::CALLS;
    assert!(!a.derived().values(calls).is_empty());
    assert!(
        b.derived().values(calls).is_empty(),
        "B counted calls again"
    );
    for s in [a, b, c] {
        s.shutdown().await;
    }
}
