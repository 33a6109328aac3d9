//! What one analysed trace comes to, read from the attributes the analysis stages wrote: the
//! facts behind a line of the `debug` exporter's `summary` verbosity and a row of the page.
//!
//! Everything is read by name and may be absent (a pipeline without `trace_assembly` or
//! `quality` writes less); nothing here panics on odd data.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::attributes::{get, get_f64, get_str, hex, is_error, service_name};
use crate::names::attrs as a;

/// The bottleneck's span name on the root, where the analysis writes it.
pub const TRACE_BOTTLENECK_SPAN_NAME: &str = "rag.trace.bottleneck.span_name";

/// The spans of one trace found in a batch, each with its service.
pub struct TraceGroup<'a> {
    pub trace_id: &'a [u8],
    pub spans: Vec<(&'a str, &'a Span)>,
}

/// Group a batch's spans by trace id, in order of first appearance.
pub fn group(r: &ExportTraceServiceRequest) -> Vec<TraceGroup<'_>> {
    let mut index: hashbrown::HashMap<&[u8], usize> = hashbrown::HashMap::new();
    let mut out: Vec<TraceGroup<'_>> = Vec::new();
    for rs in &r.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|res| service_name(&res.attributes))
            .unwrap_or("unknown_service");
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let i = *index.entry(s.trace_id.as_slice()).or_insert_with(|| {
                out.push(TraceGroup {
                    trace_id: &s.trace_id,
                    spans: Vec::new(),
                });
                out.len() - 1
            });
            if let Some(g) = out.get_mut(i) {
                g.spans.push((service, s));
            }
        }
    }
    out
}

/// One finding written on a span of the trace (a `rag.finding` event).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceFinding {
    pub name: String,
    pub severity: String,
    pub description: String,
}

/// The bottleneck of a trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bottleneck {
    /// Its stage (or span name, for a span without a stage).
    pub stage: String,
    /// Its share (0..1) of the trace's duration.
    pub share: f64,
    pub span_id: Option<String>,
    pub span_name: Option<String>,
}

/// The facts of one trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceFacts {
    pub trace_id: String,
    pub service: String,
    /// The root's name.
    pub name: String,
    pub duration_ms: f64,
    pub cost_usd: f64,
    pub tokens_input: u64,
    pub tokens_output: u64,
    pub span_count: usize,
    pub bottleneck: Option<Bottleneck>,
    pub quality: Option<f64>,
    pub error: bool,
    pub anomalous: bool,
    pub findings: Vec<TraceFinding>,
}

/// The span that carries a trace's summary: the root, or the synthetic `ragwatch.analysis` span
/// of stream mode (which repeats the root's `rag.trace.*` attributes).
pub fn summary_span<'a>(
    g: &TraceGroup<'a>,
    roots_are_requests: bool,
) -> Option<(&'a str, &'a Span)> {
    let analysis = g
        .spans
        .iter()
        .find(|(_, s)| s.name == a::ANALYSIS_SPAN)
        .copied();
    if analysis.is_some() {
        return analysis;
    }
    if !roots_are_requests {
        return None;
    }
    g.spans
        .iter()
        .find(|(_, s)| s.parent_span_id.is_empty())
        .copied()
}

/// Findings on the spans of a trace, at most `max`.
fn findings(g: &TraceGroup<'_>, max: usize) -> Vec<TraceFinding> {
    let mut out = Vec::new();
    for (_, s) in &g.spans {
        for e in s.events.iter().filter(|e| e.name == a::FINDING_EVENT) {
            if out.len() >= max {
                return out;
            }
            out.push(TraceFinding {
                name: get_str(&e.attributes, a::FINDING_NAME)
                    .unwrap_or("finding")
                    .to_string(),
                severity: get_str(&e.attributes, a::FINDING_SEVERITY)
                    .unwrap_or("info")
                    .to_string(),
                description: get_str(&e.attributes, a::FINDING_DESCRIPTION)
                    .unwrap_or("")
                    .to_string(),
            });
        }
    }
    out
}

pub fn is_true(s: &Span, key: &str) -> bool {
    matches!(get(&s.attributes, key), Some(Value::BoolValue(true)))
}

/// The facts of a trace whose summary span is `summary`; `max_findings` bounds the findings.
pub fn facts(g: &TraceGroup<'_>, summary: (&str, &Span), max_findings: usize) -> TraceFacts {
    let (service, root) = summary;
    // In stream mode the summary span is a child of the root: the root's name is the parent's.
    let root_span = if root.parent_span_id.is_empty() {
        Some(root)
    } else {
        g.spans
            .iter()
            .find(|(_, s)| s.span_id == root.parent_span_id)
            .map(|(_, s)| *s)
    };
    let ra = &root.attributes;
    let span_cost: f64 = g
        .spans
        .iter()
        .filter_map(|(_, s)| get_f64(&s.attributes, a::COST_USD))
        .filter(|c| c.is_finite() && *c > 0.0)
        .sum();
    let cost = get_f64(ra, a::TRACE_COST_USD)
        .filter(|c| c.is_finite() && *c >= 0.0)
        .unwrap_or(span_cost);
    let duration_ms = get_f64(ra, a::TRACE_DURATION_MS)
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or_else(|| {
            root_span.map_or(0.0, |r| {
                r.end_time_unix_nano.saturating_sub(r.start_time_unix_nano) as f64 / 1e6
            })
        });
    let bottleneck = get_str(ra, a::TRACE_BOTTLENECK_STAGE).map(|stage| {
        let span_id = get_str(ra, a::TRACE_BOTTLENECK_SPAN_ID).map(str::to_string);
        let span_name = get_str(ra, TRACE_BOTTLENECK_SPAN_NAME)
            .map(str::to_string)
            .or_else(|| {
                let id = span_id.as_deref()?;
                g.spans
                    .iter()
                    .find(|(_, s)| hex(&s.span_id) == id)
                    .map(|(_, s)| s.name.clone())
            });
        Bottleneck {
            stage: stage.to_string(),
            share: get_f64(ra, a::TRACE_BOTTLENECK_SHARE)
                .filter(|x| x.is_finite())
                .unwrap_or(0.0),
            span_id,
            span_name,
        }
    });
    let tokens = |k: &str| {
        get_f64(ra, k)
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map_or(0, |x| x as u64)
    };
    TraceFacts {
        trace_id: hex(g.trace_id),
        service: service.to_string(),
        name: root_span.map_or_else(|| root.name.clone(), |r| r.name.clone()),
        duration_ms,
        cost_usd: cost,
        tokens_input: tokens(a::TRACE_TOKENS_INPUT),
        tokens_output: tokens(a::TRACE_TOKENS_OUTPUT),
        span_count: get_f64(ra, a::TRACE_SPAN_COUNT)
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map_or(g.spans.len(), |x| x as usize),
        bottleneck,
        quality: get_f64(ra, a::QUALITY_SCORE).filter(|q| q.is_finite()),
        error: root_span.is_some_and(is_error) || is_error(root),
        anomalous: g.spans.iter().any(|(_, s)| is_true(s, a::ANOMALY)),
        findings: findings(g, max_findings),
    }
}

