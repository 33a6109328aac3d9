//! The false-alarm corpus: every normal capture of every instrumentation library (and every
//! agent stack), replayed five times with fresh ids through the embedded default configuration
//! (the full analysis and alerts), must give no verdict at all: no finding, no `rag.anomaly`, no
//! alert, and no `stage` label outside the fixed set. A false alarm is as serious a bug as a
//! lost span.

use crate::harness;
use crate::harness::fixtures;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use ragwatch::signal::Batch;
use rand::RngExt;

const REPLAYS: usize = 5;

/// The stage names a `stage` label may hold.
const STAGES: &[&str] = &[
    "llm",
    "embedding",
    "retrieval",
    "rerank",
    "tool",
    "agent",
    "chain",
    "guardrail",
    "evaluator",
    "other",
    "app",
];

/// The embedded default configuration, on ports the OS picks, writing into `dir`, with the
/// SLOs evaluated every 100 ms instead of every 10 s (the verdicts are the default ones; only
/// the test's wait is shorter).
fn default_config(dir: &std::path::Path) -> String {
    let yaml = ragwatch::service::config::DEFAULT_CONFIG
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0")
        .replace("127.0.0.1:8888", "127.0.0.1:0")
        .replace(
            "./ragwatch-data/otlp.jsonl",
            &dir.join("otlp.jsonl").display().to_string(),
        )
        .replace("  slo:\n", "  slo:\n    evaluation_interval: 100ms\n");
    assert!(yaml.contains("evaluation_interval: 100ms"), "{yaml}");
    yaml
}

/// Fresh trace and span ids (consistent within one replay of one file), and times moved so
/// the file's first span starts `now`.
struct Renamer {
    ids: HashMap<Vec<u8>, Vec<u8>>,
    shift: i128,
}

impl Renamer {
    fn new(first_start: u64, now: u64) -> Self {
        Renamer {
            ids: HashMap::new(),
            shift: i128::from(now) - i128::from(first_start),
        }
    }

    fn id(&mut self, old: &[u8]) -> Vec<u8> {
        if old.is_empty() {
            return Vec::new();
        }
        self.ids
            .entry(old.to_vec())
            .or_insert_with(|| {
                let mut v = vec![0u8; old.len()];
                rand::rng().fill(&mut v[..]);
                v
            })
            .clone()
    }

    fn time(&self, t: u64) -> u64 {
        u64::try_from(i128::from(t) + self.shift).unwrap_or(t)
    }

    fn traces(&mut self, r: &mut ExportTraceServiceRequest) {
        for s in r
            .resource_spans
            .iter_mut()
            .flat_map(|rs| &mut rs.scope_spans)
            .flat_map(|ss| &mut ss.spans)
        {
            s.trace_id = self.id(&s.trace_id);
            s.span_id = self.id(&s.span_id);
            s.parent_span_id = self.id(&s.parent_span_id);
            s.start_time_unix_nano = self.time(s.start_time_unix_nano);
            s.end_time_unix_nano = self.time(s.end_time_unix_nano);
            for e in &mut s.events {
                e.time_unix_nano = self.time(e.time_unix_nano);
            }
            for l in &mut s.links {
                l.trace_id = self.id(&l.trace_id);
                l.span_id = self.id(&l.span_id);
            }
        }
    }
}

fn first_start(batches: &[(Batch, String)]) -> Option<u64> {
    batches
        .iter()
        .filter_map(|(b, _)| match b {
            Batch::Traces(r) => Some(r),
            _ => None,
        })
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.start_time_unix_nano)
        .min()
}

