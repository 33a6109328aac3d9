//! A GenAI view of one span: the canonical facts, read through the alias table in one pass over
//! the attributes and one over the events, borrowing from the span.
//!
//! A span is a GenAI span when it carries at least one GenAI attribute ([`Field::marks_genai`]);
//! for any other span (a plain HTTP server span, a database call) [`GenAiView::stage`] is `None`.
//! `Some(Stage::Other)` is a GenAI span whose role is not known (an OpenInference `PROMPT` span, a
//! span with only a provider attribute). The stage comes from attributes, never from the span kind
//! (OpenInference writes LLM calls as INTERNAL spans).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::Event, status::StatusCode};
use serde::Deserialize;

use super::aliases::{self, Field, Indexed, Spelling, Status, event, kinds};
use crate::stage::Stage;

/// Token counts, normalised to the conventions: `input` includes cached tokens (read and written)
/// and `output` includes reasoning tokens. See [`view`] for the normalisation rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, cached ones included.
    pub input: Option<u64>,
    /// Output tokens, reasoning ones included.
    pub output: Option<u64>,
    /// Input tokens read from a prompt cache.
    pub cache_read: Option<u64>,
    /// Input tokens written to a prompt cache.
    pub cache_write: Option<u64>,
    /// Output tokens spent on reasoning.
    pub reasoning: Option<u64>,
    /// The total as the library reported it (not normalised; for reference only).
    pub total: Option<u64>,
    /// The span reported input exclusive of cached tokens and the view added them.
    pub cache_added_to_input: bool,
}

impl Tokens {
    /// Whether any count is known.
    pub fn any(&self) -> bool {
        self.input.is_some()
            || self.output.is_some()
            || self.cache_read.is_some()
            || self.cache_write.is_some()
    }
}

/// A retrieved or reranked document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document<'a> {
    /// The document id, where the library recorded one.
    pub id: Option<Cow<'a, str>>,
    /// The relevance score, where the library recorded one.
    pub score: Option<f64>,
}

/// An evaluation result (relevance, groundedness, ...) found on the span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation<'a> {
    /// The metric or criterion.
    pub name: Option<&'a str>,
    /// The numeric result.
    pub score: Option<f64>,
    /// The categorical result.
    pub label: Option<&'a str>,
}

/// The aliases a span used: deprecated OTel spellings and libraries' own spellings of facts the
/// conventions name ([`Status::Deprecated`], [`Status::Library`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliasSet(u128);

impl AliasSet {
    fn insert(&mut self, spelling: &Spelling) {
        if matches!(spelling.status, Status::Deprecated | Status::Library) {
            self.0 |= 1u128 << spelling.index;
        }
    }

    /// Whether no such spelling was used.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Whether the alias `key` was used.
    pub fn contains(&self, key: &str) -> bool {
        aliases::lookup(key).is_some_and(|s| self.0 & (1u128 << s.index) != 0)
    }

    /// The spellings used, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &'static Spelling> + '_ {
        aliases::SPELLINGS
            .iter()
            .filter(|s| self.0 & (1u128 << s.index) != 0)
    }
}

/// The canonical GenAI facts of one span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenAiView<'a> {
    /// The span's role; `None` when the span is not a GenAI span at all.
    pub stage: Option<Stage>,
    /// The operation as written (`chat`, `embeddings`, ...).
    pub operation: Option<&'a str>,
    /// The provider as written (see [`aliases::canonical_provider`]).
    pub provider: Option<&'a str>,
    /// The requested model.
    pub request_model: Option<&'a str>,
    /// The model that answered.
    pub response_model: Option<&'a str>,
    /// Token counts, normalised.
    pub tokens: Tokens,
    /// Whether the response was streamed, where known.
    pub streaming: Option<bool>,
    /// Time to first token: from an attribute, else derived from a first-token timestamp or
    /// event; `None` when unknown, and always `None` on a call known not to stream (OpenLIT
    /// writes the whole call's duration there on non-streaming calls).
    pub time_to_first_token: Option<Duration>,
    /// The span lost events (`droppedEventsCount` > 0): the first chunk's event may be gone, so
    /// no time to first token is derived from events (the SDK keeps only the last 128).
    pub events_dropped: bool,
    /// Finish reasons.
    pub finish_reasons: Vec<&'a str>,
    /// The span's status is ERROR (the reliable signal; `error.type` is not).
    pub error: bool,
    /// Retrieved (or reranked) documents, in rank order.
    pub documents: Vec<Document<'a>>,
    /// Evaluation results on the span's attributes or events.
    pub evaluations: Vec<Evaluation<'a>>,
    /// Session or conversation id.
    pub session_id: Option<&'a str>,
    /// End-user id.
    pub user_id: Option<&'a str>,
    /// A cost in USD supplied by the instrumentation.
    pub supplied_cost_usd: Option<f64>,
    /// Deprecated or library-specific aliases the span used (for a lint).
    pub aliases_used: AliasSet,
    /// The agent's name (an agent span's, or the agent a model or tool call ran for, where the
    /// library writes it).
    pub agent_name: Option<&'a str>,
    /// The tool's name, on a tool span.
    pub tool_name: Option<&'a str>,
    /// The tool call's id.
    pub tool_call_id: Option<&'a str>,
    /// The tool call's arguments, as written (usually JSON).
    pub tool_arguments: Option<Cow<'a, str>>,
    /// The MCP method of an MCP span (`tools/call`, `tools/list`, `initialize`, ...).
    pub mcp_method: Option<&'a str>,
}

