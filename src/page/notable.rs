//! Recent notable traces, by category: the slowest and the costliest of the last hour, and the
//! latest failed, anomalous and with findings. Bounded: `per_category` entries per category (a
//! trace in several categories is kept once), each trace within [`TRACE_BUDGET`] bytes — spans
//! beyond it are left out, attribute values are cut at [`MAX_VALUE_CHARS`] characters — and
//! prompt and completion text replaced unless `show_content` is set.

use std::collections::{HashMap, VecDeque};

use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde::Serialize;

use super::series::truncate;
use crate::attributes::{get_str, hex, is_error};
use crate::names::attrs as a;
use crate::trace::summary::{TraceFacts, TraceGroup, is_true};

/// Bytes one kept trace may take (its facts, spans and attributes).
pub const TRACE_BUDGET: usize = 48 * 1024;
/// Characters kept of an attribute value.
pub const MAX_VALUE_CHARS: usize = 256;
/// Characters kept of an attribute key, a span or service name, a finding's description.
pub const MAX_NAME_CHARS: usize = 128;
/// Findings kept per trace.
pub const MAX_FINDINGS: usize = 10;
/// Slowest and costliest are of the last hour.
const MAX_AGE_MS: u64 = 3_600_000;

/// What stands instead of prompt or completion text.
pub const REDACTED: &str = "[redacted: set show_content: true to see it]";

/// The categories, in the order the page shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Slowest,
    Costliest,
    Failed,
    Anomalous,
    WithFindings,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Slowest,
        Category::Costliest,
        Category::Failed,
        Category::Anomalous,
        Category::WithFindings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Slowest => "slowest",
            Category::Costliest => "costliest",
            Category::Failed => "failed",
            Category::Anomalous => "anomalous",
            Category::WithFindings => "with_findings",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One span as the waterfall draws it.
#[derive(Debug, Clone, Serialize)]
pub struct SpanView {
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    /// From the trace's first span start.
    pub start_ms: f64,
    pub duration_ms: f64,
    pub stage: Option<String>,
    pub error: bool,
    pub critical_path: bool,
    pub bottleneck: bool,
    pub anomaly: bool,
    pub attributes: Vec<(String, String)>,
}

/// A kept trace: its facts and spans.
#[derive(Debug, Clone, Serialize)]
pub struct TraceDetail {
    #[serde(flatten)]
    pub facts: TraceFacts,
    /// Unix milliseconds when ragwatch saw it.
    pub seen_at_ms: u64,
    pub categories: Vec<Category>,
    pub spans: Vec<SpanView>,
    /// Spans left out to stay within the budget.
    pub spans_omitted: usize,
    /// Attributes left out to stay within the budget.
    pub attributes_omitted: usize,
}

struct Entry {
    detail: TraceDetail,
    bytes: usize,
}

/// The notable traces.
pub struct Notable {
    per_category: usize,
    show_content: bool,
    traces: HashMap<String, Entry>,
    /// Per category: trace ids, oldest first; slowest and costliest with their value.
    lists: [VecDeque<(f64, String)>; 5],
    offered: u64,
    /// When entries were last expired (at most once a second).
    expired_at_ms: u64,
}

impl Notable {
    /// `total` traces kept at most, spread over the five categories.
    pub fn new(total: usize, show_content: bool) -> Notable {
        Notable {
            per_category: (total / Category::ALL.len()).max(1),
            show_content,
            traces: HashMap::new(),
            lists: Default::default(),
            offered: 0,
            expired_at_ms: 0,
        }
    }

    pub fn per_category(&self) -> usize {
        self.per_category
    }

    /// Drop slowest and costliest entries older than an hour, now.
    pub fn expire_now(&mut self, now_ms: u64) {
        self.expired_at_ms = 0;
        self.expire(now_ms);
    }

    /// Drop slowest and costliest entries older than an hour (at most once a second).
    fn expire(&mut self, now_ms: u64) {
        if now_ms < self.expired_at_ms.saturating_add(1000) {
            return;
        }
        self.expired_at_ms = now_ms;
        for c in [Category::Slowest, Category::Costliest] {
            let mut gone = Vec::new();
            self.lists[c.index()].retain(|(_, id)| {
                let keep = self
                    .traces
                    .get(id)
                    .is_some_and(|e| e.detail.seen_at_ms + MAX_AGE_MS > now_ms);
                if !keep {
                    gone.push(id.clone());
                }
                keep
            });
            for id in gone {
                self.unlink(&id, c);
            }
        }
    }