fn read_exported(path: &std::path::Path) -> Vec<ExportTraceServiceRequest> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("{\"resourceSpans\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn span_count(reqs: &[ExportTraceServiceRequest]) -> usize {
    reqs.iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

fn service_of(r: &ExportTraceServiceRequest) -> Vec<String> {
    r.resource_spans
        .iter()
        .map(|rs| {
            rs.resource
                .as_ref()
                .and_then(|res| ragwatch::attributes::service_name(&res.attributes))
                .unwrap_or("unknown_service")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_traffic_of_every_library_gives_no_verdict() {
    ragwatch::service::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = harness::start(&default_config(dir.path())).await;
    let url = harness::grpc_url(&s);
    let mut traces = TraceServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let mut metrics = MetricsServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let mut logs = LogsServiceClient::connect(url).await.expect("connect");

    let mut files: Vec<PathBuf> = fixtures::files();
    files.extend(fixtures::files_in(&fixtures::agents_dir()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let mut sent_spans = 0usize;
    let mut services = BTreeSet::new();
    for replay in 0..REPLAYS {
        for f in &files {
            let batches = fixtures::load(f);
            let start = first_start(&batches).expect("a capture with spans");
            // Replays follow one another a minute apart in span time.
            let mut ids = Renamer::new(start, now + replay as u64 * 60_000_000_000);
            for (b, _) in batches {
                match b {
                    Batch::Traces(mut r) => {
                        ids.traces(&mut r);
                        sent_spans += span_count(std::slice::from_ref(&r));
                        services.extend(service_of(&r));
                        traces.export(r).await.expect("traces accepted");
                    }
                    Batch::Metrics(r) => {
                        metrics.export(r).await.expect("metrics accepted");
                    }
                    Batch::Logs(r) => {
                        logs.export(r).await.expect("logs accepted");
                    }
                }
            }
        }
    }
    // A last trace of its own service: its SLI appears only at an SLO evaluation after its
    // event, and so after every earlier trace's (it is flushed last: its root came last).
    let mut ids = Renamer::new(0, 0);
    for (b, _) in fixtures::load(&fixtures::dir().join("none-normal.jsonl")) {
        let Batch::Traces(mut r) = b else { continue };
        ids.traces(&mut r);
        for rs in &mut r.resource_spans {
            let res = rs.resource.get_or_insert_with(Default::default);
            res.attributes.retain(|kv| kv.key != "service.name");
            ragwatch::attributes::put(
                &mut res.attributes,
                "service.name",
                Value::StringValue("sentinel".into()),
            );
        }
        sent_spans += span_count(std::slice::from_ref(&r));
        traces.export(r).await.expect("sentinel accepted");
    }

    let out = dir.path().join("otlp.jsonl");
    assert!(
        harness::eventually(Duration::from_secs(60), || span_count(&read_exported(&out))
            >= sent_spans)
        .await,
        "every span exported: {} of {sent_spans}",
        span_count(&read_exported(&out))
    );
    let prom = format!(
        "http://{}/metrics",
        s.exporter_addr("prometheus").expect("prometheus exporter")
    );
    let scrape = || async {
        reqwest::get(&prom)
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    };
    assert!(
        harness::eventually_async(Duration::from_secs(30), || async {
            scrape()
                .await
                .lines()
                .any(|l| l.starts_with("rag_slo_sli_ratio{") && l.contains("service=\"sentinel\""))
        })
        .await,
        "the SLOs were evaluated after the last trace: {}",
        scrape()
            .await
            .lines()
            .filter(|l| l.contains("slo"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // No finding on any span, no anomaly mark.
    let exported = read_exported(&out);
    assert_eq!(
        span_count(&exported),
        sent_spans,
        "nothing lost, nothing doubled"
    );
    let mut findings = Vec::new();
    let mut anomalies = Vec::new();
    for (svc, s) in exported.iter().flat_map(|r| {
        r.resource_spans.iter().flat_map(|rs| {
            let svc = rs
                .resource
                .as_ref()
                .and_then(|res| ragwatch::attributes::service_name(&res.attributes))
                .unwrap_or("?")
                .to_string();
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(move |s| (svc.clone(), s))
        })
    }) {
        for e in s.events.iter().filter(|e| e.name == "rag.finding") {
            let what = e
                .attributes
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value.as_ref().map(show)))
                .collect::<Vec<_>>()
                .join(" ");
            findings.push(format!("{svc} {:?}: {what}", s.name));
        }
        if s.attributes.iter().any(|kv| kv.key == "rag.anomaly") {
            anomalies.push(format!("{svc} {:?}", s.name));
        }
        if let Some(st) = ragwatch::attributes::get_str(&s.attributes, "rag.trace.bottleneck.stage")
        {
            assert!(STAGES.contains(&st), "bottleneck stage {st:?} on {svc}");
        }
    }
    assert!(
        findings.is_empty(),
        "findings on normal traffic:\n{}",
        findings.join("\n")
    );
    assert!(
        anomalies.is_empty(),
        "anomalies on normal traffic: {anomalies:?}"
    );

    // No verdict published (SLO burn, budget, anomaly), no alert, no counter an alert reads.
    let published: Vec<String> = s
        .findings()
        .recent()
        .iter()
        .map(|f| format!("{} {:?}: {}", f.name, f.labels, f.description))
        .collect();
    assert_eq!(s.findings().published(), 0, "{published:#?}");
    let text = scrape().await;
    for counter in [
        "rag_trace_findings_total{",
        "rag_unpriced_calls_total{",
        "rag_anomalies_total{",
    ] {
        let hits: Vec<&str> = text.lines().filter(|l| l.starts_with(counter)).collect();
        assert!(hits.is_empty(), "{hits:#?}");
    }
    // Every `stage` label is one of the fixed names.
    let mut stages = BTreeSet::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(rest) = l.split("stage=\"").nth(1)
            && let Some(v) = rest.split('"').next()
        {
            stages.insert(v.to_string());
        }
    }
    assert!(
        stages.iter().all(|st| STAGES.contains(&st.as_str())),
        "stage labels outside the fixed set: {stages:?}"
    );
    assert!(
        stages.contains("llm") && stages.contains("retrieval"),
        "{stages:?}"
    );
    let alerts: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("http://{}/api/v1/alerts", s.admin_addr()))
            .await
            .expect("alerts api")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(
        alerts["data"]["alerts"].as_array().map(Vec::len),
        Some(0),
        "{alerts}"
    );
    // Every library's service was seen.
    assert!(services.len() >= files.len() - 1, "{services:?}");
    s.shutdown().await;
}

fn show(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
