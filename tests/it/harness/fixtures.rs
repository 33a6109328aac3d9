//! The real captures vendored in tests/fixtures/otlp/, and order-insensitive comparison of requests.

use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use ragwatch::signal::Batch;

pub fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp"))
}

/// The agent captures (agent frameworks, tools, MCP).
pub fn agents_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/agents"
    ))
}

/// Every fixture file, sorted.
pub fn files() -> Vec<PathBuf> {
    files_in(&dir())
}

/// Every `.jsonl` file of a fixture folder, sorted.
pub fn files_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/fixtures is in the repository")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures found");
    v
}

/// Each line of a fixture file with its raw JSON text.
pub fn load(path: &PathBuf) -> Vec<(Batch, String)> {
    let text = std::fs::read_to_string(path).expect("read fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let b = if line.starts_with("{\"resourceSpans\"") {
                Batch::Traces(serde_json::from_str(line).expect("trace line"))
            } else if line.starts_with("{\"resourceMetrics\"") {
                Batch::Metrics(serde_json::from_str(line).expect("metrics line"))
            } else {
                Batch::Logs(serde_json::from_str(line).expect("logs line"))
            };
            (b, line.to_string())
        })
        .collect()
}

/// Each item with its resource and scope, encoded, sorted: two lists of requests hold the same
/// telemetry exactly when these are equal, however the items were batched.
pub type Canonical = Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>;

pub fn canonical_traces(reqs: &[ExportTraceServiceRequest]) -> Canonical {
    let mut v = Vec::new();
    for rs in reqs.iter().flat_map(|r| &r.resource_spans) {
        let res = (
            rs.resource.clone().unwrap_or_default().encode_to_vec(),
            rs.schema_url.clone(),
        );
        for ss in &rs.scope_spans {
            let scope = (
                ss.scope.clone().unwrap_or_default().encode_to_vec(),
                ss.schema_url.clone(),
            );
            for s in &ss.spans {
                v.push((key(&res), key(&scope), s.encode_to_vec()));
            }
        }
    }
    v.sort();
    v
}

pub fn canonical_metrics(reqs: &[ExportMetricsServiceRequest]) -> Canonical {
    let mut v = Vec::new();
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        let res = (
            rm.resource.clone().unwrap_or_default().encode_to_vec(),
            rm.schema_url.clone(),
        );
        for sm in &rm.scope_metrics {
            let scope = (
                sm.scope.clone().unwrap_or_default().encode_to_vec(),
                sm.schema_url.clone(),
            );
            for m in &sm.metrics {
                v.push((key(&res), key(&scope), m.encode_to_vec()));
            }
        }
    }
    v.sort();
    v
}

pub fn canonical_logs(reqs: &[ExportLogsServiceRequest]) -> Canonical {
    let mut v = Vec::new();
    for rl in reqs.iter().flat_map(|r| &r.resource_logs) {
        let res = (
            rl.resource.clone().unwrap_or_default().encode_to_vec(),
            rl.schema_url.clone(),
        );
        for sl in &rl.scope_logs {
            let scope = (
                sl.scope.clone().unwrap_or_default().encode_to_vec(),
                sl.schema_url.clone(),
            );
            for l in &sl.log_records {
                v.push((key(&res), key(&scope), l.encode_to_vec()));
            }
        }
    }
    v.sort();
    v
}

fn key((bytes, schema): &(Vec<u8>, String)) -> Vec<u8> {
    let mut k = bytes.clone();
    k.push(0xff);
    k.extend_from_slice(schema.as_bytes());
    k
}

/// Split batches by signal.
pub fn split(
    batches: &[Batch],
) -> (
    Vec<ExportTraceServiceRequest>,
    Vec<ExportMetricsServiceRequest>,
    Vec<ExportLogsServiceRequest>,
) {
    let (mut t, mut m, mut l) = (Vec::new(), Vec::new(), Vec::new());
    for b in batches {
        match b {
            Batch::Traces(r) => t.push(r.clone()),
            Batch::Metrics(r) => m.push(r.clone()),
            Batch::Logs(r) => l.push(r.clone()),
        }
    }
    (t, m, l)
}
