//! Patterns in whole traces, each reported as a `rag.finding` span event on the span concerned
//! and counted in rag_trace_findings_total{finding,service}.

use crate::trace::FastMap as HashMap;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AssembledTrace, TraceAnalyzer};
use crate::config::{Problems, Validate};
use crate::derived::DerivedMetrics;
use crate::findings::{UNINSTRUMENTED_GAP, finding, finding_event};
use crate::names::attrs as a;
use crate::trace::stage_of;

/// Thresholds of the patterns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternsConfig {
    /// sequential_calls: non-overlapping sibling calls taking at least this share of the trace.
    #[serde(default = "d_seq")]
    pub sequential_min_share: f64,
    /// repeated_retrieval: the same retrieval this many times under one parent.
    #[serde(default = "d_rep")]
    pub repeated_retrieval_min: usize,
    /// slow_first_token: time to first token at least this share of the call…
    #[serde(default = "d_ttft_share")]
    pub slow_first_token_share: f64,
    /// …and at least this long (ms).
    #[serde(default = "d_ttft_ms")]
    pub slow_first_token_min_ms: f64,
    /// uninstrumented_gap: a non-leaf span's own time on the critical path, as a share of the trace.
    #[serde(default = "d_gap")]
    pub uninstrumented_gap_share: f64,
    /// agent_loop: the same tool with the same arguments this many times in one agent run.
    #[serde(default = "d_loop")]
    pub agent_loop_repeats: usize,
    /// excessive_llm_calls: model calls in one agent run at or above this.
    #[serde(default = "d_llm_calls")]
    pub excessive_llm_calls: usize,
}

fn d_loop() -> usize {
    3
}
fn d_llm_calls() -> usize {
    10
}

fn d_seq() -> f64 {
    0.3
}
fn d_rep() -> usize {
    3
}
fn d_ttft_share() -> f64 {
    0.5
}
fn d_ttft_ms() -> f64 {
    1000.0
}
fn d_gap() -> f64 {
    0.4
}

impl Default for PatternsConfig {
    fn default() -> Self {
        PatternsConfig {
            sequential_min_share: d_seq(),
            repeated_retrieval_min: d_rep(),
            slow_first_token_share: d_ttft_share(),
            slow_first_token_min_ms: d_ttft_ms(),
            uninstrumented_gap_share: d_gap(),
            agent_loop_repeats: d_loop(),
            excessive_llm_calls: d_llm_calls(),
        }
    }
}

impl Validate for PatternsConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        for (k, v) in [
            ("sequential_min_share", self.sequential_min_share),
            ("slow_first_token_share", self.slow_first_token_share),
            ("uninstrumented_gap_share", self.uninstrumented_gap_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(&format!("{path}.{k}"), "must be between 0 and 1");
            }
        }
        if self.agent_loop_repeats < 2 {
            problems.push(&format!("{path}.agent_loop_repeats"), "must be at least 2");
        }
        if self.excessive_llm_calls < 2 {
            problems.push(&format!("{path}.excessive_llm_calls"), "must be at least 2");
        }
        if self.repeated_retrieval_min < 2 {
            problems.push(
                &format!("{path}.repeated_retrieval_min"),
                "must be at least 2",
            );
        }
        if self.slow_first_token_min_ms.is_nan() || self.slow_first_token_min_ms < 0.0 {
            problems.push(
                &format!("{path}.slow_first_token_min_ms"),
                "must not be negative",
            );
        }
    }
}

pub struct PatternAnalyzer {
    pub config: PatternsConfig,
    pub derived: Arc<DerivedMetrics>,
}

fn ms(s: &Span) -> f64 {
    s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6
}

fn failed(s: &Span) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.code == StatusCode::Error as i32)
}

fn num(s: &Span, k: &str) -> Option<f64> {
    crate::attributes::get_f64(&s.attributes, k)
}

