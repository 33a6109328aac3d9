//! Every metric and attribute name ragwatch writes. These are a public contract: dashboards, alert
//! rules and users' queries depend on them, so they live here, in one place, and the README
//! documents each of them. Change one only with a release note.

/// Self-observability metrics served on the admin endpoint (`service.telemetry.metrics.address`).
///
/// Counter names are registered without the `_total` suffix; the Prometheus text encoder adds it.
pub mod metrics {
    /// Spans accepted by a receiver and handed to its pipelines.
    pub const RECEIVER_ACCEPTED_SPANS: &str = "ragwatch_receiver_accepted_spans";
    /// Spans a receiver refused: malformed, invalid ids, or pipeline full.
    pub const RECEIVER_REFUSED_SPANS: &str = "ragwatch_receiver_refused_spans";
    pub const RECEIVER_ACCEPTED_METRIC_POINTS: &str = "ragwatch_receiver_accepted_metric_points";
    pub const RECEIVER_REFUSED_METRIC_POINTS: &str = "ragwatch_receiver_refused_metric_points";
    pub const RECEIVER_ACCEPTED_LOG_RECORDS: &str = "ragwatch_receiver_accepted_log_records";
    pub const RECEIVER_REFUSED_LOG_RECORDS: &str = "ragwatch_receiver_refused_log_records";
    /// Requests a receiver answered, by transport and outcome.
    pub const RECEIVER_REQUESTS: &str = "ragwatch_receiver_requests";
    /// JSON requests that decoded to zero items (often snake_case keys instead of lowerCamelCase).
    pub const RECEIVER_EMPTY_JSON_REQUESTS: &str = "ragwatch_receiver_empty_json_requests";
    /// TLS handshakes a receiver refused or that did not finish (no or a wrong client
    /// certificate, plaintext to a TLS port, an old TLS version, a timeout).
    pub const RECEIVER_TLS_HANDSHAKE_FAILURES: &str = "ragwatch_receiver_tls_handshake_failures";
    /// Changes of a receiver's TLS files, by outcome: `reloaded` or `failed` (the certificate in
    /// use stays).
    pub const RECEIVER_TLS_RELOADS: &str = "ragwatch_receiver_tls_reloads";

    pub const EXPORTER_SENT_SPANS: &str = "ragwatch_exporter_sent_spans";
    pub const EXPORTER_SEND_FAILED_SPANS: &str = "ragwatch_exporter_send_failed_spans";
    pub const EXPORTER_ENQUEUE_FAILED_SPANS: &str = "ragwatch_exporter_enqueue_failed_spans";
    pub const EXPORTER_SENT_METRIC_POINTS: &str = "ragwatch_exporter_sent_metric_points";
    pub const EXPORTER_SEND_FAILED_METRIC_POINTS: &str =
        "ragwatch_exporter_send_failed_metric_points";
    pub const EXPORTER_ENQUEUE_FAILED_METRIC_POINTS: &str =
        "ragwatch_exporter_enqueue_failed_metric_points";
    pub const EXPORTER_SENT_LOG_RECORDS: &str = "ragwatch_exporter_sent_log_records";
    pub const EXPORTER_SEND_FAILED_LOG_RECORDS: &str = "ragwatch_exporter_send_failed_log_records";
    pub const EXPORTER_ENQUEUE_FAILED_LOG_RECORDS: &str =
        "ragwatch_exporter_enqueue_failed_log_records";
    /// Requests waiting in an exporter's sending queue.
    pub const EXPORTER_QUEUE_SIZE: &str = "ragwatch_exporter_queue_size";
    /// Capacity of an exporter's sending queue, in requests.
    pub const EXPORTER_QUEUE_CAPACITY: &str = "ragwatch_exporter_queue_capacity";
    /// Send attempts that failed retryably and were scheduled again.
    pub const EXPORTER_RETRIES: &str = "ragwatch_exporter_retries";
    /// Bytes an exporter's on-disk sending queue takes.
    pub const EXPORTER_STORAGE_BYTES: &str = "ragwatch_exporter_storage_bytes";
    /// The size limit of an exporter's on-disk sending queue.
    pub const EXPORTER_STORAGE_CAPACITY_BYTES: &str = "ragwatch_exporter_storage_capacity_bytes";
    /// Damaged records skipped when an on-disk sending queue was opened.
    pub const EXPORTER_STORAGE_CORRUPTED: &str = "ragwatch_exporter_storage_corrupted";

