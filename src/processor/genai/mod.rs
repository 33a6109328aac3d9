//! The `genai` processor: per-span enrichment (stage, canonical attributes, cost), content
//! redaction, the instrumentation lint, and the derived metrics.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use serde::{Deserialize, Serialize};

pub mod vectors;

use crate::attributes::{kv, kv_f64, kv_i64, kv_str};
use crate::config::{Problems, Validate};
use crate::derived::DerivedMetrics;
use crate::derived::defs as m;
use crate::genai::aliases::{Status, canonical_provider};
use crate::genai::facts::{Facts, Names, SpanFacts};
use crate::genai::prices::{
    CostOutcome, CostSource, PriceEntry, PriceTable, SuppliedCost, Unpriced,
};
use crate::genai::view::{GenAiView, view};
use crate::names::attrs as a;
use crate::processor::{Processor, WithFacts, dropping_facts};
use crate::signal::Batch;
use crate::stage::Stage;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenAiConfig {
    /// Add gen_ai.usage.input_tokens / output_tokens, gen_ai.provider.name and
    /// gen_ai.request.model where only an alias was present (default true).
    #[serde(default = "yes")]
    pub add_canonical_attributes: bool,
    /// Drop prompt and completion content before export, keeping its length (default false).
    #[serde(default)]
    pub redact_content: bool,
    /// `prefer` (default): a cost the instrumentation supplied is used as it is; `ignore`: always
    /// compute from the price table.
    #[serde(default)]
    pub supplied_cost: SuppliedCost,
    /// Write `rag.instrumentation.issues` on spans with instrumentation problems (they are
    /// always counted in rag_instrumentation_issues_total).
    #[serde(default)]
    pub mark_instrumentation_issues: bool,
    /// Price entries that override or add to the built-in table (same schema as
    /// config/prices.yaml).
    #[serde(default)]
    pub prices: Vec<PriceEntry>,
    /// A `context_overflow_risk` finding when a call's input tokens reach this share of the
    /// model's context window (where the price table knows it; default 0.9).
    #[serde(default = "default_overflow_share")]
    pub context_overflow_share: f64,
    /// Remove embedding vectors from spans (the attributes and the copy in the response JSON),
    /// counted in ragwatch_genai_embedding_vectors_dropped_total (default false).
    #[serde(default)]
    pub drop_embedding_vectors: bool,
}

fn default_overflow_share() -> f64 {
    0.9
}

impl Default for GenAiConfig {
    fn default() -> Self {
        GenAiConfig {
            add_canonical_attributes: true,
            redact_content: false,
            supplied_cost: SuppliedCost::default(),
            mark_instrumentation_issues: false,
            prices: Vec::new(),
            context_overflow_share: default_overflow_share(),
            drop_embedding_vectors: false,
        }
    }
}

fn yes() -> bool {
    true
}

impl Validate for GenAiConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if !(self.context_overflow_share > 0.0 && self.context_overflow_share <= 1.0) {
            problems.push(
                &format!("{path}.context_overflow_share"),
                "must be above 0 and at most 1",
            );
        }
        for (i, p) in self.prices.iter().enumerate() {
            if let Err(errs) = p.validate() {
                for e in errs {
                    problems.push(&format!("{path}.prices.{i}"), e);
                }
            }
        }
        if let Err(e) = PriceTable::with_overrides(self.prices.clone()) {
            problems.push(&format!("{path}.prices"), e.to_string());
        }
    }
}

/// Instrumentation problems the lint finds.
pub mod issue {
    pub const STREAMING_WITHOUT_USAGE: &str = "streaming_without_usage";
    pub const STREAMING_WITHOUT_TTFT: &str = "streaming_without_ttft";
    pub const DEPRECATED_ATTRIBUTE: &str = "deprecated_attribute";
    pub const LLM_WITHOUT_MODEL: &str = "llm_without_model";
    pub const CONTRADICTORY_TOKENS: &str = "contradictory_token_counts";
    /// A streamed call whose span lost events (the SDK keeps the last 128): its first chunk's
    /// event may be gone, so its time to first token is unknown.
    pub const STREAM_EVENTS_DROPPED: &str = "stream_events_dropped";
}

