//! Whole-trace analysis: trace assembly and what is computed on an assembled trace.

pub mod assembly;
pub mod path;
pub mod patterns;
pub mod quality;

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::names::attrs as a;
pub use assembly::{AssembledTrace, TraceAnalyzer, TraceAssembly, TraceAssemblyConfig};

/// The spans of one trace within a batch, each with its resource's service name.
pub struct TraceSpans<'a> {
    /// The root's service (else the first span's).
    pub service: &'a str,
    pub spans: Vec<(&'a str, &'a mut Span)>,
}

impl TraceSpans<'_> {
    /// The position of the root span, if the trace has it.
    pub fn root(&self) -> Option<usize> {
        self.spans
            .iter()
            .position(|(_, s)| s.parent_span_id.is_empty())
    }
}

/// Group a batch's spans by trace, in order of first appearance (`trace_assembly` in hold mode
/// hands whole traces to the stages after it).
pub fn group_by_trace(
    r: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> Vec<TraceSpans<'_>> {
    let mut index: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    let mut out: Vec<TraceSpans<'_>> = Vec::new();
    for rs in &mut r.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|res| crate::attributes::service_name(&res.attributes))
            .unwrap_or("unknown_service");
        for s in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
            let i = *index.entry(s.trace_id.clone()).or_insert_with(|| {
                out.push(TraceSpans {
                    service,
                    spans: Vec::new(),
                });
                out.len() - 1
            });
            if s.parent_span_id.is_empty() {
                out[i].service = service;
            }
            out[i].spans.push((service, s));
        }
    }
    out
}

/// Marks traces without a root, and writes the root summary of complete ones: duration, span
/// count, and the cost and tokens of its model calls.
#[derive(Default)]
pub struct TraceSummary;

pub(crate) fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
    crate::attributes::get(&s.attributes, k)
}

fn put(s: &mut Span, k: &str, v: Value) {
    crate::attributes::put(&mut s.attributes, k, v);
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

/// Critical path, self time and the bottleneck verdict of complete traces.
pub struct CriticalPathAnalyzer {
    pub min_share: f64,
    pub derived: std::sync::Arc<crate::derived::DerivedMetrics>,
}

pub(crate) fn stage_of(s: &Span) -> Option<&str> {
    match attr(s, a::RAG_STAGE) {
        Some(Value::StringValue(st)) => Some(st.as_str()),
        _ => None,
    }
}

pub(crate) use crate::attributes::hex;

impl TraceAnalyzer for CriticalPathAnalyzer {
    fn analyze(&mut self, t: &mut AssembledTrace, now: Instant) {
        use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
        if !t.has_root {
            return;
        }
        let nodes: Vec<path::SpanNode> = t
            .spans
            .iter()
            .map(|s| path::SpanNode {
                span_id: s.span_id.clone(),
                parent: s.parent_span_id.clone(),
                start: s.start_time_unix_nano,
                end: s.end_time_unix_nano,
                kind: match SpanKind::try_from(s.kind) {
                    Ok(SpanKind::Producer) => path::Kind::Producer,
                    Ok(SpanKind::Consumer) => path::Kind::Consumer,
                    _ => path::Kind::Other,
                },
            })
            .collect();
        let result = path::analyze(&nodes);
        for (s, st) in t.spans.iter_mut().zip(&result.self_time) {
            put(s, a::SELF_TIME_MS, Value::DoubleValue(*st as f64 / 1e6));
        }
        let Some(root) = result.root else { return };
        let total = nodes[root].end.saturating_sub(nodes[root].start);
        if total == 0 {
            return;
        }
        // Time on the path per span, and per stage (a span without a stage stands alone).
        let mut per_span: Vec<u64> = vec![0; t.spans.len()];
        for seg in &result.critical_path {
            if let Some(x) = per_span.get_mut(seg.span) {
                *x += seg.end - seg.start;
            }
        }
        let mut per_key: Vec<(String, bool, u64, usize, u64)> = Vec::new(); // key, is_stage, ms, best span, its ms
        for (i, ns) in per_span.iter().enumerate().filter(|(_, ns)| **ns > 0) {
            let (key, is_stage) = match stage_of(&t.spans[i]) {
                Some(st) => (st.to_string(), true),
                None => (t.spans[i].name.clone(), false),
            };
            match per_key.iter_mut().find(|k| k.1 && is_stage && k.0 == key) {
                Some(k) => {
                    k.2 += ns;
                    if *ns > k.4 {
                        k.3 = i;
                        k.4 = *ns;
                    }
                }
                None => per_key.push((key, is_stage, *ns, i, *ns)),
            }
        }
        for (i, ns) in per_span.iter().enumerate().filter(|(_, ns)| **ns > 0) {
            let s = &mut t.spans[i];
            put(s, a::CRITICAL_PATH, Value::BoolValue(true));
            put(s, a::CRITICAL_PATH_MS, Value::DoubleValue(*ns as f64 / 1e6));
            put(
                s,
                a::CRITICAL_PATH_SHARE,
                Value::DoubleValue(*ns as f64 / total as f64),
            );
        }
        for (key, is_stage, ns, _, _) in &per_key {
            if *is_stage {
                self.derived.observe(
                    crate::genai::metrics::CRITICAL_PATH_SHARE,
                    &[key],
                    *ns as f64 / total as f64,
                    now,
                );
                put(
                    &mut t.spans[root],
                    &format!("{}{key}.ms", a::TRACE_STAGE_PREFIX),
                    Value::DoubleValue(*ns as f64 / 1e6),
                );
            }
        }
        let Some((key, _, ns, span, _)) = per_key.iter().max_by_key(|k| k.2).cloned() else {
            return;
        };
        let share = ns as f64 / total as f64;
        if share < self.min_share {
            return;
        }
        let span_id = hex(&t.spans[span].span_id);
        put(&mut t.spans[span], a::BOTTLENECK, Value::BoolValue(true));
        let service = t.service(root).unwrap_or("unknown_service").to_string();
        self.derived.add(
            crate::genai::metrics::BOTTLENECK_TRACES,
            &[&service, &key],
            1.0,
            now,
        );
        let r = &mut t.spans[root];
        put(r, a::TRACE_BOTTLENECK_STAGE, Value::StringValue(key));
        put(r, a::TRACE_BOTTLENECK_SPAN_ID, Value::StringValue(span_id));
        put(r, a::TRACE_BOTTLENECK_SHARE, Value::DoubleValue(share));
    }
}
