//! Memory under a flood on the real binary: RAG traces from ragwatch-loadgen (which retries
//! refusals) into the full analysis, with a 200 MiB memory limiter (it holds) and on default
//! settings (under 300 MiB). Nothing the clients retried is lost.

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

/// Flood the full analysis (genai, trace_assembly, quality, anomaly) with `extra` in the
/// service section: 300,000 spans, 8 connections, batches of 2,000, retried until accepted.
/// Returns ragwatch's peak resident memory (MiB) and the requests it refused.
async fn flood(extra: &str) -> (u64, f64) {
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
  quality:
  anomaly:
exporters:
  otlp:
    endpoint: {}
service:
{extra}
  telemetry:
    metrics:
      address: 127.0.0.1:0
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly]
      exporters: [otlp]
"#,
            down.grpc_endpoint()
        ),
    )
    .expect("config");
    // Freed memory goes back to the system at once (as README: Memory limiter advises), so the
    // resident size is what is really in use.
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
        std::process::Command::new(crate::harness::loadgen_bin())
            .args([
                "--endpoint",
                &format!("http://{grpc}"),
                "--spans",
                "300000",
                "--batch",
                "2000",
                "--connections",
                "8",
                "--retry-timeout",
                "300",
                "--drain-timeout",
                "300",
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
    assert_eq!(acked, 300_000, "{report}");
    assert!(down.wait_for_spans(acked, Duration::from_secs(120)).await);
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
    let peak = peak_rss_mib(pid);
    rw.sigterm();
    let (code, _) = tokio::task::spawn_blocking(move || rw.wait())
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    (peak, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_above_the_limit_is_refused_retried_and_not_lost() {
    let _heavy = harness::heavy().await;
    if ragwatch::memory::resident_bytes().is_none() {
        eprintln!("SKIPPED: no /proc/self/status on this system");
        return;
    }
    let (peak, refused) =
        flood("  memory_limiter:\n    limit_mib: 200\n    check_interval: 50ms").await;
    eprintln!("peak RSS {peak} MiB (limit 200 MiB), {refused} requests refused");
    assert!(refused > 0.0, "the flood was refused for a while");
    assert!(peak <= 200, "the limit holds: peak RSS {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_default_settings_stays_under_300_mib() {
    let _heavy = harness::heavy().await;
    if ragwatch::memory::resident_bytes().is_none() {
        eprintln!("SKIPPED: no /proc/self/status on this system");
        return;
    }
    // No memory limiter: the queues' byte budgets and trace assembly's max_held_mib bound it.
    let (peak, refused) = flood("").await;
    eprintln!("peak RSS {peak} MiB (bound 300 MiB), {refused} requests refused");
    assert!(peak < 300, "peak RSS {peak} MiB");
}