pub struct GenAiProcessor {
    config: GenAiConfig,
    prices: Arc<PriceTable>,
    metrics: Arc<DerivedMetrics>,
    vectors_dropped: prometheus_client::metrics::counter::Counter,
    /// Model, agent and tool names shared by the facts handed to the stages after.
    names: Names,
}

impl GenAiProcessor {
    pub fn new(config: GenAiConfig, metrics: Arc<DerivedMetrics>) -> Result<Self, String> {
        let prices =
            PriceTable::with_overrides(config.prices.clone()).map_err(|e| e.to_string())?;
        Ok(GenAiProcessor {
            config,
            prices: Arc::new(prices),
            metrics,
            vectors_dropped: Default::default(),
            names: Names::default(),
        })
    }

    /// Count the embedding vectors removed (`drop_embedding_vectors`) in `c`.
    pub fn with_vectors_counter(mut self, c: prometheus_client::metrics::counter::Counter) -> Self {
        self.vectors_dropped = c;
        self
    }

    /// Enrich one span in place and record its metrics.
    pub fn enrich(&self, span: &mut Span, service: &str, now: Instant) {
        self.enrich_noting(span, service, now, None);
    }

    /// [`GenAiProcessor::enrich`], noting the span's facts (read from the view it reads anyway)
    /// in `facts` for the stages after.
    fn enrich_noting(
        &self,
        span: &mut Span,
        service: &str,
        now: Instant,
        facts: Option<(&mut Facts, &mut Names)>,
    ) {
        if self.config.drop_embedding_vectors {
            self.vectors_dropped
                .inc_by(vectors::drop_embedding_vectors(span));
        }
        // A span that carries `rag.stage` went through a ragwatch already (chained behind
        // another one): enriching or counting it again would double it.
        if span.attributes.iter().any(|kv| kv.key == a::RAG_STAGE) {
            return;
        }
        let mut add: Vec<KeyValue> = Vec::new();
        let mut overflow: Option<String> = None;
        {
            let v = view(span);
            if let Some((facts, names)) = facts {
                facts.insert(span, SpanFacts::from_view(&v, names));
            }
            let has = |k: &str| span.attributes.iter().any(|kv| kv.key == k);
            self.record_span_metrics(span, &v, service, now);
            if let Some(stage) = v.stage {
                if !has(a::RAG_STAGE) {
                    add.push(kv_str(a::RAG_STAGE, stage.as_str()));
                }
                if self.config.add_canonical_attributes {
                    canonical(&v, &has, &mut add);
                }
                if let Some(t) = v.time_to_first_token
                    && !has(a::LLM_TTFT_MS)
                {
                    add.push(kv_f64(a::LLM_TTFT_MS, t.as_secs_f64() * 1000.0));
                }
                if is_model_call(stage) {
                    self.cost(&v, stage, service, &has, &mut add, now);
                }
                if stage == Stage::Llm {
                    overflow = self.context_overflow(&v);
                }
                let issues = lint(&v, stage);
                for i in &issues {
                    self.metrics.add(m::ISSUES, &[service, i], 1.0, now);
                }
                if self.config.mark_instrumentation_issues
                    && !issues.is_empty()
                    && !has(a::INSTRUMENTATION_ISSUES)
                {
                    let values = issues
                        .iter()
                        .map(|i| AnyValue {
                            value: Some(Value::StringValue(i.to_string())),
                        })
                        .collect();
                    add.push(kv(
                        a::INSTRUMENTATION_ISSUES,
                        Value::ArrayValue(ArrayValue { values }),
                    ));
                }
            }
        }
        span.attributes.extend(add);
        if let Some(description) = overflow {
            use crate::findings::{finding, finding_event};
            let e = finding_event(
                span.start_time_unix_nano,
                finding::CONTEXT_OVERFLOW_RISK,
                description,
                "warning",
                &[&span.span_id],
            );
            span.events.push(e);
            self.metrics.add(
                m::FINDINGS,
                &[finding::CONTEXT_OVERFLOW_RISK, service],
                1.0,
                now,
            );
        }
        if self.config.redact_content {
            redact_attributes(&mut span.attributes);
            for e in &mut span.events {
                redact_attributes(&mut e.attributes);
            }
        }
    }