    /// Items (spans, points or records) waiting in a pipeline's input queue.
    pub const PIPELINE_QUEUE_ITEMS: &str = "ragwatch_pipeline_queue_items";
    /// Capacity of a pipeline's input queue, in items.
    pub const PIPELINE_QUEUE_CAPACITY: &str = "ragwatch_pipeline_queue_capacity";
    /// Items a pipeline had to drop (only when the shutdown grace period runs out).
    pub const PIPELINE_DROPPED_ITEMS: &str = "ragwatch_pipeline_dropped_items";
    /// Bytes a pipeline's log (`storage`) takes.
    pub const PIPELINE_STORAGE_BYTES: &str = "ragwatch_pipeline_storage_bytes";
    /// The size limit of a pipeline's log.
    pub const PIPELINE_STORAGE_CAPACITY_BYTES: &str = "ragwatch_pipeline_storage_capacity_bytes";
    /// Requests in a pipeline's log not yet released (some exporter does not have them yet).
    pub const PIPELINE_STORAGE_RECORDS: &str = "ragwatch_pipeline_storage_records";
    /// Damaged records skipped when a pipeline's log was opened.
    pub const PIPELINE_STORAGE_CORRUPTED: &str = "ragwatch_pipeline_storage_corrupted";
    /// Items replayed from a pipeline's log at start: delivery is at least once, so some of them
    /// may have been delivered before the process stopped (duplicates).
    pub const PIPELINE_REPLAYED_ITEMS: &str = "ragwatch_pipeline_replayed_items";
    /// Traces held by trace assembly.
    pub const TRACES_IN_FLIGHT: &str = "ragwatch_traces_in_flight";
    /// Traces flushed early (as partial) because max_traces was reached.
    pub const TRACE_EVICTIONS: &str = "ragwatch_trace_evictions";
    /// Spans that arrived after their trace was flushed (exported at once).
    pub const TRACE_LATE_SPANS: &str = "ragwatch_trace_late_spans";
    /// Alerts firing, by alertname and severity (gauge).
    pub const ALERTS_FIRING: &str = "ragwatch_alerts_firing";
    /// Alert notifications, by receiver and result.
    pub const ALERT_NOTIFICATIONS: &str = "ragwatch_alert_notifications";
    /// Traces decided by tail sampling, by `policy` (the first that kept the trace, the `drop`
    /// policy that dropped it, or `(none)`) and `decision` (`kept`, `dropped`).
    pub const SAMPLING_TRACES: &str = "ragwatch_sampling_traces";
    /// Spans tail sampling dropped.
    pub const SAMPLING_SPANS_DROPPED: &str = "ragwatch_sampling_spans_dropped";
    /// Decisions forgotten because tail sampling's decision cache was full.
    pub const SAMPLING_DECISION_CACHE_EVICTIONS: &str =
        "ragwatch_sampling_decision_cache_evictions";
    /// Traces decided before `decision_wait` (num_traces waiting, or a very large trace).
    pub const SAMPLING_EARLY_DECISIONS: &str = "ragwatch_sampling_early_decisions";
    /// Spans that arrived after their trace's decision and followed it.
    pub const SAMPLING_LATE_SPANS: &str = "ragwatch_sampling_late_spans";
    /// Embedding vectors removed from spans (`genai.drop_embedding_vectors`).
    pub const GENAI_EMBEDDING_VECTORS_DROPPED: &str = "ragwatch_genai_embedding_vectors_dropped";
    /// Every name above, for checks against dashboards and rules.
    pub const ALL: &[&str] = &[
        RECEIVER_ACCEPTED_SPANS,
        RECEIVER_REFUSED_SPANS,
        RECEIVER_ACCEPTED_METRIC_POINTS,
        RECEIVER_REFUSED_METRIC_POINTS,
        RECEIVER_ACCEPTED_LOG_RECORDS,
        RECEIVER_REFUSED_LOG_RECORDS,
        RECEIVER_REQUESTS,
        RECEIVER_EMPTY_JSON_REQUESTS,
        RECEIVER_TLS_HANDSHAKE_FAILURES,
        RECEIVER_TLS_RELOADS,
        EXPORTER_SENT_SPANS,
        EXPORTER_SEND_FAILED_SPANS,
        EXPORTER_ENQUEUE_FAILED_SPANS,
        EXPORTER_SENT_METRIC_POINTS,
        EXPORTER_SEND_FAILED_METRIC_POINTS,
        EXPORTER_ENQUEUE_FAILED_METRIC_POINTS,
        EXPORTER_SENT_LOG_RECORDS,
        EXPORTER_SEND_FAILED_LOG_RECORDS,
        EXPORTER_ENQUEUE_FAILED_LOG_RECORDS,
        EXPORTER_QUEUE_SIZE,
        EXPORTER_QUEUE_CAPACITY,
        EXPORTER_RETRIES,
        EXPORTER_STORAGE_BYTES,
        EXPORTER_STORAGE_CAPACITY_BYTES,
        EXPORTER_STORAGE_CORRUPTED,
        PIPELINE_QUEUE_ITEMS,
        PIPELINE_QUEUE_CAPACITY,
        PIPELINE_DROPPED_ITEMS,
        PIPELINE_STORAGE_BYTES,
        PIPELINE_STORAGE_CAPACITY_BYTES,
        PIPELINE_STORAGE_RECORDS,
        PIPELINE_STORAGE_CORRUPTED,
        PIPELINE_REPLAYED_ITEMS,
        TRACES_IN_FLIGHT,
        TRACE_EVICTIONS,
        TRACE_LATE_SPANS,
        ALERTS_FIRING,
        ALERT_NOTIFICATIONS,
        SAMPLING_TRACES,
        SAMPLING_SPANS_DROPPED,
        SAMPLING_DECISION_CACHE_EVICTIONS,
        SAMPLING_EARLY_DECISIONS,
        SAMPLING_LATE_SPANS,
        GENAI_EMBEDDING_VECTORS_DROPPED,
    ];
}

