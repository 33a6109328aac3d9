//! Every attribute spelling the GenAI view reads, and what it means: the one place that knows how
//! each instrumentation library writes each fact.
//!
//! Libraries write the same fact under different names (`gen_ai.usage.input_tokens`,
//! `gen_ai.usage.prompt_tokens`, `llm.token_count.prompt`, ...). The table below maps each name to
//! a canonical [`Field`]. Within one field, the spellings are listed in preference order: when a
//! span carries two spellings of the same fact, the one listed first wins (the current OTel GenAI
//! spelling first, then older OTel spellings, then library-specific ones).
//!
//! Lookup is a single `match` on the key (generated from the table), so the per-attribute cost is
//! a few length checks and one short compare; nothing is allocated.
//!
//! Sources: OTel GenAI semantic conventions (current and pre-1.37), OpenLLMetry/Traceloop 0.62,
//! OpenInference spec, OpenLIT 1.45 (`SemanticConvention`), Langfuse's OTel attribute mapping;
//! checked against the captures in `tests/fixtures/otlp/`.

use crate::stage::Stage;

/// The canonical fact an attribute spelling carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The GenAI operation (`chat`, `embeddings`, `retrieval`, ...).
    Operation,
    /// Who serves the model (`openai`, `anthropic`, `aws.bedrock`, ...).
    Provider,
    /// The model named in the request.
    RequestModel,
    /// The model that answered.
    ResponseModel,
    /// A model name with no request/response distinction (fills both when they are absent).
    Model,
    /// An embedding model name (also evidence of an embedding span).
    EmbeddingModel,
    /// A reranker model name (also evidence of a rerank span).
    RerankerModel,
    /// Input (prompt) tokens.
    InputTokens,
    /// Output (completion) tokens.
    OutputTokens,
    /// Input + output tokens as the library counted them.
    TotalTokens,
    /// Input tokens served from a prompt cache.
    CacheReadTokens,
    /// Input tokens written to a prompt cache.
    CacheWriteTokens,
    /// Output tokens spent on reasoning.
    ReasoningTokens,
    /// Whether the response was streamed.
    Streaming,
    /// Time to first token/chunk, in seconds.
    TimeToFirstToken,
    /// Wall-clock time of the first token (an RFC 3339 timestamp).
    CompletionStartTime,
    /// Finish reasons (an array, or a single string).
    FinishReasons,
    /// Retrieved documents as a JSON array of `{id, score, ...}` objects.
    RetrievalDocumentsJson,
    /// Session or conversation id.
    Session,
    /// End-user id.
    User,
    /// A cost in USD computed by the instrumentation itself.
    SuppliedCost,
    /// Langfuse's JSON object of per-usage-type costs.
    LangfuseCostDetails,
    /// Langfuse's JSON object of per-usage-type token counts.
    LangfuseUsageDetails,
    /// OpenInference's span kind (`LLM`, `RETRIEVER`, ...).
    OpenInferenceKind,
    /// Traceloop's span kind (`workflow`, `task`, `agent`, `tool`).
    TraceloopKind,
    /// OpenLLMetry's request type (`chat`, `completion`, `embedding`, `rerank`).
    LlmRequestType,
    /// Langfuse's observation type (`generation`, `retriever`, ...).
    LangfuseType,
    /// OpenInference's JSON invocation parameters (read for `"stream"` only).
    InvocationParameters,
    /// `telemetry.sdk.name` written onto the span (OpenLIT does this).
    SdkName,
    /// The agent's name.
    AgentName,
    /// The tool's name.
    ToolName,
    /// The tool call's id.
    ToolCallId,
    /// The tool call's arguments (usually JSON).
    ToolCallArguments,
    /// The MCP method (`tools/call`, `tools/list`, `initialize`, ...).
    McpMethod,
    /// OpenInference's input (the arguments, on a TOOL span).
    InputValue,
    /// OpenInference's JSON metadata (LangGraph writes its graph node there).
    Metadata,
    /// OpenLLMetry's entity name (the tool's or task's name).
    TraceloopEntityName,
    /// OpenLLMetry's entity input (JSON; an MCP call's method, tool name and arguments).
    TraceloopEntityInput,
}