    /// The description of a context_overflow_risk finding, if the call is near its window.
    fn context_overflow(&self, v: &GenAiView<'_>) -> Option<String> {
        let input = v.tokens.input?;
        let window = self.prices.context_window(v.provider, v.model()?)?;
        let share = input as f64 / window as f64;
        (window > 0 && share >= self.config.context_overflow_share).then(|| {
            format!(
                "{input} input tokens are {:.0}% of the {window}-token context window of {}",
                share * 100.0,
                v.model().unwrap_or("the model")
            )
        })
    }

    fn cost(
        &self,
        v: &GenAiView<'_>,
        stage: Stage,
        service: &str,
        has: &dyn Fn(&str) -> bool,
        add: &mut Vec<KeyValue>,
        now: Instant,
    ) {
        let provider = v.provider.map(canonical_provider).unwrap_or("unknown");
        let model = v.model().unwrap_or("unknown");
        match self.prices.cost(v, self.config.supplied_cost) {
            CostOutcome::Priced(c) => {
                if !has(a::COST_USD) {
                    add.push(kv_f64(a::COST_USD, c.total_usd));
                    // A supplied cost comes as a total only: parts of 0 would not add up to it.
                    if c.source == CostSource::Computed {
                        add.push(kv_f64(a::COST_INPUT_USD, c.input_usd));
                        add.push(kv_f64(a::COST_OUTPUT_USD, c.output_usd));
                        add.push(kv_f64(a::COST_CACHE_READ_USD, c.cache_read_usd));
                        add.push(kv_f64(a::COST_CACHE_WRITE_USD, c.cache_write_usd));
                        if c.request_usd > 0.0 {
                            add.push(kv_f64(a::COST_REQUEST_USD, c.request_usd));
                        }
                    }
                    add.push(kv_str(a::COST_SOURCE, c.source.as_str()));
                    if let Some(id) = c.price_id {
                        add.push(kv_str(a::COST_PRICE_ID, id));
                    }
                }
                self.metrics.add(
                    m::COST,
                    &[service, provider, model, stage.as_str()],
                    c.total_usd,
                    now,
                );
            }
            CostOutcome::Unpriced(why) => {
                // A call without usage costs nothing we could know; one whose model has no price
                // is flagged, never guessed. A failed call that reports no usage was not billed
                // for tokens: it is not an unpriced call either, whatever it names.
                let failed_without_usage = v.error && !v.tokens.any();
                if !failed_without_usage
                    && matches!(
                        why,
                        Unpriced::UnknownModel | Unpriced::MissingRate | Unpriced::NoModel
                    )
                {
                    if !has(a::COST_UNPRICED) {
                        add.push(kv(a::COST_UNPRICED, Value::BoolValue(true)));
                    }
                    self.metrics
                        .add(m::UNPRICED, &[service, provider, model], 1.0, now);
                }
            }
        }
    }

    fn record_span_metrics(&self, span: &Span, v: &GenAiView<'_>, service: &str, now: Instant) {
        let secs = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / 1e9;
        let status = if span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
        {
            "error"
        } else {
            "ok"
        };
        // Span metrics for Jaeger's Monitor tab, for every span.
        let kind = SpanKind::try_from(span.kind)
            .unwrap_or(SpanKind::Unspecified)
            .as_str_name();
        let code = span
            .status
            .as_ref()
            .and_then(|s| StatusCode::try_from(s.code).ok())
            .unwrap_or(StatusCode::Unset)
            .as_str_name();
        let labels = [service, span.name.as_str(), kind, code];
        self.metrics.add(m::SPAN_CALLS, &labels, 1.0, now);
        self.metrics
            .observe(m::SPAN_DURATION, &labels, secs * 1000.0, now);

        if span.parent_span_id.is_empty() {
            self.metrics.add(m::REQUESTS, &[service, status], 1.0, now);
            self.metrics
                .observe(m::REQUEST_DURATION, &[service], secs, now);
        }
        let Some(stage) = v.stage else { return };
        self.metrics
            .observe(m::STAGE_DURATION, &[service, stage.as_str()], secs, now);
        if let Some(top) = v.documents.iter().filter_map(|d| d.score).reduce(f64::max) {
            self.metrics
                .observe(m::RETRIEVAL_TOP_SCORE, &[service], top, now);
        }
        if !is_model_call(stage) {
            return;
        }
        let provider = v.provider.map(canonical_provider).unwrap_or("unknown");
        let model = v.model().unwrap_or("unknown");
        let operation = v.operation.unwrap_or(match stage {
            Stage::Embedding => "embeddings",
            Stage::Rerank => "rerank",
            _ => "chat",
        });
        let request_model = v.request_model.or(v.response_model).unwrap_or("unknown");
        let g = [operation, provider, request_model, service];
        self.metrics.observe(m::OP_DURATION, &g, secs, now);
        if let Some(t) = v.time_to_first_token {
            self.metrics
                .observe(m::TIME_TO_FIRST_CHUNK, &g, t.as_secs_f64(), now);
        }
        for (ty, n) in [("input", v.tokens.input), ("output", v.tokens.output)] {
            if let Some(n) = n {
                self.metrics.observe(
                    m::TOKEN_USAGE,
                    &[operation, provider, request_model, service, ty],
                    n as f64,
                    now,
                );
            }
        }
        for (ty, n) in [
            ("input", v.tokens.input),
            ("output", v.tokens.output),
            ("cache_read", v.tokens.cache_read),
            ("cache_write", v.tokens.cache_write),
            ("reasoning", v.tokens.reasoning),
        ] {
            if let Some(n) = n {
                self.metrics
                    .add(m::TOKENS, &[service, provider, model, ty], n as f64, now);
            }
        }
        self.metrics.add(
            m::CALLS,
            &[service, provider, model, stage.as_str(), status],
            1.0,
            now,
        );
    }