/// Metrics derived from spans (the `genai` processor), served by the `prometheus` exporter and
/// sent as OTLP by the `derived_metrics` receiver. Each is given as (OTLP name, Prometheus name).
pub mod derived {
    /// GenAI semantic-convention histograms, with their advised buckets.
    pub const GEN_AI_OPERATION_DURATION: (&str, &str) = (
        "gen_ai.client.operation.duration",
        "gen_ai_client_operation_duration_seconds",
    );
    pub const GEN_AI_TOKEN_USAGE: (&str, &str) =
        ("gen_ai.client.token.usage", "gen_ai_client_token_usage");
    pub const GEN_AI_TIME_TO_FIRST_CHUNK: (&str, &str) = (
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai_client_operation_time_to_first_chunk_seconds",
    );
    pub const LLM_COST_USD: (&str, &str) = ("rag.llm.cost", "rag_llm_cost_usd");
    pub const LLM_TOKENS: (&str, &str) = ("rag.llm.tokens", "rag_llm_tokens");
    pub const LLM_CALLS: (&str, &str) = ("rag.llm.calls", "rag_llm_calls");
    pub const STAGE_DURATION: (&str, &str) = ("rag.stage.duration", "rag_stage_duration_seconds");
    pub const REQUESTS: (&str, &str) = ("rag.requests", "rag_requests");
    pub const REQUEST_DURATION: (&str, &str) =
        ("rag.request.duration", "rag_request_duration_seconds");
    pub const RETRIEVAL_TOP_SCORE: (&str, &str) =
        ("rag.retrieval.top_score", "rag_retrieval_top_score");
    pub const UNPRICED_CALLS: (&str, &str) = ("rag.unpriced.calls", "rag_unpriced_calls");
    pub const INSTRUMENTATION_ISSUES: (&str, &str) =
        ("rag.instrumentation.issues", "rag_instrumentation_issues");
    pub const CRITICAL_PATH_SHARE: (&str, &str) = (
        "rag.trace.critical_path.share",
        "rag_trace_critical_path_share",
    );
    pub const BOTTLENECK_TRACES: (&str, &str) = ("rag.bottleneck.traces", "rag_bottleneck_traces");
    pub const TRACE_FINDINGS: (&str, &str) = ("rag.trace.findings", "rag_trace_findings");
    pub const QUALITY_SCORE: (&str, &str) = ("rag.quality.score", "rag_quality_score");
    pub const QUALITY_FLAGS: (&str, &str) = ("rag.quality.flags", "rag_quality_flags");
    /// SLOs (`slo` processor): SLI and burn rate per window, error budget left over the period;
    /// budgets: spend so far and projected at the end of the period.
    pub const SLO_SLI_RATIO: (&str, &str) = ("rag.slo.sli_ratio", "rag_slo_sli_ratio");
    pub const SLO_BURN_RATE: (&str, &str) = ("rag.slo.burn_rate", "rag_slo_burn_rate");
    /// Agents and tools (`trace_assembly`): tool calls by status and their durations; agent
    /// runs by outcome, their cost and model calls per run (each model call counted once, under
    /// the agent that made it).
    pub const TOOL_CALLS: (&str, &str) = ("rag.tool.calls", "rag_tool_calls");
    pub const TOOL_DURATION: (&str, &str) = ("rag.tool.duration", "rag_tool_duration_seconds");
    pub const AGENT_RUNS: (&str, &str) = ("rag.agent.runs", "rag_agent_runs");
    pub const AGENT_COST: (&str, &str) = ("rag.agent.cost", "rag_agent_cost_usd");
    pub const AGENT_LLM_CALLS: (&str, &str) = ("rag.agent.llm_calls", "rag_agent_llm_calls");
    /// Events an SLO counted in each window (a burn rule needs `min_events` in both).
    pub const SLO_EVENTS: (&str, &str) = ("rag.slo.events", "rag_slo_events");
    pub const SLO_ERROR_BUDGET_REMAINING: (&str, &str) = (
        "rag.slo.error_budget_remaining",
        "rag_slo_error_budget_remaining",
    );
    pub const BUDGET_SPEND: (&str, &str) = ("rag.budget.spend", "rag_budget_spend_usd");
    pub const BUDGET_PROJECTED_SPEND: (&str, &str) = (
        "rag.budget.projected_spend",
        "rag_budget_projected_spend_usd",
    );
    /// Anomaly verdicts (`anomaly` processor).
    pub const ANOMALIES: (&str, &str) = ("rag.anomalies", "rag_anomalies");
    /// Span metrics compatible with Jaeger's Monitor tab.
    pub const SPAN_CALLS: (&str, &str) = ("traces.span.metrics.calls", "traces_span_metrics_calls");
    pub const SPAN_DURATION: (&str, &str) = (
        "traces.span.metrics.duration",
        "traces_span_metrics_duration_milliseconds",
    );
}