impl<'a> GenAiView<'a> {
    /// Whether the span is a GenAI span.
    pub fn is_genai(&self) -> bool {
        self.stage.is_some()
    }

    /// The model to report: the answering one, else the requested one.
    pub fn model(&self) -> Option<&'a str> {
        self.response_model.or(self.request_model)
    }
}

/// Reads the GenAI view of a span.
///
/// ## Token normalisation
///
/// The conventions count cached tokens inside input tokens (`input = uncached + cache_read +
/// cache_write`) and reasoning tokens inside output tokens; the view always reports them so.
/// Anthropic's raw usage block does not: its `input_tokens` excludes `cache_read_input_tokens` and
/// `cache_creation_input_tokens`, and some integrations copy it unchanged. The view adds the cache
/// tokens to `input`, once, when the span shows its input was exclusive:
///
/// 1. `cache_read + cache_write > input`, impossible for an inclusive count; or
/// 2. the library's own total equals `input + output + cache_read + cache_write`; or
/// 3. the provider is Anthropic (or Bedrock/Vertex serving a Claude model) and the counts come
///    from an integration known to copy the raw block: the raw Anthropic spelling
///    (`gen_ai.usage.cache_read_input_tokens`, `gen_ai.usage.cache_creation_input_tokens`) from a
///    library other than OpenLLMetry (which adds the cache itself, and marks its spans with
///    `llm.request.type` or `traceloop.*`), or OpenLIT (`telemetry.sdk.name = openlit`, whose
///    Anthropic integration writes the raw `input_tokens`).
///
/// Otherwise input is taken as inclusive, as the conventions say. Likewise, reasoning tokens
/// larger than output tokens mean output excluded them, and they are added. Langfuse
/// `usage_details` are disjoint buckets by design (`input` = uncached), so the view sums them; they
/// are read only when the span has no token attribute.
pub fn view(span: &Span) -> GenAiView<'_> {
    let mut b = Builder::default();
    for kv in &span.attributes {
        b.attribute(kv);
    }
    for ev in &span.events {
        b.event(ev);
    }
    b.finish(span)
}

/// A value seen under some spelling; a lower rank (table index) is preferred.
#[derive(Clone, Copy, Debug)]
struct Slot<T> {
    value: Option<T>,
    rank: u8,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: None,
            rank: u8::MAX,
        }
    }
}

impl<T> Slot<T> {
    fn offer(&mut self, value: Option<T>, rank: u8) {
        if value.is_some() && (self.value.is_none() || rank < self.rank) {
            self.value = value;
            self.rank = rank;
        }
    }
}

