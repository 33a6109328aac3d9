//! The real `ragwatch-loadgen` binary against the real service (in-process on 127.0.0.1:0),
//! which forwards to a fake OTLP backend.

use crate::harness;

use std::collections::{HashMap, HashSet};
use std::process::Output;
use std::time::Duration;

use harness::backend::Backend;
use opentelemetry_proto::tonic::trace::v1::Span;
use ragwatch::Service;
use ragwatch::attributes::get_str;
use ragwatch_loadgen::loadgen::Report;

async fn start(backend: &Backend) -> Service {
    harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp/down:
    endpoint: {}
    compression: none
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp/down] }}
"#,
        harness::otlp_receiver(""),
        backend.grpc_endpoint()
    ))
    .await
}

/// Run the real binary to completion (off the runtime's threads).
async fn loadgen(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::harness::loadgen_bin())
            .args(&args)
            .args(["--report-every", "0"])
            .output()
            .expect("run ragwatch-loadgen")
    })
    .await
    .expect("join")
}

fn report(out: &Output) -> Report {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Unique span ids, one root per trace, every parent in its own trace.
fn assert_well_formed(spans: &[Span]) {
    let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are not unique");
    let mut traces: HashMap<&[u8], Vec<&Span>> = HashMap::new();
    for s in spans {
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.span_id.len(), 8);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        traces.entry(&s.trace_id).or_default().push(s);
    }
    for (tid, t) in &traces {
        let ids: HashSet<&[u8]> = t.iter().map(|s| s.span_id.as_slice()).collect();
        let roots = t.iter().filter(|s| s.parent_span_id.is_empty()).count();
        assert_eq!(roots, 1, "trace {tid:02x?} has {roots} roots");
        for s in t {
            if !s.parent_span_id.is_empty() {
                assert!(
                    ids.contains(s.parent_span_id.as_slice()),
                    "{} has no parent in its trace",
                    s.name
                );
            }
        }
        assert!(t.len() >= 4, "a trace of {} spans", t.len());
    }
}

