use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

use super::*;
use crate::derived::Limits;
use crate::processor::Processor;
use crate::processor::trace_assembly::critical_path::CriticalPathAnalyzer;
use crate::processor::trace_assembly::{AssemblyCounters, TraceAssembly, TraceAssemblyConfig};
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
    let (spans, derived) = analysed(spans);
    let mut result = Vec::new();
    for s in &spans {
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
    result.sort();
    (result, derived)
}

/// Run spans through assembly with critical path and patterns; the spans that come out.
fn analysed(spans: Vec<Span>) -> (Vec<Span>, Arc<DerivedMetrics>) {
    let derived = Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
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
    let spans = out
        .into_iter()
        .filter_map(|b| match b {
            Batch::Traces(r) => Some(r),
            _ => None,
        })
        .flat_map(|r| r.resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect();
    (spans, derived)
}

fn attr_of<'a>(spans: &'a [Span], name: &str, key: &str) -> Option<&'a Value> {
    let s = spans.iter().find(|s| s.name == name)?;
    crate::attributes::get(&s.attributes, key)
}

#[test]
fn an_http_client_span_under_a_model_call_is_part_of_the_llm_stage() {
    // OpenLIT: rag.query 0..1000 → embeddings 0..40 (POST 3..37), retrieval 40..90, chat
    // 90..1000 (POST 92..300). The chat span owns 910 ms on the path, its POST included.
    let (spans, d) = analysed(vec![
        span(1, None, "rag.query", None, 0, 1000),
        span(2, Some(1), "embeddings", Some("embedding"), 0, 40),
        span(3, Some(2), "POST", None, 3, 37),
        span(4, Some(1), "retrieval kb_docs", Some("retrieval"), 40, 90),
        span(5, Some(1), "chat gpt-4o-mini", Some("llm"), 90, 1000),
        span(6, Some(5), "POST", None, 92, 300),
    ]);
    let f = |k| attr_of(&spans, "rag.query", k).cloned();
    assert_eq!(
        f(a::TRACE_BOTTLENECK_STAGE),
        Some(Value::StringValue("llm".into()))
    );
    assert_eq!(
        f(a::TRACE_BOTTLENECK_SPAN_NAME),
        Some(Value::StringValue("chat gpt-4o-mini".into()))
    );
    assert_eq!(f(a::TRACE_BOTTLENECK_SHARE), Some(Value::DoubleValue(0.91)));
    assert_eq!(
        attr_of(&spans, "chat gpt-4o-mini", a::CRITICAL_PATH_MS),
        Some(&Value::DoubleValue(910.0))
    );
    // The chat's own time includes its HTTP client span's.
    assert_eq!(
        attr_of(&spans, "chat gpt-4o-mini", a::SELF_TIME_MS),
        Some(&Value::DoubleValue(910.0))
    );
    assert_eq!(
        f(&format!("{}llm.ms", a::TRACE_STAGE_PREFIX)),
        Some(Value::DoubleValue(910.0))
    );
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(r#"rag_bottleneck_traces_total{service="unknown_service",stage="llm"} 1"#),
        "{text}"
    );
    assert!(!text.contains("POST"), "{text}");
}

#[test]
fn the_applications_own_time_is_the_app_stage() {
    // The root does 800 of its 1000 ms itself.
    let (spans, d) = analysed(vec![
        span(1, None, "rag.query", None, 0, 1000),
        span(2, Some(1), "retrieval", Some("retrieval"), 0, 200),
    ]);
    let f = |k| attr_of(&spans, "rag.query", k).cloned();
    assert_eq!(
        f(a::TRACE_BOTTLENECK_STAGE),
        Some(Value::StringValue("app".into()))
    );
    assert_eq!(
        f(a::TRACE_BOTTLENECK_SPAN_NAME),
        Some(Value::StringValue("rag.query".into()))
    );
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(r#"rag_bottleneck_traces_total{service="unknown_service",stage="app"} 1"#),
        "{text}"
    );
    assert!(!text.contains("rag.query"), "{text}");
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
fn uninstrumented_gap_is_an_instrumentation_issue_not_a_finding() {
    // The root does 800 of its 1000 ms itself, outside its one child.
    let (f, d) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "db", None, 0, 200),
    ]);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(
        d.sample(
            "rag_instrumentation_issues_total",
            &[
                ("service", "unknown_service"),
                ("issue", "uninstrumented_gap")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn a_genai_spans_own_time_is_no_gap() {
    // OpenLIT's streaming chat: a short HTTP client span, then the model streams for 900 ms
    // inside the chat span. That is the model's time, not code nobody traced.
    let (f, d) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "chat gpt-4o-mini", Some("llm"), 0, 1000),
        span(3, Some(2), "POST", None, 0, 100),
    ]);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(d.series(crate::derived::defs::ISSUES), 0);
}

#[test]
fn an_agents_model_turns_are_not_sequential_calls() {
    // pydantic-ai: invoke_agent → chat, execute_tool, chat: each turn answers the last.
    let (f, _) = findings(vec![
        span(1, None, "agent.query", None, 0, 1000),
        span(
            2,
            Some(1),
            "invoke_agent rag_assistant",
            Some("agent"),
            0,
            1000,
        ),
        span(3, Some(2), "chat gpt-4o-mini", Some("llm"), 0, 450),
        span(4, Some(2), "chat gpt-4o-mini", Some("llm"), 460, 990),
    ]);
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn a_step_between_two_calls_breaks_the_run() {
    // chat, tool, chat under a plain parent: the second call may need the tool's result.
    let (f, _) = findings(vec![
        span(1, None, "root", None, 0, 1000),
        span(2, Some(1), "chat-a", Some("llm"), 0, 400),
        span(3, Some(1), "lookup", Some("tool"), 400, 500),
        span(4, Some(1), "chat-b", Some("llm"), 500, 990),
    ]);
    assert!(f.is_empty(), "{f:?}");
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
