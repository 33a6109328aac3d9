//! The metrics derived from spans: their definitions (names, units, buckets, labels).
//! Labels come only from bounded values (service, stage, provider, model, status, span name and
//! kind) and every metric has a series limit with an overflow series (see `crate::derived`).

use crate::derived::{Kind, MetricDef};
use crate::names::derived as n;

/// Advised buckets of the GenAI conventions for durations, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Advised buckets of the GenAI conventions for token counts.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Request and stage latency, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Retrieval scores, 0..1 in tenths (scores outside fall into the first or last bucket).
pub const SCORE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
/// The Collector spanmetrics connector's default buckets, in milliseconds (Jaeger's Monitor tab).
pub const SPAN_MS_BUCKETS: &[f64] = &[
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

const GENAI_LABELS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "service.name",
];
const GENAI_TOKEN_LABELS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "service.name",
    "gen_ai.token.type",
];

pub const OP_DURATION: usize = 0;
pub const TOKEN_USAGE: usize = 1;
pub const TIME_TO_FIRST_CHUNK: usize = 2;
pub const COST: usize = 3;
pub const TOKENS: usize = 4;
pub const CALLS: usize = 5;
pub const STAGE_DURATION: usize = 6;
pub const REQUESTS: usize = 7;
pub const REQUEST_DURATION: usize = 8;
pub const RETRIEVAL_TOP_SCORE: usize = 9;
pub const UNPRICED: usize = 10;
pub const ISSUES: usize = 11;
pub const SPAN_CALLS: usize = 12;
pub const SPAN_DURATION: usize = 13;
pub const CRITICAL_PATH_SHARE: usize = 14;
pub const BOTTLENECK_TRACES: usize = 15;
pub const FINDINGS: usize = 16;
pub const QUALITY_SCORE: usize = 17;
pub const QUALITY_FLAGS: usize = 18;
pub const SLO_SLI_RATIO: usize = 19;
pub const SLO_BURN_RATE: usize = 20;
pub const SLO_ERROR_BUDGET_REMAINING: usize = 21;
pub const BUDGET_SPEND: usize = 22;
pub const BUDGET_PROJECTED_SPEND: usize = 23;
pub const ANOMALIES: usize = 24;
pub const SLO_EVENTS: usize = 25;
pub const TOOL_CALLS: usize = 26;
pub const TOOL_DURATION: usize = 27;
pub const AGENT_RUNS: usize = 28;
pub const AGENT_COST: usize = 29;
pub const AGENT_LLM_CALLS: usize = 30;

/// Model calls per agent run.
pub const CALL_COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0,
];

const SLO_LABELS: &[&str] = &["slo", "service", "scope", "window"];