#[derive(Default)]
struct Builder<'a> {
    operation: Slot<&'a str>,
    provider: Slot<&'a str>,
    request_model: Slot<&'a str>,
    response_model: Slot<&'a str>,
    model: Slot<&'a str>,
    embedding_model: Slot<&'a str>,
    reranker_model: Slot<&'a str>,
    input: Slot<u64>,
    output: Slot<u64>,
    total: Slot<u64>,
    cache_read: Slot<u64>,
    cache_write: Slot<u64>,
    reasoning: Slot<u64>,
    streaming: Slot<bool>,
    ttft_seconds: Slot<f64>,
    completion_start: Option<&'a str>,
    finish_reasons: Slot<&'a Value>,
    retrieval_json: Option<&'a str>,
    session: Slot<&'a str>,
    user: Slot<&'a str>,
    supplied_cost: Slot<f64>,
    langfuse_cost: Option<&'a str>,
    langfuse_usage: Option<&'a str>,
    openinference_kind: Option<&'a str>,
    traceloop_kind: Option<&'a str>,
    request_type: Option<&'a str>,
    langfuse_type: Option<&'a str>,
    invocation_parameters: Option<&'a str>,
    openlit: bool,
    openllmetry: bool,
    raw_cache_spelling: bool,
    genai: bool,
    retrieval_evidence: bool,
    rerank_evidence: bool,
    indexed_documents: Vec<(usize, Document<'a>)>,
    indexed_evaluations: Vec<(usize, Evaluation<'a>)>,
    event_documents: Vec<Document<'a>>,
    evaluations: Vec<Evaluation<'a>>,
    first_token_ns: Option<u64>,
    aliases: AliasSet,
    agent_name: Slot<&'a str>,
    tool_name: Slot<&'a str>,
    tool_call_id: Slot<&'a str>,
    tool_arguments: Option<&'a str>,
    mcp_method: Option<&'a str>,
    input_value: Option<&'a str>,
    metadata: Option<&'a str>,
    entity_name: Option<&'a str>,
    entity_input: Option<&'a str>,
}

impl<'a> Builder<'a> {
    fn attribute(&mut self, kv: &'a KeyValue) {
        let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            return;
        };
        let Some(spelling) = aliases::lookup(&kv.key) else {
            self.indexed(&kv.key, value);
            return;
        };
        self.aliases.insert(spelling);
        self.genai |= spelling.field.marks_genai();
        let rank = spelling.index;
        match spelling.field {
            Field::Operation => self.operation.offer(text(value), rank),
            Field::Provider => self.provider.offer(text(value), rank),
            Field::RequestModel => self.request_model.offer(text(value), rank),
            Field::ResponseModel => self.response_model.offer(text(value), rank),
            Field::Model => self.model.offer(text(value), rank),
            Field::EmbeddingModel => self.embedding_model.offer(text(value), rank),
            Field::RerankerModel => self.reranker_model.offer(text(value), rank),
            Field::InputTokens => self.input.offer(count(value), rank),
            Field::OutputTokens => self.output.offer(count(value), rank),
            Field::TotalTokens => self.total.offer(count(value), rank),
            Field::CacheReadTokens | Field::CacheWriteTokens => {
                let raw = spelling.key == aliases::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_RAW
                    || spelling.key == aliases::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS_RAW;
                self.raw_cache_spelling |= raw;
                let slot = if spelling.field == Field::CacheReadTokens {
                    &mut self.cache_read
                } else {
                    &mut self.cache_write
                };
                slot.offer(count(value), rank);
            }
            Field::ReasoningTokens => self.reasoning.offer(count(value), rank),
            Field::Streaming => self.streaming.offer(boolean(value), rank),
            Field::TimeToFirstToken => self.ttft_seconds.offer(number(value), rank),
            Field::CompletionStartTime => self.completion_start = text(value),
            Field::FinishReasons => self.finish_reasons.offer(Some(value), rank),
            Field::RetrievalDocumentsJson => {
                self.retrieval_evidence = true;
                self.retrieval_json = text(value);
            }
            Field::Session => self.session.offer(text(value), rank),
            Field::User => self.user.offer(text(value), rank),
            Field::SuppliedCost => self.supplied_cost.offer(number(value), rank),
            Field::LangfuseCostDetails => self.langfuse_cost = text(value),
            Field::LangfuseUsageDetails => self.langfuse_usage = text(value),
            Field::OpenInferenceKind => self.openinference_kind = text(value),
            Field::TraceloopKind => {
                self.openllmetry = true;
                self.traceloop_kind = text(value);
            }
            Field::LlmRequestType => {
                self.openllmetry = true;
                self.request_type = text(value);
            }
            Field::LangfuseType => self.langfuse_type = text(value),
            Field::InvocationParameters => self.invocation_parameters = text(value),
            Field::SdkName => {
                self.openlit |= text(value).is_some_and(|v| v == aliases::SDK_OPENLIT);
            }
            Field::AgentName => self.agent_name.offer(text(value), rank),
            Field::ToolName => self.tool_name.offer(text(value), rank),
            Field::ToolCallId => self.tool_call_id.offer(text(value), rank),
            Field::ToolCallArguments => self.tool_arguments = text(value),
            Field::McpMethod => self.mcp_method = text(value),
            Field::InputValue => self.input_value = text(value),
            Field::Metadata => self.metadata = text(value),
            Field::TraceloopEntityName => {
                self.openllmetry = true;
                self.entity_name = text(value);
            }
            Field::TraceloopEntityInput => {
                self.openllmetry = true;
                self.entity_input = text(value);
            }
        }
    }

    fn indexed(&mut self, key: &'a str, value: &'a Value) {
        let Some(indexed) = aliases::indexed(key) else {
            self.openllmetry |= key.starts_with(aliases::prefix::TRACELOOP);
            self.genai |= aliases::prefix::GENAI.iter().any(|p| key.starts_with(p));
            return;
        };
        self.genai = true;
        match indexed {
            Indexed::DocumentId(n) => {
                self.retrieval_evidence = true;
                entry_at(&mut self.indexed_documents, n).id = document_id(value);
            }
            Indexed::DocumentScore(n) => {
                self.retrieval_evidence = true;
                entry_at(&mut self.indexed_documents, n).score = number(value);
            }
            Indexed::EvalName(n) => entry_at(&mut self.indexed_evaluations, n).name = text(value),
            Indexed::EvalScore(n) => {
                entry_at(&mut self.indexed_evaluations, n).score = number(value)
            }
            Indexed::EvalLabel(n) => entry_at(&mut self.indexed_evaluations, n).label = text(value),
            Indexed::EvalMetric(name) => {
                let (score, label) = match value {
                    Value::StringValue(s) => (s.parse().ok(), Some(s.as_str())),
                    other => (number(other), None),
                };
                self.evaluations.push(Evaluation {
                    name: Some(name),
                    score,
                    label,
                });
            }
            Indexed::RetrievalEvidence => self.retrieval_evidence = true,
            Indexed::RerankEvidence => self.rerank_evidence = true,
        }
    }

    fn event(&mut self, ev: &'a Event) {
        let name = ev.name.as_str();
        if name == event::EVALUATION_RESULT {
            let mut result = Evaluation::default();
            for kv in &ev.attributes {
                let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                    continue;
                };
                match kv.key.as_str() {
                    event::EVALUATION_NAME => result.name = text(value),
                    event::EVALUATION_SCORE_VALUE => result.score = number(value),
                    event::EVALUATION_SCORE_LABEL => result.label = text(value),
                    _ => {}
                }
            }
            self.evaluations.push(result);
        } else if name == event::DB_QUERY_RESULT {
            self.retrieval_evidence = true;
            self.genai = true;
            let mut doc = Document::default();
            for kv in &ev.attributes {
                let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                    continue;
                };
                match kv.key.as_str() {
                    event::DB_QUERY_RESULT_ID => doc.id = document_id(value),
                    event::DB_QUERY_RESULT_SCORE => doc.score = number(value),
                    _ => {}
                }
            }
            self.event_documents.push(doc);
        } else if event::FIRST_TOKEN.contains(&name) {
            let t = ev.time_unix_nano;
            self.first_token_ns = Some(self.first_token_ns.map_or(t, |f| f.min(t)));
        }
    }

    fn finish(self, span: &'a Span) -> GenAiView<'a> {
        let provider = self.provider.value;
        // OpenInference's failed calls name their model only inside the invocation parameters.
        let params_model = || {
            self.invocation_parameters
                .and_then(invocation_parameters)
                .and_then(|p| p.model)
        };
        let request_model = self
            .request_model
            .value
            .or(self.model.value)
            .or(self.embedding_model.value)
            .or(self.reranker_model.value)
            .or_else(params_model);
        let response_model = self
            .response_model
            .value
            .or(self.model.value)
            .or(self.embedding_model.value)
            .or(self.reranker_model.value);
        let tokens = self.tokens(provider, response_model.or(request_model));
        let name = span.name.as_str();
        // OpenLLMetry's MCP spans (`tools/call.mcp`, `initialize.mcp`) say their method only
        // inside their JSON input; its MCP client's tool span (`search_docs.tool`) names its tool
        // and arguments there too.
        let entity = if name.ends_with(".mcp") || name.ends_with(".tool") {
            self.entity_input.and_then(entity_input)
        } else {
            None
        };
        let mcp_method = self
            .mcp_method
            .or_else(|| entity.as_ref().and_then(|e| e.method));
        // LangGraph under OpenInference writes its graph and its nodes as CHAIN (the node
        // named `agent` as AGENT): a node is glue, the graph itself is the agent's run. Other
        // kinds (LLM, TOOL, ...) keep their stage whatever node they ran in.
        let graph = self
            .openinference_kind
            .filter(|k| k.eq_ignore_ascii_case("CHAIN") || k.eq_ignore_ascii_case("AGENT"))
            .and(self.metadata)
            .and_then(langgraph_metadata);
        let stage = match (mcp_method, graph) {
            (Some("tools/call"), _) => Some(Stage::Tool),
            (Some(_), _) => Some(Stage::Other),
            (None, Some(true)) => Some(Stage::Chain),
            (None, Some(false)) => Some(Stage::Agent),
            _ => self.stage(&tokens, request_model.or(response_model).is_some()),
        };
        let agent_name = self.agent_name.value.or(match stage {
            Some(Stage::Agent) => Some(name.strip_suffix(".agent").unwrap_or(name)),
            _ => None,
        });
        let tool_name = match stage {
            Some(Stage::Tool) => self
                .tool_name
                .value
                .or(entity.as_ref().and_then(|e| e.tool_name))
                .or(self.entity_name)
                .or_else(|| name.strip_suffix(".tool"))
                .or_else(|| name.strip_prefix("execute_tool "))
                .or(if self.openinference_kind.is_some() {
                    Some(name)
                } else {
                    None
                }),
            _ => self.tool_name.value,
        };
        let tool_arguments = match stage {
            Some(Stage::Tool) => self
                .tool_arguments
                .map(Cow::Borrowed)
                .or(entity.and_then(|e| e.arguments).map(Cow::Owned))
                .or(if self.openinference_kind.is_some() {
                    self.input_value.map(Cow::Borrowed)
                } else {
                    None
                }),
            _ => self.tool_arguments.map(Cow::Borrowed),
        };
        let params = self.invocation_parameters.and_then(invocation_parameters);
        let streaming = self.streaming.value.or_else(|| {
            params
                .as_ref()
                .and_then(|p| p.stream)
                .or(self.first_token_ns.map(|_| true))
        });
        let events_dropped = span.dropped_events_count > 0;
        let time_to_first_token = if streaming == Some(false) {
            None
        } else {
            self.time_to_first_token(span.start_time_unix_nano, events_dropped)
        };
        let supplied_cost_usd = self
            .supplied_cost
            .value
            .or_else(|| self.langfuse_cost.and_then(langfuse_total_cost))
            .filter(|c| c.is_finite() && *c >= 0.0);
        let finish_reasons = match self.finish_reasons.value {
            Some(Value::ArrayValue(array)) => array
                .values
                .iter()
                .filter_map(|v| v.value.as_ref().and_then(text))
                .collect(),
            Some(single) => text(single).into_iter().collect(),
            None => Vec::new(),
        };
        let documents = match self.retrieval_json.and_then(json_documents) {
            Some(docs) => docs,
            None if !self.indexed_documents.is_empty() => {
                let mut docs = self.indexed_documents;
                docs.sort_by_key(|&(n, _)| n);
                docs.into_iter().map(|(_, d)| d).collect()
            }
            None => self.event_documents,
        };
        let mut evaluations = self.evaluations;
        let mut indexed = self.indexed_evaluations;
        indexed.sort_by_key(|&(n, _)| n);
        evaluations.extend(indexed.into_iter().map(|(_, e)| e));
        let error = span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
        GenAiView {
            stage,
            operation: self.operation.value,
            provider,
            request_model,
            response_model,
            tokens,
            streaming,
            time_to_first_token,
            events_dropped,
            finish_reasons,
            error,
            documents,
            evaluations,
            session_id: self.session.value,
            user_id: self.user.value,
            supplied_cost_usd,
            aliases_used: self.aliases,
            agent_name,
            tool_name,
            tool_call_id: self.tool_call_id.value,
            tool_arguments,
            mcp_method,
        }
    }

    /// Token counts, normalised (see [`view`]).
    fn tokens(&self, provider: Option<&str>, model: Option<&str>) -> Tokens {
        let mut t = Tokens {
            input: self.input.value,
            output: self.output.value,
            cache_read: self.cache_read.value,
            cache_write: self.cache_write.value,
            reasoning: self.reasoning.value,
            total: self.total.value,
            cache_added_to_input: false,
        };
        if !t.any()
            && let Some(usage) = self.langfuse_usage.and_then(langfuse_usage)
        {
            return usage;
        }
        let cache = t
            .cache_read
            .unwrap_or(0)
            .saturating_add(t.cache_write.unwrap_or(0));
        if let Some(input) = t.input.filter(|_| cache > 0) {
            let output = t.output.unwrap_or(0);
            let exclusive = cache > input
                || t.total == Some(input.saturating_add(output).saturating_add(cache))
                || (anthropic_family(provider, model)
                    && (self.openlit || (self.raw_cache_spelling && !self.openllmetry)));
            if exclusive {
                t.input = Some(input.saturating_add(cache));
                t.cache_added_to_input = true;
            }
        }
        if let (Some(output), Some(reasoning)) = (t.output, t.reasoning)
            && reasoning > output
        {
            t.output = Some(output.saturating_add(reasoning));
        }
        t
    }

    /// The stage, from the most explicit signal present:
    ///
    /// 1. `openinference.span.kind`;
    /// 2. `langfuse.observation.type`;
    /// 3. `gen_ai.operation.name`;
    /// 4. `llm.request.type`;
    /// 5. rerank or retrieval evidence (`reranker.*`, `db.vector.query.*`, retrieved documents,
    ///    `db.query.result` events), which beats a generic Traceloop `task`;
    /// 6. `traceloop.span.kind`;
    /// 7. an embedding model, or a model with token counts (an LLM call);
    /// 8. any other GenAI attribute: `Other`.
    fn stage(&self, tokens: &Tokens, has_model: bool) -> Option<Stage> {
        let of = |table, value: Option<&str>| value.and_then(|v| kinds::stage(table, v));
        of(kinds::OPENINFERENCE, self.openinference_kind)
            .or_else(|| of(kinds::LANGFUSE, self.langfuse_type))
            .or_else(|| of(kinds::OPERATION, self.operation.value))
            .or_else(|| of(kinds::LLM_REQUEST_TYPE, self.request_type))
            .or_else(|| {
                if self.rerank_evidence || self.reranker_model.value.is_some() {
                    Some(Stage::Rerank)
                } else if self.retrieval_evidence {
                    Some(Stage::Retrieval)
                } else {
                    None
                }
            })
            .or_else(|| of(kinds::TRACELOOP, self.traceloop_kind))
            .or_else(|| {
                if self.embedding_model.value.is_some() {
                    Some(Stage::Embedding)
                } else if has_model && tokens.any() {
                    Some(Stage::Llm)
                } else {
                    None
                }
            })
            .or_else(|| self.genai.then_some(Stage::Other))
    }

    /// Time to first token: an attribute (seconds), else Langfuse's completion start time, else
    /// the earliest first-token event when the span lost none of its events; each minus the
    /// span's start.
    fn time_to_first_token(&self, start_ns: u64, events_dropped: bool) -> Option<Duration> {
        let from_attribute = self.ttft_seconds.value;
        if let Some(ttft) = from_attribute.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
            return Some(ttft);
        }
        let first = self
            .completion_start
            .and_then(parse_rfc3339_nanos)
            .or(self.first_token_ns.filter(|_| !events_dropped))?;
        first.checked_sub(start_ns).map(Duration::from_nanos)
    }
}

