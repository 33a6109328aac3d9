//! Agents and tools on every agent capture in `tests/fixtures/agents/`, and looping, failing and
//! chatty runs built from each stack's span shapes. Costs are worked out by hand from the
//! captures' token counts and the gpt-4o-mini prices (USD per 1M tokens: input 0.15, cached
//! input 0.075, output 0.60).

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Status;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use super::*;
use crate::derived::Limits;
use crate::processor::Processor;
use crate::processor::genai::{GenAiConfig, GenAiProcessor};
use crate::processor::trace_assembly::{AssemblyCounters, TraceAssembly, TraceAssemblyConfig};
use crate::processor::trace_assembly::{
    critical_path::CriticalPathAnalyzer, summary::TraceSummary,
};
use crate::signal::Batch;

const AGENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents");

fn load(file: &str) -> Vec<ExportTraceServiceRequest> {
    let text = std::fs::read_to_string(format!("{AGENTS}/{file}")).expect("fixture");
    text.lines()
        .filter(|l| l.starts_with("{\"resourceSpans\""))
        .map(|l| serde_json::from_str(l).expect("trace line"))
        .collect()
}

/// The requests through `genai` and `trace_assembly` (summary, critical path, agents,
/// patterns); the spans that come out, with their service, and the derived metrics.
fn analysed(reqs: Vec<ExportTraceServiceRequest>) -> (Vec<(String, Span)>, Arc<DerivedMetrics>) {
    let derived = Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
        Limits::default(),
    ));
    let mut genai = GenAiProcessor::new(GenAiConfig::default(), derived.clone()).expect("genai");
    let mut assembly = TraceAssembly::new(
        TraceAssemblyConfig::default(),
        vec![
            Box::new(TraceSummary),
            Box::new(CriticalPathAnalyzer {
                min_share: 0.4,
                derived: derived.clone(),
            }),
            Box::new(AgentAnalyzer {
                config: PatternsConfig::default(),
                derived: derived.clone(),
            }),
            Box::new(
                crate::processor::trace_assembly::patterns::PatternAnalyzer {
                    config: PatternsConfig::default(),
                    derived: derived.clone(),
                },
            ),
        ],
        AssemblyCounters::default(),
    );
    let t0 = Instant::now();
    let mut mid = Vec::new();
    for r in reqs {
        genai.on_input(Batch::Traces(r), t0, &mut mid);
    }
    let mut out = Vec::new();
    for b in mid {
        assembly.on_input(b, t0, &mut out);
    }
    assembly.on_tick(t0 + Duration::from_secs(60), &mut out);
    let mut spans = Vec::new();
    for b in out {
        let Batch::Traces(r) = b else { continue };
        for rs in r.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|res| crate::attributes::service_name(&res.attributes))
                .unwrap_or("")
                .to_string();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                spans.push((service.clone(), s));
            }
        }
    }
    (spans, derived)
}

fn in_trace<'a>(spans: &'a [(String, Span)], prefix: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| crate::attributes::hex(&s.trace_id).starts_with(prefix))
        .collect()
}

/// The span with id `[id; 8]` among the analysed spans.
fn span_with(spans: &[(String, Span)], id: u8) -> &Span {
    spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == vec![id; 8])
        .expect("the span")
}

fn f64_of(s: &Span, k: &str) -> f64 {
    get_f64(&s.attributes, k).unwrap_or(f64::NAN)
}

fn findings_of(s: &Span) -> Vec<String> {
    s.events
        .iter()
        .filter(|e| e.name == a::FINDING_EVENT)
        .filter_map(|e| get_str(&e.attributes, a::FINDING_NAME).map(str::to_string))
        .collect()
}

struct Expected {
    file: &'static str,
    trace: &'static str,
    agent_span: &'static str,
    cost: f64,
    tokens: (f64, f64),
    llm_calls: f64,
    tool_calls: f64,
}

