use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::*;
use crate::derived::{DerivedMetrics, Limits};

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}
fn i(k: &str, v: i64) -> KeyValue {
    kv(k, Value::IntValue(v))
}

fn span(attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        name: "openai.chat".into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_500_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn store(max_series: usize) -> Arc<DerivedMetrics> {
    Arc::new(DerivedMetrics::new(
        super::m::DEFS,
        Limits {
            max_series_per_metric: max_series,
            series_ttl: Duration::from_secs(600),
        },
    ))
}

fn processor(config: GenAiConfig) -> (GenAiProcessor, Arc<DerivedMetrics>) {
    let d = store(2000);
    (
        GenAiProcessor::new(config, d.clone()).expect("processor"),
        d,
    )
}

fn get<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    let mut found = span.attributes.iter().filter(|kv| kv.key == key);
    let first = found.next();
    assert!(found.next().is_none(), "{key} written twice");
    first
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn f(span: &Span, key: &str) -> f64 {
    match get(span, key) {
        Some(Value::DoubleValue(d)) => *d,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn an_aliased_llm_span_gets_stage_canonical_names_and_cost() {
    let (p, _) = processor(GenAiConfig::default());
    // OpenLLMetry-style older spellings only.
    let mut sp = span(vec![
        s("llm.request.type", "chat"),
        s("gen_ai.system", "openai"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        i("gen_ai.usage.prompt_tokens", 210),
        i("gen_ai.usage.completion_tokens", 60),
    ]);
    p.enrich(&mut sp, "svc", Instant::now());
    assert_eq!(
        get(&sp, a::RAG_STAGE),
        Some(&Value::StringValue("llm".into()))
    );
    assert_eq!(
        get(&sp, a::GEN_AI_INPUT_TOKENS),
        Some(&Value::IntValue(210))
    );
    assert_eq!(
        get(&sp, a::GEN_AI_OUTPUT_TOKENS),
        Some(&Value::IntValue(60))
    );
    assert_eq!(
        get(&sp, a::GEN_AI_PROVIDER_NAME),
        Some(&Value::StringValue("openai".into()))
    );
    // gpt-4o-mini: $0.15 / 1M input, $0.60 / 1M output.
    let expected = 210.0 * 0.15 / 1e6 + 60.0 * 0.60 / 1e6;
    assert!((f(&sp, a::COST_USD) - expected).abs() < 1e-12);
    assert!((f(&sp, a::COST_INPUT_USD) - 210.0 * 0.15 / 1e6).abs() < 1e-12);
    assert!((f(&sp, a::COST_OUTPUT_USD) - 60.0 * 0.60 / 1e6).abs() < 1e-12);
    assert_eq!(
        get(&sp, a::COST_SOURCE),
        Some(&Value::StringValue("computed".into()))
    );
    assert_eq!(
        get(&sp, a::COST_PRICE_ID),
        Some(&Value::StringValue("openai/gpt-4o-mini".into()))
    );
    // gen_ai.request.model was already there: not written again (get() asserts uniqueness).
    assert!(get(&sp, a::GEN_AI_REQUEST_MODEL).is_some());
}

#[test]
fn what_the_application_set_is_never_overwritten() {
    let (p, _) = processor(GenAiConfig::default());
    let mut sp = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        i("gen_ai.usage.input_tokens", 10),
        i("gen_ai.usage.output_tokens", 5),
        s(a::RAG_STAGE, "my-own-stage"),
        kv(a::COST_USD, Value::DoubleValue(42.0)),
    ]);
    let before = sp.attributes.clone();
    p.enrich(&mut sp, "svc", Instant::now());
    assert_eq!(&sp.attributes[..before.len()], &before[..]);
    assert_eq!(
        get(&sp, a::RAG_STAGE),
        Some(&Value::StringValue("my-own-stage".into()))
    );
    assert_eq!(get(&sp, a::COST_USD), Some(&Value::DoubleValue(42.0)));
    assert!(
        get(&sp, a::COST_SOURCE).is_none(),
        "no partial cost attributes beside the app's own"
    );
}

#[test]
fn an_unknown_model_is_unpriced_never_guessed() {
    let (p, d) = processor(GenAiConfig::default());
    let mut sp = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "acme-brain-9000"),
        i("gen_ai.usage.input_tokens", 100),
        i("gen_ai.usage.output_tokens", 50),
    ]);
    p.enrich(&mut sp, "svc", Instant::now());
    assert_eq!(get(&sp, a::COST_UNPRICED), Some(&Value::BoolValue(true)));
    assert!(get(&sp, a::COST_USD).is_none());
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(
            r#"rag_unpriced_calls_total{service="svc",provider="openai",model="acme-brain-9000"} 1"#
        ),
        "{text}"
    );
}