impl Field {
    /// Whether seeing this field alone makes a span a GenAI span (session and user ids do not:
    /// plain web spans carry them too).
    pub fn marks_genai(self) -> bool {
        !matches!(
            self,
            Field::Session
                | Field::User
                | Field::SdkName
                | Field::InputValue
                | Field::Metadata
                | Field::TraceloopEntityName
                | Field::TraceloopEntityInput
        )
    }
}

/// How current a spelling is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The current OTel GenAI convention.
    Current,
    /// An older OTel GenAI spelling, still sent by older instrumentations.
    Deprecated,
    /// A library's own spelling of a fact the OTel conventions name (an alias).
    Library,
    /// A library attribute with no OTel counterpart, read for what it tells (span kinds, supplied
    /// costs, library markers); not an alias.
    Extra,
}

/// One attribute spelling: its key, its meaning and its standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spelling {
    /// The attribute key exactly as written on the wire.
    pub key: &'static str,
    /// What it means.
    pub field: Field,
    /// Current, deprecated, a library alias, or a library extra.
    pub status: Status,
    /// Position in [`SPELLINGS`]; within a field, a lower index is preferred.
    pub index: u8,
}

macro_rules! spellings {
    ($( $(#[doc = $doc:literal])* $name:ident = $key:literal => $field:ident, $status:ident; )+) => {
        $( $(#[doc = $doc])* pub const $name: &str = $key; )+

        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        #[repr(u8)]
        enum Index { $( $name, )+ }

        /// Every attribute spelling read, in preference order within each field.
        pub static SPELLINGS: &[Spelling] = &[
            $( Spelling { key: $key, field: Field::$field, status: Status::$status, index: Index::$name as u8 }, )+
        ];

        /// The spelling of an attribute key, if it is one the view reads. Indexed and open-ended
        /// keys (`retrieval.documents.N.*`, `gen_ai.eval.*`, ...) are matched by [`indexed`].
        pub fn lookup(key: &str) -> Option<&'static Spelling> {
            let index = match key {
                $( $key => Index::$name, )+
                _ => return None,
            };
            SPELLINGS.get(index as usize)
        }
    };
}

spellings! {
    // --- operation and identity ---
    /// OTel: the operation (`chat`, `embeddings`, `retrieval`, `execute_tool`, `invoke_agent`).
    GEN_AI_OPERATION_NAME = "gen_ai.operation.name" => Operation, Current;
    /// OTel (current): the provider.
    GEN_AI_PROVIDER_NAME = "gen_ai.provider.name" => Provider, Current;
    /// OTel (before 1.37): the provider. OpenLLMetry's Anthropic integration writes `Anthropic`.
    GEN_AI_SYSTEM = "gen_ai.system" => Provider, Deprecated;
    /// OpenInference: the hosting provider (`openai`, `azure`, `aws`).
    LLM_PROVIDER = "llm.provider" => Provider, Library;
    /// OpenInference: the AI product (`openai`, `anthropic`).
    LLM_SYSTEM = "llm.system" => Provider, Library;
    /// OTel: the requested model.
    GEN_AI_REQUEST_MODEL = "gen_ai.request.model" => RequestModel, Current;
    /// OpenInference: the requested model, when it differs from the answering one.
    LLM_REQUEST_MODEL_NAME = "llm.request.model_name" => RequestModel, Library;
    /// OTel: the model that answered.
    GEN_AI_RESPONSE_MODEL = "gen_ai.response.model" => ResponseModel, Current;
    /// OpenInference: the model that answered.
    LLM_RESPONSE_MODEL_NAME = "llm.response.model_name" => ResponseModel, Library;
    /// OpenInference: the model (the answering one when known, else the requested one).
    LLM_MODEL_NAME = "llm.model_name" => Model, Library;
    /// Langfuse: the generation's model.
    LANGFUSE_MODEL_NAME = "langfuse.observation.model.name" => Model, Library;
    /// OpenInference: the embedding model.
    EMBEDDING_MODEL_NAME = "embedding.model_name" => EmbeddingModel, Library;
    /// OpenInference: the reranker model.
    RERANKER_MODEL_NAME = "reranker.model_name" => RerankerModel, Library;

    // --- tokens ---
    /// OTel (current): input tokens, cached ones included.
    GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens" => InputTokens, Current;
    /// OTel (old): input tokens.
    GEN_AI_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens" => InputTokens, Deprecated;
    /// OpenLLMetry (old): input tokens.
    LLM_USAGE_PROMPT_TOKENS = "llm.usage.prompt_tokens" => InputTokens, Library;
    /// OpenInference: input tokens, cached ones included.
    LLM_TOKEN_COUNT_PROMPT = "llm.token_count.prompt" => InputTokens, Library;
    /// OTel (current): output tokens, reasoning ones included.
    GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens" => OutputTokens, Current;
    /// OTel (old): output tokens.
    GEN_AI_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens" => OutputTokens, Deprecated;
    /// OpenLLMetry (old): output tokens.
    LLM_USAGE_COMPLETION_TOKENS = "llm.usage.completion_tokens" => OutputTokens, Library;
    /// OpenInference: output tokens.
    LLM_TOKEN_COUNT_COMPLETION = "llm.token_count.completion" => OutputTokens, Library;
    /// OpenLLMetry / OpenLIT: total tokens.
    GEN_AI_USAGE_TOTAL_TOKENS = "gen_ai.usage.total_tokens" => TotalTokens, Library;
    /// OpenLLMetry (old): total tokens.
    LLM_USAGE_TOTAL_TOKENS = "llm.usage.total_tokens" => TotalTokens, Library;
    /// OpenInference: total tokens.
    LLM_TOKEN_COUNT_TOTAL = "llm.token_count.total" => TotalTokens, Library;
    /// OpenLIT: total tokens, written under the metric's name.
    GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage" => TotalTokens, Library;
    /// OTel (current): input tokens read from the prompt cache.
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens" => CacheReadTokens, Current;
    /// Anthropic's raw usage field name (OpenLLMetry before the OTel name existed, and other
    /// Anthropic integrations that copy the raw usage block).
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_RAW = "gen_ai.usage.cache_read_input_tokens" => CacheReadTokens, Library;
    /// OpenInference: input tokens read from the prompt cache.
    LLM_TOKEN_COUNT_PROMPT_CACHE_READ = "llm.token_count.prompt_details.cache_read" => CacheReadTokens, Library;
    /// OTel (newest): input tokens written to the prompt cache.
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens" => CacheWriteTokens, Current;
    /// OTel (1.37): input tokens written to the prompt cache, under its earlier name.
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens" => CacheWriteTokens, Current;
    /// Anthropic's raw usage field name for cache writes.
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS_RAW = "gen_ai.usage.cache_creation_input_tokens" => CacheWriteTokens, Library;
    /// OpenInference: input tokens written to the prompt cache.
    LLM_TOKEN_COUNT_PROMPT_CACHE_WRITE = "llm.token_count.prompt_details.cache_write" => CacheWriteTokens, Library;
    /// OTel (current): reasoning tokens (a part of the output tokens).
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens" => ReasoningTokens, Current;
    /// OpenLLMetry / OpenLIT: reasoning tokens.
    GEN_AI_USAGE_REASONING_TOKENS = "gen_ai.usage.reasoning_tokens" => ReasoningTokens, Library;
    /// OpenInference: reasoning tokens.
    LLM_TOKEN_COUNT_COMPLETION_REASONING = "llm.token_count.completion_details.reasoning" => ReasoningTokens, Library;

    // --- streaming and latency ---
    /// OpenLLMetry: streamed or not.
    GEN_AI_IS_STREAMING = "gen_ai.is_streaming" => Streaming, Library;
    /// OpenLLMetry (old): streamed or not.
    LLM_IS_STREAMING = "llm.is_streaming" => Streaming, Library;
    /// OpenLIT: streamed or not.
    GEN_AI_REQUEST_STREAM = "gen_ai.request.stream" => Streaming, Library;
    /// OpenLIT (other versions): streamed or not.
    GEN_AI_REQUEST_IS_STREAM = "gen_ai.request.is_stream" => Streaming, Library;
    /// OTel: time to the first chunk, in seconds.
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk" => TimeToFirstToken, Current;
    /// OpenLIT: time to first token, in seconds (also written for non-streamed calls, where it is
    /// the whole call's duration).
    GEN_AI_SERVER_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token" => TimeToFirstToken, Library;
    /// Langfuse: when the first token arrived (RFC 3339, possibly JSON-quoted).
    LANGFUSE_COMPLETION_START_TIME = "langfuse.observation.completion_start_time" => CompletionStartTime, Library;

    // --- response ---
    /// OTel: finish reasons (string array).
    GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons" => FinishReasons, Current;
    /// OpenInference: the finish reason (string).
    LLM_FINISH_REASON = "llm.finish_reason" => FinishReasons, Library;

    // --- retrieval ---
    /// OTel: retrieved documents, a JSON array of `{"id", "score"}` objects.
    GEN_AI_RETRIEVAL_DOCUMENTS = "gen_ai.retrieval.documents" => RetrievalDocumentsJson, Current;

    // --- session and user ---
    /// OTel: the conversation (session, thread) id.
    GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id" => Session, Current;
    /// OTel (`session.*`), OpenInference, Langfuse: the session id.
    SESSION_ID = "session.id" => Session, Current;
    /// Langfuse (old mapping): the session id.
    LANGFUSE_SESSION_ID = "langfuse.session.id" => Session, Library;
    /// OpenLLMetry association property: the session id.
    TRACELOOP_SESSION_ID = "traceloop.association.properties.session_id" => Session, Library;
    /// OTel (`user.*`), OpenInference, Langfuse: the user id.
    USER_ID = "user.id" => User, Current;
    /// Langfuse (old mapping): the user id.
    LANGFUSE_USER_ID = "langfuse.user.id" => User, Library;
    /// OpenLLMetry association property: the user id.
    TRACELOOP_USER_ID = "traceloop.association.properties.user_id" => User, Library;
    /// OpenLIT: the OpenAI `user` request parameter.
    GEN_AI_REQUEST_USER = "gen_ai.request.user" => User, Library;
    /// OpenLLMetry: the OpenAI `user` request parameter.
    GEN_AI_USER = "gen_ai.user" => User, Library;

    // --- cost ---
    /// OpenLIT: the call's cost in USD, from OpenLIT's own price list (0 when it does not know
    /// the model).
    GEN_AI_USAGE_COST = "gen_ai.usage.cost" => SuppliedCost, Extra;
    /// OpenInference: the call's total cost in USD.
    LLM_COST_TOTAL = "llm.cost.total" => SuppliedCost, Extra;
    /// Langfuse: per-usage-type costs, a JSON object (`{"input": .., "output": .., "total": ..}`).
    LANGFUSE_COST_DETAILS = "langfuse.observation.cost_details" => LangfuseCostDetails, Extra;
    /// Langfuse: per-usage-type token counts, a JSON object of disjoint buckets.
    LANGFUSE_USAGE_DETAILS = "langfuse.observation.usage_details" => LangfuseUsageDetails, Library;

    // --- span kinds ---
    /// OpenInference: the span kind (`LLM`, `EMBEDDING`, `RETRIEVER`, `CHAIN`, ...).
    OPENINFERENCE_SPAN_KIND = "openinference.span.kind" => OpenInferenceKind, Extra;
    /// Traceloop: the span kind (`workflow`, `task`, `agent`, `tool`).
    TRACELOOP_SPAN_KIND = "traceloop.span.kind" => TraceloopKind, Extra;
    /// OpenLLMetry (old): the request type (`chat`, `completion`, `embedding`, `rerank`).
    LLM_REQUEST_TYPE = "llm.request.type" => LlmRequestType, Extra;
    /// Langfuse: the observation type (`generation`, `embedding`, `retriever`, ...).
    LANGFUSE_OBSERVATION_TYPE = "langfuse.observation.type" => LangfuseType, Extra;

    // --- agents, tools and MCP ---
    /// OTel: the agent's name.
    GEN_AI_AGENT_NAME = "gen_ai.agent.name" => AgentName, Current;
    /// OTel: the tool's name.
    GEN_AI_TOOL_NAME = "gen_ai.tool.name" => ToolName, Current;
    /// OpenInference: the tool's name.
    TOOL_NAME = "tool.name" => ToolName, Library;
    /// OTel: the tool call's id.
    GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id" => ToolCallId, Current;
    /// OpenInference: the tool call's id (on a TOOL span, where written).
    TOOL_CALL_ID = "tool_call.id" => ToolCallId, Library;
    /// OTel: the tool call's arguments.
    GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments" => ToolCallArguments, Current;
    /// OTel: the MCP method of an MCP span.
    MCP_METHOD_NAME = "mcp.method.name" => McpMethod, Current;
    /// OpenInference: the span's input (a TOOL span's arguments).
    INPUT_VALUE = "input.value" => InputValue, Extra;
    /// OpenInference: JSON metadata (LangGraph's `langgraph_node` marks a graph node).
    METADATA = "metadata" => Metadata, Extra;
    /// OpenLLMetry: the entity's (tool's, task's) name.
    TRACELOOP_ENTITY_NAME = "traceloop.entity.name" => TraceloopEntityName, Extra;
    /// OpenLLMetry: the entity's input (JSON; an MCP call's method and arguments).
    TRACELOOP_ENTITY_INPUT = "traceloop.entity.input" => TraceloopEntityInput, Extra;

    // --- other ---
    /// OpenInference: JSON invocation parameters (read for `"stream"`).
    LLM_INVOCATION_PARAMETERS = "llm.invocation_parameters" => InvocationParameters, Extra;
    /// `telemetry.sdk.name` on the span itself (OpenLIT writes `openlit` there).
    TELEMETRY_SDK_NAME = "telemetry.sdk.name" => SdkName, Extra;
}

// The view records which spellings were used in a 128-bit set.
const _: () = assert!(SPELLINGS.len() <= 128);

/// Open-ended and indexed keys, matched by prefix.
pub mod prefix {
    /// OpenInference: `retrieval.documents.N.document.{id,score}`.
    pub const RETRIEVAL_DOCUMENTS: &str = "retrieval.documents.";
    /// OpenInference: `reranker.output_documents.N.document.{id,score}`.
    pub const RERANKER_OUTPUT_DOCUMENTS: &str = "reranker.output_documents.";
    /// OpenInference: `reranker.*` (query, top_k, input documents): evidence of a rerank span.
    pub const RERANKER: &str = "reranker.";
    /// OpenInference: `annotations.N.annotation.{name,score,label}`.
    pub const ANNOTATIONS: &str = "annotations.";
    /// OpenInference: `evaluations.N.evaluation.{name,score,label}`.
    pub const EVALUATIONS: &str = "evaluations.";
    /// OpenLIT: `gen_ai.eval.<metric>` = score (number) or label (string).
    pub const GEN_AI_EVAL: &str = "gen_ai.eval.";
    /// OpenLLMetry vector-DB instrumentations: `db.vector.query.*` (top_k, filter, ...).
    pub const DB_VECTOR_QUERY: &str = "db.vector.query.";
    /// OTel: `gen_ai.retrieval.*` (query text, ...): evidence of a retrieval span.
    pub const GEN_AI_RETRIEVAL: &str = "gen_ai.retrieval.";
    /// OpenLLMetry: `traceloop.*` marks a span written by OpenLLMetry (not GenAI evidence alone).
    pub const TRACELOOP: &str = "traceloop.";
    /// Any other `gen_ai.*` (OTel) or `llm.*` (OpenInference, OpenLLMetry) attribute makes the
    /// span a GenAI span, of stage `Other` when nothing says more.
    pub const GENAI: &[&str] = &["gen_ai.", "llm."];
}

/// A key matched by prefix, with its list index where it has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Indexed<'k> {
    /// A retrieved (or reranked) document's id.
    DocumentId(usize),
    /// A retrieved (or reranked) document's score.
    DocumentScore(usize),
    /// An annotation/evaluation result's name.
    EvalName(usize),
    /// An annotation/evaluation result's score.
    EvalScore(usize),
    /// An annotation/evaluation result's label.
    EvalLabel(usize),
    /// OpenLIT `gen_ai.eval.<metric>`: the metric name.
    EvalMetric(&'k str),
    /// Evidence of a retrieval span (`db.vector.query.*`, `gen_ai.retrieval.*`).
    RetrievalEvidence,
    /// Evidence of a rerank span (`reranker.*`).
    RerankEvidence,
}

/// Index offset separating annotations from evaluations in [`Indexed`] eval indexes.
pub const EVALUATIONS_INDEX_OFFSET: usize = 1 << 16;

/// Matches an indexed or open-ended key (only called for keys [`lookup`] does not know).
pub fn indexed(key: &str) -> Option<Indexed<'_>> {
    if let Some(rest) = key.strip_prefix(prefix::RETRIEVAL_DOCUMENTS) {
        return document(rest).or(Some(Indexed::RetrievalEvidence));
    }
    if let Some(rest) = key.strip_prefix(prefix::RERANKER_OUTPUT_DOCUMENTS) {
        return document(rest).or(Some(Indexed::RerankEvidence));
    }
    if key.starts_with(prefix::RERANKER) {
        return Some(Indexed::RerankEvidence);
    }
    if let Some(rest) = key.strip_prefix(prefix::ANNOTATIONS) {
        return evaluation(rest, "annotation.", 0);
    }
    if let Some(rest) = key.strip_prefix(prefix::EVALUATIONS) {
        return evaluation(rest, "evaluation.", EVALUATIONS_INDEX_OFFSET);
    }
    if let Some(metric) = key.strip_prefix(prefix::GEN_AI_EVAL) {
        return (!metric.is_empty()).then_some(Indexed::EvalMetric(metric));
    }
    if key.starts_with(prefix::DB_VECTOR_QUERY) || key.starts_with(prefix::GEN_AI_RETRIEVAL) {
        return Some(Indexed::RetrievalEvidence);
    }
    None
}

/// Splits `N.rest` into `(N, rest)`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

fn document(rest: &str) -> Option<Indexed<'_>> {
    match split_index(rest)? {
        (n, "document.id") => Some(Indexed::DocumentId(n)),
        (n, "document.score") => Some(Indexed::DocumentScore(n)),
        _ => None,
    }
}

fn evaluation<'k>(rest: &'k str, inner: &str, offset: usize) -> Option<Indexed<'k>> {
    let (n, rest) = split_index(rest)?;
    let n = n.checked_add(offset)?;
    match rest.strip_prefix(inner)? {
        "name" => Some(Indexed::EvalName(n)),
        "score" => Some(Indexed::EvalScore(n)),
        "label" => Some(Indexed::EvalLabel(n)),
        _ => None,
    }
}

