//! Whole-trace analysis: trace assembly and what is computed on an assembled trace.

pub mod assembly;

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::names::attrs as a;
pub use assembly::{AssembledTrace, TraceAnalyzer, TraceAssembly, TraceAssemblyConfig};

/// Marks traces without a root, and writes the root summary of complete ones: duration, span
/// count, and the cost and tokens of its model calls.
#[derive(Default)]
pub struct TraceSummary;

fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == k)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn put(s: &mut Span, k: &str, v: Value) {
    if attr(s, k).is_none() {
        s.attributes.push(KeyValue {
            key: k.to_string(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        });
    }
}

fn is_model_call(s: &Span) -> bool {
    matches!(attr(s, a::RAG_STAGE), Some(Value::StringValue(st)) if st == "llm" || st == "embedding" || st == "rerank")
}

impl TraceAnalyzer for TraceSummary {
    fn analyze(&mut self, t: &mut AssembledTrace, _now: Instant) {
        let ids: std::collections::HashSet<Vec<u8>> =
            t.spans.iter().map(|s| s.span_id.clone()).collect();
        if !t.has_root {
            // Mark the topmost spans we have: those whose parent never came.
            for s in t
                .spans
                .iter_mut()
                .filter(|s| !ids.contains(&s.parent_span_id))
            {
                put(s, a::TRACE_COMPLETE, Value::BoolValue(false));
            }
            return;
        }
        let (mut cost, mut tin, mut tout) = (0.0, 0i64, 0i64);
        for s in t.spans.iter().filter(|s| is_model_call(s)) {
            if let Some(Value::DoubleValue(c)) = attr(s, a::COST_USD) {
                cost += c;
            }
            if let Some(Value::IntValue(n)) = attr(s, a::GEN_AI_INPUT_TOKENS) {
                tin += n;
            }
            if let Some(Value::IntValue(n)) = attr(s, a::GEN_AI_OUTPUT_TOKENS) {
                tout += n;
            }
        }
        let count = t.spans.len() as i64;
        let Some(root) = t.spans.iter_mut().find(|s| s.parent_span_id.is_empty()) else {
            return;
        };
        let ms = root
            .end_time_unix_nano
            .saturating_sub(root.start_time_unix_nano) as f64
            / 1e6;
        put(root, a::TRACE_COMPLETE, Value::BoolValue(true));
        put(root, a::TRACE_DURATION_MS, Value::DoubleValue(ms));
        put(root, a::TRACE_SPAN_COUNT, Value::IntValue(count));
        put(root, a::TRACE_COST_USD, Value::DoubleValue(cost));
        put(root, a::TRACE_TOKENS_INPUT, Value::IntValue(tin));
        put(root, a::TRACE_TOKENS_OUTPUT, Value::IntValue(tout));
    }
}