    fn on_traces(
        &mut self,
        r: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        now: Instant,
    ) -> Facts {
        let mut facts = Facts::with_capacity(crate::signal::span_count(r));
        // Taken out for the loop (the enrichment borrows the rest of `self`).
        let mut names = std::mem::take(&mut self.names);
        for rs in &mut r.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|res| crate::attributes::service_name(&res.attributes))
                .unwrap_or("unknown_service")
                .to_string();
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    self.enrich_noting(span, &service, now, Some((&mut facts, &mut names)));
                }
            }
        }
        self.names = names;
        facts
    }

    fn on_logs(
        &self,
        r: &mut opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
    ) {
        for rec in r
            .resource_logs
            .iter_mut()
            .flat_map(|rl| &mut rl.scope_logs)
            .flat_map(|sl| &mut sl.log_records)
        {
            redact_log(rec);
        }
    }
}

impl Processor for GenAiProcessor {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// The facts read from each span's view go on with the batch: the stages after read them
    /// instead of the view.
    fn on_input_with(
        &mut self,
        mut batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        let facts = match &mut batch {
            Batch::Traces(r) => {
                let mut mine = self.on_traces(r, now);
                // Spans a ragwatch before this one enriched already keep what was handed.
                if let Some(before) = facts {
                    mine.extend(before);
                }
                Some(mine)
            }
            Batch::Logs(r) if self.config.redact_content => {
                self.on_logs(r);
                facts
            }
            _ => facts,
        };
        out.push((batch, facts));
    }
}

fn is_model_call(stage: Stage) -> bool {
    matches!(stage, Stage::Llm | Stage::Embedding | Stage::Rerank)
}

fn canonical(v: &GenAiView<'_>, has: &dyn Fn(&str) -> bool, add: &mut Vec<KeyValue>) {
    if let Some(n) = v.tokens.input
        && !has(a::GEN_AI_INPUT_TOKENS)
    {
        add.push(kv_i64(a::GEN_AI_INPUT_TOKENS, n));
    }
    if let Some(n) = v.tokens.output
        && !has(a::GEN_AI_OUTPUT_TOKENS)
    {
        add.push(kv_i64(a::GEN_AI_OUTPUT_TOKENS, n));
    }
    if let Some(p) = v.provider
        && !has(a::GEN_AI_PROVIDER_NAME)
    {
        add.push(kv_str(a::GEN_AI_PROVIDER_NAME, canonical_provider(p)));
    }
    if let Some(model) = v.request_model.or(v.response_model)
        && !has(a::GEN_AI_REQUEST_MODEL)
    {
        add.push(kv_str(a::GEN_AI_REQUEST_MODEL, model));
    }
    // Agents and tools: the canonical names where only a library's spelling (OpenInference's
    // `tool.name` and `input.value`, OpenLLMetry's `traceloop.entity.*` and `<name>.tool` /
    // `<name>.agent` span names) says them.
    if v.stage == Some(Stage::Agent)
        && let Some(name) = v.agent_name
        && !has(a::GEN_AI_AGENT_NAME)
    {
        add.push(kv_str(a::GEN_AI_AGENT_NAME, name));
    }
    if v.stage == Some(Stage::Tool) {
        if let Some(name) = v.tool_name
            && !has(a::GEN_AI_TOOL_NAME)
        {
            add.push(kv_str(a::GEN_AI_TOOL_NAME, name));
        }
        if let Some(id) = v.tool_call_id
            && !has(a::GEN_AI_TOOL_CALL_ID)
        {
            add.push(kv_str(a::GEN_AI_TOOL_CALL_ID, id));
        }
        if let Some(args) = &v.tool_arguments
            && !has(a::GEN_AI_TOOL_CALL_ARGUMENTS)
        {
            add.push(kv_str(a::GEN_AI_TOOL_CALL_ARGUMENTS, args));
        }
    }
}

