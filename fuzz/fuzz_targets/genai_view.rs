//! Structured: arbitrary bytes steer the building of a trace export request whose spans carry
//! the attribute keys, event names and values the GenAI view reads (every spelling in
//! `ragwatch::genai::aliases::SPELLINGS`, indexed document and evaluation keys, odd values of
//! every type), with ids from a small pool so spans form trees, orphans, cycles and duplicates.
//! The request goes through the GenAI view of each span, then the analysis processors (GenAI
//! enrichment, trace assembly with critical path and patterns, quality, anomaly, SLOs).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use ragwatch::genai::aliases::SPELLINGS;

/// Keys beyond the alias table: prefixes the view matches with an index or a name after them,
/// resource and service keys, and keys it must ignore.
const MORE_KEYS: &[&str] = &[
    "retrieval.documents.0.document.score",
    "retrieval.documents.1.document.id",
    "retrieval.documents.18446744073709551615.document.content",
    "retrieval.documents.-1.document.score",
    "reranker.output_documents.0.document.score",
    "reranker.query",
    "annotations.0.annotation.score",
    "annotations.0.annotation.name",
    "evaluations.0.evaluation.score",
    "evaluations.65536.evaluation.label",
    "gen_ai.eval.faithfulness",
    "gen_ai.eval.",
    "db.vector.query.top_k",
    "gen_ai.retrieval.query.text",
    "traceloop.span.kind",
    "traceloop.entity.name",
    "gen_ai.",
    "llm.",
    "llm.x",
    "openinference.span.kind",
    "rag.stage",
    "rag.feedback.score",
    "user.feedback.score",
    "http.response.status_code",
    "error.type",
    "x.other",
    "",
];

/// Values that mean something to the view somewhere (stages, providers, models, numbers as text,
/// JSON documents), and some that mean nothing.
const STRINGS: &[&str] = &[
    "chat",
    "text_completion",
    "embeddings",
    "embedding",
    "rerank",
    "retrieval",
    "execute_tool",
    "invoke_agent",
    "LLM",
    "EMBEDDING",
    "RETRIEVER",
    "RERANKER",
    "CHAIN",
    "TOOL",
    "AGENT",
    "EVALUATOR",
    "task",
    "workflow",
    "openai",
    "anthropic",
    "aws.bedrock",
    "az.ai.openai",
    "gcp.vertex_ai",
    "gpt-4o",
    "gpt-4o-mini-2024-07-18",
    "claude-3-5-sonnet-20241022",
    "text-embedding-3-small",
    "unknown-model",
    "stop",
    "length",
    "[\"stop\"]",
    "42",
    "-1",
    "1e308",
    "NaN",
    "0.5",
    "true",
    "2025-01-01T00:00:00Z",
    "2025-13-45T99:99:99Z",
    "[{\"id\": \"d1\", \"score\": 0.9, \"content\": \"the answer\"}]",
    "[{\"id\": 1, \"score\": \"x\"}, null, 3]",
    "[{\"role\": \"assistant\", \"parts\": [{\"type\": \"text\", \"content\": \"hi\"}]}]",
    "{",
    "",
];

const EVENT_NAMES: &[&str] = &[
    "First Token Stream Event",
    "gen_ai.content.completion.chunk",
    "llm.content.completion.chunk",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "gen_ai.evaluation.result",
    "gen_ai.user.message",
    "gen_ai.choice",
    "db.query.result",
    "exception",
    "",
];

const EVENT_KEYS: &[&str] = &[
    "gen_ai.evaluation.name",
    "gen_ai.evaluation.score.value",
    "gen_ai.evaluation.score.label",
    "db.query.result.id",
    "db.query.result.score",
    "gen_ai.prompt",
    "gen_ai.completion",
    "exception.type",
];

const NAMES: &[&str] = &[
    "rag.query",
    "chat gpt-4o",
    "openai.chat",
    "embeddings text-embedding-3-small",
    "retrieve",
    "ChatOpenAI",
    "",
];

const SERVICES: &[&str] = &["rag-api", "rag-worker", ""];

/// 1 ms in ns: times are a base plus small multiples of it, or anything.
const MS: u64 = 1_000_000;
const BASE: u64 = 1_700_000_000_000 * MS;

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> Result<&'a str> {
    u.choose(from).copied()
}

fn key(u: &mut Unstructured<'_>, extra: &[&'static str]) -> Result<String> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=5 => SPELLINGS[u.choose_index(SPELLINGS.len())?].key.to_string(),
        6 | 7 => pick(u, MORE_KEYS)?.to_string(),
        8 if !extra.is_empty() => pick(u, extra)?.to_string(),
        _ => u.arbitrary::<String>()?,
    })
}

