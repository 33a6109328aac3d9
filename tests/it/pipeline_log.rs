//! The pipeline log (`service.pipelines.<id>.storage`) through the real binary: what ragwatch
//! acknowledged survives `kill -9` even while trace assembly holds it in memory; a full log or a
//! full disk refuses retryably and loses nothing.

use crate::harness;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use harness::backend::Backend;
use harness::child::Ragwatch;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::transport::Channel;

/// Span `i` of trace `t` of request `r`: span 0 is the root, the others its children.
fn span(r: u32, t: u32, i: u32) -> Span {
    let mut trace_id = [9u8; 16];
    trace_id[..4].copy_from_slice(&r.to_be_bytes());
    trace_id[4..8].copy_from_slice(&t.to_be_bytes());
    let id = |i: u32| {
        let mut s = [3u8; 8];
        s[4..].copy_from_slice(&i.to_be_bytes());
        s.to_vec()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    Span {
        trace_id: trace_id.to_vec(),
        span_id: id(i),
        parent_span_id: if i == 0 { Vec::new() } else { id(0) },
        name: format!("step {i}"),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        ..Default::default()
    }
}

/// Request `r`: `traces` traces of `spans` spans each.
fn request(r: u32, traces: u32, spans: u32) -> Vec<Span> {
    (0..traces)
        .flat_map(|t| (0..spans).map(move |i| span(r, t, i)))
        .collect()
}

fn key(s: &Span) -> Vec<u8> {
    [s.trace_id.clone(), s.span_id.clone()].concat()
}

async fn metrics(admin: &str) -> String {
    match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn sample(admin: &str, name: &str) -> f64 {
    harness::sample_in(&metrics(admin).await, name)
}

const RECORDS: &str = r#"ragwatch_pipeline_storage_records{pipeline="traces"}"#;
const STORED: &str = r#"ragwatch_pipeline_storage_bytes{pipeline="traces"}"#;
const REPLAYED: &str = r#"ragwatch_pipeline_replayed_items_total{pipeline="traces"}"#;

fn write_config(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write config");
}

async fn client(addr: &str) -> TraceServiceClient<Channel> {
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_held_by_trace_assembly_survive_kill_9() {
    ragwatch::service::install_crypto_provider();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("log");
    let cfg = dir.path().join("ragwatch.yaml");
    let config = |wait: &str, age: &str| {
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0 }}
processors:
  genai:
  trace_assembly: {{ wait_after_root: {wait}, max_trace_age: {age} }}
  batch: {{ timeout: 50ms }}
exporters:
  otlp:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, batch]
      exporters: [otlp]
      shards: 2
      storage: {}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"#,
            backend.grpc_endpoint(),
            storage.display()
        )
    };
    // 1. Traces are held for a minute after their root: acknowledged, in memory, not sent.
    write_config(&cfg, &config("1m", "2m"));
    let args = ["--config", cfg.to_str().expect("utf-8 path")];
    let mut rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    let addr = rw.address("receiver otlp (grpc)").expect("grpc listening");
    let mut c = client(&addr).await;
    const REQUESTS: u32 = 20;
    let mut sent = BTreeSet::new();
    for r in 0..REQUESTS {
        let spans = request(r, 10, 5);
        sent.extend(spans.iter().map(key));
        c.export(harness::traces_request(spans))
            .await
            .expect("accepted");
    }
    assert_eq!(sent.len(), 1000);
    // Every acknowledged request is in the log; none has reached the backend.
    assert_eq!(sample(&admin, RECORDS).await, f64::from(REQUESTS));
    assert_eq!(backend.span_count(), 0, "held by trace assembly");

    // 2. SIGKILL: no shutdown, no flush; before the log, these 1000 spans were lost.
    rw.child.kill().expect("kill -9");
    let (code, _) = rw.wait();
    assert_eq!(code, None, "killed by a signal");

    // 3. Start again with a short wait: the log is replayed through trace assembly.
    write_config(&cfg, &config("100ms", "1s"));
    let rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    assert!(
        backend
            .wait_for_spans(sent.len(), Duration::from_secs(30))
            .await,
        "every acknowledged span arrives: {} of {}",
        backend.span_count(),
        sent.len()
    );
    let got: Vec<Vec<u8>> = backend.spans().iter().map(key).collect();
    assert_eq!(got.len(), sent.len(), "none twice: none had been delivered");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), sent);
    assert_eq!(sample(&admin, REPLAYED).await, 1000.0);
    // Delivered: released, and the log gives its space back.
    let released = harness::eventually_async(Duration::from_secs(10), || async {
        let m = metrics(&admin).await;
        harness::sample_in(&m, RECORDS) == 0.0 && harness::sample_in(&m, STORED) == 0.0
    })
    .await;
    assert!(released, "{}", metrics(&admin).await);
    rw.sigterm();
    let (code, log) = rw.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!("\"requests\":{REQUESTS}")),
        "the start says what it found:\n{log}"
    );

    // 4. A third start finds nothing to replay.
    let rw = Ragwatch::spawn(dir.path(), &args);
    rw.address("admin").expect("admin listening");
    rw.sigterm();
    let (code, log) = rw.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("\"requests\":0"), "{log}");
    assert_eq!(backend.span_count(), 1000, "nothing more");
}