async fn every_span_arrives(protocol: &str) {
    let backend = Backend::start().await;
    let s = start(&backend).await;
    let endpoint = match protocol {
        "grpc" => harness::grpc_url(&s),
        _ => harness::http_url(&s, ""),
    };
    let out = loadgen(&[
        "--endpoint",
        &endpoint,
        "--protocol",
        protocol,
        "--spans",
        "5000",
        "--json",
        "--seed",
        "1",
    ])
    .await;
    let r = report(&out);
    assert!(out.status.success(), "{r:?}");
    assert_eq!(out.status.code(), Some(0));
    // --spans is rounded down to whole traces.
    assert!((4994..=5000).contains(&r.sent), "{r:?}");
    assert_eq!(r.acknowledged, r.sent, "{r:?}");
    assert_eq!((r.failed, r.refused), (0, 0), "{r:?}");
    assert!(r.latency_ms.p50 > 0.0 && r.latency_ms.max >= r.latency_ms.p99);
    let n = r.sent as usize;
    assert!(backend.wait_for_spans(n, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spans = backend.spans();
    assert_eq!(spans.len(), n);
    assert_well_formed(&spans);
    // Realistic traffic: several services and models, the GenAI operations, retried calls.
    let ops: HashSet<&str> = spans
        .iter()
        .filter_map(|s| get_str(&s.attributes, "gen_ai.operation.name"))
        .collect();
    for op in ["embeddings", "retrieval", "chat", "rerank"] {
        assert!(ops.contains(op), "no {op} span");
    }
    let models: HashSet<&str> = spans
        .iter()
        .filter_map(|s| get_str(&s.attributes, "gen_ai.request.model"))
        .collect();
    assert!(models.contains("gpt-4o-mini") && models.contains("claude-sonnet-4"));
    let services: HashSet<String> = backend
        .traces()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| {
            get_str(&rs.resource.as_ref()?.attributes, "service.name").map(str::to_string)
        })
        .collect();
    assert_eq!(services.len(), 3, "{services:?}");
    assert!(
        spans.iter().any(|s| s
            .attributes
            .iter()
            .any(|kv| kv.key == "http.request.resend_count")),
        "no retried call"
    );
    // Times are now, not the templates'.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(
        spans
            .iter()
            .all(|s| s.end_time_unix_nano <= now && s.end_time_unix_nano > now - 60_000_000_000)
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_arrives_over_grpc() {
    every_span_arrives("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_arrives_over_http() {
    every_span_arrives("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_failure() {
    let port = harness::free_port();
    for protocol in ["grpc", "http"] {
        let endpoint = format!("http://{port}");
        let out = loadgen(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--spans",
            "100",
            "--duration",
            "1",
            "--drain-timeout",
            "1",
            "--json",
        ])
        .await;
        assert_eq!(out.status.code(), Some(1), "{protocol}");
        let r = report(&out);
        assert_eq!(r.acknowledged, 0);
        assert_eq!(r.failed, r.sent, "{r:?}");
        assert!(r.sent > 0 && r.transport_errors > 0, "{r:?}");
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--protocol", "carrier-pigeon"][..],
        &["--scenario", "meteor"],
        &["--rate", "-1"],
        &["--batch", "0"],
        &["--endpoint", "ftp://127.0.0.1:1"],
    ] {
        let out = std::process::Command::new(crate::harness::loadgen_bin())
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

fn retrieval_ms_by_service(backend: &Backend) -> HashMap<String, Vec<f64>> {
    let mut out: HashMap<String, Vec<f64>> = HashMap::new();
    for r in backend.traces() {
        for rs in &r.resource_spans {
            let svc = rs
                .resource
                .as_ref()
                .and_then(|r| get_str(&r.attributes, "service.name"))
                .unwrap_or_default()
                .to_string();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                if get_str(&s.attributes, "gen_ai.operation.name") == Some("retrieval") {
                    out.entry(svc.clone())
                        .or_default()
                        .push((s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e6);
                }
            }
        }
    }
    out
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_retrieval_makes_every_retrieval_three_times_slower() {
    let mut runs = Vec::new();
    for scenario in [None, Some("slow-retrieval")] {
        let backend = Backend::start().await;
        let s = start(&backend).await;
        let endpoint = harness::grpc_url(&s);
        let mut args = vec!["--endpoint", &endpoint, "--spans", "400", "--json"];
        if let Some(sc) = scenario {
            args.extend([
                "--scenario",
                sc,
                "--fault-start",
                "0",
                "--fault-duration",
                "3600",
            ]);
        }
        let out = loadgen(&args).await;
        let r = report(&out);
        assert!(out.status.success(), "{r:?}");
        assert_eq!(r.scenario.as_deref(), scenario);
        assert!(
            backend
                .wait_for_spans(r.sent as usize, Duration::from_secs(10))
                .await
        );
        runs.push(retrieval_ms_by_service(&backend));
        s.shutdown().await;
    }
    let (clean, slow) = (&runs[0], &runs[1]);
    for (svc, durations) in slow {
        let base = median(&clean[svc]);
        let ratio = median(durations) / base;
        assert!((2.4..3.6).contains(&ratio), "{svc}: median ratio {ratio}");
        for d in durations {
            assert!(
                (1.4..7.0).contains(&(d / base)),
                "{svc}: a retrieval of {d} ms against a clean median of {base} ms"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_retried_after_retry_after_and_counted() {
    for protocol in ["grpc", "http"] {
        let backend = Backend::start().await;
        backend.set_behavior(harness::backend::Behavior::FailRetryable {
            times: 2,
            retry_after: Some(Duration::from_secs(1)),
        });
        let endpoint = match protocol {
            "grpc" => backend.grpc_endpoint(),
            _ => backend.http_endpoint(),
        };
        let out = loadgen(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--spans",
            "300",
            "--batch",
            "1000",
            "--connections",
            "1",
            "--json",
        ])
        .await;
        let r = report(&out);
        assert!(out.status.success(), "{protocol}: {r:?}");
        assert_eq!(r.acknowledged, r.sent, "{r:?}");
        assert_eq!(r.refused, 2 * r.sent, "{r:?}");
        assert_eq!((r.retries, r.requests, r.failed), (2, 1, 0), "{r:?}");
        // Retry-After (1 s, jittered by at most 25 %) was honoured twice.
        assert!(r.elapsed_secs >= 1.5, "{r:?}");
        assert_eq!(backend.span_count() as u64, r.sent);
    }
}