/// Span event names and their attribute keys.
pub mod event {
    /// OTel: an evaluation result (on the evaluated span).
    pub const EVALUATION_RESULT: &str = "gen_ai.evaluation.result";
    /// OTel: the evaluation's name.
    pub const EVALUATION_NAME: &str = "gen_ai.evaluation.name";
    /// OTel: the evaluation's numeric score.
    pub const EVALUATION_SCORE_VALUE: &str = "gen_ai.evaluation.score.value";
    /// OTel: the evaluation's label.
    pub const EVALUATION_SCORE_LABEL: &str = "gen_ai.evaluation.score.label";
    /// OpenLLMetry vector DBs: one retrieved document.
    pub const DB_QUERY_RESULT: &str = "db.query.result";
    /// OpenLLMetry vector DBs: the document's id.
    pub const DB_QUERY_RESULT_ID: &str = "db.query.result.id";
    /// OpenLLMetry vector DBs: the document's score.
    pub const DB_QUERY_RESULT_SCORE: &str = "db.query.result.score";
    /// Events whose earliest occurrence marks the first token of a streamed response:
    /// OpenInference's first-token event and OpenLLMetry's per-chunk events (current and old).
    pub const FIRST_TOKEN: &[&str] = &[
        "First Token Stream Event",
        "gen_ai.content.completion.chunk",
        "llm.content.completion.chunk",
    ];
}