#[test]
fn user_prices_override_the_builtin_table() {
    let prices = crate::genai::prices::parse_entries(
        "prices:\n  - id: mine/gpt-4o-mini\n    provider: openai\n    model: gpt-4o-mini\n    input: 1.0\n    output: 2.0\n",
    )
    .expect("entries");
    let (p, _) = processor(GenAiConfig {
        prices,
        ..GenAiConfig::default()
    });
    let mut sp = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        i("gen_ai.usage.input_tokens", 1000),
        i("gen_ai.usage.output_tokens", 500),
    ]);
    p.enrich(&mut sp, "svc", Instant::now());
    assert!((f(&sp, a::COST_USD) - (1000.0 * 1.0 / 1e6 + 500.0 * 2.0 / 1e6)).abs() < 1e-12);
    assert_eq!(
        get(&sp, a::COST_PRICE_ID),
        Some(&Value::StringValue("mine/gpt-4o-mini".into()))
    );
}

#[test]
fn redaction_drops_content_and_keeps_its_length() {
    let (p, _) = processor(GenAiConfig {
        redact_content: true,
        ..GenAiConfig::default()
    });
    let mut sp = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        s("input.value", "What is RAG?"),
        s(
            "llm.output_messages.0.message.content",
            "Retrieval-augmented generation.",
        ),
        s("gen_ai.prompt.0.content", "héllo"),
        s("http.route", "/ask"),
    ]);
    p.enrich(&mut sp, "svc", Instant::now());
    assert_eq!(
        get(&sp, "input.value"),
        Some(&Value::StringValue("[redacted: 12 chars]".into()))
    );
    assert_eq!(
        get(&sp, "llm.output_messages.0.message.content"),
        Some(&Value::StringValue("[redacted: 31 chars]".into()))
    );
    assert_eq!(
        get(&sp, "gen_ai.prompt.0.content"),
        Some(&Value::StringValue("[redacted: 5 chars]".into()))
    );
    assert_eq!(
        get(&sp, "http.route"),
        Some(&Value::StringValue("/ask".into()))
    );
}

#[test]
fn the_lint_finds_each_problem() {
    let (p, d) = processor(GenAiConfig {
        mark_instrumentation_issues: true,
        ..GenAiConfig::default()
    });
    let mut streaming = span(vec![
        s("gen_ai.operation.name", "chat"),
        kv("gen_ai.is_streaming", Value::BoolValue(true)),
    ]);
    p.enrich(&mut streaming, "svc", Instant::now());
    let issues = match get(&streaming, a::INSTRUMENTATION_ISSUES) {
        Some(Value::ArrayValue(arr)) => arr
            .values
            .iter()
            .filter_map(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert!(
        issues.contains(&issue::STREAMING_WITHOUT_USAGE.to_string()),
        "{issues:?}"
    );
    assert!(
        issues.contains(&issue::LLM_WITHOUT_MODEL.to_string()),
        "{issues:?}"
    );

    let mut contradictory = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.system", "openai"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        i("gen_ai.usage.input_tokens", 100),
        i("gen_ai.usage.output_tokens", 50),
        i("gen_ai.usage.total_tokens", 999),
    ]);
    p.enrich(&mut contradictory, "svc", Instant::now());
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    for issue in [
        issue::STREAMING_WITHOUT_USAGE,
        issue::LLM_WITHOUT_MODEL,
        issue::DEPRECATED_ATTRIBUTE,
        issue::CONTRADICTORY_TOKENS,
    ] {
        assert!(
            text.contains(&format!(
                r#"rag_instrumentation_issues_total{{service="svc",issue="{issue}"}} 1"#
            )),
            "{issue} not counted:\n{text}"
        );
    }
}

