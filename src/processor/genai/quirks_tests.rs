//! Library quirks, each on the exact shape a capture shows: what the `genai` processor writes
//! (and does not) on spans whose libraries spell things their own way.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};

use super::*;
use crate::derived::defs as metrics;
use crate::genai::tests::{fixture_span, load, spans};
use crate::genai::view;
use crate::stage::Stage;

fn enriched(mut span: Span) -> (Span, std::sync::Arc<crate::derived::DerivedMetrics>) {
    let derived = std::sync::Arc::new(crate::derived::DerivedMetrics::new(
        metrics::DEFS,
        crate::derived::Limits::default(),
    ));
    let p = GenAiProcessor::new(GenAiConfig::default(), derived.clone()).expect("processor");
    p.enrich(&mut span, "svc", std::time::Instant::now());
    (span, derived)
}

fn has_attr(span: &Span, key: &str) -> bool {
    span.attributes.iter().any(|kv| kv.key == key)
}

#[test]
fn openlit_non_streaming_chat_has_no_time_to_first_token() {
    // OpenLIT chat 7c784643382b7a3a: gen_ai.request.stream = false and
    // gen_ai.server.time_to_first_token = 0.1931924819946289, the whole call.
    let span = fixture_span("openlit-normal.jsonl", "7c784643382b7a3a");
    let v = view(&span);
    assert_eq!(v.streaming, Some(false));
    assert_eq!(v.time_to_first_token, None);
    let (span, d) = enriched(span);
    assert!(!has_attr(&span, crate::names::attrs::LLM_TTFT_MS));
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(!text.contains("time_to_first_chunk_count"), "{text}");
    // Its streaming sibling 3f2c6daffaf6a42a keeps its TTFT of 0.12265753746032715 s, to the
    // nanosecond: 122.657537 ms.
    let (span, _) = enriched(fixture_span("openlit-normal.jsonl", "3f2c6daffaf6a42a"));
    let ttft = span
        .attributes
        .iter()
        .find(|kv| kv.key == crate::names::attrs::LLM_TTFT_MS)
        .and_then(|kv| match kv.value.as_ref()?.value {
            Some(Value::DoubleValue(ms)) => Some(ms),
            _ => None,
        });
    assert!(
        ttft.is_some_and(|ms| (ms - 122.657537).abs() < 1e-9),
        "{ttft:?}"
    );
}

#[test]
fn an_openllmetry_stream_that_lost_events_has_no_time_to_first_token() {
    // OpenLLMetry chat e44c18086de5a0fe streams: its first chunk event gives 131.7 ms. Had the
    // SDK dropped its earliest events (it keeps the last 128), the earliest one left is not the
    // first token: unknown, and the lint says why.
    let mut span = fixture_span("openllmetry-normal.jsonl", "e44c18086de5a0fe");
    assert!(view(&span).time_to_first_token.is_some());
    let chunks = span
        .events
        .iter()
        .filter(|e| e.name == "gen_ai.content.completion.chunk")
        .count();
    assert!(chunks >= 2, "{chunks}");
    span.events.remove(0);
    span.dropped_events_count = 1;
    let v = view(&span);
    assert_eq!(v.streaming, Some(true));
    assert!(v.events_dropped);
    assert_eq!(v.time_to_first_token, None);
    assert_eq!(lint(&v, Stage::Llm), vec![issue::STREAM_EVENTS_DROPPED]);
}

#[test]
fn an_openlit_post_span_is_no_genai_span() {
    // OpenLIT's HTTP client span under a chat call carries no GenAI attribute.
    let requests = load("openlit-normal.jsonl");
    let posts: Vec<&Span> = spans(&requests).filter(|s| s.name == "POST").collect();
    assert_eq!(posts.len(), 10);
    for p in posts {
        assert_eq!(view(p).stage, None, "{:?}", p.attributes);
    }
}