/// Values of the span-kind attributes, mapped to stages (compared ASCII case-insensitively).
pub mod kinds {
    use super::Stage::{self, *};

    /// `openinference.span.kind`.
    pub const OPENINFERENCE: &[(&str, Stage)] = &[
        ("LLM", Llm),
        ("EMBEDDING", Embedding),
        ("RETRIEVER", Retrieval),
        ("RERANKER", Rerank),
        ("TOOL", Tool),
        ("AGENT", Agent),
        ("CHAIN", Chain),
        ("GUARDRAIL", Guardrail),
        ("EVALUATOR", Evaluator),
        ("PROMPT", Other),
        ("UNKNOWN", Other),
    ];

    /// `gen_ai.operation.name`: OTel values, then values libraries use (`vector_db_retrieve`:
    /// OpenLLMetry LangChain; `execute_task`, `vectordb`, `framework`: OpenLIT and OpenLLMetry).
    pub const OPERATION: &[(&str, Stage)] = &[
        ("chat", Llm),
        ("text_completion", Llm),
        ("generate_content", Llm),
        ("completion", Llm),
        ("embeddings", Embedding),
        ("embedding", Embedding),
        ("retrieval", Retrieval),
        ("retrieve", Retrieval),
        ("vector_db_retrieve", Retrieval),
        ("vectordb", Retrieval),
        ("rerank", Rerank),
        ("execute_tool", Tool),
        ("invoke_agent", Agent),
        // Building an agent is not a run of it.
        ("create_agent", Other),
        ("invoke_workflow", Chain),
        ("execute_task", Chain),
        ("workflow", Chain),
        ("framework", Chain),
        ("evaluate", Evaluator),
        ("evaluation", Evaluator),
        ("guardrail", Guardrail),
        ("apply_guardrail", Guardrail),
    ];

