//! Whole-trace analysis: trace assembly and what is computed on an assembled trace.

pub mod agents;
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

/// The stage each span's time belongs to, and the span that owns that time.
///
/// A span with a `rag.stage` owns its time under that stage (an unknown value counts as
/// `other`). A span without one beneath a staged span (OpenLIT's HTTP client span `POST` under
/// a chat call, a database driver's span under a retrieval) is part of its nearest staged
/// ancestor: that ancestor owns its time, under its stage. Any other span is the application's
/// own code: it owns its time, under [`APP`]. So every stage written or used as a label is one
/// of the fixed stage names or `app`, never a span's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub stage: Vec<&'static str>,
    pub owner: Vec<usize>,
}

/// The stage of time owned by the application's own (non-GenAI) spans.
pub use crate::names::values::APP_STAGE as APP;

/// Each span's parent, by index (None for a root, a span whose parent is absent, or one that
/// names itself).
pub fn parents(spans: &[Span]) -> Vec<Option<usize>> {
    let index: std::collections::HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_slice(), i))
        .collect();
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            index
                .get(s.parent_span_id.as_slice())
                .copied()
                .filter(|p| *p != i && !s.parent_span_id.is_empty())
        })
        .collect()
}

impl Owners {
    pub fn of(spans: &[Span]) -> Owners {
        let n = spans.len();
        let parent = parents(spans);
        let own: Vec<Option<&'static str>> = spans.iter().map(fixed_stage).collect();
        // Resolved owner per span; resolved top-down along each span's ancestry, iteratively
        // (deep traces) and safely on cycles (a span in a cycle with no staged member is `app`).
        let mut owner: Vec<Option<usize>> = vec![None; n];
        let mut walk: Vec<usize> = Vec::new();
        let mut on_walk = vec![false; n];
        for i in 0..n {
            if owner[i].is_some() {
                continue;
            }
            walk.clear();
            let mut cur = i;
            // The owner found above the walk, if any staged ancestor exists.
            let found: Option<usize> = loop {
                if let Some(o) = owner[cur] {
                    break (own[o].is_some()).then_some(o);
                }
                if own[cur].is_some() {
                    owner[cur] = Some(cur);
                    break Some(cur);
                }
                if std::mem::replace(&mut on_walk[cur], true) {
                    break None;
                }
                walk.push(cur);
                match parent[cur] {
                    Some(p) => cur = p,
                    None => break None,
                }
            };
            for &w in &walk {
                on_walk[w] = false;
                owner[w] = Some(found.unwrap_or(w));
            }
        }
        let owner: Vec<usize> = owner
            .iter()
            .enumerate()
            .map(|(i, o)| o.unwrap_or(i))
            .collect();
        let stage = owner.iter().map(|&o| own[o].unwrap_or(APP)).collect();
        Owners { stage, owner }
    }

    /// Whether span `i` is part of another span (a non-GenAI span beneath a GenAI one).
    pub fn absorbed(&self, i: usize) -> bool {
        self.owner.get(i).is_some_and(|&o| o != i)
    }
}

/// A span's own `rag.stage`, as one of the fixed names (`other` for an unknown value).
fn fixed_stage(s: &Span) -> Option<&'static str> {
    let st = stage_of(s)?;
    Some(
        crate::genai::Stage::ALL
            .iter()
            .map(|x| x.as_str())
            .find(|x| *x == st)
            .unwrap_or(crate::genai::Stage::Other.as_str()),
    )
}

impl TraceAnalyzer for CriticalPathAnalyzer {
    fn analyze(&mut self, t: &mut AssembledTrace, now: Instant) {
        use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
        if !t.has_root {
            return;
        }
        let owners = Owners::of(&t.spans);
        // The path is walked on the tree of owners: a span that is part of another is left
        // out, its children hang from its owner, so its time is its owner's time.
        let kept: Vec<usize> = (0..t.spans.len())
            .filter(|i| !owners.absorbed(*i))
            .collect();
        let index: std::collections::HashMap<&[u8], usize> = t
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id.as_slice(), i))
            .collect();
        let nodes: Vec<path::SpanNode> = kept
            .iter()
            .map(|&i| {
                let s = &t.spans[i];
                let parent = match index.get(s.parent_span_id.as_slice()) {
                    Some(&p) if owners.absorbed(p) => t.spans[owners.owner[p]].span_id.clone(),
                    _ => s.parent_span_id.clone(),
                };
                path::SpanNode {
                    span_id: s.span_id.clone(),
                    parent,
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    kind: match SpanKind::try_from(s.kind) {
                        Ok(SpanKind::Producer) => path::Kind::Producer,
                        Ok(SpanKind::Consumer) => path::Kind::Consumer,
                        _ => path::Kind::Other,
                    },
                }
            })
            .collect();
        let result = path::analyze(&nodes);
        for (k, st) in result.self_time.iter().enumerate() {
            put(
                &mut t.spans[kept[k]],
                a::SELF_TIME_MS,
                Value::DoubleValue(*st as f64 / 1e6),
            );
        }
        let Some(root) = result.root else { return };
        let total = nodes[root].end.saturating_sub(nodes[root].start);
        if total == 0 {
            return;
        }
        let root = kept[root];
        // Time on the path per (owning) span, and per stage.
        let mut per_span: Vec<u64> = vec![0; t.spans.len()];
        for seg in &result.critical_path {
            if let Some(x) = kept.get(seg.span).and_then(|&i| per_span.get_mut(i)) {
                *x += seg.end - seg.start;
            }
        }
        // (stage, ns on the path, the span of the stage with the most, its ns), in order of
        // first appearance.
        let mut per_stage: Vec<(&'static str, u64, usize, u64)> = Vec::new();
        for (i, ns) in per_span.iter().enumerate().filter(|(_, ns)| **ns > 0) {
            let stage = owners.stage[i];
            match per_stage.iter_mut().find(|k| k.0 == stage) {
                Some(k) => {
                    k.1 += ns;
                    if *ns > k.3 {
                        k.2 = i;
                        k.3 = *ns;
                    }
                }
                None => per_stage.push((stage, *ns, i, *ns)),
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
        for (stage, ns, _, _) in &per_stage {
            self.derived.observe(
                crate::genai::metrics::CRITICAL_PATH_SHARE,
                &[stage],
                *ns as f64 / total as f64,
                now,
            );
            put(
                &mut t.spans[root],
                &format!("{}{stage}.ms", a::TRACE_STAGE_PREFIX),
                Value::DoubleValue(*ns as f64 / 1e6),
            );
        }
        let Some(&(stage, ns, span, _)) = per_stage.iter().max_by_key(|k| k.1) else {
            return;
        };
        let share = ns as f64 / total as f64;
        if share < self.min_share {
            return;
        }
        let span_id = hex(&t.spans[span].span_id);
        let span_name = t.spans[span].name.clone();
        put(&mut t.spans[span], a::BOTTLENECK, Value::BoolValue(true));
        let service = t.service(root).unwrap_or("unknown_service").to_string();
        self.derived.add(
            crate::genai::metrics::BOTTLENECK_TRACES,
            &[&service, stage],
            1.0,
            now,
        );
        let r = &mut t.spans[root];
        put(
            r,
            a::TRACE_BOTTLENECK_STAGE,
            Value::StringValue(stage.into()),
        );
        put(r, a::TRACE_BOTTLENECK_SPAN_ID, Value::StringValue(span_id));
        put(
            r,
            a::TRACE_BOTTLENECK_SPAN_NAME,
            Value::StringValue(span_name),
        );
        put(r, a::TRACE_BOTTLENECK_SHARE, Value::DoubleValue(share));
    }
}
