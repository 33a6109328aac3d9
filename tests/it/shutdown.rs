//! SIGTERM during a load loses no accepted span: the real binary as a child process.

use crate::harness;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::backend::{Backend, Behavior};
use harness::child::Ragwatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;

fn request(client: u32, n: u32, spans: u32) -> (ExportTraceServiceRequest, Vec<Vec<u8>>) {
    let mut trace_id = [9u8; 16];
    trace_id[..4].copy_from_slice(&client.to_be_bytes());
    trace_id[4..8].copy_from_slice(&n.to_be_bytes());
    let spans: Vec<Span> = (0..spans)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[0] = 1;
            span_id[4..].copy_from_slice(&i.to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: "work".into(),
                ..Default::default()
            }
        })
        .collect();
    let ids = spans
        .iter()
        .map(|s| [s.trace_id.clone(), s.span_id.clone()].concat())
        .collect();
    let req = harness::traces_request(spans);
    (req, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_accepted_span() {
    let _heavy = harness::heavy().await;
    let down = Backend::start().await;
    // A slow backend keeps data in ragwatch's queues when the signal comes.
    down.set_behavior(Behavior::Delay(Duration::from_millis(20)));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("ragwatch.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0 }}
exporters:
  otlp:
    endpoint: {}
    sending_queue: {{ queue_size: 100, num_consumers: 2 }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
  shutdown_timeout: 20s
"#,
            down.grpc_endpoint()
        ),
    )
    .expect("write config");

    let rw = Ragwatch::spawn(dir.path(), &["--config", cfg.to_str().expect("utf-8 path")]);
    let addr = rw
        .address("receiver otlp (grpc)")
        .expect("ragwatch listening");
    let url = format!("http://{addr}");

    let acked = Arc::new(Mutex::new(BTreeSet::<Vec<u8>>::new()));
    let requests_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..4u32 {
        let (url, acked, done) = (url.clone(), acked.clone(), requests_done.clone());
        clients.push(tokio::spawn(async move {
            let Ok(mut c) = TraceServiceClient::connect(url).await else {
                return;
            };
            for n in 0.. {
                let (req, ids) = request(client, n, 50);
                match c.export(req).await {
                    Ok(_) => {
                        acked.lock().expect("lock").extend(ids);
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => return, // refused or gone: the server is shutting down
                }
            }
        }));
    }
    // Signal once the load is well under way.
    assert!(
        harness::eventually(Duration::from_secs(30), || requests_done
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 100)
        .await
    );
    rw.sigterm();
    let (code, log) = tokio::task::spawn_blocking(move || rw.wait())
        .await
        .expect("join");
    for c in clients {
        let _ = c.await;
    }
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(log.contains("SIGTERM received"), "log:\n{log}");

    let acked = acked.lock().expect("lock").clone();
    let got: BTreeSet<Vec<u8>> = down
        .traces()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| [s.trace_id.clone(), s.span_id.clone()].concat())
        .collect();
    let lost: Vec<_> = acked.difference(&got).collect();
    assert!(acked.len() >= 5000, "only {} spans acked", acked.len());
    assert!(
        lost.is_empty(),
        "{} of {} accepted spans were lost",
        lost.len(),
        acked.len()
    );
}

/// `cargo run --release` with no config: the embedded default listens on 127.0.0.1:4317/4318 and
/// 8888, logs each batch (debug exporter) and writes OTLP/JSON lines under ./ragwatch-data/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_receives_logs_and_writes_a_file() {
    if [
        "127.0.0.1:4317",
        "127.0.0.1:4318",
        "127.0.0.1:8888",
        "127.0.0.1:9464",
    ]
    .iter()
    .any(|a| std::net::TcpListener::bind(a).is_err())
    {
        eprintln!("SKIPPED: the default ports 4317/4318/8888/9464 are in use on this machine");
        return;
    }
    ragwatch::service::install_crypto_provider(); // for the reqwest client here
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = Ragwatch::spawn(dir.path(), &[]);
    let http = rw
        .address("receiver otlp (http)")
        .expect("listening on 4318");
    assert_eq!(http, "127.0.0.1:4318");
    let fixture = harness::fixtures::dir().join("otel-v2-normal.jsonl");
    let line = harness::fixtures::load(&fixture)
        .into_iter()
        .find(|(b, _)| b.signal() == ragwatch::signal::Signal::Traces)
        .expect("a traces line");
    let resp = reqwest::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/json")
        .body(line.1.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let ready = reqwest::get("http://127.0.0.1:8888/readyz")
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    rw.sigterm();
    let (code, log) = tokio::task::spawn_blocking(move || rw.wait())
        .await
        .expect("join");
    assert_eq!(code, Some(0), "{log}");
    // The debug exporter logs each batch it exports: trace assembly hands each trace on whole,
    // so the request's spans may leave in several batches; together, all of them.
    let n = line.0.item_count();
    let logged: usize = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["exporter"] == "debug" && v["signal"] == "traces")
        .filter_map(|v| v["items"].as_u64())
        .sum::<u64>() as usize;
    assert_eq!(logged, n, "debug exporter lines:\n{log}");
    let written = std::fs::read_to_string(dir.path().join("ragwatch-data/otlp.jsonl"))
        .expect("file exporter output");
    let mut got =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default();
    for l in written.lines().filter(|l| l.contains("resourceSpans")) {
        let r: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
            serde_json::from_str(l).expect("OTLP/JSON");
        got.resource_spans.extend(r.resource_spans);
    }
    // The same spans, enriched: every span has its original attributes first, then ours.
    let ragwatch::signal::Batch::Traces(sent) = &line.0 else {
        unreachable!()
    };
    let spans =
        |r: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest| {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| ss.spans.clone())
                .collect::<Vec<_>>()
        };
    let (sent, mut got) = (spans(sent), spans(&got));
    assert_eq!(sent.len(), got.len());
    got.sort_by_key(|s| sent.iter().position(|x| x.span_id == s.span_id));
    for (a, b) in sent.iter().zip(&got) {
        assert_eq!(a.span_id, b.span_id);
        assert_eq!(&b.attributes[..a.attributes.len()], &a.attributes[..]);
    }
    assert!(
        got.iter()
            .any(|s| s.attributes.iter().any(|kv| kv.key == "rag.cost.usd"))
    );
}