fn value(u: &mut Unstructured<'_>, depth: u8) -> Result<Option<Value>> {
    Ok(Some(match u.int_in_range(0..=11u8)? {
        0..=2 => Value::StringValue(pick(u, STRINGS)?.to_string()),
        3 => Value::StringValue(u.arbitrary()?),
        4 => Value::IntValue(*u.choose(&[0, 1, -1, 7, 1000, 128_000, i64::MAX, i64::MIN])?),
        5 => Value::IntValue(u.arbitrary()?),
        6 => Value::DoubleValue(*u.choose(&[
            0.0,
            0.5,
            1.0,
            -1.0,
            1e300,
            f64::NAN,
            f64::INFINITY,
            -0.0,
        ])?),
        7 => Value::DoubleValue(u.arbitrary()?),
        8 => Value::BoolValue(u.arbitrary()?),
        9 => Value::BytesValue(u.arbitrary()?),
        10 if depth < 2 => {
            let n = u.int_in_range(0..=4u8)?;
            let mut values = Vec::new();
            for _ in 0..n {
                values.push(AnyValue {
                    value: value(u, depth + 1)?,
                });
            }
            Value::ArrayValue(ArrayValue { values })
        }
        11 if depth < 2 => Value::KvlistValue(KeyValueList {
            values: attributes(u, depth + 1, 3, &[])?,
        }),
        _ => return Ok(None),
    }))
}

fn attributes(
    u: &mut Unstructured<'_>,
    depth: u8,
    max: u8,
    extra: &[&'static str],
) -> Result<Vec<KeyValue>> {
    let n = u.int_in_range(0..=max)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(KeyValue {
            key: key(u, extra)?,
            value: Some(AnyValue {
                value: value(u, depth)?,
            }),
            ..Default::default()
        });
    }
    Ok(out)
}

fn time(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => 0,
        1 => u.arbitrary()?,
        _ => BASE + u64::from(u.int_in_range(0..=5000u16)?) * MS,
    })
}

/// Ids from a small pool so that parents are found: trace ids 1..=2 (and sometimes odd
/// lengths), span ids 1..=8.
fn id(u: &mut Unstructured<'_>, len: usize, pool: u8) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Vec::new(),
        1 => u.arbitrary()?,
        _ => {
            let mut v = vec![0u8; len];
            v[len - 1] = u.int_in_range(1..=pool)?;
            v
        }
    })
}

fn span(u: &mut Unstructured<'_>) -> Result<Span> {
    let start = time(u)?;
    let end = if u.ratio(1u8, 8)? {
        time(u)?
    } else {
        start.saturating_add(u64::from(u.int_in_range(0..=3000u16)?) * MS)
    };
    let mut events = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        events.push(Event {
            time_unix_nano: time(u)?,
            name: pick(u, EVENT_NAMES)?.to_string(),
            attributes: attributes(u, 0, 4, EVENT_KEYS)?,
            dropped_attributes_count: 0,
        });
    }
    let mut links = Vec::new();
    if u.ratio(1u8, 8)? {
        links.push(Link {
            trace_id: id(u, 16, 2)?,
            span_id: id(u, 8, 8)?,
            ..Default::default()
        });
    }
    Ok(Span {
        trace_id: id(u, 16, 2)?,
        span_id: id(u, 8, 8)?,
        parent_span_id: if u.ratio(1u8, 4)? {
            Vec::new()
        } else {
            id(u, 8, 8)?
        },
        name: pick(u, NAMES)?.to_string(),
        kind: u.int_in_range(0..=6)?,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: attributes(u, 0, 12, &[])?,
        events,
        links,
        status: if u.arbitrary()? {
            Some(Status {
                message: String::new(),
                code: u.int_in_range(0..=3)?,
            })
        } else {
            None
        },
        ..Default::default()
    })
}

fn request(u: &mut Unstructured<'_>) -> Result<ExportTraceServiceRequest> {
    let mut resource_spans = Vec::new();
    for _ in 0..u.int_in_range(1..=2u8)? {
        let mut resource = attributes(u, 0, 2, &[])?;
        if u.ratio(7u8, 8)? {
            resource.push(KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(pick(u, SERVICES)?.to_string())),
                }),
                ..Default::default()
            });
        }
        let mut spans = Vec::new();
        for _ in 0..u.int_in_range(1..=8u8)? {
            spans.push(span(u)?);
        }
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: pick(u, &["openinference.instrumentation.openai", "openlit", ""])?
                        .to_string(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    Ok(ExportTraceServiceRequest { resource_spans })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(req) = request(&mut u) {
        ragwatch_loadgen::fuzzing::genai_view(req);
    }
});