impl TraceFacts {
    /// One line for a terminal: service, duration, cost, bottleneck and share, quality, findings.
    pub fn line(&self) -> String {
        use std::fmt::Write;
        let mut s = format!("{} {}", self.service, format_ms(self.duration_ms));
        let _ = write!(s, " ${:.4}", self.cost_usd);
        match &self.bottleneck {
            Some(b) => {
                let _ = write!(s, " bottleneck {}", b.stage);
                if let Some(n) = &b.span_name
                    && n != &b.stage
                {
                    let _ = write!(s, " ({n})");
                }
                let _ = write!(s, " {:.0}%", b.share * 100.0);
            }
            None => s.push_str(" no bottleneck"),
        }
        match self.quality {
            Some(q) => {
                let _ = write!(s, " quality {q:.2}");
            }
            None => s.push_str(" quality -"),
        }
        if self.error {
            s.push_str(" ERROR");
        }
        if self.anomalous {
            s.push_str(" anomalous");
        }
        if self.findings.is_empty() {
            s.push_str(" no findings");
        } else {
            s.push_str(" findings: ");
            let names: Vec<&str> = self.findings.iter().map(|f| f.name.as_str()).collect();
            s.push_str(&names.join(", "));
        }
        s
    }
}

/// `850 ms`, `3.21 s`.
pub fn format_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{kv, kv_f64, kv_str};
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![kv_str("service.name", "rag-api")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(id: u8, parent: Option<u8>, name: &str, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 4_210_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn the_line_says_service_duration_cost_bottleneck_quality_findings() {
        let mut root = span(
            1,
            None,
            "rag.query",
            vec![
                kv_f64(a::TRACE_DURATION_MS, 3210.0),
                kv_f64(a::TRACE_COST_USD, 0.0123),
                kv_str(a::TRACE_BOTTLENECK_STAGE, "retrieval"),
                kv_str(a::TRACE_BOTTLENECK_SPAN_ID, &hex(&[2; 8])),
                kv_f64(a::TRACE_BOTTLENECK_SHARE, 0.87),
                kv_f64(a::QUALITY_SCORE, 0.8234),
            ],
        );
        root.events.push(Event {
            name: a::FINDING_EVENT.into(),
            attributes: vec![
                kv_str(a::FINDING_NAME, "slow_retrieval"),
                kv_str(a::FINDING_SEVERITY, "warning"),
            ],
            ..Default::default()
        });
        let r = request(vec![
            root,
            span(
                2,
                Some(1),
                "retrieval kb_docs",
                vec![kv(a::ANOMALY, Value::BoolValue(true))],
            ),
        ]);
        let groups = group(&r);
        assert_eq!(groups.len(), 1);
        let sum = summary_span(&groups[0], true).expect("a root");
        let f = facts(&groups[0], sum, 10);
        assert_eq!(
            f.line(),
            "rag-api 3.21 s $0.0123 bottleneck retrieval (retrieval kb_docs) 87% quality 0.82 anomalous findings: slow_retrieval"
        );
        assert_eq!(f.trace_id, "07".repeat(16));
        assert!(f.anomalous);
    }

    #[test]
    fn without_analysis_the_root_gives_duration_cost_and_status() {
        let mut root = span(1, None, "GET /", vec![]);
        root.status = Some(Status {
            code: 2,
            ..Default::default()
        });
        let r = request(vec![
            root,
            span(
                2,
                Some(1),
                "chat",
                vec![kv_f64(a::COST_USD, 0.5), kv_f64(a::COST_USD, 0.1)],
            ),
            span(3, Some(1), "chat", vec![kv_f64(a::COST_USD, f64::NAN)]),
        ]);
        let groups = group(&r);
        let f = facts(
            &groups[0],
            summary_span(&groups[0], true).expect("root"),
            10,
        );
        assert_eq!(f.duration_ms, 3210.0);
        assert_eq!(f.cost_usd, 0.5);
        assert!(f.error);
        assert_eq!(
            f.line(),
            "rag-api 3.21 s $0.5000 no bottleneck quality - ERROR no findings"
        );
        // In stream mode a root alone is not yet the analysed request.
        assert!(summary_span(&groups[0], false).is_none());
    }
}
