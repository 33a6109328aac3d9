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
use crate::genai::{Facts, Names};
use crate::names::attrs as a;
use crate::processor::{Processor, WithFacts, dropping_facts, with_trace_facts};
use crate::signal::Batch;
use crate::stage::Stage;

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
    /// Attributes of a retrieval (or rerank) span giving the number of documents asked for.
    #[serde(default = "default_top_k_attributes")]
    pub top_k_attributes: Vec<String>,
    /// Lexical groundedness of the answer in the retrieved text; only where both were captured.
    #[serde(default)]
    pub groundedness: bool,
}

fn default_top_k_attributes() -> Vec<String> {
    [
        "db.vector.query.top_k",
        "gen_ai.retrieval.top_k",
        "retrieval.top_k",
        "reranker.top_k",
    ]
    .map(String::from)
    .to_vec()
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
            top_k_attributes: default_top_k_attributes(),
            groundedness: false,
        }
    }
}

pub const SIGNALS: [&str; 7] = [
    "retrieval_top",
    "retrieval_mean",
    "retrieval_coverage",
    "evaluation",
    "feedback",
    "answer",
    "groundedness",
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
    pub const EMPTY_OUTPUT: &str = "empty_output";
    pub const EMPTY_RETRIEVAL: &str = "empty_retrieval";
    /// An agent run stopped at its limit, or ended in an error (a failed tool it could not
    /// recover from): whatever its last model call said, the question was not answered.
    pub const AGENT_FAILED: &str = "agent_failed";
}

pub struct QualityProcessor {
    config: QualityConfig,
    derived: Arc<DerivedMetrics>,
    /// Names shared by the facts this stage reads itself (spans that came without).
    names: Names,
}