/// The entry for list index `n`, added if new.
fn entry_at<T: Default>(items: &mut Vec<(usize, T)>, n: usize) -> &mut T {
    let pos = items.iter().position(|(i, _)| *i == n).unwrap_or_else(|| {
        items.push((n, T::default()));
        items.len() - 1
    });
    &mut items[pos].1
}

/// Anthropic itself, or a cloud serving a Claude model (whose usage block is Anthropic's).
fn anthropic_family(provider: Option<&str>, model: Option<&str>) -> bool {
    match provider.map(aliases::canonical_provider) {
        Some("anthropic") => true,
        Some("aws.bedrock" | "google") => model.is_some_and(|m| contains_ignore_case(m, "claude")),
        _ => false,
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

// --- attribute values ---

/// A non-empty string value.
fn text(value: &Value) -> Option<&str> {
    match value {
        Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A non-negative whole number (ints, integral doubles and numeric strings are accepted).
fn count(value: &Value) -> Option<u64> {
    match value {
        Value::IntValue(i) => u64::try_from(*i).ok(),
        Value::DoubleValue(d) if d.is_finite() && *d >= 0.0 && d.fract() == 0.0 => {
            // Exact for every count below 2^53, far above any token count.
            Some(*d as u64)
        }
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A finite number (ints, doubles and numeric strings are accepted).
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::DoubleValue(d) => *d,
        Value::IntValue(i) => *i as f64,
        Value::StringValue(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::BoolValue(b) => Some(*b),
        Value::StringValue(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::StringValue(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::IntValue(i) => Some(*i != 0),
        _ => None,
    }
}

fn document_id(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::StringValue(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        _ => None,
    }
}

// --- JSON-valued attributes ---

/// `gen_ai.retrieval.documents`: `[{"id": "doc-3", "score": 0.93, "content": ...}, ...]`.
fn json_documents(json: &str) -> Option<Vec<Document<'_>>> {
    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(default, borrow, deserialize_with = "lenient_id")]
        id: Option<Cow<'a, str>>,
        #[serde(default, deserialize_with = "lenient_number")]
        score: Option<f64>,
    }
    let docs: Vec<Doc<'_>> = serde_json::from_str(json).ok()?;
    Some(
        docs.into_iter()
            .map(|d| Document {
                id: d.id,
                score: d.score,
            })
            .collect(),
    )
}

/// What is read of OpenInference's `llm.invocation_parameters`; values of another type are
/// ignored (a model name with a JSON escape in it is not borrowable and is left out too).
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(default, borrow, deserialize_with = "lenient_str")]
    model: Option<&'a str>,
    #[serde(default, deserialize_with = "lenient_bool")]
    stream: Option<bool>,
}

/// OpenInference `llm.invocation_parameters`: `"stream"` and `"model"`.
fn invocation_parameters(json: &str) -> Option<Params<'_>> {
    let p: Params<'_> = serde_json::from_str(json).ok()?;
    Some(Params {
        model: p.model.filter(|m| !m.is_empty()),
        ..p
    })
}

fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match d.deserialize_any(ScalarVisitor)? {
        Scalar::Bool(b) => Some(b),
        _ => None,
    })
}

