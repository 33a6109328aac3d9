//! Agents and tools in whole traces: a summary on each agent run's span, the tool and agent
//! metrics, and the findings of agentic traffic (`agent_loop`, `tool_error`,
//! `excessive_llm_calls`).
//!
//! Counting rules, for every library's shapes (tested on each capture in
//! `tests/fixtures/agents/`):
//! - a model call (llm, embedding or rerank span) beneath another model call is the same call
//!   seen twice (an application that instruments both its framework and the OpenAI client):
//!   only the outer one counts;
//! - a tool span beneath a tool span of the same tool is the same call (an MCP client's span,
//!   and the server's span that joins its trace): only the outer one counts;
//! - a call belongs to its nearest agent ancestor. A run's summary covers every call beneath
//!   it, whatever the nesting of agents and handoffs; the metrics count each call once, under
//!   the agent that made it. An agent span that makes no call itself and has agents beneath it
//!   (the Agents SDK's `Agent workflow` wrapper, LangGraph's `invoke_agent` around its
//!   workflow) is not a run of its own in the metrics.

use crate::trace::FastMap as HashMap;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::patterns::PatternsConfig;
use super::{AssembledTrace, TraceAnalyzer};
use crate::attributes::{duration_secs, get_f64, get_str, is_error, put};
use crate::derived::DerivedMetrics;
use crate::derived::defs as m;
use crate::findings::{finding, finding_event};
use crate::names::attrs as a;
use crate::trace::stage_of;

/// Words in an agent run's error (status message, exception type or message) that say the
/// framework stopped it at its iteration or usage limit: pydantic-ai `UsageLimitExceeded`,
/// LangGraph `GraphRecursionError` ("Recursion limit of 25 reached"), the Agents SDK's
/// `MaxTurnsExceeded` ("Max turns (10) exceeded").
const LIMIT_MARKERS: &[&str] = &[
    "usagelimitexceeded",
    "graphrecursionerror",
    "recursion limit",
    "maxturnsexceeded",
    "max turns",
];

/// How an agent run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    LimitReached,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::LimitReached => "limit_reached",
        }
    }
}

/// The outcome of an agent run's span.
pub fn outcome(s: &Span) -> Outcome {
    if !is_error(s) {
        return Outcome::Ok;
    }
    let mut texts: Vec<&str> = Vec::new();
    if let Some(st) = &s.status {
        texts.push(&st.message);
    }
    for e in s.events.iter().filter(|e| e.name == "exception") {
        for k in ["exception.type", "exception.message"] {
            if let Some(t) = get_str(&e.attributes, k) {
                texts.push(t);
            }
        }
    }
    for k in ["error.type", "exception.type"] {
        if let Some(t) = get_str(&s.attributes, k) {
            texts.push(t);
        }
    }
    let limit = texts.iter().any(|t| {
        let t = t.to_ascii_lowercase();
        LIMIT_MARKERS.iter().any(|m| t.contains(m))
    });
    if limit {
        Outcome::LimitReached
    } else {
        Outcome::Error
    }
}

pub struct AgentAnalyzer {
    pub config: PatternsConfig,
    pub derived: Arc<DerivedMetrics>,
}

fn is_model_call(stage: Option<&str>) -> bool {
    matches!(stage, Some("llm" | "embedding" | "rerank"))
}

/// A tool call's name: the canonical attribute the `genai` processor adds, else the span's.
fn tool_name(s: &Span) -> &str {
    get_str(&s.attributes, a::GEN_AI_TOOL_NAME).unwrap_or(&s.name)
}

fn agent_name(s: &Span) -> &str {
    get_str(&s.attributes, a::GEN_AI_AGENT_NAME)
        .unwrap_or_else(|| s.name.strip_suffix(".agent").unwrap_or(&s.name))
}

/// The calls of one trace, counted once each (see the module's rules).
pub struct Calls {
    /// Per span: its parent's index.
    pub parent: Vec<Option<usize>>,
    /// Per span: whether it is a model call that counts.
    pub model_call: Vec<bool>,
    /// Per span: whether it is a tool call that counts.
    pub tool_call: Vec<bool>,
    /// Per span: its nearest agent ancestor.
    pub agent: Vec<Option<usize>>,
}