impl QualityProcessor {
    pub fn new(config: QualityConfig, derived: Arc<DerivedMetrics>) -> Self {
        QualityProcessor {
            config,
            derived,
            names: Names::default(),
        }
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
    fn score(&self, service: &str, spans: &mut [&mut Span], facts: &Facts, now: Instant) {
        let Some(root) = spans.iter().position(|s| s.parent_span_id.is_empty()) else {
            return;
        };
        let (mut tops, mut all, mut evals) = (Vec::new(), Vec::new(), Vec::new());
        let mut coverage = Vec::new();
        let mut empty_retrieval = false;
        let mut retrieved_text = String::new();
        let mut answer: Option<(u64, f64, Vec<&'static str>)> = None;
        let mut answer_text: Option<(u64, String)> = None;
        for s in spans.iter() {
            let v = facts.of(s);
            if v.stage == Some(Stage::Retrieval) {
                let top_k = self
                    .config
                    .top_k_attributes
                    .iter()
                    .find_map(|k| get_f64(&s.attributes, k).or_else(|| str_num(&s.attributes, k)))
                    .filter(|k| *k >= 1.0);
                if has_documents_record(s) {
                    let n = v.documents.max(indexed_documents(s)) as f64;
                    if n == 0.0 {
                        empty_retrieval = true;
                        coverage.push(0.0);
                    } else if let Some(k) = top_k {
                        coverage.push((n / k).min(1.0));
                    }
                }
                if self.config.groundedness {
                    document_text(s, &mut retrieved_text);
                }
            }
            if v.stage == Some(Stage::Retrieval) || v.stage == Some(Stage::Rerank) {
                let scores: Vec<f64> = v
                    .document_scores
                    .iter()
                    .map(|x| self.normalise_score(*x))
                    .collect();
                if let Some(top) = scores.iter().copied().reduce(f64::max) {
                    tops.push(top);
                }
                all.extend(scores);
            }
            evals.extend(v.evaluation_scores.iter().map(|x| x.clamp(0.0, 1.0)));
            if v.stage == Some(Stage::Llm)
                && answer
                    .as_ref()
                    .is_none_or(|(end, _, _)| s.end_time_unix_nano >= *end)
            {
                let mut flags = Vec::new();
                if v.error {
                    flags.push(flag::ERROR);
                }
                if v.truncated {
                    flags.push(flag::TRUNCATED);
                }
                if v.content_filtered {
                    flags.push(flag::CONTENT_FILTER);
                }
                let text = output_text(s);
                if !v.error && text.as_deref().is_some_and(|t| t.trim().is_empty()) {
                    flags.push(flag::EMPTY_OUTPUT);
                }
                let value = if flags.is_empty() { 1.0 } else { 0.0 };
                answer = Some((s.end_time_unix_nano, value, flags));
                answer_text = text.map(|t| (s.end_time_unix_nano, t));
            }
        }
        let mut signals: Vec<(&str, f64)> = Vec::new();
        if let Some(t) = tops.iter().copied().reduce(f64::max) {
            signals.push(("retrieval_top", t));
        }
        if let Some(m) = mean(&all) {
            signals.push(("retrieval_mean", m));
        }
        if let Some(m) = mean(&coverage) {
            signals.push(("retrieval_coverage", m));
        }
        if let Some(m) = mean(&evals) {
            signals.push(("evaluation", m));
        }
        if let Some(f) = self.feedback(spans) {
            signals.push(("feedback", f));
        }
        let mut flags = Vec::new();
        // `trace_assembly` wrote each agent run's outcome before this stage.
        let agent_failed = spans.iter().any(|s| {
            matches!(
                crate::attributes::get_str(&s.attributes, crate::names::attrs::AGENT_OUTCOME),
                Some("limit_reached" | "error")
            )
        });
        if agent_failed {
            signals.push(("answer", 0.0));
            flags.push(flag::AGENT_FAILED);
        } else if let Some((_, v, f)) = &answer {
            signals.push(("answer", *v));
            flags.extend(f.iter().copied());
        }
        if empty_retrieval {
            flags.push(flag::EMPTY_RETRIEVAL);
        }
        if self.config.groundedness
            && let Some((_, text)) = &answer_text
            && let Some(g) = groundedness(text, &retrieved_text)
        {
            signals.push(("groundedness", g));
        }
        if signals.is_empty() {
            return;
        }
        let weight = |k: &str| self.config.weights.get(k).copied().unwrap_or(1.0);
        let total_w: f64 = signals.iter().map(|(k, _)| weight(k)).sum();
        let r = &mut spans[root];
        // `rag.quality.<signal>`, written into one buffer (format! showed in the profile).
        let mut key = String::from(a::QUALITY_PREFIX);
        for (k, v) in &signals {
            key.truncate(a::QUALITY_PREFIX.len());
            key.push_str(k);
            put(&mut r.attributes, &key, Value::DoubleValue(*v));
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
                .observe(crate::derived::defs::QUALITY_SCORE, &[service], score, now);
        }
        for f in flags {
            self.derived
                .add(crate::derived::defs::QUALITY_FLAGS, &[f, service], 1.0, now);
        }
    }
}

fn str_num(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], k: &str) -> Option<f64> {
    crate::attributes::get_str(attrs, k)?.trim().parse().ok()
}

/// Whether the span records its documents at all (so that none means an empty retrieval, not
/// an instrumentation that does not capture them).
fn has_documents_record(s: &Span) -> bool {
    s.attributes.iter().any(|kv| {
        kv.key == "gen_ai.retrieval.documents"
            || kv.key.starts_with("retrieval.documents.")
            || kv.key == "retrieval.documents"
    })
}

/// How many `retrieval.documents.N.*` documents the span has (whatever fields they carry).
fn indexed_documents(s: &Span) -> usize {
    s.attributes
        .iter()
        .filter_map(|kv| kv.key.strip_prefix("retrieval.documents."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// Append the retrieved documents' text: OpenInference `retrieval.documents.N.document.content`
/// and the `content` of the JSON objects of `gen_ai.retrieval.documents`.
fn document_text(s: &Span, out: &mut String) {
    for kv in &s.attributes {
        let Some(Value::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        if kv.key.starts_with("retrieval.documents.") && kv.key.ends_with(".document.content") {
            out.push_str(v);
            out.push('\n');
        } else if kv.key == "gen_ai.retrieval.documents"
            && let Ok(serde_json::Value::Array(docs)) = serde_json::from_str(v)
        {
            for d in docs {
                if let Some(c) = d.get("content").and_then(|c| c.as_str()) {
                    out.push_str(c);
                    out.push('\n');
                }
            }
        }
    }
}

/// The answer's text, where content was captured: `gen_ai.output.messages` (parts of type
/// text), OpenInference `llm.output_messages.N.message.content`, OpenLLMetry
/// `gen_ai.completion.N.content`, or `output.value`.
fn output_text(s: &Span) -> Option<String> {
    let mut out: Option<String> = None;
    let mut add = |t: &str| {
        let o = out.get_or_insert_with(String::new);
        o.push_str(t);
        o.push('\n');
    };
    for kv in &s.attributes {
        let Some(Value::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        let k = kv.key.as_str();
        if k == "gen_ai.output.messages" {
            if let Ok(serde_json::Value::Array(msgs)) = serde_json::from_str(v) {
                for m in msgs {
                    for p in m
                        .get("parts")
                        .and_then(|p| p.as_array())
                        .into_iter()
                        .flatten()
                    {
                        if let Some(c) = p.get("content").and_then(|c| c.as_str()) {
                            add(c);
                        }
                    }
                }
            }
        } else if (k.starts_with("llm.output_messages.") && k.ends_with(".message.content"))
            || (k.starts_with("gen_ai.completion.") && k.ends_with(".content"))
            || k == "output.value"
        {
            add(v);
        }
    }
    out
}

/// Words that carry no content.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "have", "his", "how", "its", "may", "who", "that", "this", "with",
    "from", "they", "will", "would", "there", "their", "what", "when", "which", "were", "been",
    "also", "into", "than", "then", "them", "these", "those", "such", "some", "your", "about",
    "only", "other", "more", "most", "very", "just", "does", "did", "each", "here", "over",
];

fn content_words(text: &str) -> std::collections::HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// The share of the answer's content words found in the retrieved text; None when either text
/// is missing or the answer has no content word.
pub fn groundedness(answer: &str, retrieved: &str) -> Option<f64> {
    let a = content_words(answer);
    let r = content_words(retrieved);
    if a.is_empty() || r.is_empty() {
        return None;
    }
    Some(a.iter().filter(|w| r.contains(*w)).count() as f64 / a.len() as f64)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl Processor for QualityProcessor {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// Reads the facts handed along (the view only of spans without), and hands them on.
    fn on_input_with(
        &mut self,
        batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        let mut names = std::mem::take(&mut self.names);
        with_trace_facts(batch, facts, &mut names, out, |r, facts| {
            for mut t in crate::trace::group_by_trace(r) {
                let mut spans: Vec<&mut Span> = t.spans.iter_mut().map(|(_, s)| &mut **s).collect();
                self.score(t.service, &mut spans, facts, now);
            }
        });
        self.names = names;
    }
}

#[cfg(test)]
mod tests;
