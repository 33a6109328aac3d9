//! Interop with a client and a server nobody here wrote: the Python OpenTelemetry SDK (OTLP gRPC
//! and HTTP exporters, from PyPI) sends a RAG trace and a metric to ragwatch, and a downstream
//! OTLP receiver written with the Python opentelemetry-proto package and grpcio gets the
//! enriched spans (tests/interop/*.py).
//!
//! Skipped with a message when the Python packages are missing, unless RAGWATCH_INTEROP=1
//! (.ci/run installs them with pip).

use crate::harness;
use crate::harness::tools::Killed;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import grpc, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, \
             opentelemetry.exporter.otlp.proto.http, opentelemetry.proto",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("RAGWATCH_INTEROP").is_err(),
            "RAGWATCH_INTEROP is set but the Python OpenTelemetry packages are missing"
        );
        eprintln!(
            "SKIPPED: pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc \
             opentelemetry-exporter-otlp-proto-http opentelemetry-proto grpcio"
        );
    }
    ok
}

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_in_python_receiver_out() {
    if !python_ready() {
        return;
    }
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("received.jsonl");
    let mut sink = Command::new("python3")
        .arg("tests/interop/otlp_sink.py")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python sink");
    let mut first = String::new();
    BufReader::new(sink.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("port line");
    let _sink = Killed(sink);
    let port: u16 = first.trim().parse().expect("a port");

    let s = harness::start(&format!(
        r#"
receivers:
{}
processors:
  genai:
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    tls:
      insecure: true
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai], exporters: [otlp] }}
    metrics: {{ receivers: [otlp], exporters: [otlp] }}
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let grpc = harness::grpc_url(&s);
    let http = harness::http_url(&s, "");
    for (protocol, endpoint, service) in [
        ("grpc", grpc.as_str(), "py-grpc"),
        ("http", http.trim_end_matches('/'), "py-http"),
    ] {
        let args = ["tests/interop/send.py", protocol, endpoint, service].map(String::from);
        let st = tokio::task::spawn_blocking(move || Command::new("python3").args(args).status())
            .await
            .expect("join")
            .expect("run the Python SDK client");
        assert!(
            st.success(),
            "the Python SDK export over {protocol} succeeded"
        );
    }
    let done = harness::eventually(Duration::from_secs(20), || {
        let r = records(&out);
        let spans = r.iter().filter(|x| x["signal"] == "span").count();
        let metrics = r.iter().filter(|x| x["signal"] == "metric").count();
        spans >= 6 && metrics >= 2
    })
    .await;
    let r = records(&out);
    assert!(done, "received: {r:#?}");
    for service in ["py-grpc", "py-http"] {
        let chat = r
            .iter()
            .find(|x| x["service"] == service && x["name"] == "chat gpt-4o-mini")
            .unwrap_or_else(|| panic!("the chat span of {service}"));
        let a = &chat["attributes"];
        // Enriched on the way: stage and cost (gpt-4o-mini from the built-in price table,
        // 1000 input and 500 output tokens).
        assert_eq!(a["rag.stage"], "llm");
        assert_eq!(a["rag.cost.source"], "computed");
        assert!(a["rag.cost.usd"].as_f64().is_some_and(|c| c > 0.0));
        // And what the application wrote, unchanged.
        assert_eq!(a["gen_ai.usage.input_tokens"], 1000);
        assert_eq!(
            a["gen_ai.response.finish_reasons"],
            serde_json::json!(["stop"])
        );
        let retrieval = r
            .iter()
            .find(|x| x["service"] == service && x["name"] == "retrieval vectors")
            .expect("retrieval span");
        assert_eq!(retrieval["attributes"]["rag.stage"], "retrieval");
        // Three spans of one trace each.
        let traces: std::collections::BTreeSet<&str> = r
            .iter()
            .filter(|x| x["service"] == service)
            .filter_map(|x| x["trace_id"].as_str())
            .collect();
        assert_eq!(traces.len(), 1);
    }
    assert!(r.iter().any(|x| x["name"] == "rag_demo_requests"));
    s.shutdown().await;
}