fn lenient_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
    Ok(match d.deserialize_any(ScalarVisitor)? {
        Scalar::Str(s) => Some(s),
        _ => None,
    })
}

/// A JSON value seen only as far as a lenient field needs it; anything else is skipped whole.
enum Scalar<'de> {
    Str(&'de str),
    Bool(bool),
    Other,
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Scalar::Other)
    }
}

/// What is read of OpenLLMetry's `traceloop.entity.input` on MCP and tool spans: the MCP method
/// (`{"method": "tools/call", ...}`), the tool's name and its arguments (`{"tool_name": ...,
/// "arguments": {...}}`, re-serialised).
struct EntityInput<'a> {
    method: Option<&'a str>,
    tool_name: Option<&'a str>,
    arguments: Option<String>,
}

fn entity_input(json: &str) -> Option<EntityInput<'_>> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(default, borrow, deserialize_with = "lenient_str")]
        method: Option<&'a str>,
        #[serde(default, borrow, deserialize_with = "lenient_str")]
        tool_name: Option<&'a str>,
        #[serde(default)]
        arguments: Option<serde_json::Value>,
    }
    let r: Raw<'_> = serde_json::from_str(json).ok()?;
    Some(EntityInput {
        method: r.method,
        tool_name: r.tool_name,
        arguments: r.arguments.filter(|a| !a.is_null()).map(|a| a.to_string()),
    })
}