impl Calls {
    pub fn of(spans: &[Span]) -> Calls {
        let n = spans.len();
        let parent = crate::trace::parents(spans);
        let stages: Vec<Option<&str>> = spans.iter().map(stage_of).collect();
        let ancestors = |i: usize| ancestors(&parent, i);
        let model_call = (0..n)
            .map(|i| is_model_call(stages[i]) && !ancestors(i).any(|p| is_model_call(stages[p])))
            .collect();
        let tool_call = (0..n)
            .map(|i| {
                stages[i] == Some("tool")
                    && !ancestors(i).any(|p| {
                        stages[p] == Some("tool") && tool_name(&spans[p]) == tool_name(&spans[i])
                    })
            })
            .collect();
        let agent = (0..n)
            .map(|i| ancestors(i).find(|p| stages[*p] == Some("agent")))
            .collect();
        Calls {
            parent,
            model_call,
            tool_call,
            agent,
        }
    }

    /// Whether `d` lies beneath `a`.
    fn beneath(&self, d: usize, a: usize) -> bool {
        ancestors(&self.parent, d).any(|p| p == a)
    }
}

/// The ancestors of span `i`, nearest first; at most as many as there are spans (a cycle in bad
/// data ends the walk).
fn ancestors(parent: &[Option<usize>], i: usize) -> impl Iterator<Item = usize> + '_ {
    let mut cur = parent.get(i).copied().flatten();
    let mut steps = 0;
    std::iter::from_fn(move || {
        let c = cur?;
        steps += 1;
        if steps > parent.len() {
            return None;
        }
        cur = parent.get(c).copied().flatten();
        Some(c)
    })
}

/// What one agent run did.
#[derive(Debug, Default, Clone, PartialEq)]
struct Summary {
    cost: f64,
    tokens_in: u64,
    tokens_out: u64,
    llm_calls: u64,
    tool_calls: u64,
    tool_errors: u64,
}

