use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

use super::*;
use crate::analysis::CriticalPathAnalyzer;
use crate::analysis::assembly::{AssemblyCounters, TraceAssembly, TraceAssemblyConfig};
use crate::derived::Limits;
use crate::processor::Processor;
use crate::signal::Batch;

const MS: u64 = 1_000_000;

fn span(id: u8, parent: Option<u8>, name: &str, stage: Option<&str>, start: u64, end: u64) -> Span {
    let mut attributes = Vec::new();
    if let Some(st) = stage {
        attributes.push(KeyValue {
            key: a::RAG_STAGE.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(st.into())),
            }),
            ..Default::default()
        });
    }
    Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: start * MS,
        end_time_unix_nano: end * MS,
        attributes,
        ..Default::default()
    }
}

/// Run spans through assembly with critical path and patterns; (span name, finding names).
fn findings(spans: Vec<Span>) -> (Vec<(String, Vec<String>)>, Arc<DerivedMetrics>) {
    let derived = Arc::new(DerivedMetrics::new(
        crate::genai::metrics::DEFS,
        Limits::default(),
    ));
    let mut p = TraceAssembly::new(
        TraceAssemblyConfig::default(),
        vec![
            Box::new(CriticalPathAnalyzer {
                min_share: 0.4,
                derived: derived.clone(),
            }),
            Box::new(PatternAnalyzer {
                config: PatternsConfig::default(),
                derived: derived.clone(),
            }),
        ],
        AssemblyCounters::default(),
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    p.on_input(Batch::Traces(req), t0, &mut out);
    p.on_tick(t0 + Duration::from_secs(3), &mut out);
    let mut result = Vec::new();
    for b in out {
        let Batch::Traces(r) = b else { continue };
        for s in r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            let names: Vec<String> = s
                .events
                .iter()
                .filter(|e| e.name == a::FINDING_EVENT)
                .filter_map(|e| match e.attributes[0].value.as_ref()?.value.as_ref()? {
                    Value::StringValue(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            if !names.is_empty() {
                result.push((s.name.clone(), names));
            }
        }
    }
    result.sort();
    (result, derived)
}

#[test]
fn sequential_calls_under_one_parent() {
    // Two LLM calls one after another take 600 of 1000 ms (>= 30%).
    let (f, d) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "chat-a", Some("llm"), 100, 400),
        span(3, Some(1), "chat-b", Some("llm"), 400, 700),
        span(4, Some(1), "embed", Some("embedding"), 0, 100),
    ]);
    assert!(
        f.contains(&("root".into(), vec!["sequential_calls".into()])),
        "{f:?}"
    );
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(
            r#"rag_trace_findings_total{finding="sequential_calls",service="unknown_service"} 1"#
        ),
        "{text}"
    );
}

#[test]
fn parallel_calls_are_not_sequential() {
    let (f, _) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "chat-a", Some("llm"), 100, 700),
        span(3, Some(1), "chat-b", Some("llm"), 150, 690),
    ]);
    assert!(
        f.iter()
            .all(|(_, n)| !n.contains(&"sequential_calls".to_string())),
        "{f:?}"
    );
}

#[test]
fn repeated_retrieval_and_retry() {
    let mut failed = span(5, Some(1), "chat", Some("llm"), 500, 600);
    failed.status = Some(Status {
        code: StatusCode::Error as i32,
        ..Default::default()
    });
    let (f, _) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "search", Some("retrieval"), 0, 10),
        span(3, Some(1), "search", Some("retrieval"), 20, 30),
        span(4, Some(1), "search", Some("retrieval"), 40, 50),
        failed,
        span(6, Some(1), "chat", Some("llm"), 650, 700),
    ]);
    assert!(f.contains(&("chat".into(), vec!["retry".into()])), "{f:?}");
    assert!(
        f.iter()
            .any(|(n, v)| n == "root" && v.contains(&"repeated_retrieval".to_string())),
        "{f:?}"
    );
}

#[test]
fn uninstrumented_gap_on_the_critical_path() {
    // The root does 800 of its 1000 ms itself, outside its one child.
    let (f, _) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "db", None, 0, 200),
    ]);
    assert!(
        f.contains(&("root".into(), vec!["uninstrumented_gap".into()])),
        "{f:?}"
    );
}

#[test]
fn slow_first_token() {
    let mut chat = span(2, Some(1), "chat", Some("llm"), 0, 2000);
    chat.attributes.push(KeyValue {
        key: a::LLM_TTFT_MS.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(1500.0)),
        }),
        ..Default::default()
    });
    let mut quick = span(3, Some(1), "chat-quick", Some("llm"), 2000, 2100);
    quick.attributes.push(KeyValue {
        key: a::LLM_TTFT_MS.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(90.0)),
        }),
        ..Default::default()
    });
    let (f, _) = findings(vec![span(1, None, "root", None, 0, 2100), chat, quick]);
    assert!(
        f.contains(&("chat".into(), vec!["slow_first_token".into()])),
        "{f:?}"
    );
    assert!(
        !f.iter().any(|(n, _)| n == "chat-quick"),
        "90 ms is under the 1 s threshold: {f:?}"
    );
}