/// OpenInference's `metadata` on a LangChain span: for a LangGraph span, whether it is a graph
/// node (`Some(true)`: `langgraph_node` names it) or the graph itself (`Some(false)`); `None`
/// for anything else.
fn langgraph_metadata(json: &str) -> Option<bool> {
    if !json.contains("langgraph") {
        return None;
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(default, borrow, deserialize_with = "lenient_str")]
        ls_integration: Option<&'a str>,
        #[serde(default)]
        langgraph_node: Option<serde::de::IgnoredAny>,
    }
    let m: Meta<'_> = serde_json::from_str(json).ok()?;
    (m.ls_integration == Some("langgraph")).then_some(m.langgraph_node.is_some())
}

/// Parses a flat JSON object of numbers (`null` and non-numbers are skipped).
fn json_numbers(json: &str) -> Option<Vec<(String, f64)>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    Some(
        map.into_iter()
            .filter_map(|(k, v)| v.as_f64().filter(|f| f.is_finite()).map(|f| (k, f)))
            .collect(),
    )
}

/// Langfuse `cost_details`: `total` if present, else the sum of the parts.
fn langfuse_total_cost(json: &str) -> Option<f64> {
    let parts = json_numbers(json)?;
    if let Some(&(_, total)) = parts.iter().find(|(k, _)| k == "total") {
        return Some(total);
    }
    (!parts.is_empty()).then(|| parts.iter().map(|(_, v)| v).sum())
}

