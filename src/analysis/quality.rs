//! The `quality` processor: per complete trace, signals of answer quality normalised to 0..1 and
//! written on the root span as `rag.quality.<signal>`, with their weighted mean as
//! `rag.quality.score`. No signal, no score: nothing is made up. Put it after `trace_assembly`
//! (hold mode), which hands it whole traces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::{Deserialize, Serialize};

use crate::attributes::{get_f64, put};
use crate::config::{Problems, Validate};
use crate::derived::DerivedMetrics;
use crate::genai::{Stage, view};
use crate::names::attrs as a;
use crate::processor::Processor;
use crate::signal::Batch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// Higher is better (cosine similarity, relevance).
    #[default]
    Similarity,
    /// Lower is better (L2 distance).
    Distance,
}

/// A user-feedback value: an attribute of any span of the trace, or of one of its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackSource {
    /// The event carrying it; omit to read a span attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub attribute: String,
    /// The worst and best values (e.g. -1 and 1 for thumbs down / up).
    #[serde(default)]
    pub min: f64,
    #[serde(default = "one")]
    pub max: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// How retrieval scores read (default similarity).
    #[serde(default)]
    pub score_kind: ScoreKind,
    /// The range of retrieval scores (default [0, 1]).
    #[serde(default = "unit_range")]
    pub score_range: [f64; 2],
    /// Weight per signal (retrieval_top, retrieval_mean, evaluation, feedback, answer);
    /// missing ones weigh 1.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Where user feedback is found.
    #[serde(default)]
    pub feedback: Vec<FeedbackSource>,
}

fn unit_range() -> [f64; 2] {
    [0.0, 1.0]
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            score_kind: ScoreKind::default(),
            score_range: unit_range(),
            weights: BTreeMap::new(),
            feedback: Vec::new(),
        }
    }
}

pub const SIGNALS: [&str; 5] = [
    "retrieval_top",
    "retrieval_mean",
    "evaluation",
    "feedback",
    "answer",
];

impl Validate for QualityConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        let [lo, hi] = self.score_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            problems.push(
                &format!("{path}.score_range"),
                "must be [low, high] with low < high",
            );
        }
        for (k, w) in &self.weights {
            if !SIGNALS.contains(&k.as_str()) {
                problems.push(
                    &format!("{path}.weights.{k}"),
                    format!("unknown signal; known: {}", SIGNALS.join(", ")),
                );
            }
            if !(w.is_finite() && *w >= 0.0) {
                problems.push(&format!("{path}.weights.{k}"), "must be a number >= 0");
            }
        }
        for (i, f) in self.feedback.iter().enumerate() {
            if f.min.is_nan() || f.max.is_nan() || f.min >= f.max {
                problems.push(&format!("{path}.feedback.{i}"), "min must be less than max");
            }
        }
    }
}

/// Flags counted in rag_quality_flags_total.
pub mod flag {
    pub const TRUNCATED: &str = "truncated";
    pub const CONTENT_FILTER: &str = "content_filter";
    pub const ERROR: &str = "error";
}

pub struct QualityProcessor {
    config: QualityConfig,
    derived: Arc<DerivedMetrics>,
}

impl QualityProcessor {
    pub fn new(config: QualityConfig, derived: Arc<DerivedMetrics>) -> Self {
        QualityProcessor { config, derived }
    }

    fn normalise_score(&self, s: f64) -> f64 {
        let [lo, hi] = self.config.score_range;
        let x = ((s - lo) / (hi - lo)).clamp(0.0, 1.0);
        match self.config.score_kind {
            ScoreKind::Similarity => x,
            ScoreKind::Distance => 1.0 - x,
        }
    }

    fn feedback(&self, spans: &[&mut Span]) -> Option<f64> {
        let mut values = Vec::new();
        for f in &self.config.feedback {
            for s in spans.iter() {
                let found = match &f.event {
                    None => get_f64(&s.attributes, &f.attribute)
                        .or_else(|| str_num(&s.attributes, &f.attribute)),
                    Some(ev) => s.events.iter().filter(|e| &e.name == ev).find_map(|e| {
                        get_f64(&e.attributes, &f.attribute)
                            .or_else(|| str_num(&e.attributes, &f.attribute))
                    }),
                };
                if let Some(v) = found {
                    values.push(((v - f.min) / (f.max - f.min)).clamp(0.0, 1.0));
                }
            }
        }
        mean(&values)
    }