/// Send `spans` until accepted: a retryable refusal (UNAVAILABLE with RetryInfo) is retried
/// after the delay it asks for; anything else fails the test. Returns the refusals seen.
async fn send_until_accepted(c: &mut TraceServiceClient<Channel>, spans: Vec<Span>) -> usize {
    use tonic_types::StatusExt;
    let mut refused = 0;
    loop {
        match c.export(harness::traces_request(spans.clone())).await {
            Ok(_) => return refused,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                let after = s
                    .get_details_retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("RetryInfo");
                refused += 1;
                tokio::time::sleep(after.min(Duration::from_millis(100))).await;
            }
        }
    }
}

/// A request of `n` traces of 5 spans with padding, so a few fill a small log.
fn padded(r: u32, n: u32) -> Vec<Span> {
    let mut spans = request(r, n, 5);
    for s in &mut spans {
        s.attributes
            .push(opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "padding".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "x".repeat(1000),
                        ),
                    ),
                }),
                ..Default::default()
            });
    }
    spans
}

/// The backend is down; requests are accepted until the log (`limit`) is full, then refused
/// retryably; the backend comes up and the client's retries get everything through, once.
async fn refuses_when_full_and_loses_nothing(storage: &Path, limit: &str) {
    let (grpc, http) = (harness::free_port(), harness::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("ragwatch.yaml");
    write_config(
        &cfg,
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0 }}
processors:
  trace_assembly: {{ wait_after_root: 50ms }}
exporters:
  otlp:
    endpoint: http://{grpc}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 10m }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [trace_assembly]
      exporters: [otlp]
      storage: {}
      {limit}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"#,
            storage.display()
        ),
    );
    let args = ["--config", cfg.to_str().expect("utf-8 path")];
    let rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    let addr = rw.address("receiver otlp (grpc)").expect("grpc listening");
    let mut c = client(&addr).await;
    // Each request is about 26 KB encoded: 5 traces of 5 spans with 1 KB of padding each.
    let mut sent = BTreeSet::new();
    let mut accepted = 0u32;
    let mut refused_at = None;
    for r in 0..1000u32 {
        let spans = padded(r, 5);
        match c.export(harness::traces_request(spans.clone())).await {
            Ok(_) => {
                sent.extend(spans.iter().map(key));
                accepted += 1;
            }
            Err(s) => {
                use tonic_types::StatusExt;
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                assert!(s.get_details_retry_info().is_some(), "RetryInfo: {s:?}");
                assert!(s.message().contains("log"), "says why: {}", s.message());
                refused_at = Some((r, spans));
                break;
            }
        }
    }
    let (next, spans) = refused_at.expect("the log fills up and refuses");
    assert!(accepted > 0, "some were accepted before it filled");
    let m = metrics(&admin).await;
    assert!(
        harness::sample_in(
            &m,
            r#"ragwatch_receiver_requests_total{receiver="otlp",transport="grpc",outcome="refused"}"#
        ) >= 1.0,
        "{m}"
    );
    // The backend comes up; the client retries the refused request and sends ten more.
    let backend = Backend::start_at(grpc, http).await;
    sent.extend(spans.iter().map(key));
    send_until_accepted(&mut c, spans).await;
    for r in next + 1..next + 11 {
        let spans = padded(r, 5);
        sent.extend(spans.iter().map(key));
        send_until_accepted(&mut c, spans).await;
    }
    assert!(
        backend
            .wait(Duration::from_secs(60), |b| {
                b.spans().iter().map(key).collect::<BTreeSet<_>>().len() >= sent.len()
            })
            .await,
        "every accepted span arrives: {} of {}",
        backend.span_count(),
        sent.len()
    );
    let got = backend.spans();
    let distinct: BTreeSet<Vec<u8>> = got.iter().map(key).collect();
    assert_eq!(distinct, sent);
    assert_eq!(got.len(), sent.len(), "none twice");
    let released = harness::eventually_async(Duration::from_secs(10), || async {
        sample(&admin, RECORDS).await == 0.0
    })
    .await;
    assert!(released, "{}", metrics(&admin).await);
    rw.sigterm();
    let (code, log) = rw.wait();
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_refuses_retryably_and_loses_nothing() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    refuses_when_full_and_loses_nothing(&dir.path().join("log"), "storage_max_mib: 1").await;
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_retryably_and_loses_nothing() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let at = dir.path().join("tmpfs");
    // A 1 MiB file system under a log allowed 1024 MiB: the disk is what fills.
    let Some(fs) = Tmpfs::mount(&at, "1m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    refuses_when_full_and_loses_nothing(&fs.0, "storage_max_mib: 1024").await;
}

