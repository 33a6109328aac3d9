//! The critical path of a complete trace, each span's self time, and the bottleneck verdict.

use std::borrow::Cow;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{AssembledTrace, TraceAnalyzer};
use crate::attributes::hex;
use crate::names::attrs as a;
use crate::trace::{Owners, path};

fn put(s: &mut Span, k: &str, v: Value) {
    crate::attributes::put(&mut s.attributes, k, v);
}

/// Critical path, self time and the bottleneck verdict of complete traces.
pub struct CriticalPathAnalyzer {
    pub min_share: f64,
    pub derived: std::sync::Arc<crate::derived::DerivedMetrics>,
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
        let index: crate::trace::FastMap<&[u8], usize> = t
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
                    Some(&p) if owners.absorbed(p) => &t.spans[owners.owner[p]].span_id,
                    _ => &s.parent_span_id,
                };
                path::SpanNode {
                    span_id: Cow::Borrowed(&s.span_id),
                    parent: Cow::Borrowed(parent),
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
        // The root's interval; the nodes borrow the spans, which are written from here on.
        let root_interval = result.root.map(|r| (nodes[r].start, nodes[r].end));
        drop(nodes);
        for (k, st) in result.self_time.iter().enumerate() {
            put(
                &mut t.spans[kept[k]],
                a::SELF_TIME_MS,
                Value::DoubleValue(*st as f64 / 1e6),
            );
        }
        let (Some(root), Some((start, end))) = (result.root, root_interval) else {
            return;
        };
        let total = end.saturating_sub(start);
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
                crate::derived::defs::CRITICAL_PATH_SHARE,
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
            crate::derived::defs::BOTTLENECK_TRACES,
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
