//! Synthetic RAG traces, written the way the GenAI semantic conventions say: a root request span,
//! an embeddings call, a retrieval with scored documents, an optional rerank, a chat call with
//! tokens, time to first token and finish reason, and an evaluation event on the root. Faults can
//! be injected. Used by the anomaly evaluation, tests and the load generator.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::RngExt;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};

use ragwatch::attributes::{kv, kv_f64, kv_i64, kv_str};

/// A fault that changes the traces generated while it lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Retrieval takes this many times longer.
    SlowRetrieval(f64),
    /// The first token comes this many times later.
    SlowFirstToken(f64),
    /// The whole model call (first token and generation) takes this many times longer.
    SlowLlm(f64),
    /// Answers are this many times longer (output tokens and generation time).
    OutputTokens(f64),
    /// This share of model calls fail.
    ErrorBurst(f64),
    /// Retrieval finds poor documents and answers are judged poor.
    QualityDrop,
    /// Prompts are this many times longer (input tokens, so cost).
    CostSpike(f64),
    /// Two chat calls one after the other where one would do.
    SequentialCalls,
    /// Agent runs: the model calls the same tool with the same arguments until the run's
    /// request limit stops it (`UsageLimitExceeded`).
    AgentLoop,
    /// Agent runs: the order-status tool (served over MCP) fails; the model tries it once more,
    /// and it fails again.
    ToolError,
    /// Agent runs: the search tool takes this many times longer.
    SlowTool(f64),
}

/// The normal behaviour of a synthetic service.
#[derive(Debug, Clone)]
pub struct Profile {
    pub service: String,
    pub model: String,
    pub provider: String,
    pub embed_ms: f64,
    pub retrieval_ms: f64,
    pub rerank: bool,
    pub ttft_ms: f64,
    /// Generation time per output token after the first.
    pub per_token_ms: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub doc_score: f64,
    pub eval_score: f64,
    pub error_rate: f64,
    /// Spread of every duration and count (the sigma of a log-normal).
    pub sigma: f64,
}

impl Profile {
    pub fn new(service: &str, model: &str) -> Profile {
        Profile {
            service: service.into(),
            model: model.into(),
            provider: "openai".into(),
            embed_ms: 20.0,
            retrieval_ms: 80.0,
            rerank: false,
            ttft_ms: 300.0,
            per_token_ms: 8.0,
            input_tokens: 1200.0,
            output_tokens: 200.0,
            doc_score: 0.78,
            eval_score: 0.85,
            error_rate: 0.01,
            sigma: 0.2,
        }
    }
}

/// Ids and times of the trace being written.
pub struct Ids {
    pub trace_id: [u8; 16],
    next_span: u64,
}

impl Ids {
    pub fn new(rng: &mut StdRng) -> Ids {
        Ids {
            trace_id: rng.random(),
            next_span: rng.random::<u64>() | 1,
        }
    }
    fn span(&mut self) -> Vec<u8> {
        self.next_span = self.next_span.wrapping_add(1).max(1);
        self.next_span.to_be_bytes().to_vec()
    }
}

fn jitter(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    LogNormal::new(median.max(1e-9).ln(), sigma)
        .map(|d| d.sample(rng))
        .unwrap_or(median)
}

fn ms(x: f64) -> u64 {
    (x * 1e6).max(0.0) as u64
}

fn strings(v: &[&str]) -> Value {
    Value::ArrayValue(ArrayValue {
        values: v
            .iter()
            .map(|s| AnyValue {
                value: Some(Value::StringValue(s.to_string())),
            })
            .collect(),
    })
}