#[test]
fn an_openinference_failed_call_is_neither_unpriced_nor_a_lint_issue() {
    // OpenInference's failed stream (a 429): status ERROR, no llm.model_name, no token counts;
    // the model only inside llm.invocation_parameters. Built from the streaming call
    // 5355b0810624b57b of the capture by removing what a failed call lacks.
    let mut span = fixture_span("openinference-normal-http.jsonl", "5355b0810624b57b");
    span.attributes.retain(|kv| {
        kv.key != "llm.model_name"
            && !kv.key.starts_with("llm.token_count")
            && !kv.key.starts_with("llm.output_messages")
            && kv.key != "output.value"
    });
    span.events.retain(|e| e.name != "First Token Stream Event");
    span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "Error code: 429".into(),
    });
    let v = view(&span);
    assert_eq!(v.stage, Some(Stage::Llm));
    assert_eq!(v.model(), Some("gpt-4o-mini"));
    assert_eq!(v.streaming, Some(true));
    assert!(lint(&v, Stage::Llm).is_empty());
    let (span, d) = enriched(span);
    assert!(!has_attr(&span, crate::names::attrs::COST_UNPRICED));
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(!text.contains("rag_unpriced_calls_total{"), "{text}");
    assert!(
        !text.contains("rag_instrumentation_issues_total{"),
        "{text}"
    );
    assert!(
        text.contains(r#"model="gpt-4o-mini""#) && !text.contains(r#"model="unknown""#),
        "{text}"
    );
}

#[test]
fn a_supplied_cost_has_no_parts() {
    // OpenLIT chat 7c784643382b7a3a supplies gen_ai.usage.cost = 6.749999999999999e-05.
    let (span, _) = enriched(fixture_span("openlit-normal.jsonl", "7c784643382b7a3a"));
    let a = crate::names::attrs::COST_USD;
    assert_eq!(
        span.attributes
            .iter()
            .find(|kv| kv.key == a)
            .and_then(|kv| kv.value.as_ref()?.value.clone()),
        Some(Value::DoubleValue(6.749999999999999e-05))
    );
    for part in [
        crate::names::attrs::COST_INPUT_USD,
        crate::names::attrs::COST_OUTPUT_USD,
        crate::names::attrs::COST_CACHE_READ_USD,
        crate::names::attrs::COST_CACHE_WRITE_USD,
    ] {
        assert!(!has_attr(&span, part), "{part}");
    }
}
#[test]
fn the_newest_cache_write_name_and_aggregate_usage_never_summed_again() {
    let span = |attrs: Vec<KeyValue>| Span {
        name: "s".into(),
        attributes: attrs,
        ..Default::default()
    };
    let int = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    };
    let text = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    // gen_ai.usage.cache_write.input_tokens (newest) is read beside cache_creation.
    let s = span(vec![
        text("gen_ai.operation.name", "chat"),
        text("gen_ai.request.model", "claude-sonnet-4"),
        int("gen_ai.usage.input_tokens", 1000),
        int("gen_ai.usage.cache_write.input_tokens", 600),
    ]);
    assert_eq!(view(&s).tokens.cache_write, Some(600));
    // pydantic-ai's agent span repeats its chat calls' usage under gen_ai.aggregated_usage.*:
    // not the span's own tokens, so never priced or summed a second time.
    let s = span(vec![
        text("gen_ai.operation.name", "invoke_agent"),
        text("gen_ai.agent.name", "rag_assistant"),
        int("gen_ai.aggregated_usage.input_tokens", 1246),
        int("gen_ai.aggregated_usage.output_tokens", 86),
    ]);
    let v = view(&s);
    assert_eq!(v.stage, Some(Stage::Agent));
    assert!(!v.tokens.any());
    assert_eq!(v.agent_name, Some("rag_assistant"));
}

#[test]
fn mcp_spans_are_tool_calls_or_protocol() {
    let text = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let span = |name: &str, attrs: Vec<KeyValue>| Span {
        name: name.into(),
        attributes: attrs,
        ..Default::default()
    };
    // The conventions: mcp.method.name, and the tool for tools/call.
    let s = span(
        "tools/call search_docs",
        vec![
            text("mcp.method.name", "tools/call"),
            text("gen_ai.tool.name", "search_docs"),
            text("mcp.session.id", "s-1"),
        ],
    );
    let v = view(&s);
    assert_eq!(
        (v.stage, v.tool_name),
        (Some(Stage::Tool), Some("search_docs"))
    );
    let s = span("tools/list", vec![text("mcp.method.name", "tools/list")]);
    assert_eq!(view(&s).stage, Some(Stage::Other));
    // OpenLLMetry's MCP spans say their method only in traceloop.entity.input.
    let s = span(
        "tools/list.mcp",
        vec![text(
            "traceloop.entity.input",
            r#"{"method":"tools/list","params":null}"#,
        )],
    );
    let v = view(&s);
    assert_eq!(
        (v.stage, v.mcp_method),
        (Some(Stage::Other), Some("tools/list"))
    );
    let s = span(
        "tools/call.mcp",
        vec![text(
            "traceloop.entity.input",
            r#"{"method":"tools/call","params":{"name":"calculator"}}"#,
        )],
    );
    assert_eq!(view(&s).stage, Some(Stage::Tool));
}
