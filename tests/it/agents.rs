//! Agents end to end, through the real binary with the load generator's agent traffic: a
//! looping run fires an alert, a failing tool shows in the tool metrics, and a slow tool is the
//! bottleneck.

use crate::harness;
use crate::harness::backend::Backend;
use crate::harness::child::Ragwatch;

use std::collections::HashMap;
use std::time::Duration;

use ragwatch::attributes::get_str;

/// Run the load generator: `spans` spans of agent traffic with `scenario` on throughout.
async fn loadgen(grpc: &str, scenario: &str, spans: u64, seed: u64) -> serde_json::Value {
    let grpc = grpc.to_string();
    let scenario = scenario.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::harness::loadgen_bin())
            .args([
                "--endpoint",
                &format!("http://{grpc}"),
                "--spans",
                &spans.to_string(),
                "--batch",
                "50",
                "--connections",
                "1",
                "--services",
                "1",
                "--models",
                "gpt-4o-mini",
                "--agent-share",
                "1",
                "--scenario",
                &scenario,
                "--json",
                "--report-every",
                "0",
                "--seed",
                &seed.to_string(),
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("run loadgen");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "a JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "no loss: {report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_alerts_a_failing_tool_is_counted_and_a_slow_tool_is_the_bottleneck() {
    let _heavy = harness::heavy().await;
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = Ragwatch::with_config(
        dir.path(),
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  genai:
  trace_assembly:
    wait_after_root: 50ms
  quality:
  anomaly:
exporters:
  otlp:
    endpoint: {}
  prometheus:
    endpoint: 127.0.0.1:0
alerts:
  evaluation_interval: 100ms
  rules:
    trace_pattern: {{ window: 1m, min_share: 0.2, min_requests: 5, for: 0s }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly]
      exporters: [otlp, prometheus]
  telemetry:
    metrics:
      address: 127.0.0.1:0
"#,
            down.grpc_endpoint()
        ),
    );
    let addrs = rw.addresses(&["admin", "exporter prometheus", "receiver otlp (grpc)"]);
    let [Some(admin), Some(prom), Some(grpc)] = &addrs[..] else {
        panic!("not listening: {addrs:?}\n{}", rw.log_lines().join("\n"));
    };
    let scrape = || async {
        reqwest::get(format!("http://{prom}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    };

    // 1. Agent runs that loop until their limit stops them.
    let r = loadgen(grpc, "agent-loop", 600, 1).await;
    let acked = r["acknowledged"].as_u64().expect("acknowledged") as usize;
    assert!(down.wait_for_spans(acked, Duration::from_secs(60)).await);
    let alerted = harness::eventually_async(Duration::from_secs(30), || async {
        let a: serde_json::Value = serde_json::from_str(
            &reqwest::get(format!("http://{admin}/api/v1/alerts"))
                .await
                .expect("alerts")
                .text()
                .await
                .expect("body"),
        )
        .expect("json");
        a["data"]["alerts"].as_array().is_some_and(|v| {
            v.iter().any(|x| {
                x["labels"]["alertname"] == "RagTracePattern"
                    && x["labels"]["finding"] == "agent_loop"
                    && x["state"] == "firing"
            })
        })
    })
    .await;
    assert!(alerted, "{}", rw.log_lines().join("\n"));
    let text = scrape().await;
    let limited = harness::sample_in(
        &text,
        r#"rag_agent_runs_total{service="rag-api-0",agent="rag_assistant",outcome="limit_reached"}"#,
    );
    assert!(limited > 0.0, "{text}");
    let loops = harness::sample_in(
        &text,
        r#"rag_trace_findings_total{finding="agent_loop",service="rag-api-0"}"#,
    );
    assert_eq!(loops, limited, "every run stopped at its limit is a loop");

    // 2. The order-status tool, over MCP, fails and fails again.
    let before = down.span_count();
    let r = loadgen(grpc, "tool-error", 400, 2).await;
    let acked = r["acknowledged"].as_u64().expect("acknowledged") as usize;
    assert!(
        down.wait_for_spans(before + acked, Duration::from_secs(60))
            .await
    );
    let text = scrape().await;
    let failed = harness::sample_in(
        &text,
        r#"rag_tool_calls_total{service="rag-api-0",tool="get_order_status",status="error"}"#,
    );
    // Each run calls it twice, and its MCP span beneath each call is the same call.
    let runs = harness::sample_in(
        &text,
        r#"rag_agent_runs_total{service="rag-api-0",agent="rag_assistant",outcome="ok"}"#,
    );
    assert!(failed > 0.0, "{text}");
    assert_eq!(failed, 2.0 * runs, "{text}");
    assert_eq!(
        harness::sample_in(
            &text,
            r#"rag_tool_calls_total{service="rag-api-0",tool="get_order_status",status="ok"}"#
        ),
        0.0
    );

    // 3. The search tool takes 8 s instead of 80 ms: it (or the retrieval inside it) owns the
    // critical path.
    let before = down.span_count();
    let r = loadgen(grpc, "slow-tool", 600, 3).await;
    let acked = r["acknowledged"].as_u64().expect("acknowledged") as usize;
    assert!(
        down.wait_for_spans(before + acked, Duration::from_secs(60))
            .await
    );
    let spans = down.spans();
    let mut by_trace: HashMap<Vec<u8>, Vec<&opentelemetry_proto::tonic::trace::v1::Span>> =
        HashMap::new();
    for s in spans.iter().skip(before) {
        by_trace.entry(s.trace_id.clone()).or_default().push(s);
    }
    let (mut with_search, mut tool_bound) = (0, 0);
    for t in by_trace.values() {
        if !t.iter().any(|s| s.name == "execute_tool search_docs") {
            continue;
        }
        with_search += 1;
        let root = t
            .iter()
            .find(|s| s.parent_span_id.is_empty())
            .expect("root");
        let stage = get_str(&root.attributes, "rag.trace.bottleneck.stage");
        let name = get_str(&root.attributes, "rag.trace.bottleneck.span_name");
        if matches!(
            (stage, name),
            (Some("tool"), Some("execute_tool search_docs"))
                | (Some("retrieval"), Some("retrieval kb_docs"))
        ) {
            tool_bound += 1;
        }
    }
    assert!(with_search > 10, "{with_search}");
    assert_eq!(
        tool_bound, with_search,
        "the slow tool is the bottleneck of every run that called it"
    );
}