/// A report field of ragwatch-loadgen's JSON.
fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_mid_load_loses_no_acknowledged_span() {
    let _heavy = harness::heavy().await;
    ragwatch::service::install_crypto_provider();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("log");
    let grpc: SocketAddr = harness::free_port();
    let cfg = dir.path().join("ragwatch.yaml");
    write_config(
        &cfg,
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: {grpc} }}
processors:
  genai:
  trace_assembly: {{ wait_after_root: 2s }}
  quality:
  anomaly:
  batch:
exporters:
  otlp:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, batch]
      exporters: [otlp]
      storage: {}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"#,
            backend.grpc_endpoint(),
            storage.display()
        ),
    );
    let args = ["--config", cfg.to_str().expect("utf-8 path")];
    let mut rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    rw.address("receiver otlp (grpc)").expect("grpc listening");
    // 5,000 spans/s for 8 s; the generator retries what fails, connection errors included.
    let load = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::harness::loadgen_bin())
            .args([
                "--endpoint",
                &format!("http://{grpc}"),
                "--rate",
                "5000",
                "--duration",
                "8",
                "--batch",
                "100",
                "--connections",
                "4",
                "--retry-timeout",
                "60",
                "--drain-timeout",
                "60",
                "--json",
                "--report-every",
                "0",
                "--seed",
                "5",
            ])
            .output()
    });
    // Mid-load: once 20,000 spans were accepted (4 s), the last two seconds held in memory.
    let accepted = r#"ragwatch_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}"#;
    assert!(
        harness::eventually_async(Duration::from_secs(30), || async {
            sample(&admin, accepted).await >= 20_000.0
        })
        .await,
        "{}",
        metrics(&admin).await
    );
    let before_kill = backend.span_count();
    rw.child.kill().expect("kill -9");
    let (code, _) = rw.wait();
    assert_eq!(code, None);
    // Start again on the same port; the generator's retries find it.
    let rw = Ragwatch::spawn(dir.path(), &args);
    let admin = rw.address("admin").expect("admin listening");
    let out = load.await.expect("join").expect("run loadgen");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(out.status.success(), "the generator lost nothing: {report}");
    let acked = field(&report, "acknowledged") as usize;
    assert!(acked >= 30_000, "{report}");
    let distinct = |b: &Backend| b.spans().iter().map(key).collect::<BTreeSet<_>>().len();
    assert!(
        backend
            .wait(Duration::from_secs(60), |b| distinct(b) >= acked)
            .await,
        "every acknowledged span arrives: {} distinct of {acked}",
        distinct(&backend)
    );
    let received = backend.span_count();
    let unique = distinct(&backend);
    assert_eq!(unique, acked, "nothing but what was sent");
    let replayed = sample(&admin, REPLAYED).await;
    eprintln!(
        "kill -9 mid-load: {acked} acknowledged, {before_kill} delivered before the kill, {received} received ({} duplicates), {replayed} replayed",
        received - unique
    );
    assert!(replayed > 0.0, "something was in the log at the kill");
    rw.sigterm();
    let (code, log) = tokio::task::spawn_blocking(move || rw.wait())
        .await
        .expect("join");
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_request_larger_than_the_whole_log_is_refused_for_good() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = harness::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:0, max_recv_msg_size_mib: 4 }}
exporters:
  otlp: {{ endpoint: {} }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
      storage: {}
      storage_max_mib: 1"#,
        backend.grpc_endpoint(),
        dir.path().join("log").display()
    ))
    .await;
    let mut c = client(&s.grpc_addr("otlp").expect("grpc").to_string()).await;
    // About 1.5 MiB: under the receiver's limit, over the whole log's.
    let status = c
        .export(harness::traces_request(padded(0, 300)))
        .await
        .expect_err("refused");
    // RESOURCE_EXHAUSTED without RetryInfo: OTLP clients do not retry it forever.
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_none());
    assert!(
        status.message().contains("larger than the whole log"),
        "{}",
        status.message()
    );
    // A request that fits goes through.
    c.export(harness::traces_request(padded(1, 5)))
        .await
        .expect("accepted");
    assert!(backend.wait_for_spans(25, Duration::from_secs(10)).await);
    s.shutdown().await;
}
