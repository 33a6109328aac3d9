//! SIGTERM during a load loses no accepted span: the real binary as a child process.

mod harness;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::backend::{Backend, Behavior};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

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
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (req, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_accepted_span() {
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

    let mut child = Command::new(env!("CARGO_BIN_EXE_ragwatch"))
        .arg("--config")
        .arg(&cfg)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ragwatch");
    let stderr = child.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let log2 = log.clone();
    // Keep reading stderr to the end, so the child never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
                && v["component"] == "receiver otlp (grpc)"
                && let Some(a) = v["address"].as_str()
            {
                let _ = addr_tx.send(a.to_string());
            }
            log2.lock().expect("lock").push(line);
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(20))
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
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    for c in clients {
        let _ = c.await;
    }
    reader.join().expect("reader");
    let log = log.lock().expect("lock").join("\n");
    assert_eq!(exit.code(), Some(0), "log:\n{log}");
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