    /// Score one whole trace, writing on its root.
    fn score(&self, service: &str, spans: &mut [&mut Span], now: Instant) {
        let Some(root) = spans.iter().position(|s| s.parent_span_id.is_empty()) else {
            return;
        };
        let (mut tops, mut all, mut evals) = (Vec::new(), Vec::new(), Vec::new());
        let mut answer: Option<(u64, f64, Vec<&'static str>)> = None;
        for s in spans.iter() {
            let v = view(s);
            if v.stage == Some(Stage::Retrieval) || v.stage == Some(Stage::Rerank) {
                let scores: Vec<f64> = v
                    .documents
                    .iter()
                    .filter_map(|d| d.score)
                    .map(|x| self.normalise_score(x))
                    .collect();
                if let Some(top) = scores.iter().copied().reduce(f64::max) {
                    tops.push(top);
                }
                all.extend(scores);
            }
            evals.extend(
                v.evaluations
                    .iter()
                    .filter_map(|e| e.score)
                    .map(|x| x.clamp(0.0, 1.0)),
            );
            if v.stage == Some(Stage::Llm)
                && answer
                    .as_ref()
                    .is_none_or(|(end, _, _)| s.end_time_unix_nano >= *end)
            {
                let mut flags = Vec::new();
                if v.error {
                    flags.push(flag::ERROR);
                }
                if v.finish_reasons
                    .iter()
                    .any(|r| *r == "length" || *r == "max_tokens")
                {
                    flags.push(flag::TRUNCATED);
                }
                if v.finish_reasons.contains(&"content_filter") {
                    flags.push(flag::CONTENT_FILTER);
                }
                let value = if flags.is_empty() { 1.0 } else { 0.0 };
                answer = Some((s.end_time_unix_nano, value, flags));
            }
        }
        let mut signals: Vec<(&str, f64)> = Vec::new();
        if let Some(t) = tops.iter().copied().reduce(f64::max) {
            signals.push(("retrieval_top", t));
        }
        if let Some(m) = mean(&all) {
            signals.push(("retrieval_mean", m));
        }
        if let Some(m) = mean(&evals) {
            signals.push(("evaluation", m));
        }
        if let Some(f) = self.feedback(spans) {
            signals.push(("feedback", f));
        }
        let mut flags = Vec::new();
        if let Some((_, v, f)) = &answer {
            signals.push(("answer", *v));
            flags.extend(f.iter().copied());
        }
        if signals.is_empty() {
            return;
        }
        let weight = |k: &str| self.config.weights.get(k).copied().unwrap_or(1.0);
        let total_w: f64 = signals.iter().map(|(k, _)| weight(k)).sum();
        let r = &mut spans[root];
        for (k, v) in &signals {
            put(
                &mut r.attributes,
                &format!("{}{k}", a::QUALITY_PREFIX),
                Value::DoubleValue(*v),
            );
        }
        if total_w > 0.0 {
            let score = signals.iter().map(|(k, v)| weight(k) * v).sum::<f64>() / total_w;
            put(
                &mut r.attributes,
                a::QUALITY_SCORE,
                Value::DoubleValue(score),
            );
            put(
                &mut r.attributes,
                a::QUALITY_SIGNALS,
                Value::IntValue(signals.len() as i64),
            );
            self.derived
                .observe(crate::genai::metrics::QUALITY_SCORE, &[service], score, now);
        }
        for f in flags {
            self.derived.add(
                crate::genai::metrics::QUALITY_FLAGS,
                &[f, service],
                1.0,
                now,
            );
        }
    }
}

fn str_num(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], k: &str) -> Option<f64> {
    crate::attributes::get_str(attrs, k)?.trim().parse().ok()
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl Processor for QualityProcessor {
    fn on_input(&mut self, mut batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        if let Batch::Traces(r) = &mut batch {
            for mut t in super::group_by_trace(r) {
                let mut spans: Vec<&mut Span> = t.spans.iter_mut().map(|(_, s)| &mut **s).collect();
                self.score(t.service, &mut spans, now);
            }
        }
        out.push(batch);
    }
}

#[cfg(test)]
mod tests;
