//! Trace assembly through the real service: traces leave whole, none split, none lost.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::backend::Backend;
use harness::fixtures;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use ragwatch::signal::Batch;

/// `block`: clients wait for room instead of being refused (this test is about assembly).
fn config(down: &Backend, wait: &str, age: &str) -> String {
    format!(
        r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    wait_after_root: {wait}
    max_trace_age: {age}
exporters:
  otlp:
    endpoint: {}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai, trace_assembly], exporters: [otlp] }}
"#,
        harness::otlp_receiver("    when_full: block\n"),
        down.grpc_endpoint()
    )
}

/// Trace id → the indexes of the backend requests its spans arrived in.
fn requests_per_trace(down: &Backend) -> BTreeMap<Vec<u8>, BTreeSet<usize>> {
    let mut m: BTreeMap<Vec<u8>, BTreeSet<usize>> = BTreeMap::new();
    for (i, r) in down.traces().iter().enumerate() {
        for s in r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            m.entry(s.trace_id.clone()).or_default().insert(i);
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_goes_through_and_complete_traces_leave_whole() {
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let s = harness::start(&config(&down, "1s", "5s")).await;
    let mut sent = Vec::new();
    for f in fixtures::files() {
        for (b, json) in fixtures::load(&f) {
            if let Batch::Traces(r) = b {
                let resp = reqwest::Client::new()
                    .post(harness::http_url(&s, "/v1/traces"))
                    .header("content-type", "application/json")
                    .body(json)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(resp.status().as_u16(), 200);
                sent.push(r);
            }
        }
    }
    let n: usize = sent.iter().map(ragwatch::signal::span_count).sum();
    assert!(
        down.wait_for_spans(n, Duration::from_secs(20)).await,
        "{} of {n}",
        down.span_count()
    );
    assert_eq!(down.span_count(), n, "nothing lost, nothing doubled");
    // Every trace arrives in one request.
    for (trace, reqs) in requests_per_trace(&down) {
        assert_eq!(
            reqs.len(),
            1,
            "trace {trace:02x?} was split over requests {reqs:?}"
        );
    }
    // Every trace with a root is marked complete on its root.
    let roots: Vec<Span> = down
        .traces()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert!(
        roots.len() >= 9 * 4,
        "each capture has several rag.query roots"
    );
    for r in &roots {
        let complete = r
            .attributes
            .iter()
            .find(|kv| kv.key == "rag.trace.complete");
        assert_eq!(
            complete.and_then(|kv| kv.value.as_ref()?.value.as_ref()),
            Some(&Value::BoolValue(true)),
            "{}",
            r.name
        );
    }
    assert_eq!(harness::metric(&s, "ragwatch_traces_in_flight"), 0.0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_traces_interleaved_over_eight_connections_are_assembled() {
    const TRACES: u32 = 100_000;
    const CONNECTIONS: u32 = 8;
    let down = Backend::start().await;
    let s = harness::start(&config(&down, "200ms", "20s")).await;
    let url = harness::grpc_url(&s);
    // Each trace: a root and two children; the three spans go out on three different
    // connections, in different requests, children first.
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.expect("connect");
            let mut spans = Vec::new();
            for t in 0..TRACES {
                for part in 0..3u32 {
                    if (t + part) % CONNECTIONS != c {
                        continue;
                    }
                    let mut trace_id = vec![0u8; 16];
                    trace_id[..4].copy_from_slice(&(t + 1).to_be_bytes());
                    let parent = if part == 0 { Vec::new() } else { vec![1u8; 8] };
                    spans.push(Span {
                        trace_id,
                        span_id: vec![part as u8 + 1; 8],
                        parent_span_id: parent,
                        name: format!("part-{part}"),
                        ..Default::default()
                    });
                }
                if spans.len() >= 500 {
                    let req = ExportTraceServiceRequest {
                        resource_spans: vec![ResourceSpans {
                            scope_spans: vec![ScopeSpans {
                                spans: std::mem::take(&mut spans),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    };
                    client.export(req).await.expect("export");
                }
            }
            if !spans.is_empty() {
                let req = ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        scope_spans: vec![ScopeSpans {
                            spans,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                };
                client.export(req).await.expect("export");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let n = (TRACES * 3) as usize;
    assert!(
        down.wait_for_spans(n, Duration::from_secs(60)).await,
        "{} of {n}",
        down.span_count()
    );
    assert_eq!(down.span_count(), n);
    let per_trace = requests_per_trace(&down);
    assert_eq!(per_trace.len(), TRACES as usize);
    let split = per_trace.values().filter(|r| r.len() > 1).count();
    assert_eq!(split, 0, "{split} traces were split");
    assert!(
        harness::eventually(Duration::from_secs(5), || harness::metric(
            &s,
            "ragwatch_traces_in_flight"
        ) == 0.0)
        .await
    );
    assert_eq!(harness::metric(&s, "ragwatch_trace_evictions_total"), 0.0);
    assert_eq!(harness::metric(&s, "ragwatch_trace_late_spans_total"), 0.0);
    s.shutdown().await;
}
