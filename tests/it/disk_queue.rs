//! The on-disk sending queue through the real binary: the backend is down, spans are accepted,
//! ragwatch is killed with SIGKILL, a damaged record is left at the end of its log, it starts
//! again, the backend comes up, and every accepted span arrives, once.

use crate::harness;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::backend::Backend;
use harness::child::Ragwatch;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;

const REQUESTS: u32 = 20;
const SPANS: u32 = 50;

fn span(request: u32, i: u32) -> Span {
    let mut trace_id = [7u8; 16];
    trace_id[..4].copy_from_slice(&request.to_be_bytes());
    let mut span_id = [1u8; 8];
    span_id[4..].copy_from_slice(&i.to_be_bytes());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        name: "stored".into(),
        ..Default::default()
    }
}

async fn metrics(admin: &str) -> String {
    match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the exporter's queue directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_spans_survive_kill_9_and_a_damaged_tail() {
    ragwatch::service::install_crypto_provider();
    let (grpc, http) = (harness::free_port(), harness::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("queue");
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
    endpoint: http://{grpc}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 10m }}
    sending_queue: {{ storage: {}, num_consumers: 2 }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"#,
            storage.display()
        ),
    )
    .expect("write config");
    let args = ["--config", cfg.to_str().expect("utf-8 path")];

    // 1. The backend is down; every request is accepted and lands in the log.
    let mut rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    let addr = rw.address("receiver otlp (grpc)").expect("grpc listening");
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut sent = BTreeSet::new();
    for r in 0..REQUESTS {
        let spans: Vec<Span> = (0..SPANS).map(|i| span(r, i)).collect();
        sent.extend(
            spans
                .iter()
                .map(|s| [s.trace_id.clone(), s.span_id.clone()].concat()),
        );
        client
            .export(harness::traces_request(spans))
            .await
            .expect("accepted");
    }
    let queued = r#"ragwatch_exporter_queue_size{exporter="otlp"}"#;
    let stored = harness::eventually_async(Duration::from_secs(20), || async {
        harness::sample_in(&metrics(&admin).await, queued) == f64::from(REQUESTS)
    })
    .await;
    assert!(
        stored,
        "the log holds every request:\n{}",
        metrics(&admin).await
    );

    // 2. SIGKILL: no shutdown, no flush.
    rw.child.kill().expect("kill -9");
    let (code, _) = rw.wait();
    assert_eq!(code, None, "killed by a signal");

    // 3. A record cut short at the end of the log, as a crash in the middle of a write leaves.
    let seg = newest_segment(&storage.join("otlp"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open segment");
    f.write_all(&[0xFF, 0xFF, 0, 0, 1, 2, 3, 4, 0, 9, 0, 0, 0, b'x'])
        .expect("damage");
    drop(f);

    // 4. Start again; the backend comes up on the address ragwatch sends to.
    let rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    let down = Backend::start_at(grpc, http).await;
    assert!(
        down.wait_for_spans(sent.len(), Duration::from_secs(30))
            .await,
        "every accepted span arrives: {} of {}",
        down.span_count(),
        sent.len()
    );
    let got: Vec<Vec<u8>> = down
        .spans()
        .iter()
        .map(|s| [s.trace_id.clone(), s.span_id.clone()].concat())
        .collect();
    assert_eq!(got.len(), sent.len(), "nothing twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), sent);

    // Delivered requests leave the disk.
    let emptied = harness::eventually_async(Duration::from_secs(10), || async {
        let m = metrics(&admin).await;
        harness::sample_in(&m, queued) == 0.0
            && harness::sample_in(&m, r#"ragwatch_exporter_storage_bytes{exporter="otlp"}"#) == 0.0
    })
    .await;
    assert!(emptied, "{}", metrics(&admin).await);
    assert_eq!(
        harness::sample_in(
            &metrics(&admin).await,
            r#"ragwatch_exporter_storage_corrupted_total{exporter="otlp"}"#
        ),
        1.0
    );
    rw.sigterm();
    let (code, log) = rw.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("a damaged or cut-short record ends this segment"),
        "the damaged tail is reported:\n{log}"
    );
    assert!(
        log.contains(&format!("\"requests\":{REQUESTS}")),
        "the start says what it found:\n{log}"
    );
}