/// Shares, 0..1 in tenths.
pub const SHARE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Every derived metric; the constants above index it.
pub static DEFS: &[MetricDef] = &[
    MetricDef {
        otel_name: n::GEN_AI_OPERATION_DURATION.0,
        prom_name: n::GEN_AI_OPERATION_DURATION.1,
        help: "GenAI operation duration (GenAI semantic conventions)",
        unit: "s",
        kind: Kind::Histogram {
            buckets: DURATION_BUCKETS,
        },
        labels: GENAI_LABELS,
    },
    MetricDef {
        otel_name: n::GEN_AI_TOKEN_USAGE.0,
        prom_name: n::GEN_AI_TOKEN_USAGE.1,
        help: "Tokens used per GenAI operation, by gen_ai.token.type (GenAI semantic conventions)",
        unit: "{token}",
        kind: Kind::Histogram {
            buckets: TOKEN_BUCKETS,
        },
        labels: GENAI_TOKEN_LABELS,
    },
    MetricDef {
        otel_name: n::GEN_AI_TIME_TO_FIRST_CHUNK.0,
        prom_name: n::GEN_AI_TIME_TO_FIRST_CHUNK.1,
        help: "Time to the first chunk of a streamed GenAI response (GenAI semantic conventions)",
        unit: "s",
        kind: Kind::Histogram {
            buckets: DURATION_BUCKETS,
        },
        labels: GENAI_LABELS,
    },
    MetricDef {
        otel_name: n::LLM_COST_USD.0,
        prom_name: n::LLM_COST_USD.1,
        help: "Cost of model calls in USD",
        unit: "USD",
        kind: Kind::Counter,
        labels: &["service", "provider", "model", "stage"],
    },
    MetricDef {
        otel_name: n::LLM_TOKENS.0,
        prom_name: n::LLM_TOKENS.1,
        help: "Tokens of model calls by type (input includes cached tokens, output includes reasoning)",
        unit: "{token}",
        kind: Kind::Counter,
        labels: &["service", "provider", "model", "type"],
    },
    MetricDef {
        otel_name: n::LLM_CALLS.0,
        prom_name: n::LLM_CALLS.1,
        help: "Model calls (llm, embedding, rerank) by status",
        unit: "{call}",
        kind: Kind::Counter,
        labels: &["service", "provider", "model", "stage", "status"],
    },
    MetricDef {
        otel_name: n::STAGE_DURATION.0,
        prom_name: n::STAGE_DURATION.1,
        help: "Duration of GenAI spans by stage",
        unit: "s",
        kind: Kind::Histogram {
            buckets: LATENCY_BUCKETS,
        },
        labels: &["service", "stage"],
    },
    MetricDef {
        otel_name: n::REQUESTS.0,
        prom_name: n::REQUESTS.1,
        help: "Root spans (end-to-end requests) by status",
        unit: "{request}",
        kind: Kind::Counter,
        labels: &["service", "status"],
    },
    MetricDef {
        otel_name: n::REQUEST_DURATION.0,
        prom_name: n::REQUEST_DURATION.1,
        help: "Duration of root spans (end-to-end requests)",
        unit: "s",
        kind: Kind::Histogram {
            buckets: LATENCY_BUCKETS,
        },
        labels: &["service"],
    },
    MetricDef {
        otel_name: n::RETRIEVAL_TOP_SCORE.0,
        prom_name: n::RETRIEVAL_TOP_SCORE.1,
        help: "Best document score of each retrieval",
        unit: "1",
        kind: Kind::Histogram {
            buckets: SCORE_BUCKETS,
        },
        labels: &["service"],
    },
    MetricDef {
        otel_name: n::UNPRICED_CALLS.0,
        prom_name: n::UNPRICED_CALLS.1,
        help: "Model calls no price matched (add the model to processors.genai.prices)",
        unit: "{call}",
        kind: Kind::Counter,
        labels: &["service", "provider", "model"],
    },
    MetricDef {
        otel_name: n::INSTRUMENTATION_ISSUES.0,
        prom_name: n::INSTRUMENTATION_ISSUES.1,
        help: "Instrumentation problems found on spans, by issue",
        unit: "{span}",
        kind: Kind::Counter,
        labels: &["service", "issue"],
    },
    MetricDef {
        otel_name: n::SPAN_CALLS.0,
        prom_name: n::SPAN_CALLS.1,
        help: "Spans by service, name, kind and status (Jaeger Monitor tab)",
        unit: "{call}",
        kind: Kind::Counter,
        labels: &["service.name", "span.name", "span.kind", "status.code"],
    },
    MetricDef {
        otel_name: n::SPAN_DURATION.0,
        prom_name: n::SPAN_DURATION.1,
        help: "Span durations in milliseconds (Jaeger Monitor tab)",
        unit: "ms",
        kind: Kind::Histogram {
            buckets: SPAN_MS_BUCKETS,
        },
        labels: &["service.name", "span.name", "span.kind", "status.code"],
    },
    MetricDef {
        otel_name: n::CRITICAL_PATH_SHARE.0,
        prom_name: n::CRITICAL_PATH_SHARE.1,
        help: "Share of each complete trace's critical path owned by a stage",
        unit: "1",
        kind: Kind::Histogram {
            buckets: SHARE_BUCKETS,
        },
        labels: &["stage"],
    },
    MetricDef {
        otel_name: n::BOTTLENECK_TRACES.0,
        prom_name: n::BOTTLENECK_TRACES.1,
        help: "Complete traces with a bottleneck verdict, by the bottleneck's stage",
        unit: "{trace}",
        kind: Kind::Counter,
        labels: &["service", "stage"],
    },
    MetricDef {
        otel_name: n::TRACE_FINDINGS.0,
        prom_name: n::TRACE_FINDINGS.1,
        help: "Patterns found in traces (rag.finding events), by finding",
        unit: "{finding}",
        kind: Kind::Counter,
        labels: &["finding", "service"],
    },
    MetricDef {
        otel_name: n::QUALITY_SCORE.0,
        prom_name: n::QUALITY_SCORE.1,
        help: "Quality score of complete traces (weighted mean of their quality signals)",
        unit: "1",
        kind: Kind::Histogram {
            buckets: SHARE_BUCKETS,
        },
        labels: &["service"],
    },
    MetricDef {
        otel_name: n::QUALITY_FLAGS.0,
        prom_name: n::QUALITY_FLAGS.1,
        help: "Quality problems of answers (truncated, content_filter, error), by flag",
        unit: "{trace}",
        kind: Kind::Counter,
        labels: &["flag", "service"],
    },
    MetricDef {
        otel_name: n::SLO_SLI_RATIO.0,
        prom_name: n::SLO_SLI_RATIO.1,
        help: "Share of good events of an SLO over a window (scope: the operation or model for SLOs with `by`)",
        unit: "1",
        kind: Kind::Gauge,
        labels: SLO_LABELS,
    },
    MetricDef {
        otel_name: n::SLO_BURN_RATE.0,
        prom_name: n::SLO_BURN_RATE.1,
        help: "How fast an SLO's error budget burns over a window (1 = exactly over the SLO period)",
        unit: "1",
        kind: Kind::Gauge,
        labels: SLO_LABELS,
    },
    MetricDef {
        otel_name: n::SLO_ERROR_BUDGET_REMAINING.0,
        prom_name: n::SLO_ERROR_BUDGET_REMAINING.1,
        help: "Share of an SLO's error budget left over its period (negative when overspent)",
        unit: "1",
        kind: Kind::Gauge,
        labels: &["slo", "service", "scope"],
    },
    MetricDef {
        otel_name: n::BUDGET_SPEND.0,
        prom_name: n::BUDGET_SPEND.1,
        help: "Spend counted against a budget in its current period",
        unit: "USD",
        kind: Kind::Gauge,
        labels: &["budget"],
    },
    MetricDef {
        otel_name: n::BUDGET_PROJECTED_SPEND.0,
        prom_name: n::BUDGET_PROJECTED_SPEND.1,
        help: "Projected spend of a budget at the end of its period, at the recent rate",
        unit: "USD",
        kind: Kind::Gauge,
        labels: &["budget"],
    },
    MetricDef {
        otel_name: n::ANOMALIES.0,
        prom_name: n::ANOMALIES.1,
        help: "Anomaly verdicts, by signal",
        unit: "{anomaly}",
        kind: Kind::Counter,
        labels: &["signal", "service"],
    },
    MetricDef {
        otel_name: n::SLO_EVENTS.0,
        prom_name: n::SLO_EVENTS.1,
        help: "Events an SLO counted over a window (a burn rule fires only with min_events in both its windows)",
        unit: "{event}",
        kind: Kind::Gauge,
        labels: SLO_LABELS,
    },
    MetricDef {
        otel_name: n::TOOL_CALLS.0,
        prom_name: n::TOOL_CALLS.1,
        help: "Tool calls, by tool and status (ok or error); an MCP server's span of a call counts with the client's",
        unit: "{call}",
        kind: Kind::Counter,
        labels: &["service", "tool", "status"],
    },
    MetricDef {
        otel_name: n::TOOL_DURATION.0,
        prom_name: n::TOOL_DURATION.1,
        help: "Duration of tool calls, by tool",
        unit: "s",
        kind: Kind::Histogram {
            buckets: LATENCY_BUCKETS,
        },
        labels: &["service", "tool"],
    },
    MetricDef {
        otel_name: n::AGENT_RUNS.0,
        prom_name: n::AGENT_RUNS.1,
        help: "Agent runs, by agent and outcome (ok, error, limit_reached)",
        unit: "{run}",
        kind: Kind::Counter,
        labels: &["service", "agent", "outcome"],
    },
    MetricDef {
        otel_name: n::AGENT_COST.0,
        prom_name: n::AGENT_COST.1,
        help: "Cost of the model calls agents made (each call under the agent that made it)",
        unit: "USD",
        kind: Kind::Counter,
        labels: &["service", "agent"],
    },
    MetricDef {
        otel_name: n::AGENT_LLM_CALLS.0,
        prom_name: n::AGENT_LLM_CALLS.1,
        help: "Model calls per agent run",
        unit: "{call}",
        kind: Kind::Histogram {
            buckets: CALL_COUNT_BUCKETS,
        },
        labels: &["service", "agent"],
    },
];
