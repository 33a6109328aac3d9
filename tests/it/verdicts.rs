//! Recall end to end, through the real binary: after 60 normal requests per service, each
//! sustained fault marks at least 90% of its faulty requests with the right signal, an error
//! burst of 3 failures in 5 is flagged within 20 requests, nothing is marked in the normal
//! phase, and one slow request on a fresh service fires no SLO alert.

use crate::harness;
use crate::harness::backend::Backend;
use crate::harness::child::Ragwatch;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use ragwatch_loadgen::synth::{Fault, Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

const NORMAL: usize = 60;
const FAULTY: usize = 20;

/// What a service does in its second phase.
#[derive(Clone, Copy)]
enum Phase2 {
    /// Every request has the fault; the signal that must mark it.
    Sustained(Fault, &'static str),
    /// The model switches to a pricier one and the prompts grow: cost.
    PricierModel,
    /// Requests 1, 3 and 5 fail, the rest are normal.
    ErrorBurst,
}

fn profile(service: &str, model: &str) -> Profile {
    Profile {
        error_rate: 0.0,
        ..Profile::new(service, model)
    }
}

fn signals(s: &Span) -> Vec<String> {
    match ragwatch::attributes::get(&s.attributes, "rag.anomaly.signals") {
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match &v.value {
                Some(Value::StringValue(x)) => Some(x.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_faults_are_marked_and_normal_traffic_is_not() {
    let _heavy = harness::heavy().await;
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = Ragwatch::with_config(
        dir.path(),
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  genai:
  trace_assembly:
    wait_after_root: 50ms
  quality:
  anomaly:
  slo:
    evaluation_interval: 100ms
    slos:
      - name: answers-under-5s
        kind: latency
        objective: 0.95
        threshold: 5s
      - name: answers-succeed
        kind: availability
        objective: 0.99
exporters:
  otlp:
    endpoint: {}
  prometheus:
    endpoint: 127.0.0.1:0
alerts:
  evaluation_interval: 100ms
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo]
      exporters: [otlp, prometheus]
  telemetry:
    metrics:
      address: 127.0.0.1:0
"#,
            down.grpc_endpoint()
        ),
    );
    let addrs = rw.addresses(&["admin", "exporter prometheus", "receiver otlp (grpc)"]);
    let [Some(admin), Some(prom), Some(grpc)] = &addrs[..] else {
        panic!("not listening: {addrs:?}\n{}", rw.log_lines().join("\n"));
    };
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");

    let services: Vec<(&str, &str, Phase2)> = vec![
        (
            "svc-retrieval",
            "gpt-4o-mini",
            Phase2::Sustained(Fault::SlowRetrieval(3.0), "stage_latency"),
        ),
        (
            "svc-llm",
            "gpt-4o-mini",
            Phase2::Sustained(Fault::SlowLlm(3.0), "stage_latency"),
        ),
        (
            "svc-quality",
            "gpt-4o-mini",
            Phase2::Sustained(Fault::QualityDrop, "quality"),
        ),
        ("svc-cost", "gpt-4o-mini", Phase2::PricierModel),
        ("svc-errors", "gpt-4o-mini", Phase2::ErrorBurst),
    ];
    let mut rng = StdRng::seed_from_u64(42);
    let mut clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    // trace id → (service, index in its stream).
    let mut sent: HashMap<Vec<u8>, (&str, usize)> = HashMap::new();
    let mut spans_sent = 0;
    for i in 0..NORMAL + FAULTY {
        for (svc, model, phase2) in &services {
            let (p, fault) = if i < NORMAL {
                (profile(svc, model), None)
            } else {
                let k = i - NORMAL;
                match phase2 {
                    Phase2::Sustained(f, _) => (profile(svc, model), Some(*f)),
                    Phase2::PricierModel => (profile(svc, "gpt-4o"), None),
                    Phase2::ErrorBurst => (
                        profile(svc, model),
                        (k < 5 && k.is_multiple_of(2)).then_some(Fault::ErrorBurst(1.0)),
                    ),
                }
            };
            let rs = rag_trace(&mut rng, &p, fault, clock);
            clock += 10_000_000;
            let spans: Vec<&Span> = rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
            spans_sent += spans.len();
            let tid = spans[0].trace_id.clone();
            sent.insert(tid.clone(), (svc, i));
            client
                .export(ExportTraceServiceRequest {
                    resource_spans: vec![rs],
                })
                .await
                .expect("accepted");
            // The burst's requests are paced as a real client's would be, each judged before
            // the next arrives: here hundreds a second arrive at once, and the pipeline's
            // shards may hand a few of them on in another order than they were sent.
            if matches!(phase2, Phase2::ErrorBurst) && (NORMAL..NORMAL + 5).contains(&i) {
                assert!(
                    down.wait(Duration::from_secs(30), |b| b
                        .spans()
                        .iter()
                        .any(|s| s.trace_id == tid))
                        .await,
                    "trace exported"
                );
            }
        }
    }
    // One cold, slow request on a fresh service: 10 s, twice the latency SLO's threshold.
    let cold = Profile {
        retrieval_ms: 10_000.0,
        ..profile("svc-cold", "gpt-4o-mini")
    };
    let rs = rag_trace(&mut rng, &cold, None, clock);
    spans_sent += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![rs],
        })
        .await
        .expect("accepted");

    assert!(
        down.wait_for_spans(spans_sent, Duration::from_secs(60))
            .await,
        "every span exported: {} of {spans_sent}",
        down.span_count()
    );
    // The SLOs were evaluated after the cold request: its SLI is there.
    let scrape = || async {
        reqwest::get(format!("http://{prom}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    };
    assert!(
        harness::eventually_async(Duration::from_secs(30), || async {
            scrape().await.lines().any(|l| {
                l.starts_with("rag_slo_burn_rate{")
                    && l.contains("service=\"svc-cold\"")
                    && l.contains("slo=\"answers-under-5s\"")
            })
        })
        .await,
        "the cold request's SLO was evaluated"
    );
    let text = scrape().await;
    let burn = harness::sample_in(
        &text,
        r#"rag_slo_burn_rate{slo="answers-under-5s",service="svc-cold",scope="",window="5m"}"#,
    );
    assert!(
        (burn - 20.0).abs() < 1e-9,
        "one bad of one: burn 1 / 0.05 = 20, not {burn}"
    );

    // Per service: the normal requests marked, and the faulty ones marked with the right signal.
    let mut by_trace: HashMap<Vec<u8>, Vec<Span>> = HashMap::new();
    for s in down.spans() {
        by_trace.entry(s.trace_id.clone()).or_default().push(s);
    }
    let mut normal_marked: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut faulty_marked: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut error_flagged: Vec<usize> = Vec::new();
    for (tid, (svc, i)) in &sent {
        let spans = by_trace.get(tid).expect("trace exported");
        let marked: Vec<String> = spans.iter().flat_map(signals).collect();
        if *i < NORMAL {
            if !marked.is_empty() {
                normal_marked.entry(svc).or_default().push(*i);
            }
            continue;
        }
        let phase2 = services
            .iter()
            .find(|(s, _, _)| s == svc)
            .map(|(_, _, p)| *p)
            .expect("service");
        match phase2 {
            Phase2::Sustained(_, signal) => {
                if marked.iter().any(|m| m == signal) {
                    faulty_marked.entry(svc).or_default().push(*i);
                }
            }
            Phase2::PricierModel => {
                if marked.iter().any(|m| m == "cost") {
                    faulty_marked.entry(svc).or_default().push(*i);
                }
            }
            Phase2::ErrorBurst => {
                if marked.iter().any(|m| m == "error_rate") {
                    error_flagged.push(*i - NORMAL);
                }
            }
        }
    }
    assert!(
        normal_marked.is_empty(),
        "marked in the normal phase: {normal_marked:?}"
    );
    for (svc, _, phase2) in &services {
        if matches!(phase2, Phase2::ErrorBurst) {
            continue;
        }
        let n = faulty_marked.get(svc).map(Vec::len).unwrap_or(0);
        assert!(
            n * 10 >= FAULTY * 9,
            "{svc}: {n} of {FAULTY} faulty requests marked: {:?}",
            faulty_marked.get(svc)
        );
    }
    error_flagged.sort_unstable();
    assert!(
        error_flagged.first().is_some_and(|k| *k < 20),
        "the error burst flagged within 20 requests: {error_flagged:?}"
    );
    // Only failed requests carry the error-rate mark (the 3rd failure is the first judged
    // a burst: requests 0 and 2 fail before it).
    assert!(
        error_flagged.iter().all(|k| [0, 2, 4].contains(k)),
        "{error_flagged:?}"
    );

    // No SLO finding for the cold request, and no burn alert at all.
    let log = rw.log_lines();
    let burns: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("finding started") && l.contains("slo_burn"))
        .collect();
    assert!(burns.is_empty(), "{burns:#?}");
    let alerts: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("http://{admin}/api/v1/alerts"))
            .await
            .expect("alerts")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    let burning: Vec<&serde_json::Value> = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["labels"]["alertname"] == "RagSloBurn")
        .collect();
    assert!(burning.is_empty(), "{burning:#?}");
    // The anomalies did raise alerts, each logged once when it started.
    assert!(
        log.iter()
            .any(|l| l.contains("alert pending") && l.contains("RagAnomaly")),
        "{}",
        log.join("\n")
    );
}