    /// `llm.request.type` (OpenLLMetry, older versions).
    pub const LLM_REQUEST_TYPE: &[(&str, Stage)] = &[
        ("chat", Llm),
        ("completion", Llm),
        ("embedding", Embedding),
        ("rerank", Rerank),
    ];

    /// `traceloop.span.kind`.
    pub const TRACELOOP: &[(&str, Stage)] = &[
        ("workflow", Chain),
        ("task", Chain),
        ("agent", Agent),
        ("tool", Tool),
        ("unknown", Other),
    ];

    /// `langfuse.observation.type` (`span` and `event` say nothing about the stage).
    pub const LANGFUSE: &[(&str, Stage)] = &[
        ("generation", Llm),
        ("embedding", Embedding),
        ("retriever", Retrieval),
        ("tool", Tool),
        ("agent", Agent),
        ("chain", Chain),
        ("guardrail", Guardrail),
        ("evaluator", Evaluator),
    ];

    /// The stage a kind value names, if the table knows it.
    pub fn stage(table: &[(&str, Stage)], value: &str) -> Option<Stage> {
        table
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|&(_, stage)| stage)
    }
}

/// Provider values that name the same vendor, mapped to one canonical name (compared ASCII
/// case-insensitively). Values not listed are used as they are.
pub const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("aws.bedrock", "aws.bedrock"),
    ("bedrock", "aws.bedrock"),
    ("aws", "aws.bedrock"),
    ("amazon", "aws.bedrock"),
    ("gcp.gemini", "google"),
    ("gcp.vertex_ai", "google"),
    ("gcp.gen_ai", "google"),
    ("gemini", "google"),
    ("google", "google"),
    ("google.ai.studio", "google"),
    ("vertex_ai", "google"),
    ("vertexai", "google"),
    ("mistral_ai", "mistral"),
    ("mistralai", "mistral"),
    ("mistral", "mistral"),
    ("cohere", "cohere"),
    ("groq", "groq"),
    ("together", "together"),
    ("together_ai", "together"),
    ("togetherai", "together"),
    ("fireworks", "fireworks"),
    ("fireworks_ai", "fireworks"),
    ("fireworksai", "fireworks"),
    ("azure.ai.openai", "azure"),
    ("az.ai.openai", "azure"),
    ("azure", "azure"),
];