/// Span attributes ragwatch writes. It never overwrites an attribute the application set.
pub mod attrs {
    /// The span's role: llm, embedding, retrieval, rerank, tool, agent, chain, guardrail,
    /// evaluator or other.
    pub const RAG_STAGE: &str = "rag.stage";
    /// Cost of the call in USD (double), and its parts.
    pub const COST_USD: &str = "rag.cost.usd";
    pub const COST_INPUT_USD: &str = "rag.cost.input_usd";
    pub const COST_OUTPUT_USD: &str = "rag.cost.output_usd";
    pub const COST_CACHE_READ_USD: &str = "rag.cost.cache_read_usd";
    pub const COST_CACHE_WRITE_USD: &str = "rag.cost.cache_write_usd";
    /// Per-call price (rerank searches), when the price entry has one.
    pub const COST_REQUEST_USD: &str = "rag.cost.request_usd";
    /// `computed` (from the price table) or `supplied` (by the instrumentation).
    pub const COST_SOURCE: &str = "rag.cost.source";
    /// The id of the price entry used.
    pub const COST_PRICE_ID: &str = "rag.cost.price_id";
    /// true on a model call no price matches (the model is never guessed).
    pub const COST_UNPRICED: &str = "rag.cost.unpriced";
    /// Time to first token in milliseconds (double), where known.
    pub const LLM_TTFT_MS: &str = "rag.llm.ttft_ms";
    /// Instrumentation problems found on the span (string array), with `mark_instrumentation_issues`.
    pub const INSTRUMENTATION_ISSUES: &str = "rag.instrumentation.issues";

    /// Canonical GenAI convention names, added where only an alias was present.
    pub const GEN_AI_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
    pub const GEN_AI_TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    pub const GEN_AI_TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";

