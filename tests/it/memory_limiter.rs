//! The memory limiter on the real binary: a flood of RAG traces (ragwatch-loadgen, which retries
//! refusals) into the full analysis with a low limit. Nothing the clients retried is lost and
//! the receivers refused while memory was above the soft limit. (The resident memory stays near
//! the hard limit, not always under it: see the numbers at the end.)

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use harness::child::Ragwatch;

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_above_the_limit_is_refused_retried_and_not_lost() {
    let _heavy = harness::heavy().await;
    if ragwatch::memory::resident_bytes().is_none() {
        eprintln!("SKIPPED: no /proc/self/status on this system");
        return;
    }
    ragwatch::service::install_crypto_provider(); // for the reqwest client here
    let down = Backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        max_recv_msg_size_mib: 16
processors:
  genai:
  trace_assembly:
    wait_after_root: 1s
  quality:
  anomaly:
exporters:
  otlp:
    endpoint: {}
    sending_queue:
      queue_size: 50
service:
  memory_limiter:
    limit_mib: 160
    spike_limit_mib: 60
    check_interval: 50ms
  telemetry:
    metrics:
      address: 127.0.0.1:0
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly]
      exporters: [otlp]
      queue_size: 10000
"#,
            down.grpc_endpoint()
        ),
    )
    .expect("config");
    // Freed memory goes back to the system at once, so the resident size the limiter reads is
    // what is really in use.
    let rw = Ragwatch::spawn_with_env(
        dir.path(),
        &["--config", config.to_str().expect("utf-8")],
        &[("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")],
    );
    // Addresses come in the order of the log: admin first.
    let admin = rw.address("admin").expect("admin listening");
    let grpc = rw.address("receiver otlp (grpc)").expect("grpc listening");
    let pid = rw.pid();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ragwatch-loadgen"))
            .args([
                "--endpoint",
                &format!("http://{grpc}"),
                "--spans",
                "100000",
                "--batch",
                "2000",
                "--connections",
                "8",
                "--retry-timeout",
                "120",
                "--drain-timeout",
                "120",
                "--json",
                "--report-every",
                "0",
                "--seed",
                "3",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("run loadgen");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(out.status.success(), "no loss: {report}");
    let acked = report["acknowledged"].as_u64().expect("acknowledged") as usize;
    assert!(down.wait_for_spans(acked, Duration::from_secs(60)).await);
    assert_eq!(
        down.span_count(),
        acked,
        "every acknowledged span delivered once"
    );
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    // Requests, not spans: above the limit most are refused before they are decoded.
    let refused: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ragwatch_receiver_requests_total{") && l.contains("outcome=\"refused\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        refused > 0.0,
        "the flood was refused for a while:\n{metrics}"
    );
    assert!(report["refused"].as_u64().unwrap_or(0) > 0, "{report}");
    // The target is the hard limit (160 MiB); measured 138-152 MiB here (debug build) and
    // 131-169 MiB for the release binary on a loaded 2-core machine, so it is not asserted.
    // This bound catches a return to the old behaviour (flushing everything at once and
    // decoding what is refused: 235 MiB).
    let peak = peak_rss_mib(pid);
    eprintln!("peak RSS {peak} MiB (limit 160 MiB)");
    assert!(peak < 200, "peak RSS {peak} MiB");
    rw.sigterm();
    let (code, _) = tokio::task::spawn_blocking(move || rw.wait())
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}
