//! Tail sampling end to end: the real `ragwatch` binary, twice, with and without a
//! `tail_sampling` stage after the analysis, fed the very same requests (the loadgen's traffic
//! with its faults, then real captures), each forwarding to its own fake OTLP backend.
//!
//! What must hold: every failed, costly and anomalous trace is kept with all its spans; the
//! other traces are kept exactly when their randomness reaches the 10 % threshold, which is a
//! share within a binomial bound; their adjusted counts add up to an estimate of how many were
//! sent; and the derived metrics (/metrics of the prometheus exporter) are identical.

use crate::harness;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use harness::backend::Backend;
use harness::child::Ragwatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use ragwatch::attributes::{get, get_f64, get_str, is_error};
use ragwatch::names::attrs as a;
use ragwatch_loadgen::loadgen::Report;

/// Captures of real instrumentation libraries replayed after the loadgen's traffic.
const CAPTURES: [&str; 3] = [
    "openinference-normal-http.jsonl",
    "otel-v2-normal.jsonl",
    "openllmetry-normal.jsonl",
];

/// Traces costing at least this much are kept (`trace_cost`).
const COSTLY_USD: f64 = 0.02;

const POLICIES: &str = r#"
  tail_sampling:
    policies:
      - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
      - { name: costly, type: trace_cost, trace_cost: { min_usd: 0.02 } }
      - { name: anomalous, type: anomaly }
      - { name: ten-percent, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
"#;

fn config(backend: &Backend, sampling: bool) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        max_recv_msg_size_mib: 64
processors:
  genai:
  trace_assembly:
    mode: hold
    wait_after_root: 200ms
  quality:
  anomaly:
  slo:
    evaluation_interval: 1s
    slos:
      - {{ name: answers-under-5s, kind: latency, objective: 0.95, threshold: 5s }}
      - {{ name: answers-succeed, kind: availability, objective: 0.99 }}
{policies}
exporters:
  otlp/down:
    endpoint: {endpoint}
    compression: none
  prometheus:
    endpoint: 127.0.0.1:0
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo{last}]
      exporters: [otlp/down, prometheus]
      shards: 1
  telemetry:
    metrics:
      address: 127.0.0.1:0
"#,
        policies = if sampling { POLICIES } else { "" },
        endpoint = backend.grpc_endpoint(),
        last = if sampling { ", tail_sampling" } else { "" },
    )
}

/// Run the loadgen against `sink` (a fake backend that records what it gets), one connection so
/// the requests arrive in the order they were made.
async fn loadgen(sink: &Backend, args: &[&str]) -> Report {
    let mut all: Vec<String> = vec![
        "--endpoint".into(),
        sink.grpc_endpoint(),
        "--connections".into(),
        "1".into(),
        "--json".into(),
        "--report-every".into(),
        "0".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::harness::loadgen_bin())
            .args(&all)
            .output()
            .expect("run ragwatch-loadgen")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report")
}

/// The traffic, made once and recorded: normal requests (which also warm the anomaly
/// baselines up), a cost spike, a burst of errors, then the captures.
async fn traffic() -> Vec<ExportTraceServiceRequest> {
    let sink = Backend::start().await;
    let mut sent = 0;
    for args in [
        &["--spans", "20000", "--seed", "1"][..],
        &["--spans", "3000", "--seed", "2", "--scenario", "cost-spike"],
        &[
            "--spans",
            "3000",
            "--seed",
            "3",
            "--scenario",
            "error-burst",
        ],
    ] {
        let r = loadgen(&sink, args).await;
        assert_eq!(r.acknowledged, r.sent, "{r:?}");
        sent += r.sent as usize;
    }
    assert_eq!(sink.span_count(), sent, "acknowledged, so recorded");
    let mut reqs = sink.traces();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp");
    for name in CAPTURES {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).expect("capture");
        for line in text.lines().filter(|l| l.starts_with("{\"resourceSpans\"")) {
            reqs.push(serde_json::from_str(line).expect("a trace request"));
        }
    }
    reqs
}

struct Running {
    rw: Ragwatch,
    backend: Backend,
    admin: String,
    prometheus: String,
    grpc: String,
}