/// Langfuse `usage_details`: disjoint buckets such as `input` (uncached), `input_cached_tokens`
/// or `cache_read_input_tokens`, `cache_creation_input_tokens`, `input_audio_tokens`, `output`
/// (excluding reasoning), `output_reasoning_tokens`, `total`. Summed into the conventions' shape.
fn langfuse_usage(json: &str) -> Option<Tokens> {
    let parts = json_numbers(json)?;
    let mut t = Tokens::default();
    let (mut input, mut output, mut seen_in, mut seen_out) = (0u64, 0u64, false, false);
    for (key, value) in &parts {
        if *value < 0.0 || value.fract() != 0.0 {
            continue;
        }
        let n = *value as u64;
        let key = key.as_str();
        if key == "total" {
            t.total = Some(n);
        } else if key.contains("cache_read") || key.contains("cached") {
            t.cache_read = Some(t.cache_read.unwrap_or(0).saturating_add(n));
            (input, seen_in) = (input.saturating_add(n), true);
        } else if key.contains("cache_creation") || key.contains("cache_write") {
            t.cache_write = Some(t.cache_write.unwrap_or(0).saturating_add(n));
            (input, seen_in) = (input.saturating_add(n), true);
        } else if key.contains("reasoning") {
            t.reasoning = Some(t.reasoning.unwrap_or(0).saturating_add(n));
            (output, seen_out) = (output.saturating_add(n), true);
        } else if key.starts_with("input") || key.starts_with("prompt") {
            (input, seen_in) = (input.saturating_add(n), true);
        } else if key.starts_with("output") || key.starts_with("completion") {
            (output, seen_out) = (output.saturating_add(n), true);
        }
    }
    t.input = seen_in.then_some(input);
    t.output = seen_out.then_some(output);
    t.any().then_some(t)
}

