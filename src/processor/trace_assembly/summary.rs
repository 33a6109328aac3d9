//! The summary of a whole trace, written on its root.

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::agents;
use super::{AssembledTrace, TraceAnalyzer};
use crate::names::attrs as a;
use crate::trace::attr;

/// Marks traces without a root, and writes the root summary of complete ones: duration, span
/// count, and the cost and tokens of its model calls.
#[derive(Default)]
pub struct TraceSummary;

fn put(s: &mut Span, k: &str, v: Value) {
    crate::attributes::put(&mut s.attributes, k, v);
}

fn is_model_call(s: &Span) -> bool {
    matches!(attr(s, a::RAG_STAGE), Some(Value::StringValue(st)) if st == "llm" || st == "embedding" || st == "rerank")
}

impl TraceAnalyzer for TraceSummary {
    fn analyze(&mut self, t: &mut AssembledTrace, _now: Instant) {
        if !t.has_root {
            // Mark the topmost spans we have: those whose parent never came.
            let topmost: Vec<usize> = {
                let ids: std::collections::HashSet<&[u8]> =
                    t.spans.iter().map(|s| s.span_id.as_slice()).collect();
                (0..t.spans.len())
                    .filter(|i| !ids.contains(t.spans[*i].parent_span_id.as_slice()))
                    .collect()
            };
            for i in topmost {
                put(&mut t.spans[i], a::TRACE_COMPLETE, Value::BoolValue(false));
            }
            return;
        }
        let (mut cost, mut tin, mut tout) = (0.0, 0i64, 0i64);
        // A model call beneath another is the same call seen twice (framework and client both
        // instrumented): only the outer one counts.
        let calls = agents::Calls::of(&t.spans);
        for (_, s) in t
            .spans
            .iter()
            .enumerate()
            .filter(|(i, s)| is_model_call(s) && calls.model_call[*i])
        {
            if let Some(Value::DoubleValue(c)) = attr(s, a::COST_USD) {
                cost += c;
            }
            if let Some(Value::IntValue(n)) = attr(s, a::GEN_AI_INPUT_TOKENS) {
                tin = tin.saturating_add(*n);
            }
            if let Some(Value::IntValue(n)) = attr(s, a::GEN_AI_OUTPUT_TOKENS) {
                tout = tout.saturating_add(*n);
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