/// One synthetic RAG trace starting at `start_ns`, as the spans of one resource.
pub fn rag_trace(
    rng: &mut StdRng,
    p: &Profile,
    fault: Option<Fault>,
    start_ns: u64,
) -> ResourceSpans {
    let mut ids = Ids::new(rng);
    let tid = ids.trace_id.to_vec();
    let root_id = ids.span();
    let mut spans = Vec::with_capacity(6);
    let child = |ids: &mut Ids, name: &str, kind: SpanKind, start: u64, end: u64| Span {
        trace_id: tid.clone(),
        span_id: ids.span(),
        parent_span_id: root_id.clone(),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    };
    let mut t = start_ns + ms(jitter(rng, 2.0, p.sigma));

    // Embeddings.
    let d = jitter(rng, p.embed_ms, p.sigma);
    let mut s = child(
        &mut ids,
        "embeddings text-embedding-3-small",
        SpanKind::Client,
        t,
        t + ms(d),
    );
    s.attributes = vec![
        kv_str("gen_ai.operation.name", "embeddings"),
        kv_str("gen_ai.provider.name", &p.provider),
        kv_str("gen_ai.request.model", "text-embedding-3-small"),
        kv_i64(
            "gen_ai.usage.input_tokens",
            jitter(rng, 16.0, p.sigma) as u64,
        ),
    ];
    spans.push(s);
    t += ms(d);

    // Retrieval.
    let slow = match fault {
        Some(Fault::SlowRetrieval(f)) => f,
        _ => 1.0,
    };
    let d = jitter(rng, p.retrieval_ms * slow, p.sigma);
    let base = if fault == Some(Fault::QualityDrop) {
        0.45
    } else {
        p.doc_score
    };
    let docs: Vec<String> = (0..4)
        .map(|i| {
            let score = (base - 0.03 * i as f64 + rng.random_range(-0.02..0.02)).clamp(0.0, 1.0);
            format!(
                r#"{{"id":"doc-{}","score":{score:.4}}}"#,
                rng.random_range(0..10_000)
            )
        })
        .collect();
    let mut s = child(
        &mut ids,
        "retrieval vectors",
        SpanKind::Client,
        t,
        t + ms(d),
    );
    s.attributes = vec![
        kv_str("gen_ai.operation.name", "retrieval"),
        kv_str("gen_ai.data_source.id", "vectors"),
        kv_i64("db.vector.query.top_k", 4),
        kv_str(
            "gen_ai.retrieval.documents",
            &format!("[{}]", docs.join(",")),
        ),
    ];
    spans.push(s);
    t += ms(d);

    if p.rerank {
        let d = jitter(rng, 30.0, p.sigma);
        let mut s = child(
            &mut ids,
            "rerank rerank-v3.5",
            SpanKind::Client,
            t,
            t + ms(d),
        );
        s.attributes = vec![
            kv_str("gen_ai.operation.name", "rerank"),
            kv_str("gen_ai.provider.name", "cohere"),
            kv_str("gen_ai.request.model", "rerank-v3.5"),
        ];
        spans.push(s);
        t += ms(d);
    }

    // The chat call (twice, one after the other, with SequentialCalls).
    let calls = if fault == Some(Fault::SequentialCalls) {
        2
    } else {
        1
    };
    let mut failed = false;
    for _ in 0..calls {
        let ttft = jitter(
            rng,
            p.ttft_ms
                * match fault {
                    Some(Fault::SlowFirstToken(f) | Fault::SlowLlm(f)) => f,
                    _ => 1.0,
                },
            p.sigma,
        );
        let per_token = p.per_token_ms
            * match fault {
                Some(Fault::SlowLlm(f)) => f,
                _ => 1.0,
            };
        let out = jitter(
            rng,
            p.output_tokens
                * match fault {
                    Some(Fault::OutputTokens(f)) => f,
                    _ => 1.0,
                },
            p.sigma,
        )
        .round()
        .max(1.0);
        let input = jitter(
            rng,
            p.input_tokens
                * match fault {
                    Some(Fault::CostSpike(f)) => f,
                    _ => 1.0,
                },
            p.sigma / 2.0,
        )
        .round();
        let error_rate = match fault {
            Some(Fault::ErrorBurst(r)) => r,
            _ => p.error_rate,
        };
        let error = rng.random::<f64>() < error_rate;
        let d = if error {
            ttft
        } else {
            ttft + (out - 1.0) * jitter(rng, per_token, p.sigma / 2.0)
        };
        let mut s = child(
            &mut ids,
            &format!("chat {}", p.model),
            SpanKind::Client,
            t,
            t + ms(d),
        );
        s.attributes = vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.provider.name", &p.provider),
            kv_str("gen_ai.request.model", &p.model),
            kv_i64("gen_ai.usage.input_tokens", input as u64),
        ];
        if error {
            // The codes the captures' failed calls carry.
            let code = ["429", "500", "503"][rng.random_range(0..3)];
            s.attributes.push(kv_str("error.type", code));
            s.status = Some(Status {
                code: StatusCode::Error as i32,
                message: "upstream error".into(),
            });
            failed = true;
        } else {
            s.attributes.extend([
                kv_str("gen_ai.response.model", &p.model),
                kv_i64("gen_ai.usage.output_tokens", out as u64),
                kv_f64("gen_ai.response.time_to_first_chunk", ttft / 1000.0),
                kv("gen_ai.response.finish_reasons", strings(&["stop"])),
            ]);
        }
        spans.push(s);
        t += ms(d);
    }
    let end = t + ms(jitter(rng, 3.0, p.sigma));
    let eval = if fault == Some(Fault::QualityDrop) {
        0.4
    } else {
        p.eval_score
    };
    let eval = (eval + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0);
    let root = Span {
        trace_id: tid.clone(),
        span_id: root_id.clone(),
        name: "rag.query".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end,
        status: failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: "model call failed".into(),
        }),
        events: vec![Event {
            time_unix_nano: end,
            name: "gen_ai.evaluation.result".into(),
            attributes: vec![
                kv_str("gen_ai.evaluation.name", "relevance"),
                kv_f64("gen_ai.evaluation.score.value", eval),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    spans.insert(0, root);
    of_service(&p.service, spans)
}

/// One synthetic agent run, shaped as the GenAI conventions say (pydantic-ai writes this): a
/// root request span, `invoke_agent rag_assistant`, and turns of a chat call followed by tool
/// calls — `execute_tool search_docs` with its own retrieval span, and `get_order_status`
/// served over MCP (`tools/call get_order_status`, `mcp.method.name`) — then a final answer.
/// With [`Fault::AgentLoop`], [`Fault::ToolError`] or [`Fault::SlowTool`] the run misbehaves.
pub fn agent_trace(
    rng: &mut StdRng,
    p: &Profile,
    fault: Option<Fault>,
    start_ns: u64,
) -> ResourceSpans {
    let mut ids = Ids::new(rng);
    let tid = ids.trace_id.to_vec();
    let root_id = ids.span();
    let agent_id = ids.span();
    let span = |ids: &mut Ids, parent: &[u8], name: &str, start: u64, end: u64| Span {
        trace_id: tid.clone(),
        span_id: ids.span(),
        parent_span_id: parent.to_vec(),
        name: name.into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    };
    let mut spans: Vec<Span> = Vec::new();
    let mut t = start_ns + ms(jitter(rng, 2.0, p.sigma));
    let chat = |rng: &mut StdRng, ids: &mut Ids, t: &mut u64, input: f64, out: f64| {
        let ttft = jitter(rng, p.ttft_ms, p.sigma);
        let out = jitter(rng, out, p.sigma).round().max(1.0);
        let d = ttft + out * jitter(rng, p.per_token_ms, p.sigma / 2.0);
        let mut s = span(ids, &agent_id, &format!("chat {}", p.model), *t, *t + ms(d));
        s.kind = SpanKind::Client as i32;
        s.attributes = vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.provider.name", &p.provider),
            kv_str("gen_ai.request.model", &p.model),
            kv_str("gen_ai.response.model", &p.model),
            kv_str("gen_ai.agent.name", "rag_assistant"),
            kv_i64(
                "gen_ai.usage.input_tokens",
                jitter(rng, input, p.sigma / 2.0) as u64,
            ),
            kv_i64("gen_ai.usage.output_tokens", out as u64),
        ];
        *t += ms(d);
        s
    };
    // (tool, arguments) the model asks for, turn by turn.
    let turns: Vec<Vec<(&str, String)>> = match fault {
        Some(Fault::AgentLoop) => (0..8)
            .map(|_| vec![("search_docs", r#"{"query":"refund policy"}"#.to_string())])
            .collect(),
        Some(Fault::ToolError) => vec![
            vec![("get_order_status", r#"{"order_id":"ORD-1042"}"#.to_string())],
            vec![("get_order_status", r#"{"order_id":"ORD-1042"}"#.to_string())],
        ],
        _ => {
            let q = rng.random_range(0..1000);
            if rng.random::<f64>() < 0.5 {
                vec![vec![(
                    "search_docs",
                    format!(r#"{{"query":"question {q}"}}"#),
                )]]
            } else {
                vec![
                    vec![("search_docs", format!(r#"{{"query":"question {q}"}}"#))],
                    vec![("get_order_status", format!(r#"{{"order_id":"ORD-{q}"}}"#))],
                ]
            }
        }
    };
    let mut context = 300.0;
    for turn in &turns {
        spans.push(chat(rng, &mut ids, &mut t, context, 20.0));
        for (tool, args) in turn {
            let tool_start = t;
            match *tool {
                "search_docs" => {
                    let slow = match fault {
                        Some(Fault::SlowTool(f)) => f,
                        _ => 1.0,
                    };
                    let d = jitter(rng, p.retrieval_ms * slow, p.sigma);
                    let mut s = span(
                        &mut ids,
                        &agent_id,
                        "execute_tool search_docs",
                        tool_start,
                        tool_start + ms(d + 4.0),
                    );
                    s.attributes = vec![
                        kv_str("gen_ai.operation.name", "execute_tool"),
                        kv_str("gen_ai.tool.name", "search_docs"),
                        kv_str(
                            "gen_ai.tool.call.id",
                            &format!("call_{}", rng.random::<u32>()),
                        ),
                        kv_str("gen_ai.tool.call.arguments", args),
                        kv_str("gen_ai.agent.name", "rag_assistant"),
                    ];
                    let tool_id = s.span_id.clone();
                    spans.push(s);
                    let mut r = span(
                        &mut ids,
                        &tool_id,
                        "retrieval kb_docs",
                        tool_start + ms(2.0),
                        tool_start + ms(2.0 + d),
                    );
                    r.kind = SpanKind::Client as i32;
                    r.attributes = vec![
                        kv_str("gen_ai.operation.name", "retrieval"),
                        kv_str("gen_ai.data_source.id", "kb_docs"),
                        kv_str(
                            "gen_ai.retrieval.documents",
                            &format!(
                                r#"[{{"id":"doc-{}","score":0.81}}]"#,
                                rng.random_range(0..100)
                            ),
                        ),
                    ];
                    spans.push(r);
                    t = tool_start + ms(d + 4.0);
                    context += 400.0;
                }
                _ => {
                    // Over MCP: the client's tool span and the MCP call beneath it.
                    let d = jitter(rng, 20.0, p.sigma);
                    let mut s = span(
                        &mut ids,
                        &agent_id,
                        "execute_tool get_order_status",
                        tool_start,
                        tool_start + ms(d + 2.0),
                    );
                    s.attributes = vec![
                        kv_str("gen_ai.operation.name", "execute_tool"),
                        kv_str("gen_ai.tool.name", "get_order_status"),
                        kv_str("gen_ai.tool.call.arguments", args),
                    ];
                    let mut m = span(
                        &mut ids,
                        &s.span_id.clone(),
                        "tools/call get_order_status",
                        tool_start + ms(1.0),
                        tool_start + ms(1.0 + d),
                    );
                    m.kind = SpanKind::Client as i32;
                    m.attributes = vec![
                        kv_str("mcp.method.name", "tools/call"),
                        kv_str("gen_ai.tool.name", "get_order_status"),
                        kv_str("mcp.session.id", "mcp-session-1"),
                    ];
                    if fault == Some(Fault::ToolError) {
                        for x in [&mut s, &mut m] {
                            x.status = Some(Status {
                                code: StatusCode::Error as i32,
                                message: "order service unavailable".into(),
                            });
                        }
                        s.attributes.push(kv_str("error.type", "ToolError"));
                    }
                    spans.push(s);
                    spans.push(m);
                    t = tool_start + ms(d + 2.0);
                    context += 100.0;
                }
            }
        }
    }
    let limited = fault == Some(Fault::AgentLoop);
    if !limited {
        spans.push(chat(rng, &mut ids, &mut t, context, 60.0));
    }
    let end = t + ms(jitter(rng, 2.0, p.sigma));
    let mut agent = Span {
        trace_id: tid.clone(),
        span_id: agent_id.clone(),
        parent_span_id: root_id.clone(),
        name: "invoke_agent rag_assistant".into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start_ns + ms(1.0),
        end_time_unix_nano: end,
        attributes: vec![
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.name", "rag_assistant"),
        ],
        ..Default::default()
    };
    let mut root = Span {
        trace_id: tid.clone(),
        span_id: root_id,
        name: "agent.query".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end + ms(1.0),
        ..Default::default()
    };
    if limited {
        agent.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "UsageLimitExceeded: The next request would exceed the request_limit of 8"
                .into(),
        });
        root.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "agent run failed".into(),
        });
    }
    spans.insert(0, agent);
    spans.insert(0, root);
    of_service(&p.service, spans)
}

/// The spans of one service, as one resource.
fn of_service(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv_str("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}