/// The canonical name of a provider value (`Anthropic` → `anthropic`, `mistral_ai` → `mistral`,
/// `gcp.vertex_ai` → `google`); unknown values come back unchanged.
pub fn canonical_provider(raw: &str) -> &str {
    PROVIDERS
        .iter()
        .find(|(spelling, _)| spelling.eq_ignore_ascii_case(raw))
        .map_or(raw, |&(_, canonical)| canonical)
}

/// The `telemetry.sdk.name` value OpenLIT writes onto its spans.
pub const SDK_OPENLIT: &str = "openlit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_looks_itself_up() {
        for (i, s) in SPELLINGS.iter().enumerate() {
            assert_eq!(s.index as usize, i, "{}", s.key);
            assert_eq!(lookup(s.key), Some(s), "{}", s.key);
        }
        assert_eq!(lookup("http.route"), None);
    }

    #[test]
    fn keys_are_unique() {
        for (i, a) in SPELLINGS.iter().enumerate() {
            assert!(
                SPELLINGS[i + 1..].iter().all(|b| b.key != a.key),
                "{}",
                a.key
            );
        }
    }

    #[test]
    fn indexed_keys() {
        assert_eq!(
            indexed("retrieval.documents.3.document.score"),
            Some(Indexed::DocumentScore(3))
        );
        assert_eq!(
            indexed("retrieval.documents.0.document.content"),
            Some(Indexed::RetrievalEvidence)
        );
        assert_eq!(
            indexed("reranker.output_documents.1.document.id"),
            Some(Indexed::DocumentId(1))
        );
        assert_eq!(indexed("reranker.top_k"), Some(Indexed::RerankEvidence));
        assert_eq!(
            indexed("annotations.2.annotation.label"),
            Some(Indexed::EvalLabel(2))
        );
        assert_eq!(
            indexed("evaluations.0.evaluation.score"),
            Some(Indexed::EvalScore(EVALUATIONS_INDEX_OFFSET))
        );
        assert_eq!(
            indexed("gen_ai.eval.groundedness"),
            Some(Indexed::EvalMetric("groundedness"))
        );
        assert_eq!(
            indexed("db.vector.query.top_k"),
            Some(Indexed::RetrievalEvidence)
        );
        assert_eq!(indexed("annotations.x.annotation.name"), None);
        assert_eq!(indexed("llm.input_messages.0.message.role"), None);
    }

    #[test]
    fn providers() {
        assert_eq!(canonical_provider("Anthropic"), "anthropic");
        assert_eq!(canonical_provider("mistral_ai"), "mistral");
        assert_eq!(canonical_provider("gcp.vertex_ai"), "google");
        assert_eq!(canonical_provider("acme"), "acme");
    }
}