async fn start(sampling: bool, dir: &std::path::Path) -> Running {
    let backend = Backend::start().await;
    let name = if sampling {
        "sampling.yaml"
    } else {
        "all.yaml"
    };
    let path = dir.join(name);
    std::fs::write(&path, config(&backend, sampling)).expect("write config");
    let rw = Ragwatch::spawn(dir, &["--config", path.to_str().expect("utf-8")]);
    // In the order ragwatch starts them: admin, exporters, receivers.
    let admin = rw.address("admin").expect("admin");
    let prometheus = rw.address("exporter prometheus").expect("prometheus");
    let grpc = rw.address("receiver otlp (grpc)").expect("receiver");
    Running {
        rw,
        backend,
        admin,
        prometheus,
        grpc,
    }
}

/// Send every request in order, each acknowledged before the next.
async fn replay(url: String, reqs: Vec<ExportTraceServiceRequest>) {
    let mut c = TraceServiceClient::connect(url)
        .await
        .expect("connect")
        .max_encoding_message_size(64 * 1024 * 1024);
    for r in reqs {
        c.export(r).await.expect("accepted");
    }
}

async fn http_get(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// The spans of each trace (by hex id) a backend received.
fn by_trace(backend: &Backend) -> HashMap<Vec<u8>, Vec<Span>> {
    let mut out: HashMap<Vec<u8>, Vec<Span>> = HashMap::new();
    for s in backend.spans() {
        out.entry(s.trace_id.clone()).or_default().push(s);
    }
    out
}

fn root(spans: &[Span]) -> Option<&Span> {
    spans.iter().find(|s| s.parent_span_id.is_empty())
}

/// The trace's randomness as OpenTelemetry defines it: the trace id's last 7 bytes.
fn randomness(id: &[u8]) -> u64 {
    id[9..16]
        .iter()
        .fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Failed,
    Costly,
    Anomalous,
    Normal,
}

/// What the analysis found of a trace, read from the copy exported without sampling (the
/// policies' order decides which one keeps it).
fn kind(spans: &[Span]) -> Kind {
    if spans.iter().any(is_error) {
        Kind::Failed
    } else if root(spans)
        .and_then(|r| get_f64(&r.attributes, a::TRACE_COST_USD))
        .is_some_and(|c| c >= COSTLY_USD)
    {
        Kind::Costly
    } else if spans
        .iter()
        .any(|s| matches!(get(&s.attributes, a::ANOMALY), Some(Value::BoolValue(true))))
    {
        Kind::Anomalous
    } else {
        Kind::Normal
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_what_matters_samples_the_rest_and_changes_no_number() {
    let _heavy = harness::heavy().await;
    ragwatch::service::install_crypto_provider(); // for the reqwest client here
    let reqs = traffic().await;
    let spans_sent: usize = reqs.iter().map(ragwatch::signal::span_count).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let all = start(false, dir.path()).await;
    let sampled = start(true, dir.path()).await;
    tokio::join!(
        replay(format!("http://{}", all.grpc), reqs.clone()),
        replay(format!("http://{}", sampled.grpc), reqs.clone()),
    );

    // Without sampling every span arrives; with it, every trace is decided (the self-metrics
    // say so) and what was not dropped arrives.
    assert!(
        all.backend
            .wait_for_spans(spans_sent, Duration::from_secs(60))
            .await,
        "{} of {spans_sent} spans",
        all.backend.span_count()
    );
    let traces_sent = by_trace(&all.backend);
    let n_traces = traces_sent.len();
    let admin = format!("http://{}/metrics", sampled.admin);
    let sample = |text: &str, s: &str| harness::sample_in(text, s);
    let decided = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("ragwatch_sampling_traces_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let last = std::sync::Mutex::new(String::new());
    let done = harness::eventually_async(Duration::from_secs(60), || {
        let (admin, backend, last) = (&admin, &sampled.backend, &last);
        async move {
            let text = http_get(admin).await;
            let dropped = sample(&text, "ragwatch_sampling_spans_dropped_total") as usize;
            let ok =
                decided(&text) as usize == n_traces && backend.span_count() + dropped == spans_sent;
            *last.lock().expect("lock") = text;
            ok
        }
    })
    .await;
    let own = last.into_inner().expect("lock");
    assert!(done, "not every trace decided and delivered:\n{own}");

    // Every trace: kept whole by its rule, or kept at random exactly when its randomness
    // reaches the 10 % threshold (2^56 - round(0.1 * 2^56) = 0xe6666666666666).
    let kept = by_trace(&sampled.backend);
    let mut counts: BTreeMap<Kind, (usize, usize)> = BTreeMap::new(); // sent, kept
    let mut adjusted_sum = 0.0;
    for (id, spans) in &traces_sent {
        let k = kind(spans);
        let c = counts.entry(k).or_default();
        c.0 += 1;
        let Some(got) = kept.get(id) else {
            assert_eq!(k, Kind::Normal, "a {k:?} trace was dropped");
            assert!(randomness(id) < 0xe6666666666666);
            continue;
        };
        c.1 += 1;
        assert_eq!(got.len(), spans.len(), "a {k:?} trace lost spans");
        let r = root(got).expect("the root came");
        let policy = get_str(&r.attributes, a::SAMPLING_POLICY);
        let adjusted = get_f64(&r.attributes, a::SAMPLING_ADJUSTED_COUNT).expect("adjusted count");
        match k {
            Kind::Failed | Kind::Costly | Kind::Anomalous => {
                let want = match k {
                    Kind::Failed => "errors",
                    Kind::Costly => "costly",
                    _ => "anomalous",
                };
                assert_eq!(policy, Some(want));
                assert_eq!(adjusted, 1.0);
                assert!(got.iter().all(|s| !s.trace_state.contains("th:")));
            }
            Kind::Normal => {
                assert!(randomness(id) >= 0xe6666666666666);
                assert_eq!(policy, Some("ten-percent"));
                assert!((adjusted - 10.0).abs() < 1e-9, "{adjusted}");
                assert!(
                    got.iter()
                        .all(|s| s.trace_state.starts_with("ot=th:e6666666666666"))
                );
                adjusted_sum += adjusted;
            }
        }
    }
    eprintln!("traces (sent, kept) by kind: {counts:?}");
    for k in [Kind::Failed, Kind::Costly, Kind::Anomalous] {
        let (sent, kept) = counts.get(&k).copied().unwrap_or_default();
        assert!(sent >= 10, "the traffic has {sent} {k:?} traces");
        assert_eq!(kept, sent, "{k:?}");
    }
    // Normal traces: the ids are random, so the number kept is Binomial(n, 0.1): mean n/10,
    // standard deviation sqrt(n * 0.1 * 0.9) = 0.3 sqrt(n). It lies within 5 standard
    // deviations (a chance of about 6e-7 to be outside for a correct sampler).
    let (n, k) = counts[&Kind::Normal];
    let (n, k) = (n as f64, k as f64);
    let sd = 0.3 * n.sqrt();
    assert!(n > 1000.0, "{n} normal traces");
    assert!(
        (k - n / 10.0).abs() <= 5.0 * sd,
        "kept {k} of {n} normal traces"
    );
    // Their adjusted counts (10 each) estimate how many normal traces were sent, within the
    // same bound scaled by 10.
    assert_eq!(adjusted_sum, 10.0 * k);
    assert!(
        (adjusted_sum - n).abs() <= 50.0 * sd,
        "estimated {adjusted_sum} of {n}"
    );
    // The self-metrics count the same decisions.
    for (policy, kind) in [
        ("errors", Kind::Failed),
        ("costly", Kind::Costly),
        ("anomalous", Kind::Anomalous),
        ("ten-percent", Kind::Normal),
    ] {
        assert_eq!(
            sample(
                &own,
                &format!("ragwatch_sampling_traces_total{{policy=\"{policy}\",decision=\"kept\"}}")
            ) as usize,
            counts[&kind].1,
            "{policy}"
        );
    }
    assert_eq!(
        sample(
            &own,
            "ragwatch_sampling_traces_total{policy=\"(none)\",decision=\"dropped\"}"
        ),
        n - k
    );

    // The numbers never change: the derived metrics are identical with and without sampling
    // once both have evaluated their SLOs after the last trace (every second).
    let (url_all, url_sampled) = (
        format!("http://{}/metrics", all.prometheus),
        format!("http://{}/metrics", sampled.prometheus),
    );
    let last = std::sync::Mutex::new((String::new(), String::new()));
    let same = harness::eventually_async(Duration::from_secs(30), || {
        let (ua, us, last) = (&url_all, &url_sampled, &last);
        async move {
            let texts = (http_get(ua).await, http_get(us).await);
            let same = texts.0 == texts.1;
            *last.lock().expect("lock") = texts;
            same
        }
    })
    .await;
    let texts = last.into_inner().expect("lock");
    assert!(same, "{}", diff(&texts.0, &texts.1));
    // And they count all the traffic: one request per trace with a root.
    let requests: f64 = texts
        .0
        .lines()
        .filter(|l| l.starts_with("rag_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(requests as usize, n_traces, "{}", texts.0);

    // The bytes a backend stores, with and without: reported, and far fewer.
    let bytes = |b: &Backend| -> usize { b.traces().iter().map(|r| r.encoded_len()).sum() };
    let (b_all, b_sampled) = (bytes(&all.backend), bytes(&sampled.backend));
    eprintln!(
        "bytes exported: {b_all} without sampling, {b_sampled} with ({:.1} %)",
        100.0 * b_sampled as f64 / b_all as f64
    );
    assert!(b_sampled < b_all / 2);
    drop(all.rw);
    drop(sampled.rw);
}

/// The lines that differ, for a readable failure.
fn diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for l in la.iter().filter(|l| !lb.contains(l)).take(20) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in lb.iter().filter(|l| !la.contains(l)).take(20) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

fn span(trace: u8, id: u8, parent: Option<u8>, error: bool) -> Span {
    use opentelemetry_proto::tonic::trace::v1::{Status, status::StatusCode};
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("s{id}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_500_000_000,
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Without trace assembly a trace's spans wait `decision_wait` after its first, so a failing
/// child sent after its root still keeps the whole trace; spans after the decision follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trace_assembly_spans_wait_and_late_ones_follow() {
    let down = Backend::start().await;
    let s = harness::start(&format!(
        r#"
receivers:
{}
processors:
  genai:
  tail_sampling:
    decision_wait: 5s
    policies:
      - {{ name: errors, type: status_code }}
exporters:
  otlp/down:
    endpoint: {}
    compression: none
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai, tail_sampling], exporters: [otlp/down] }}
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint()
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    // Trace 1: the root, then (another request) a failed child. Trace 2: a root alone.
    for spans in [
        vec![span(1, 1, None, false), span(2, 1, None, false)],
        vec![span(1, 2, Some(1), true)],
    ] {
        c.export(harness::traces_request(spans))
            .await
            .expect("export");
    }
    let decided = |s: &ragwatch::Service| {
        harness::metric(
            s,
            "ragwatch_sampling_traces_total{policy=\"errors\",decision=\"kept\"}",
        ) + harness::metric(
            s,
            "ragwatch_sampling_traces_total{policy=\"(none)\",decision=\"dropped\"}",
        )
    };
    assert!(harness::eventually(Duration::from_secs(30), || decided(&s) == 2.0).await);
    assert!(down.wait_for_spans(2, Duration::from_secs(10)).await);
    let got: Vec<(u8, u8)> = down
        .spans()
        .iter()
        .map(|s| (s.trace_id[0], s.span_id[0]))
        .collect();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&(1, 1)) && got.contains(&(1, 2)), "{got:?}");
    // Late spans: trace 1's follows its kept decision, trace 2's its dropped one (though it
    // failed: the decision was made).
    c.export(harness::traces_request(vec![
        span(1, 3, Some(1), false),
        span(2, 2, Some(1), true),
    ]))
    .await
    .expect("export");
    assert!(
        harness::eventually(Duration::from_secs(10), || harness::metric(
            &s,
            "ragwatch_sampling_late_spans_total"
        ) == 2.0)
        .await
    );
    assert!(down.wait_for_spans(3, Duration::from_secs(10)).await);
    assert_eq!(
        harness::metric(&s, "ragwatch_sampling_spans_dropped_total"),
        2.0,
        "trace 2's root and its late child"
    );
    assert_eq!(decided(&s), 2.0, "late spans make no new decision");
    s.shutdown().await;
    assert_eq!(down.span_count(), 3);
}