    /// Take `c` off a trace; forget the trace when no category holds it any more.
    fn unlink(&mut self, id: &str, c: Category) {
        if let Some(e) = self.traces.get_mut(id) {
            e.detail.categories.retain(|x| *x != c);
            if e.detail.categories.is_empty() {
                self.traces.remove(id);
            }
        }
    }

    /// Whether a ranked category takes `value` now.
    fn ranks(&self, c: Category, value: f64) -> bool {
        let l = &self.lists[c.index()];
        l.len() < self.per_category || l.iter().any(|(v, _)| *v < value)
    }

    /// Look at an analysed trace; keep it if it is notable.
    pub fn offer(&mut self, g: &TraceGroup<'_>, facts: &TraceFacts, now_ms: u64) {
        self.expire(now_ms);
        if !self.floors().admits(facts) {
            self.offered += 1;
            return;
        }
        let detail = prepare(g, facts, self.show_content);
        self.insert(detail, now_ms);
    }

    /// Below what a trace is not kept, whoever asks (the pipeline's taps, without the lock).
    pub fn floors(&self) -> Floors {
        let floor = |c: Category| {
            let l = &self.lists[c.index()];
            if l.len() < self.per_category {
                f64::NEG_INFINITY
            } else {
                l.iter().map(|(v, _)| *v).fold(f64::INFINITY, f64::min)
            }
        };
        Floors {
            slowest_ms: floor(Category::Slowest),
            costliest_usd: floor(Category::Costliest),
        }
    }

    /// Keep a trace prepared by [`prepare`] in every category it belongs to now.
    pub fn insert(&mut self, prepared: Prepared, now_ms: u64) {
        self.offered += 1;
        self.expire(now_ms);
        let Prepared { mut detail, bytes } = prepared;
        let facts = detail.facts.clone();
        let facts = &facts;
        let mut cats = Vec::new();
        if facts.duration_ms.is_finite() && self.ranks(Category::Slowest, facts.duration_ms) {
            cats.push(Category::Slowest);
        }
        if facts.cost_usd.is_finite()
            && facts.cost_usd > 0.0
            && self.ranks(Category::Costliest, facts.cost_usd)
        {
            cats.push(Category::Costliest);
        }
        if facts.error {
            cats.push(Category::Failed);
        }
        if facts.anomalous {
            cats.push(Category::Anomalous);
        }
        if !facts.findings.is_empty() {
            cats.push(Category::WithFindings);
        }
        if cats.is_empty() {
            return;
        }
        // Seen before (a trace flushed twice): the newest wins.
        if self.traces.contains_key(&facts.trace_id) {
            for c in Category::ALL {
                self.lists[c.index()].retain(|(_, id)| id != &facts.trace_id);
            }
            self.traces.remove(&facts.trace_id);
        }
        detail.seen_at_ms = now_ms;
        detail.categories = cats.clone();
        let id = facts.trace_id.clone();
        self.traces.insert(id.clone(), Entry { detail, bytes });
        for c in cats {
            let value = match c {
                Category::Slowest => facts.duration_ms,
                Category::Costliest => facts.cost_usd,
                _ => 0.0,
            };
            let list = &mut self.lists[c.index()];
            list.push_back((value, id.clone()));
            if list.len() > self.per_category {
                // Ranked: the smallest goes (the oldest among equals); else the oldest.
                let victim = match c {
                    Category::Slowest | Category::Costliest => list
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                        .map(|(i, _)| i),
                    _ => Some(0),
                };
                if let Some((_, gone)) = victim.and_then(|i| list.remove(i)) {
                    self.unlink(&gone, c);
                }
            }
        }
    }

    /// The traces of a category: slowest and costliest ranked, the others newest first.
    pub fn list(&self, c: Category) -> Vec<&TraceDetail> {
        let mut v: Vec<(f64, &TraceDetail)> = self.lists[c.index()]
            .iter()
            .filter_map(|(value, id)| Some((*value, &self.traces.get(id)?.detail)))
            .collect();
        match c {
            Category::Slowest | Category::Costliest => {
                v.sort_by(|a, b| b.0.total_cmp(&a.0));
            }
            _ => v.reverse(),
        }
        v.into_iter().map(|(_, d)| d).collect()
    }

    pub fn get(&self, trace_id: &str) -> Option<&TraceDetail> {
        self.traces.get(trace_id).map(|e| &e.detail)
    }