impl TraceAnalyzer for PatternAnalyzer {
    fn analyze(&mut self, t: &mut AssembledTrace, now: Instant) {
        if !t.has_root {
            return;
        }
        let Some(root) = t.spans.iter().position(|s| s.parent_span_id.is_empty()) else {
            return;
        };
        let trace_ms = ms(&t.spans[root]);
        if trace_ms <= 0.0 {
            return;
        }
        let c = &self.config;
        let mut found: Vec<(usize, Event)> = Vec::new();
        let mut children: HashMap<&[u8], Vec<usize>> = HashMap::default();
        for (i, s) in t.spans.iter().enumerate() {
            if !s.parent_span_id.is_empty() {
                children
                    .entry(s.parent_span_id.as_slice())
                    .or_default()
                    .push(i);
            }
        }
        let index: HashMap<&[u8], usize> = t
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id.as_slice(), i))
            .collect();
        let owners = crate::trace::Owners::of(&t.spans);
        for (parent_id, kids) in &children {
            let Some(&p) = index.get(parent_id) else {
                continue;
            };
            let parent_start = t.spans[p].start_time_unix_nano;
            // sequential_calls: runs of non-overlapping sibling calls of one stage (LLM, retrieval
            // or tool) with nothing else between them. Calls of different stages are left
            // alone: an answer waits for its retrieval by design; and a call that follows a
            // step of another kind (a tool call between two model calls) may depend on it. An
            // agent's model calls are its turns, each answering what the last one asked for:
            // never independent.
            let under_agent = owners.stage[p] == "agent";
            for stage in ["llm", "retrieval", "tool"] {
                if stage == "llm" && under_agent {
                    continue;
                }
                let mut calls: Vec<usize> = kids
                    .iter()
                    .copied()
                    .filter(|i| stage_of(&t.spans[*i]) == Some(stage))
                    .collect();
                calls.sort_by_key(|i| t.spans[*i].start_time_unix_nano);
                let mut run: Vec<usize> = Vec::new();
                let flush_run = |run: &mut Vec<usize>, found: &mut Vec<(usize, Event)>| {
                    let total: f64 = run.iter().map(|i| ms(&t.spans[*i])).sum();
                    if run.len() >= 2 && total >= c.sequential_min_share * trace_ms {
                        let ids: Vec<&[u8]> =
                            run.iter().map(|i| t.spans[*i].span_id.as_slice()).collect();
                        let names: Vec<&str> =
                            run.iter().map(|i| t.spans[*i].name.as_str()).collect();
                        let d = format!(
                            "{} calls ran one after another ({}) and took {total:.1} ms, {:.0}% of the {trace_ms:.1} ms trace; they may run in parallel",
                            run.len(),
                            names.join(", "),
                            100.0 * total / trace_ms
                        );
                        found.push((
                            p,
                            finding_event(
                                parent_start,
                                finding::SEQUENTIAL_CALLS,
                                d,
                                "warning",
                                &ids,
                            ),
                        ));
                    }
                    run.clear();
                };
                for &i in &calls {
                    if let Some(&last) = run.last() {
                        let (gap_from, gap_to) = (
                            t.spans[last].end_time_unix_nano,
                            t.spans[i].start_time_unix_nano,
                        );
                        let step_between = kids.iter().any(|k| {
                            stage_of(&t.spans[*k]) != Some(stage)
                                && (gap_from..=gap_to).contains(&t.spans[*k].start_time_unix_nano)
                        });
                        if gap_to < gap_from || step_between {
                            flush_run(&mut run, &mut found);
                        }
                    }
                    run.push(i);
                }
                flush_run(&mut run, &mut found);
            }

            // repeated_retrieval: the same retrieval operation again and again under one parent.
            let mut by_name: HashMap<&str, Vec<usize>> = HashMap::default();
            for &i in kids {
                if stage_of(&t.spans[i]) == Some("retrieval") {
                    by_name.entry(t.spans[i].name.as_str()).or_default().push(i);
                }
            }
            for (name, v) in by_name {
                if v.len() >= c.repeated_retrieval_min {
                    let ids: Vec<&[u8]> =
                        v.iter().map(|i| t.spans[*i].span_id.as_slice()).collect();
                    let total: f64 = v.iter().map(|i| ms(&t.spans[*i])).sum();
                    let d = format!(
                        "retrieval {name:?} ran {} times under one parent ({total:.1} ms in all): an N+1 pattern; batch the queries",
                        v.len()
                    );
                    found.push((
                        p,
                        finding_event(
                            parent_start,
                            finding::REPEATED_RETRIEVAL,
                            d,
                            "warning",
                            &ids,
                        ),
                    ));
                }
            }

            // retry: a failed LLM or retrieval call followed by the same call.
            for &f in kids.iter().filter(|i| {
                failed(&t.spans[**i])
                    && matches!(stage_of(&t.spans[**i]), Some("llm" | "retrieval"))
            }) {
                let fs = &t.spans[f];
                let again = kids
                    .iter()
                    .copied()
                    .filter(|j| {
                        *j != f
                            && t.spans[*j].name == fs.name
                            && t.spans[*j].start_time_unix_nano >= fs.end_time_unix_nano
                    })
                    .min_by_key(|j| t.spans[*j].start_time_unix_nano);
                if let Some(r) = again {
                    let lost = t.spans[r]
                        .start_time_unix_nano
                        .saturating_sub(fs.start_time_unix_nano)
                        as f64
                        / 1e6;
                    let d = format!(
                        "{:?} failed and was called again: {lost:.1} ms lost to the failed attempt",
                        fs.name
                    );
                    let ids = [fs.span_id.as_slice(), t.spans[r].span_id.as_slice()];
                    found.push((
                        r,
                        finding_event(
                            t.spans[r].start_time_unix_nano,
                            finding::RETRY,
                            d,
                            "warning",
                            &ids,
                        ),
                    ));
                }
            }
        }
        let mut gaps: Vec<usize> = Vec::new();
        for (i, s) in t.spans.iter().enumerate() {
            // slow_first_token
            if stage_of(s) == Some("llm")
                && let Some(ttft) = num(s, a::LLM_TTFT_MS)
            {
                let call = ms(s);
                if call > 0.0
                    && ttft >= c.slow_first_token_share * call
                    && ttft >= c.slow_first_token_min_ms
                {
                    let d = format!(
                        "time to first token was {ttft:.1} ms, {:.0}% of the {call:.1} ms call",
                        100.0 * ttft / call
                    );
                    found.push((
                        i,
                        finding_event(
                            s.start_time_unix_nano,
                            finding::SLOW_FIRST_TOKEN,
                            d,
                            "warning",
                            &[&s.span_id],
                        ),
                    ));
                }
            }
            // uninstrumented_gap: a non-GenAI span's own time on the critical path, when it has
            // children (a leaf's time is all its own, by design). A GenAI span's own time is
            // the model's or the tool's, and what its library's own helper spans (an HTTP
            // client span under a chat call) do is part of it. This is about the
            // instrumentation, not the service: it goes to the lint (counted in
            // rag_instrumentation_issues_total, the time on the span), never a finding.
            if owners.stage[i] == crate::trace::APP
                && !owners.absorbed(i)
                && children.contains_key(s.span_id.as_slice())
                && num(s, a::CRITICAL_PATH_MS)
                    .is_some_and(|path_ms| path_ms >= c.uninstrumented_gap_share * trace_ms)
            {
                gaps.push(i);
            }
        }
        for i in gaps {
            let svc = t.service(i).unwrap_or("unknown_service").to_string();
            self.derived.add(
                crate::derived::defs::ISSUES,
                &[&svc, UNINSTRUMENTED_GAP],
                1.0,
                now,
            );
            if let Some(s) = t.spans.get_mut(i)
                && let Some(ms) = num(s, a::CRITICAL_PATH_MS)
            {
                crate::attributes::put(
                    &mut s.attributes,
                    a::UNINSTRUMENTED_MS,
                    Value::DoubleValue(ms),
                );
            }
        }
        attach(t, found, &self.derived, now);
    }
}

/// Put each finding's event on its span and count it in rag_trace_findings_total under the
/// trace's service (the root's), as the `trace_pattern` alert compares it with the service's
/// requests.
pub(crate) fn attach(
    t: &mut AssembledTrace,
    found: Vec<(usize, Event)>,
    derived: &DerivedMetrics,
    now: Instant,
) {
    let root = t.spans.iter().position(|s| s.parent_span_id.is_empty());
    let service = root
        .and_then(|r| t.service(r))
        .unwrap_or("unknown_service")
        .to_string();
    for (i, e) in found {
        let name = crate::attributes::get_str(&e.attributes, a::FINDING_NAME)
            .unwrap_or_default()
            .to_string();
        derived.add(crate::derived::defs::FINDINGS, &[&name, &service], 1.0, now);
        if let Some(s) = t.spans.get_mut(i) {
            s.events.push(e);
        }
    }
}

#[cfg(test)]
mod tests;