impl TraceAnalyzer for AgentAnalyzer {
    fn analyze(&mut self, t: &mut AssembledTrace, now: Instant) {
        let agents: Vec<usize> = (0..t.spans.len())
            .filter(|i| stage_of(&t.spans[*i]) == Some("agent"))
            .collect();
        let calls = Calls::of(&t.spans);
        let mut found: Vec<(usize, opentelemetry_proto::tonic::trace::v1::span::Event)> =
            Vec::new();
        // Tool calls: metrics, and tool_error findings with how often the model tried again.
        for i in (0..t.spans.len()).filter(|i| calls.tool_call[*i]) {
            let s = &t.spans[i];
            let service = t.service(i).unwrap_or("unknown_service");
            let tool = tool_name(s);
            let failed = is_error(s);
            let status = if failed { "error" } else { "ok" };
            self.derived
                .add(m::TOOL_CALLS, &[service, tool, status], 1.0, now);
            self.derived
                .observe(m::TOOL_DURATION, &[service, tool], duration_secs(s), now);
            if failed {
                let again = (0..t.spans.len())
                    .filter(|j| {
                        calls.tool_call[*j]
                            && *j != i
                            && calls.agent[*j] == calls.agent[i]
                            && tool_name(&t.spans[*j]) == tool
                            && t.spans[*j].start_time_unix_nano >= s.end_time_unix_nano
                    })
                    .count();
                let message = s
                    .status
                    .as_ref()
                    .map(|st| st.message.as_str())
                    .filter(|m| !m.is_empty())
                    .unwrap_or("no message");
                let d = format!(
                    "tool {tool:?} failed ({message}); the model called it again {again} time(s) after"
                );
                found.push((
                    i,
                    finding_event(
                        s.start_time_unix_nano,
                        finding::TOOL_ERROR,
                        d,
                        "warning",
                        &[&s.span_id],
                    ),
                ));
            }
        }
        // Agent runs.
        for &ag in &agents {
            let mut sum = Summary::default();
            let mut own_cost = 0.0;
            let mut own_llm = 0u64;
            let mut owns = false;
            // (tool, arguments) → calls this run made itself.
            let mut repeats: HashMap<(&str, &str), usize> = HashMap::default();
            for j in 0..t.spans.len() {
                if !(calls.model_call[j] || calls.tool_call[j]) || !calls.beneath(j, ag) {
                    continue;
                }
                let s = &t.spans[j];
                let own = calls.agent[j] == Some(ag);
                owns |= own;
                if calls.model_call[j] {
                    let cost = get_f64(&s.attributes, a::COST_USD).unwrap_or(0.0);
                    sum.cost += cost;
                    sum.tokens_in = sum
                        .tokens_in
                        .saturating_add(count(s, a::GEN_AI_INPUT_TOKENS));
                    sum.tokens_out = sum
                        .tokens_out
                        .saturating_add(count(s, a::GEN_AI_OUTPUT_TOKENS));
                    if stage_of(s) == Some("llm") {
                        sum.llm_calls += 1;
                        own_llm += u64::from(own);
                    }
                    if own {
                        own_cost += cost;
                    }
                } else {
                    sum.tool_calls += 1;
                    sum.tool_errors += u64::from(is_error(s));
                    if own {
                        let args =
                            get_str(&s.attributes, a::GEN_AI_TOOL_CALL_ARGUMENTS).unwrap_or("");
                        *repeats.entry((tool_name(s), args)).or_default() += 1;
                    }
                }
            }
            let out = outcome(&t.spans[ag]);
            let leaf = !agents.iter().any(|&o| o != ag && calls.beneath(o, ag));
            let service = t.service(ag).unwrap_or("unknown_service").to_string();
            let name = agent_name(&t.spans[ag]).to_string();
            let run = owns || leaf;
            if run {
                self.derived
                    .add(m::AGENT_RUNS, &[&service, &name, out.as_str()], 1.0, now);
                self.derived
                    .add(m::AGENT_COST, &[&service, &name], own_cost, now);
                self.derived
                    .observe(m::AGENT_LLM_CALLS, &[&service, &name], own_llm as f64, now);
                let start = t.spans[ag].start_time_unix_nano;
                let span_id = t.spans[ag].span_id.clone();
                let looping = repeats
                    .iter()
                    .filter(|(_, n)| **n >= self.config.agent_loop_repeats)
                    .max_by_key(|(k, n)| (**n, k.0));
                if let Some(((tool, _), n)) = looping {
                    let d = format!(
                        "agent {name:?} called tool {tool:?} {n} times with the same arguments: a loop"
                    );
                    found.push((
                        ag,
                        finding_event(start, finding::AGENT_LOOP, d, "warning", &[&span_id]),
                    ));
                } else if out == Outcome::LimitReached {
                    let d = format!(
                        "agent {name:?} was stopped at its limit after {} model and {} tool calls",
                        sum.llm_calls, sum.tool_calls
                    );
                    found.push((
                        ag,
                        finding_event(start, finding::AGENT_LOOP, d, "warning", &[&span_id]),
                    ));
                }
                if own_llm >= self.config.excessive_llm_calls as u64 {
                    let d = format!(
                        "agent {name:?} made {own_llm} model calls in one run (threshold {})",
                        self.config.excessive_llm_calls
                    );
                    found.push((
                        ag,
                        finding_event(
                            start,
                            finding::EXCESSIVE_LLM_CALLS,
                            d,
                            "warning",
                            &[&span_id],
                        ),
                    ));
                }
            }
            let s = &mut t.spans[ag];
            put(
                &mut s.attributes,
                a::AGENT_COST_USD,
                Value::DoubleValue(sum.cost),
            );
            for (k, v) in [
                (a::AGENT_TOKENS_INPUT, sum.tokens_in),
                (a::AGENT_TOKENS_OUTPUT, sum.tokens_out),
                (a::AGENT_LLM_CALLS, sum.llm_calls),
                (a::AGENT_TOOL_CALLS, sum.tool_calls),
                (a::AGENT_TOOL_ERRORS, sum.tool_errors),
            ] {
                put(
                    &mut s.attributes,
                    k,
                    Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)),
                );
            }
            put(
                &mut s.attributes,
                a::AGENT_OUTCOME,
                Value::StringValue(out.as_str().into()),
            );
        }
        super::patterns::attach(t, found, &self.derived, now);
    }
}

/// A whole-number attribute (ints and numeric strings).
fn count(s: &Span, k: &str) -> u64 {
    get_f64(&s.attributes, k)
        .filter(|v| *v >= 0.0)
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
