//! Starting ragwatch in-process on 127.0.0.1:0 and reading its own metrics.
#![allow(dead_code)]

pub mod tools;

use std::net::SocketAddr;
use std::time::Duration;

use ragwatch::{Config, Service};

/// Start ragwatch from YAML; the admin endpoint is put on 127.0.0.1:0 unless the YAML sets one.
pub async fn start(yaml: &str) -> Service {
    let yaml = if yaml.contains("telemetry:") {
        yaml.to_string()
    } else {
        format!("{yaml}\n  telemetry:\n    metrics:\n      address: 127.0.0.1:0\n")
    };
    let config =
        Config::from_yaml_with_env(&yaml, "test", &|_| None).unwrap_or_else(|e| panic!("{e}"));
    Service::start(&config)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// A receiver section listening on 127.0.0.1:0 for both protocols.
pub fn otlp_receiver(extra: &str) -> String {
    format!(
        "  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n      http:\n        endpoint: 127.0.0.1:0\n{extra}"
    )
}

pub fn grpc_url(s: &Service) -> String {
    format!("http://{}", s.grpc_addr("otlp").expect("grpc receiver"))
}

pub fn http_url(s: &Service, path: &str) -> String {
    format!(
        "http://{}{path}",
        s.http_addr("otlp").expect("http receiver")
    )
}

/// The value of one sample of ragwatch's own metrics, e.g.
/// `ragwatch_exporter_sent_spans_total{exporter="otlp"}`; 0 when absent.
pub fn metric(s: &Service, sample: &str) -> f64 {
    sample_in(&s.metrics().encode(), sample)
}

/// The value of one sample in a Prometheus text exposition; 0 when absent.
pub fn sample_in(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// Wait until `cond` holds, checking every 10 ms, for at most `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the async `cond` holds, checking every 50 ms, for at most `limit`.
pub async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tests that load the machine (floods, 100,000-trace runs, memory readings) hold this while
/// they run, so two of them never share CI's two cores: their timing and memory readings stay
/// their own. The other tests run beside them as usual.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A loopback port that nothing listens on now (bound, then released).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub mod backend;
pub mod child;
pub mod fixtures;
pub mod load;
pub mod webhook;

/// One export request holding `spans` under an empty resource and scope.
pub fn traces_request(
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The `ragwatch-loadgen` binary. It belongs to the workspace member `loadgen/`, so cargo sets no
/// `CARGO_BIN_EXE_` for it here; `cargo test` at the top builds it (the member has integration
/// tests, which need its binary) into the same directory as this package's `ragwatch`.
pub fn loadgen_bin() -> std::path::PathBuf {
    let ragwatch = std::path::Path::new(env!("CARGO_BIN_EXE_ragwatch"));
    let name = format!("ragwatch-loadgen{}", std::env::consts::EXE_SUFFIX);
    let bin = ragwatch.with_file_name(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo test` at the top of the workspace (or `cargo build --bin ragwatch-loadgen`)",
        bin.display()
    );
    bin
}
