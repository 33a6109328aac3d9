//! The GenAI facts of a batch's spans, read once and handed along with the batch.
//!
//! The `genai` processor reads every span's [`GenAiView`] (one pass over its attributes and
//! events, JSON included); the stages after it (quality, anomaly, slo) need a few of the same
//! facts. Rather than read the view again in each stage, the chain runner hands a batch's
//! [`Facts`] from stage to stage beside it (see `processor::Processor::on_input_with`), and
//! `trace_assembly` carries each span's facts while it holds the span.
//!
//! Facts are found by span identity (trace id and span id), not by position: a stage may
//! reorder, regroup or drop spans and the facts of the others stay right. A stage that finds no
//! facts for a span (no `genai` stage before it, or a stage in between that does not carry them)
//! reads the view itself ([`Facts::get_or_read`]): the facts are a saving, never a dependency.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::view::{GenAiView, view};
use crate::stage::Stage;

/// A span's identity: its trace id and span id (OTLP's 16 and 8 bytes).
pub type SpanKey = [u8; 24];

/// The identity of `s`, or None for a span whose ids have the wrong length (receivers reject
/// those; such a span simply has no facts).
pub fn span_key(s: &Span) -> Option<SpanKey> {
    let (Ok(t), Ok(sp)) = (
        <[u8; 16]>::try_from(s.trace_id.as_slice()),
        <[u8; 8]>::try_from(s.span_id.as_slice()),
    ) else {
        return None;
    };
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&t);
    k[16..].copy_from_slice(&sp);
    Some(k)
}

/// The facts of one span the stages after `genai` read: owned, compact, and the same as the
/// span's [`GenAiView`] gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanFacts {
    /// The span's role; None when it is not a GenAI span.
    pub stage: Option<Stage>,
    /// The span's status is ERROR.
    pub error: bool,
    /// The model that answered, else the one requested.
    pub model: Option<Arc<str>>,
    /// The agent's name.
    pub agent_name: Option<Arc<str>>,
    /// The tool's name.
    pub tool_name: Option<Arc<str>>,
    /// Input tokens, normalised (cached included).
    pub input_tokens: Option<u64>,
    /// Output tokens, normalised (reasoning included).
    pub output_tokens: Option<u64>,
    /// Time to first token.
    pub time_to_first_token: Option<Duration>,
    /// Documents retrieved or reranked.
    pub documents: usize,
    /// The documents' scores, in rank order (documents without a score left out).
    pub document_scores: Box<[f64]>,
    /// Evaluation results' numeric scores.
    pub evaluation_scores: Box<[f64]>,
    /// A finish reason says the answer was cut (`length`, `max_tokens`).
    pub truncated: bool,
    /// A finish reason says a content filter stopped the answer.
    pub content_filtered: bool,
}

impl SpanFacts {
    /// The facts of a view. `names` shares equal model, agent and tool names between spans.
    pub fn from_view(v: &GenAiView<'_>, names: &mut Names) -> SpanFacts {
        SpanFacts {
            stage: v.stage,
            error: v.error,
            model: v.model().map(|m| names.get(m)),
            agent_name: v.agent_name.map(|m| names.get(m)),
            tool_name: v.tool_name.map(|m| names.get(m)),
            input_tokens: v.tokens.input,
            output_tokens: v.tokens.output,
            time_to_first_token: v.time_to_first_token,
            documents: v.documents.len(),
            document_scores: v.documents.iter().filter_map(|d| d.score).collect(),
            evaluation_scores: v.evaluations.iter().filter_map(|e| e.score).collect(),
            truncated: v
                .finish_reasons
                .iter()
                .any(|r| *r == "length" || *r == "max_tokens"),
            content_filtered: v.finish_reasons.contains(&"content_filter"),
        }
    }

    /// Read the facts of `s` (its view).
    pub fn read(s: &Span, names: &mut Names) -> SpanFacts {
        SpanFacts::from_view(&view(s), names)
    }
}

/// Model, agent and tool names shared between spans: a batch names few, so each is allocated
/// once (bounded: past [`Names::MAX`] distinct names, the table starts afresh).
#[derive(Default)]
pub struct Names(hashbrown::HashSet<Arc<str>>);

impl Names {
    /// Distinct names kept at most.
    pub const MAX: usize = 4096;

    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(k) = self.0.get(name) {
            return k.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let k: Arc<str> = Arc::from(name);
        self.0.insert(k.clone());
        k
    }
}

/// The facts of a batch's spans, by span identity.
#[derive(Default, Debug, Clone)]
pub struct Facts(hashbrown::HashMap<SpanKey, SpanFacts>);

impl Facts {
    /// Facts for about `n` spans.
    pub fn with_capacity(n: usize) -> Facts {
        Facts(hashbrown::HashMap::with_capacity(n))
    }

    /// Record the facts of `s`.
    pub fn insert(&mut self, s: &Span, f: SpanFacts) {
        if let Some(k) = span_key(s) {
            self.0.insert(k, f);
        }
    }

    /// The facts of `s`, when they were handed along.
    pub fn get(&self, s: &Span) -> Option<&SpanFacts> {
        self.0.get(&span_key(s)?)
    }

    /// Take the facts of `s` out (a stage that holds the span keeps them beside it).
    pub fn take(&mut self, s: &Span) -> Option<SpanFacts> {
        self.0.remove(&span_key(s)?)
    }

    /// Read the facts of every span of `spans` that has none yet (no `genai` stage before,
    /// or a stage in between that did not carry them), so the stages after find them too.
    /// Returns how many were read.
    pub fn fill<'s>(&mut self, spans: impl Iterator<Item = &'s Span>, names: &mut Names) -> usize {
        let mut read = 0;
        for s in spans {
            if let Some(k) = span_key(s) {
                self.0.entry(k).or_insert_with(|| {
                    read += 1;
                    SpanFacts::read(s, names)
                });
            }
        }
        read
    }

    /// The facts handed along with request `r` (none: an empty set), with every span that came
    /// without read now ([`Facts::fill`]).
    pub fn for_request(
        facts: Option<Facts>,
        r: &ExportTraceServiceRequest,
        names: &mut Names,
    ) -> Facts {
        let mut facts = facts.unwrap_or_default();
        let all = r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans);
        facts.fill(all, names);
        facts
    }

    /// The facts of `s`: handed along (or filled), else read now (a span without a valid
    /// identity).
    pub fn of(&self, s: &Span) -> Cow<'_, SpanFacts> {
        match self.get(s) {
            Some(f) => Cow::Borrowed(f),
            None => Cow::Owned(SpanFacts::read(s, &mut Names::default())),
        }
    }

    /// Spans with facts.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no span has facts.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add `other`'s facts (batches merged into one).
    pub fn extend(&mut self, other: Facts) {
        self.0.extend(other.0);
    }
}