    /// Traces kept now.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Traces looked at.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Bytes the kept traces take (as counted against their budget), plus the lists.
    pub fn approx_bytes(&self) -> usize {
        self.traces
            .iter()
            .map(|(k, e)| e.bytes + k.len() + std::mem::size_of::<(String, Entry)>())
            .sum::<usize>()
            + self
                .lists
                .iter()
                .map(|l| l.capacity() * (std::mem::size_of::<(f64, String)>() + 32))
                .sum::<usize>()
    }

    /// The most the kept traces can take.
    pub fn max_bytes(total: usize) -> usize {
        let per = (total / Category::ALL.len()).max(1);
        let traces = per * Category::ALL.len();
        traces * (TRACE_BUDGET + 32 + std::mem::size_of::<(String, Entry)>())
            + Category::ALL.len() * (2 * per + 2) * (std::mem::size_of::<(f64, String)>() + 32)
    }
}

/// Keys whose values are prompt, completion, retrieved or tool text.
pub fn is_content_key(k: &str) -> bool {
    const MORE: &[&str] = &[
        "gen_ai.retrieval.query.text",
        "gen_ai.retrieval.documents",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.definitions",
        "llm.prompts",
        "llm.invocation_parameters",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "tool.parameters",
    ];
    crate::processor::genai::is_content_key(k)
        || MORE.contains(&k)
        || k.starts_with("retrieval.documents.")
        || k.starts_with("gen_ai.retrieval.documents.")
        || k.starts_with("llm.prompt_template.")
        || k.starts_with("llm.tools.")
        || (k.starts_with("gen_ai.aggregated_usage.") && k.ends_with("messages"))
}

/// A value as text, at most `max` characters (nested values flattened).
pub fn value_text(v: &AnyValue, max: usize) -> String {
    let mut out = String::new();
    render(v, &mut out, max);
    if out.chars().count() > max {
        let mut t = truncate(&out, max.saturating_sub(1)).to_string();
        t.push('…');
        t
    } else {
        out
    }
}

fn render(v: &AnyValue, out: &mut String, max: usize) {
    use std::fmt::Write;
    if out.len() > max * 4 {
        return;
    }
    match &v.value {
        Some(Value::StringValue(s)) => out.push_str(truncate(s, max + 1)),
        Some(Value::BoolValue(b)) => {
            let _ = write!(out, "{b}");
        }
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => {
            let _ = write!(out, "{d}");
        }
        Some(Value::BytesValue(b)) => out.push_str(&hex(&b[..b.len().min(max)])),
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, x) in a.values.iter().enumerate() {
                if out.len() > max * 4 {
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                render(x, out, max);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(l)) => {
            out.push('{');
            for (i, kv) in l.values.iter().enumerate() {
                if out.len() > max * 4 {
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(truncate(&kv.key, max));
                out.push_str(": ");
                if let Some(x) = &kv.value {
                    render(x, out, max);
                }
            }
            out.push('}');
        }
        // A string-table reference (profiles) has no text here.
        Some(Value::StringValueStrindex(_)) | None => {}
    }
}

/// The lowest duration and cost the ranked categories take now (minus infinity while they have
/// room).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floors {
    pub slowest_ms: f64,
    pub costliest_usd: f64,
}

impl Floors {
    /// Whether a trace would be kept: above a floor, or failed, anomalous or with findings.
    pub fn admits(&self, f: &TraceFacts) -> bool {
        f.error
            || f.anomalous
            || !f.findings.is_empty()
            || (f.duration_ms.is_finite() && f.duration_ms > self.slowest_ms)
            || (f.cost_usd.is_finite() && f.cost_usd > 0.0 && f.cost_usd > self.costliest_usd)
    }
}

/// A trace cut to its budget, ready to be kept.
#[derive(Debug)]
pub struct Prepared {
    detail: TraceDetail,
    bytes: usize,
}

/// Cut what a trace holds to its budget (done by the tap, outside the lock).
pub fn prepare(g: &TraceGroup<'_>, facts: &TraceFacts, show_content: bool) -> Prepared {
    let (detail, bytes) = build(g, facts, 0, Vec::new(), show_content);
    Prepared { detail, bytes }
}