    /// Whole-trace analysis (`trace_assembly`): false on the topmost spans of a trace whose root
    /// never came, true on the root of a complete trace.
    pub const TRACE_COMPLETE: &str = "rag.trace.complete";
    /// On the root span: the trace's duration (ms), span count, and the cost and tokens of its
    /// model calls.
    pub const TRACE_DURATION_MS: &str = "rag.trace.duration_ms";
    pub const TRACE_SPAN_COUNT: &str = "rag.trace.span_count";
    pub const TRACE_COST_USD: &str = "rag.trace.cost.usd";
    pub const TRACE_TOKENS_INPUT: &str = "rag.trace.tokens.input";
    pub const TRACE_TOKENS_OUTPUT: &str = "rag.trace.tokens.output";
    /// On every span of a complete trace: its duration minus its children's (ms).
    pub const SELF_TIME_MS: &str = "rag.self_time_ms";
    /// On each span on the critical path: true, the time it owns there (ms) and its share (0..1)
    /// of the trace's duration.
    pub const CRITICAL_PATH: &str = "rag.critical_path";
    pub const CRITICAL_PATH_MS: &str = "rag.critical_path.ms";
    pub const CRITICAL_PATH_SHARE: &str = "rag.critical_path.share";
    /// On the span that owns the largest share of the critical path, when it is >= min_share.
    pub const BOTTLENECK: &str = "rag.bottleneck";
    /// On the root: the bottleneck's stage (one of the fixed stage names, or `app` for time the
    /// application's own non-GenAI spans own), span id (hex), span name and share.
    pub const TRACE_BOTTLENECK_STAGE: &str = "rag.trace.bottleneck.stage";
    pub const TRACE_BOTTLENECK_SPAN_ID: &str = "rag.trace.bottleneck.span_id";
    pub const TRACE_BOTTLENECK_SPAN_NAME: &str = "rag.trace.bottleneck.span_name";
    pub const TRACE_BOTTLENECK_SHARE: &str = "rag.trace.bottleneck.share";
    /// On each agent run's span (`trace_assembly`): the cost, tokens and model calls of every
    /// model call beneath it (each counted once, whatever the nesting of agents), its tool calls
    /// and failed tool calls, and its outcome: `ok`, `error`, or `limit_reached` when the
    /// framework stopped it at its iteration or usage limit.
    pub const AGENT_COST_USD: &str = "rag.agent.cost.usd";
    pub const AGENT_TOKENS_INPUT: &str = "rag.agent.tokens.input";
    pub const AGENT_TOKENS_OUTPUT: &str = "rag.agent.tokens.output";
    pub const AGENT_LLM_CALLS: &str = "rag.agent.llm_calls";
    pub const AGENT_TOOL_CALLS: &str = "rag.agent.tool_calls";
    pub const AGENT_TOOL_ERRORS: &str = "rag.agent.tool_errors";
    pub const AGENT_OUTCOME: &str = "rag.agent.outcome";
    /// On a non-GenAI span with children that owns at least `uninstrumented_gap_share` of the
    /// trace on the critical path outside any child (code nobody traced): that time, ms. An
    /// instrumentation issue (`uninstrumented_gap` in rag_instrumentation_issues_total), not a
    /// finding.
    pub const UNINSTRUMENTED_MS: &str = "rag.uninstrumented_ms";
    /// On the root, per stage on the critical path: `rag.trace.stage.<stage>.ms`.
    pub const TRACE_STAGE_PREFIX: &str = "rag.trace.stage.";

    /// A span event for each pattern found, on the span concerned, with attributes `name`,
    /// `description` (with the numbers), `severity` (info | warning) and `span_ids` (hex array).
    pub const FINDING_EVENT: &str = "rag.finding";
    /// The synthetic span of `trace_assembly` in stream mode: a child of the root carrying the
    /// root's `rag.trace.*` attributes and the trace's findings as events.
    pub const ANALYSIS_SPAN: &str = "ragwatch.analysis";

    /// The `quality` processor, on the root of a complete trace: each signal normalised to 0..1
    /// as `rag.quality.<signal>` (retrieval_top, retrieval_mean, evaluation, feedback, answer),
    /// their weighted mean, and how many there were. No signal, no score.
    pub const QUALITY_PREFIX: &str = "rag.quality.";
    pub const QUALITY_SCORE: &str = "rag.quality.score";
    pub const QUALITY_SIGNALS: &str = "rag.quality.signals";
    /// The `anomaly` processor, on the span concerned (or the root): true, the signals judged
    /// anomalous (string array) and the largest robust z-score among them.
    pub const ANOMALY: &str = "rag.anomaly";
    pub const ANOMALY_SIGNALS: &str = "rag.anomaly.signals";
    pub const ANOMALY_SCORE: &str = "rag.anomaly.score";
    pub const FINDING_NAME: &str = "name";
    /// `tail_sampling`, on the root of a kept trace: the first policy that kept it, and how many
    /// traces it stands for (1 for a trace kept by a rule, 1/p for one kept with probability p).
    pub const SAMPLING_POLICY: &str = "rag.sampling.policy";
    pub const SAMPLING_ADJUSTED_COUNT: &str = "rag.sampling.adjusted_count";
    pub const FINDING_DESCRIPTION: &str = "description";
    pub const FINDING_SEVERITY: &str = "severity";
    pub const FINDING_SPAN_IDS: &str = "span_ids";
}

/// Attribute and label values with a meaning of their own.
pub mod values {
    /// The stage of time owned by the application's own spans (no GenAI attribute and no GenAI
    /// ancestor), as in `rag.trace.bottleneck.stage` and the `stage` label of the critical-path
    /// metrics.
    pub const APP_STAGE: &str = "app";
}