fn lenient_id<'de, D>(d: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or integer id")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

fn lenient_number<'de, D>(d: D) -> Result<Option<f64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(v.is_finite().then_some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse().ok().filter(|f: &f64| f.is_finite()))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Parses an RFC 3339 timestamp (`2025-01-02T03:04:05.123Z`, `+02:00` offsets, optionally
/// JSON-quoted as Langfuse writes it) into nanoseconds since the Unix epoch.
fn parse_rfc3339_nanos(s: &str) -> Option<u64> {
    let s = s.trim().trim_matches('"');
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(len).enumerate() {
            if i < 9 {
                nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
            }
        }
        rest = &frac[len..];
    }
    let offset_seconds = match rest {
        "Z" | "z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (digits_of(&rest[1..3])? * 3600 + digits_of(&rest[4..6])? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(total).ok()
}

fn digits_of(s: &str) -> Option<i64> {
    s.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| s.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("\"2025-01-02T03:04:05.123456Z\""),
            Some(1_735_787_045_123_456_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2025-01-02T05:04:05.5+02:00"),
            Some(1_735_787_045_500_000_000)
        );
        assert_eq!(parse_rfc3339_nanos("2025-13-02T03:04:05Z"), None);
        assert_eq!(parse_rfc3339_nanos("yesterday"), None);
        assert_eq!(parse_rfc3339_nanos("1969-12-31T23:59:59Z"), None);
    }

    #[test]
    fn values() {
        assert_eq!(count(&Value::IntValue(-1)), None);
        assert_eq!(count(&Value::DoubleValue(12.0)), Some(12));
        assert_eq!(count(&Value::DoubleValue(12.5)), None);
        assert_eq!(count(&Value::StringValue("42".into())), Some(42));
        assert_eq!(number(&Value::DoubleValue(f64::NAN)), None);
        assert_eq!(boolean(&Value::StringValue("TRUE".into())), Some(true));
        assert_eq!(text(&Value::StringValue(String::new())), None);
    }

    #[test]
    fn json_helpers() {
        let docs = json_documents(r#"[{"id": 7, "score": "0.5"}, {"id": "a\"b", "content": "x"}]"#)
            .unwrap();
        assert_eq!(docs[0].id.as_deref(), Some("7"));
        assert_eq!(docs[0].score, Some(0.5));
        assert_eq!(docs[1].id.as_deref(), Some("a\"b"));
        assert_eq!(docs[1].score, None);
        assert_eq!(json_documents("not json"), None);
        let p = invocation_parameters(r#"{"model": "m", "stream": true}"#).unwrap();
        assert_eq!((p.stream, p.model), (Some(true), Some("m")));
        let p = invocation_parameters(r#"{"model": "gpt-4o-mini", "temperature": 0}"#).unwrap();
        assert_eq!((p.stream, p.model), (None, Some("gpt-4o-mini")));
        let p = invocation_parameters(r#"{"model": 7, "stream": "yes", "x": [{"a": 1}]}"#).unwrap();
        assert_eq!((p.stream, p.model), (None, None));
        let p = invocation_parameters(r#"{"model": {"n": [1]}, "stream": false}"#).unwrap();
        assert_eq!((p.stream, p.model), (Some(false), None));
        assert_eq!(
            langfuse_total_cost(r#"{"input": 0.25, "output": 0.5}"#),
            Some(0.75)
        );
        assert_eq!(
            langfuse_total_cost(r#"{"input": 0.25, "total": 1.0}"#),
            Some(1.0)
        );
        let t = langfuse_usage(
            r#"{"input": 2140, "input_cached_tokens": 1024, "output": 96, "output_reasoning_tokens": 310, "total": 3570}"#,
        )
        .unwrap();
        assert_eq!(t.input, Some(2140 + 1024));
        assert_eq!(t.cache_read, Some(1024));
        assert_eq!(t.output, Some(96 + 310));
        assert_eq!(t.reasoning, Some(310));
        assert_eq!(t.total, Some(3570));
    }

    #[test]
    fn stage_names() {
        let names: Vec<_> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "llm",
                "embedding",
                "retrieval",
                "rerank",
                "tool",
                "agent",
                "chain",
                "guardrail",
                "evaluator",
                "other"
            ]
        );
    }
}