const CHAT_415_26: f64 = (415.0 * 0.15 + 26.0 * 0.60) / 1e6;
// 737 input of which 384 cached: 353 × 0.15 + 384 × 0.075 + 60 × 0.60.
const CHAT_737_60_384: f64 = (353.0 * 0.15 + 384.0 * 0.075 + 60.0 * 0.60) / 1e6;

const EXPECTED: &[Expected] = &[
    Expected {
        file: "pydantic-ai-normal.jsonl",
        trace: "9513f6e0",
        agent_span: "invoke_agent rag_assistant",
        // (462, 26) and (784 of which 384 cached, 60): 8.49e-5 + 1.248e-4, the library's own
        // operation.cost figures.
        cost: 8.49e-5 + 1.248e-4,
        tokens: (1246.0, 86.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
    Expected {
        file: "langgraph-openinference-normal.jsonl",
        trace: "0e74237d",
        agent_span: "rag_assistant",
        cost: CHAT_415_26 + CHAT_737_60_384,
        tokens: (1152.0, 86.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
    Expected {
        file: "langgraph-openllmetry-normal.jsonl",
        trace: "61086544",
        agent_span: "rag_assistant.workflow",
        cost: CHAT_415_26 + CHAT_737_60_384,
        tokens: (1152.0, 86.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
    Expected {
        file: "openai-agents-openinference-normal.jsonl",
        trace: "6f3ddc9f",
        agent_span: "rag_assistant",
        cost: (526.0 * 0.15 + 26.0 * 0.60 + 848.0 * 0.15 + 60.0 * 0.60) / 1e6,
        tokens: (1374.0, 86.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
    Expected {
        file: "openai-agents-mcp-openinference-normal.jsonl",
        trace: "5a73da50",
        agent_span: "rag_assistant",
        cost: (502.0 * 0.15 + 26.0 * 0.60 + 817.0 * 0.15 + 60.0 * 0.60) / 1e6,
        tokens: (1319.0, 86.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
    // The Agents SDK under OpenLLMetry writes no tokens on the chat-completions API: calls
    // counted, nothing priced.
    Expected {
        file: "openai-agents-openllmetry-normal.jsonl",
        trace: "504e0735",
        agent_span: "rag_assistant.agent",
        cost: 0.0,
        tokens: (0.0, 0.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
    // The MCP client's tool span and the MCP client library's span beneath it are one call;
    // `tools/list.mcp` is no tool call.
    Expected {
        file: "openai-agents-mcp-openllmetry-normal.jsonl",
        trace: "4eb2e627",
        agent_span: "rag_assistant.agent",
        cost: 0.0,
        tokens: (0.0, 0.0),
        llm_calls: 2.0,
        tool_calls: 1.0,
    },
];

#[test]
fn every_stack_s_agent_run_is_summed_by_hand() {
    for e in EXPECTED {
        let (spans, _) = analysed(load(e.file));
        let trace = in_trace(&spans, e.trace);
        let agent = trace
            .iter()
            .find(|s| s.name == e.agent_span)
            .unwrap_or_else(|| panic!("{}: no {}", e.file, e.agent_span));
        let cost = f64_of(agent, a::AGENT_COST_USD);
        assert!(
            (cost - e.cost).abs() < 1e-12,
            "{}: cost {cost} != {}",
            e.file,
            e.cost
        );
        assert_eq!(
            (
                f64_of(agent, a::AGENT_TOKENS_INPUT),
                f64_of(agent, a::AGENT_TOKENS_OUTPUT)
            ),
            e.tokens,
            "{}",
            e.file
        );
        assert_eq!(f64_of(agent, a::AGENT_LLM_CALLS), e.llm_calls, "{}", e.file);
        assert_eq!(
            f64_of(agent, a::AGENT_TOOL_CALLS),
            e.tool_calls,
            "{}",
            e.file
        );
        assert_eq!(f64_of(agent, a::AGENT_TOOL_ERRORS), 0.0, "{}", e.file);
        assert_eq!(
            get_str(&agent.attributes, a::AGENT_OUTCOME),
            Some("ok"),
            "{}",
            e.file
        );
        // The trace's cost is its model calls' cost, each counted once.
        let root = trace
            .iter()
            .find(|s| s.parent_span_id.is_empty())
            .expect("root");
        let trace_cost = f64_of(root, a::TRACE_COST_USD);
        assert!(
            (trace_cost - e.cost).abs() < 1e-12,
            "{}: {trace_cost}",
            e.file
        );
    }
}

#[test]
fn every_tool_span_is_named_and_no_normal_run_gets_an_agent_finding() {
    let files: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(AGENTS)
            .expect("agents fixtures")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(files.len(), 7);
    let mut named = 0;
    for f in &files {
        let (spans, d) = analysed(load(f));
        for (_, s) in &spans {
            if stage_of(s) == Some("tool") {
                let name = get_str(&s.attributes, a::GEN_AI_TOOL_NAME);
                assert!(
                    matches!(
                        name,
                        Some("search_docs" | "get_order_status" | "calculator")
                    ),
                    "{f}: {:?} named {name:?}",
                    s.name
                );
                named += 1;
            }
            if stage_of(s) == Some("agent") {
                assert_eq!(get_str(&s.attributes, a::AGENT_OUTCOME), Some("ok"), "{f}");
            }
            let found = findings_of(s);
            assert!(found.is_empty(), "{f}: {:?} {found:?}", s.name);
        }
        // Every trace's cost is the sum of its model calls', each counted once.
        let calls = Calls::of(&spans.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>());
        let mut by_trace: HashMap<Vec<u8>, (f64, Option<f64>)> = HashMap::default();
        for (i, (_, s)) in spans.iter().enumerate() {
            let e = by_trace.entry(s.trace_id.clone()).or_default();
            if calls.model_call[i] {
                e.0 += get_f64(&s.attributes, a::COST_USD).unwrap_or(0.0);
            }
            if s.parent_span_id.is_empty() {
                e.1 = get_f64(&s.attributes, a::TRACE_COST_USD);
            }
        }
        for (tid, (sum, total)) in by_trace {
            if let Some(total) = total {
                assert!((sum - total).abs() < 1e-12, "{f} {tid:?}: {sum} != {total}");
            }
        }
        let mut text = String::new();
        d.encode_prometheus(&mut text);
        assert!(
            !text.contains("status=\"error\""),
            "{f}: no tool failed\n{text}"
        );
        assert!(text.contains("rag_agent_runs_total{"), "{f}");
    }
    // Tool calls in the captures: 3 + 3 + 3 + 3 + ... every one named (MCP server spans too).
    assert!(named >= 35, "{named}");
}

// --- runs built from each stack's shapes ---

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(id: u8, parent: Option<u8>, name: &str, attrs: Vec<KeyValue>, t: (u64, u64)) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_000_000_000 + t.0 * 1_000_000,
        end_time_unix_nano: 1_000_000_000 + t.1 * 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn error(s: &mut Span, message: &str) {
    s.status = Some(Status {
        code: StatusCode::Error as i32,
        message: message.into(),
    });
}

/// A stack's shapes: the agent span, a model call and a tool call, each as that stack writes
/// them.
struct Shapes {
    stack: &'static str,
    agent: fn(u8, Option<u8>) -> Span,
    chat: fn(u8, u8, u64) -> Span,
    tool: fn(u8, u8, u64, &str) -> Span,
    limit: &'static str,
}

fn pydantic_agent(id: u8, parent: Option<u8>) -> Span {
    span(
        id,
        parent,
        "invoke_agent rag_assistant",
        vec![
            kv("gen_ai.operation.name", "invoke_agent"),
            kv("gen_ai.agent.name", "rag_assistant"),
        ],
        (0, 100_000),
    )
}
fn pydantic_chat(id: u8, parent: u8, at: u64) -> Span {
    span(
        id,
        Some(parent),
        "chat gpt-4o-mini",
        vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
            kv("gen_ai.usage.input_tokens", "100"),
            kv("gen_ai.usage.output_tokens", "10"),
        ],
        (at, at + 100),
    )
}
fn pydantic_tool(id: u8, parent: u8, at: u64, args: &str) -> Span {
    span(
        id,
        Some(parent),
        "execute_tool search_docs",
        vec![
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", "search_docs"),
            kv("gen_ai.tool.call.arguments", args),
        ],
        (at, at + 50),
    )
}

fn oi_agent(id: u8, parent: Option<u8>) -> Span {
    span(
        id,
        parent,
        "rag_assistant",
        vec![kv("openinference.span.kind", "AGENT")],
        (0, 100_000),
    )
}
fn oi_chat(id: u8, parent: u8, at: u64) -> Span {
    span(
        id,
        Some(parent),
        "generation",
        vec![
            kv("openinference.span.kind", "LLM"),
            kv("llm.model_name", "gpt-4o-mini"),
            kv("llm.token_count.prompt", "100"),
            kv("llm.token_count.completion", "10"),
        ],
        (at, at + 100),
    )
}
fn oi_tool(id: u8, parent: u8, at: u64, args: &str) -> Span {
    span(
        id,
        Some(parent),
        "search_docs",
        vec![
            kv("openinference.span.kind", "TOOL"),
            kv("tool.name", "search_docs"),
            kv("input.value", args),
        ],
        (at, at + 50),
    )
}

fn oll_agent(id: u8, parent: Option<u8>) -> Span {
    span(
        id,
        parent,
        "rag_assistant.agent",
        vec![
            kv("traceloop.span.kind", "agent"),
            kv("gen_ai.agent.name", "rag_assistant"),
            kv("gen_ai.operation.name", "invoke_agent"),
        ],
        (0, 100_000),
    )
}
fn oll_chat(id: u8, parent: u8, at: u64) -> Span {
    span(
        id,
        Some(parent),
        "openai.response",
        vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
        ],
        (at, at + 100),
    )
}
fn oll_tool(id: u8, parent: u8, at: u64, args: &str) -> Span {
    // The MCP client's span: name, tool and arguments only in traceloop.entity.*.
    span(
        id,
        Some(parent),
        "search_docs.tool",
        vec![
            kv("traceloop.span.kind", "tool"),
            kv("traceloop.entity.name", "search_docs"),
            kv(
                "traceloop.entity.input",
                &format!(r#"{{"tool_name": "search_docs", "arguments": {args}}}"#),
            ),
        ],
        (at, at + 50),
    )
}

fn lg_agent(id: u8, parent: Option<u8>) -> Span {
    // LangGraph under OpenInference: the graph's CHAIN is the run.
    span(
        id,
        parent,
        "rag_assistant",
        vec![
            kv("openinference.span.kind", "CHAIN"),
            kv("metadata", r#"{"ls_integration": "langgraph"}"#),
        ],
        (0, 100_000),
    )
}

fn lgo_agent(id: u8, parent: Option<u8>) -> Span {
    // LangGraph under OpenLLMetry: the workflow span runs the graph.
    span(
        id,
        parent,
        "rag_assistant.workflow",
        vec![
            kv("traceloop.span.kind", "workflow"),
            kv("gen_ai.operation.name", "invoke_agent"),
            kv("gen_ai.agent.name", "rag_assistant"),
        ],
        (0, 100_000),
    )
}
fn lgo_chat(id: u8, parent: u8, at: u64) -> Span {
    span(
        id,
        Some(parent),
        "ChatOpenAI.chat",
        vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
            kv("gen_ai.usage.input_tokens", "100"),
            kv("gen_ai.usage.output_tokens", "10"),
        ],
        (at, at + 100),
    )
}
fn lgo_tool(id: u8, parent: u8, at: u64, args: &str) -> Span {
    span(
        id,
        Some(parent),
        "execute_tool search_docs",
        vec![
            kv("traceloop.span.kind", "tool"),
            kv("traceloop.entity.name", "search_docs"),
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", "search_docs"),
            kv("gen_ai.tool.call.arguments", args),
        ],
        (at, at + 50),
    )
}

const STACKS: &[Shapes] = &[
    Shapes {
        stack: "pydantic-ai",
        agent: pydantic_agent,
        chat: pydantic_chat,
        tool: pydantic_tool,
        limit: "UsageLimitExceeded: The next request would exceed the request_limit of 10",
    },
    Shapes {
        stack: "agents-sdk + openinference",
        agent: oi_agent,
        chat: oi_chat,
        tool: oi_tool,
        limit: "Max turns exceeded",
    },
    Shapes {
        stack: "agents-sdk + openllmetry (MCP)",
        agent: oll_agent,
        chat: oll_chat,
        tool: oll_tool,
        limit: "MaxTurnsExceeded: Max turns (10) exceeded",
    },
    Shapes {
        stack: "langgraph + openllmetry",
        agent: lgo_agent,
        chat: lgo_chat,
        tool: lgo_tool,
        limit: "GraphRecursionError: Recursion limit of 25 reached without hitting a stop condition",
    },
    Shapes {
        stack: "langgraph + openinference",
        agent: lg_agent,
        chat: oi_chat,
        tool: oi_tool,
        limit: "GraphRecursionError: Recursion limit of 25 reached without hitting a stop condition",
    },
];

/// root → agent → chat, tool × `tools` (each with `args(i)`), chat.
fn run(sh: &Shapes, tools: usize, args: impl Fn(usize) -> String) -> Vec<Span> {
    let mut v = vec![
        span(1, None, "agent.query", vec![], (0, 100_000)),
        (sh.agent)(2, Some(1)),
    ];
    let mut id = 3u8;
    let mut at = 10;
    for i in 0..tools {
        v.push((sh.chat)(id, 2, at));
        v.push((sh.tool)(id + 1, 2, at + 100, &args(i)));
        id += 2;
        at += 200;
    }
    v.push((sh.chat)(id, 2, at));
    v
}

#[test]
fn the_same_tool_with_the_same_arguments_again_and_again_is_a_loop_in_every_stack() {
    for sh in STACKS {
        let (spans, d) = analysed(vec![request(run(sh, 8, |_| {
            r#"{"query": "refund policy"}"#.into()
        }))]);
        let agent = span_with(&spans, 2);
        assert_eq!(findings_of(agent), ["agent_loop"], "{}", sh.stack);
        assert_eq!(f64_of(agent, a::AGENT_TOOL_CALLS), 8.0, "{}", sh.stack);
        assert_eq!(f64_of(agent, a::AGENT_LLM_CALLS), 9.0, "{}", sh.stack);
        let mut text = String::new();
        d.encode_prometheus(&mut text);
        assert!(
            text.contains(r#"rag_tool_calls_total{service="unknown_service",tool="search_docs",status="ok"} 8"#),
            "{}: {text}",
            sh.stack
        );
        // Different arguments each time: a search, not a loop.
        let (spans, _) = analysed(vec![request(run(sh, 8, |i| {
            format!(r#"{{"query": "question {i}"}}"#)
        }))]);
        for (_, s) in &spans {
            assert!(findings_of(s).is_empty(), "{}: {:?}", sh.stack, s.name);
        }
    }
}

#[test]
fn a_run_stopped_at_its_limit_is_a_loop_with_outcome_limit_reached() {
    for sh in STACKS {
        let mut spans = run(sh, 2, |i| format!(r#"{{"q": {i}}}"#));
        error(&mut spans[1], sh.limit);
        let (out, d) = analysed(vec![request(spans)]);
        let agent = span_with(&out, 2);
        assert_eq!(
            get_str(&agent.attributes, a::AGENT_OUTCOME),
            Some("limit_reached"),
            "{}",
            sh.stack
        );
        assert_eq!(findings_of(agent), ["agent_loop"], "{}", sh.stack);
        let mut text = String::new();
        d.encode_prometheus(&mut text);
        assert!(
            text.contains(r#"outcome="limit_reached"} 1"#),
            "{}: {text}",
            sh.stack
        );
        // Another error is an error, not a limit.
        let mut spans = run(sh, 1, |_| "{}".into());
        error(&mut spans[1], "ValueError: bad input");
        let (out, _) = analysed(vec![request(spans)]);
        let agent = span_with(&out, 2);
        assert_eq!(get_str(&agent.attributes, a::AGENT_OUTCOME), Some("error"));
        assert!(findings_of(agent).is_empty(), "{}", sh.stack);
    }
}

#[test]
fn a_failed_tool_is_a_tool_error_with_its_retries_and_counted_per_tool() {
    for sh in STACKS {
        let mut spans = run(sh, 3, |i| format!(r#"{{"q": {i}}}"#));
        // The first tool call (span 4) fails; the model calls search_docs twice more.
        error(&mut spans[3], "Error running tool (non-fatal)");
        let (out, d) = analysed(vec![request(spans)]);
        let tool = span_with(&out, 4);
        assert_eq!(findings_of(tool), ["tool_error"], "{}", sh.stack);
        let desc = tool
            .events
            .iter()
            .find_map(|e| get_str(&e.attributes, a::FINDING_DESCRIPTION))
            .unwrap_or("");
        assert!(desc.contains("again 2 time(s)"), "{}: {desc}", sh.stack);
        let agent = span_with(&out, 2);
        assert_eq!(f64_of(agent, a::AGENT_TOOL_ERRORS), 1.0);
        let mut text = String::new();
        d.encode_prometheus(&mut text);
        assert!(
            text.contains(r#"rag_tool_calls_total{service="unknown_service",tool="search_docs",status="error"} 1"#)
                && text.contains(r#"tool="search_docs",status="ok"} 2"#),
            "{}: {text}",
            sh.stack
        );
    }
}

#[test]
fn too_many_model_calls_in_one_run_are_excessive() {
    for sh in STACKS {
        // 11 model calls (10 tool calls with different arguments between): >= 10.
        let (out, _) = analysed(vec![request(run(sh, 10, |i| format!(r#"{{"q": {i}}}"#)))]);
        let agent = span_with(&out, 2);
        assert_eq!(findings_of(agent), ["excessive_llm_calls"], "{}", sh.stack);
    }
}

#[test]
fn nested_model_calls_and_wrapper_agents_count_once() {
    // A workflow agent around the run, and the OpenAI client's own span under each framework
    // model call (the same tokens): the trace's and the run's numbers count each call once,
    // and the wrapper is no run of its own in the metrics.
    let mut spans = vec![
        span(1, None, "agent.query", vec![], (0, 100_000)),
        oi_agent(9, Some(1)),
    ];
    spans[1].name = "Agent workflow".into();
    let mut inner = oi_agent(2, Some(9));
    inner.name = "rag_assistant".into();
    spans.push(inner);
    spans.push(oi_chat(3, 2, 10));
    spans.push(pydantic_chat(4, 3, 20));
    let (out, d) = analysed(vec![request(spans)]);
    let by = |id: u8| span_with(&out, id);
    let one_call = (100.0 * 0.15 + 10.0 * 0.60) / 1e6;
    for id in [2, 9] {
        assert!((f64_of(by(id), a::AGENT_COST_USD) - one_call).abs() < 1e-15);
        assert_eq!(f64_of(by(id), a::AGENT_LLM_CALLS), 1.0);
    }
    assert!((f64_of(by(1), a::TRACE_COST_USD) - one_call).abs() < 1e-15);
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(r#"rag_agent_runs_total{service="unknown_service",agent="rag_assistant",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(!text.contains(r#"agent="Agent workflow""#), "{text}");
}