/// Cut what a trace holds to its budget; returns the detail and the bytes counted.
fn build(
    g: &TraceGroup<'_>,
    facts: &TraceFacts,
    now_ms: u64,
    categories: Vec<Category>,
    show_content: bool,
) -> (TraceDetail, usize) {
    let mut facts = facts.clone();
    let cut = |s: &mut String, n: usize| {
        if s.chars().count() > n {
            *s = truncate(s, n).to_string();
        }
    };
    cut(&mut facts.service, MAX_NAME_CHARS);
    cut(&mut facts.name, MAX_NAME_CHARS);
    facts.findings.truncate(MAX_FINDINGS);
    for f in &mut facts.findings {
        cut(&mut f.name, MAX_NAME_CHARS);
        cut(&mut f.severity, 16);
        cut(&mut f.description, 4 * MAX_NAME_CHARS);
    }
    if let Some(b) = &mut facts.bottleneck {
        cut(&mut b.stage, MAX_NAME_CHARS);
        if let Some(n) = &mut b.span_name {
            cut(n, MAX_NAME_CHARS);
        }
        if let Some(n) = &mut b.span_id {
            cut(n, 32);
        }
    }
    let mut bytes = std::mem::size_of::<TraceDetail>()
        + facts.service.len()
        + facts.name.len()
        + facts.trace_id.len()
        + facts
            .findings
            .iter()
            .map(|f| {
                std::mem::size_of_val(f) + f.name.len() + f.severity.len() + f.description.len()
            })
            .sum::<usize>()
        + facts.bottleneck.as_ref().map_or(0, |b| {
            b.stage.len()
                + b.span_name.as_ref().map_or(0, String::len)
                + b.span_id.as_ref().map_or(0, String::len)
        });
    let mut order: Vec<&(&str, &opentelemetry_proto::tonic::trace::v1::Span)> =
        g.spans.iter().collect();
    order.sort_by_key(|(_, s)| s.start_time_unix_nano);
    let t0 = order
        .iter()
        .map(|(_, s)| s.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    // Spans first, within half the budget, so the waterfall is whole before attributes.
    let mut spans = Vec::new();
    let mut spans_omitted = 0;
    for (service, s) in &order {
        let mut v = SpanView {
            span_id: hex(&s.span_id),
            parent_span_id: hex(&s.parent_span_id),
            name: truncate(&s.name, MAX_NAME_CHARS).to_string(),
            service: truncate(service, MAX_NAME_CHARS).to_string(),
            start_ms: s.start_time_unix_nano.saturating_sub(t0) as f64 / 1e6,
            duration_ms: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6,
            stage: get_str(&s.attributes, a::RAG_STAGE).map(|x| truncate(x, 32).to_string()),
            error: is_error(s),
            critical_path: is_true(s, a::CRITICAL_PATH),
            bottleneck: is_true(s, a::BOTTLENECK),
            anomaly: is_true(s, a::ANOMALY),
            attributes: Vec::new(),
        };
        v.span_id.truncate(32);
        v.parent_span_id.truncate(32);
        let cost = std::mem::size_of::<SpanView>()
            + v.span_id.len()
            + v.parent_span_id.len()
            + v.name.len()
            + v.service.len()
            + v.stage.as_ref().map_or(0, String::len);
        if bytes + cost > TRACE_BUDGET / 2 {
            spans_omitted += 1;
            continue;
        }
        bytes += cost;
        spans.push(v);
    }
    let mut attributes_omitted = 0;
    let by_id: HashMap<String, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, v)| (v.span_id.clone(), i))
        .collect();
    for (_, s) in &order {
        let Some(&i) = by_id.get(&hex(&s.span_id)) else {
            continue;
        };
        for kv in &s.attributes {
            let key = truncate(&kv.key, MAX_NAME_CHARS).to_string();
            let value = if !show_content && is_content_key(&kv.key) {
                REDACTED.to_string()
            } else {
                kv.value
                    .as_ref()
                    .map(|v| value_text(v, MAX_VALUE_CHARS))
                    .unwrap_or_default()
            };
            let cost = std::mem::size_of::<(String, String)>() + key.len() + value.len();
            if bytes + cost > TRACE_BUDGET {
                attributes_omitted += 1;
                continue;
            }
            bytes += cost;
            if let Some(v) = spans.get_mut(i) {
                v.attributes.push((key, value));
            }
        }
    }
    (
        TraceDetail {
            facts,
            seen_at_ms: now_ms,
            categories,
            spans,
            spans_omitted,
            attributes_omitted,
        },
        bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{kv_f64, kv_str};
    use crate::trace::summary::{facts, group, summary_span};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn trace(
        id: u32,
        ms: u64,
        cost: f64,
        attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    ) -> ExportTraceServiceRequest {
        let mut tid = vec![0u8; 16];
        tid[..4].copy_from_slice(&id.to_be_bytes());
        let root = Span {
            trace_id: tid.clone(),
            span_id: vec![1; 8],
            name: "rag.query".into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            attributes: vec![kv_f64(a::TRACE_COST_USD, cost)],
            ..Default::default()
        };
        let child = Span {
            trace_id: tid,
            span_id: vec![2; 8],
            parent_span_id: vec![1; 8],
            name: "chat".into(),
            start_time_unix_nano: 1_001_000_000,
            end_time_unix_nano: 1_002_000_000,
            attributes: attrs,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![root, child],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn offer(n: &mut Notable, r: &ExportTraceServiceRequest, now: u64) {
        for g in group(r) {
            let Some(s) = summary_span(&g, true) else {
                continue;
            };
            let f = facts(&g, s, MAX_FINDINGS);
            n.offer(&g, &f, now);
        }
    }

    #[test]
    fn the_slowest_and_costliest_are_kept_and_content_is_redacted() {
        let mut n = Notable::new(10, false);
        assert_eq!(n.per_category(), 2);
        for (i, (ms, cost)) in [(100, 0.0), (5000, 0.01), (300, 2.0), (200, 0.5)]
            .into_iter()
            .enumerate()
        {
            let r = trace(
                i as u32,
                ms,
                cost,
                vec![
                    kv_str("gen_ai.input.messages", "secret prompt"),
                    kv_str("gen_ai.request.model", "m"),
                ],
            );
            offer(&mut n, &r, 1000);
        }
        let slow: Vec<f64> = n
            .list(Category::Slowest)
            .iter()
            .map(|d| d.facts.duration_ms)
            .collect();
        assert_eq!(slow, vec![5000.0, 300.0]);
        let costly: Vec<f64> = n
            .list(Category::Costliest)
            .iter()
            .map(|d| d.facts.cost_usd)
            .collect();
        assert_eq!(costly, vec![2.0, 0.5]);
        // 5000 ms, 300 ms ($2) and $0.5: three traces.
        assert_eq!(n.len(), 3);
        let d = n.list(Category::Slowest)[0];
        let chat = d.spans.iter().find(|s| s.name == "chat").expect("chat");
        assert_eq!(
            chat.attributes[0],
            ("gen_ai.input.messages".to_string(), REDACTED.to_string())
        );
        assert_eq!(
            chat.attributes[1],
            ("gen_ai.request.model".to_string(), "m".to_string())
        );
        assert_eq!(chat.start_ms, 1.0);
        // An hour later the slowest of then are gone.
        offer(&mut n, &trace(99, 1, 0.0, vec![]), 1000 + MAX_AGE_MS);
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn with_show_content_text_is_kept_but_cut() {
        let mut n = Notable::new(5, true);
        let long = "x".repeat(1000);
        offer(
            &mut n,
            &trace(1, 10, 0.0, vec![kv_str("gen_ai.input.messages", &long)]),
            0,
        );
        let d = n.list(Category::Slowest)[0];
        let v = &d.spans[1].attributes[0].1;
        assert_eq!(v.chars().count(), MAX_VALUE_CHARS);
        assert!(v.ends_with('…'));
    }

    #[test]
    fn a_huge_trace_stays_within_its_budget() {
        let mut n = Notable::new(5, true);
        let mut r = trace(1, 10, 0.0, vec![]);
        let spans = &mut r.resource_spans[0].scope_spans[0].spans;
        let tid = spans[0].trace_id.clone();
        for i in 0..5000u32 {
            spans.push(Span {
                trace_id: tid.clone(),
                span_id: [i.to_be_bytes(), [9; 4]].concat(),
                parent_span_id: vec![1; 8],
                name: "n".repeat(500),
                attributes: (0..50)
                    .map(|k| kv_str(&format!("k{k}"), &"v".repeat(400)))
                    .collect(),
                ..Default::default()
            });
        }
        offer(&mut n, &r, 0);
        assert_eq!(n.len(), 1);
        let d = n.list(Category::Slowest)[0];
        assert!(d.spans_omitted > 4000, "{}", d.spans_omitted);
        assert!(d.attributes_omitted > 0);
        assert!(n.approx_bytes() <= Notable::max_bytes(5));
        let json = serde_json::to_string(d).expect("json");
        assert!(json.len() < TRACE_BUDGET, "{}", json.len());
    }
}