#[test]
fn a_hundred_thousand_model_names_stay_within_the_cardinality_limit() {
    let d = store(2000);
    let p = GenAiProcessor::new(GenAiConfig::default(), d.clone()).expect("processor");
    let now = Instant::now();
    for n in 0..100_000 {
        let mut sp = span(vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.request.model", &format!("model-{n}")),
            i("gen_ai.usage.input_tokens", 1),
        ]);
        p.enrich(&mut sp, "svc", now);
    }
    for metric in [m::CALLS, m::UNPRICED, m::OP_DURATION, m::TOKENS] {
        assert!(
            d.series(metric) <= 2001,
            "metric {metric}: {} series",
            d.series(metric)
        );
    }
    // rag_llm_calls_total: 2000 model series, the other 98,000 calls in the overflow series.
    assert_eq!(d.overflowed(m::CALLS), 98_000);
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(r#"rag_llm_calls_total{otel_metric_overflow="true"} 98000"#),
        "overflow series"
    );
}

#[test]
fn redaction_covers_genai_log_events_and_leaves_other_logs_alone() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let (mut p, _) = processor(GenAiConfig {
        redact_content: true,
        ..GenAiConfig::default()
    });
    let body = |t: &str| {
        Some(AnyValue {
            value: Some(Value::StringValue(t.into())),
        })
    };
    let records = vec![
        LogRecord {
            event_name: "gen_ai.user.message".into(),
            body: body("What is RAG?"),
            ..Default::default()
        },
        LogRecord {
            attributes: vec![
                s("event.name", "gen_ai.choice"),
                s("gen_ai.output.messages", "An answer"),
            ],
            body: body("An answer"),
            ..Default::default()
        },
        LogRecord {
            body: body("GET /healthz 200"),
            ..Default::default()
        },
    ];
    let batch = Batch::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    let mut out = Vec::new();
    p.on_input(batch, Instant::now(), &mut out);
    let Batch::Logs(r) = &out[0] else {
        panic!("logs stay logs")
    };
    let recs = &r.resource_logs[0].scope_logs[0].log_records;
    let body_of = |l: &LogRecord| match l.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(body_of(&recs[0]), "[redacted: 12 chars]");
    assert_eq!(body_of(&recs[1]), "[redacted: 9 chars]");
    assert_eq!(
        recs[1].attributes[1]
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref()),
        Some(&Value::StringValue("[redacted: 9 chars]".into()))
    );
    assert_eq!(body_of(&recs[2]), "GET /healthz 200");
}

#[test]
fn a_prompt_near_the_context_window_is_a_finding() {
    let (p, _) = processor(GenAiConfig::default());
    // gpt-4o-mini has a 128,000-token window: 120,000 is 93.75%, 100,000 is 78%.
    let mut near = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        i("gen_ai.usage.input_tokens", 120_000),
    ]);
    let mut far = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        i("gen_ai.usage.input_tokens", 100_000),
    ]);
    p.enrich(&mut near, "svc", Instant::now());
    p.enrich(&mut far, "svc", Instant::now());
    assert_eq!(near.events.len(), 1);
    assert_eq!(near.events[0].name, "rag.finding");
    let desc = near.events[0]
        .attributes
        .iter()
        .find(|kv| kv.key == "description")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref());
    assert_eq!(
        desc,
        Some(&Value::StringValue(
            "120000 input tokens are 94% of the 128000-token context window of gpt-4o-mini".into()
        ))
    );
    assert!(far.events.is_empty());
}

// Found by fuzz/fuzz_targets/genai_view.rs: token counts are read from strings too, so input
// "18446744073709551615" plus output 1 overflowed the check of the total (a panic with debug
// assertions). A sum past u64::MAX cannot equal any total: contradictory.
#[test]
fn token_counts_whose_sum_overflows_are_contradictory_not_a_panic() {
    let sp = span(vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        s("gen_ai.usage.input_tokens", "18446744073709551615"),
        i("gen_ai.usage.output_tokens", 1),
        i("gen_ai.usage.total_tokens", 0),
    ]);
    let v = view(&sp);
    assert_eq!(v.tokens.input, Some(u64::MAX));
    assert!(lint(&v, Stage::Llm).contains(&issue::CONTRADICTORY_TOKENS));
}