/// The instrumentation problems of one GenAI span.
pub fn lint(v: &GenAiView<'_>, stage: Stage) -> Vec<&'static str> {
    let mut issues = Vec::new();
    if stage == Stage::Llm {
        // A failed stream ended before its usage or first token: nothing is missing.
        let stream = v.streaming == Some(true) && !v.error;
        if stream && v.tokens.input.is_none() && v.tokens.output.is_none() {
            issues.push(issue::STREAMING_WITHOUT_USAGE);
        }
        if stream && v.time_to_first_token.is_none() {
            issues.push(if v.events_dropped {
                issue::STREAM_EVENTS_DROPPED
            } else {
                issue::STREAMING_WITHOUT_TTFT
            });
        }
        if v.model().is_none() {
            issues.push(issue::LLM_WITHOUT_MODEL);
        }
    }
    if v.aliases_used
        .iter()
        .any(|s| s.status == Status::Deprecated)
    {
        issues.push(issue::DEPRECATED_ATTRIBUTE);
    }
    if let (Some(total), Some(i), Some(o)) = (v.tokens.total, v.tokens.input, v.tokens.output)
        && i.checked_add(o) != Some(total)
    {
        issues.push(issue::CONTRADICTORY_TOKENS);
    }
    issues
}

/// Attribute keys that carry prompt or completion content.
const CONTENT_KEYS: &[&str] = &[
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "input.value",
    "output.value",
];
const CONTENT_PREFIXES: &[&str] = &[
    "llm.input_messages.",
    "llm.output_messages.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
];

pub fn is_content_key(k: &str) -> bool {
    CONTENT_KEYS.contains(&k) || CONTENT_PREFIXES.iter().any(|p| k.starts_with(p))
}

/// Characters of text in a value (strings in arrays and maps included).
fn text_len(v: &AnyValue) -> usize {
    match &v.value {
        Some(Value::StringValue(s)) => s.chars().count(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(text_len).sum(),
        Some(Value::KvlistValue(l)) => l
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .map(text_len)
            .sum(),
        Some(Value::BytesValue(b)) => b.len(),
        _ => 0,
    }
}

fn redacted(v: &AnyValue) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(format!(
            "[redacted: {} chars]",
            text_len(v)
        ))),
    }
}

fn redact_attributes(attrs: &mut [KeyValue]) {
    for kv in attrs.iter_mut() {
        if is_content_key(&kv.key)
            && let Some(v) = &kv.value
        {
            kv.value = Some(redacted(v));
        }
    }
}

/// GenAI content events (gen_ai.user.message, gen_ai.choice, gen_ai.client.inference.operation.details, …):
/// the body and content attributes are redacted.
fn redact_log(rec: &mut LogRecord) {
    let event_name = if rec.event_name.is_empty() {
        rec.attributes
            .iter()
            .find(|kv| kv.key == "event.name")
            .and_then(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                },
            )
            .unwrap_or_default()
    } else {
        rec.event_name.clone()
    };
    redact_attributes(&mut rec.attributes);
    if event_name.starts_with("gen_ai.")
        && let Some(b) = &rec.body
        && b.value.is_some()
    {
        rec.body = Some(redacted(b));
    }
}

#[cfg(test)]
mod quirks_tests;
#[cfg(test)]
mod tests;
