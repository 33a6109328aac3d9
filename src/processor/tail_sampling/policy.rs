//! Policies at run time: each looks at a whole trace and says keep, drop, not mine, or "keep if
//! the trace's randomness reaches this threshold" (probabilistic policies), which the decision
//! resolves once for all of them so that a trace's adjusted count is exact.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::config::{PolicyConfig, PolicyType, StatusName};
use super::tracestate;
use crate::attributes::{get, get_f64, get_str};
use crate::names::attrs as a;
use crate::processor::slo::burning::BurningSlo;

/// Where the agent analysis writes an agent run's outcome (`ok`, `error`, `limit_reached`).
pub use crate::names::attrs::AGENT_OUTCOME;

/// One span of a trace being decided, with its resource's attributes.
pub struct SpanRef<'a> {
    pub span: &'a Span,
    pub resource: &'a [KeyValue],
    pub service: &'a str,
}

/// A whole trace being decided.
pub struct TraceRef<'a> {
    pub trace_id: &'a [u8],
    pub spans: Vec<SpanRef<'a>>,
}

impl TraceRef<'_> {
    fn root(&self) -> Option<&Span> {
        self.spans
            .iter()
            .map(|s| s.span)
            .find(|s| s.parent_span_id.is_empty())
    }

    /// A trace-level attribute: on the root, or (stream mode) on the `ragwatch.analysis` span.
    fn summary(&self, key: &str) -> Option<&Value> {
        self.root()
            .and_then(|r| get(&r.attributes, key))
            .or_else(|| {
                self.spans
                    .iter()
                    .filter(|s| s.span.name == a::ANALYSIS_SPAN)
                    .find_map(|s| get(&s.span.attributes, key))
            })
    }

    fn summary_f64(&self, key: &str) -> Option<f64> {
        match self.summary(key)? {
            Value::DoubleValue(x) => Some(*x),
            Value::IntValue(x) => Some(*x as f64),
            _ => None,
        }
    }

    /// First start to last end.
    fn duration(&self) -> Duration {
        let start = self.spans.iter().map(|s| s.span.start_time_unix_nano).min();
        let end = self.spans.iter().map(|s| s.span.end_time_unix_nano).max();
        match (start, end) {
            (Some(s), Some(e)) => Duration::from_nanos(e.saturating_sub(s)),
            _ => Duration::ZERO,
        }
    }

    /// The tracestate the decision reads (the root's, else the first span's).
    pub fn tracestate(&self) -> &str {
        self.root()
            .or_else(|| self.spans.first().map(|s| s.span))
            .map_or("", |s| s.trace_state.as_str())
    }

    fn any_attr(&self, key: &str, f: impl Fn(&Value) -> bool) -> bool {
        self.spans.iter().any(|s| {
            get(&s.span.attributes, key).is_some_and(&f) || get(s.resource, key).is_some_and(&f)
        })
    }
}

/// What a policy says of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Not a trace this policy keeps.
    No,
    /// Keep it.
    Yes,
    /// Keep it if its randomness reaches the threshold.
    Chance(Chance),
    /// Drop it, whatever the other policies say.
    Drop,
}

/// Keep when the randomness of `seed` (0: the trace id's or `rv`) is at least `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chance {
    pub seed: u32,
    pub threshold: u64,
}

impl Chance {
    pub fn holds(&self, t: &TraceRef<'_>) -> bool {
        randomness(self.seed, t) >= self.threshold
    }
}

/// 56 bits of randomness of a trace for a seed: the OpenTelemetry randomness for seed 0, else a
/// hash of the seed and the trace id (stable across processes and versions).
pub fn randomness(seed: u32, t: &TraceRef<'_>) -> u64 {
    if seed == 0 {
        return tracestate::randomness(t.trace_id, t.tracestate());
    }
    // FNV-1a over the seed and the id, then murmur3's finalizer to mix every bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(t.trace_id) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h >> 8
}

/// Spans per second, shared by the pipeline's shards.
#[derive(Debug, Default)]
pub struct Bucket {
    second: Option<Instant>,
    spent: u64,
}

impl Bucket {
    /// Take `n` spans of this second's `limit`; false when they do not fit.
    fn take(&mut self, now: Instant, n: u64, limit: u64) -> bool {
        match self.second {
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(1) => {}
            _ => {
                self.second = Some(now);
                self.spent = 0;
            }
        }
        if self.spent.saturating_add(n) <= limit {
            self.spent += n;
            true
        } else {
            false
        }
    }
}

fn take(bucket: &Mutex<Bucket>, now: Instant, n: usize, limit: u64) -> bool {
    let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
    b.take(now, n as u64, limit)
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(HashSet<String>),
    Regex(Vec<regex::Regex>),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(v) => v.contains(s),
            Matcher::Regex(v) => v.iter().any(|r| r.is_match(s)),
        }
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Always,
    Latency {
        min: Duration,
        max: Option<Duration>,
    },
    Status(Vec<i32>),
    Numeric {
        key: String,
        min: f64,
        max: f64,
        invert: bool,
    },
    Str {
        key: String,
        matcher: Matcher,
        invert: bool,
    },
    Bool {
        key: String,
        value: bool,
        invert: bool,
    },
    Probabilistic(Chance),
    RateLimit {
        bucket: Arc<Mutex<Bucket>>,
        limit: u64,
    },
    SpanCount {
        min: u64,
        max: u64,
    },
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite(Vec<(Policy, Arc<Mutex<Bucket>>, u64)>),
    TraceCost(f64),
    Quality(f64),
    Anomaly,
    Finding(Vec<String>),
    Bottleneck {
        stages: Vec<String>,
        min_share: f64,
    },
    SloBurn(Vec<String>),
    Unpriced,
    Agent(Vec<String>),
}

/// One policy, ready to judge traces. Cloning shares rate limits (the shards of a pipeline
/// keep one budget).
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    rule: Rule,
}

/// What the policies read besides the trace.
pub struct Context<'a> {
    pub now: Instant,
    /// The SLOs burning now.
    pub burning: &'a HashSet<BurningSlo>,
}

impl Policy {
    /// Build from a validated configuration; an error names what is wrong (validation
    /// catches it first).
    pub fn build(c: &PolicyConfig) -> Result<Policy, String> {
        let kind = c
            .kind
            .ok_or_else(|| format!("policy `{}` has no type", c.name))?;
        let need = || format!("policy `{}` has no `{}` settings", c.name, kind.as_str());
        let subs = |v: &[PolicyConfig]| v.iter().map(Policy::build).collect::<Result<Vec<_>, _>>();
        let rule = match kind {
            PolicyType::AlwaysSample => Rule::Always,
            PolicyType::Latency => {
                let s = c.latency.as_ref().ok_or_else(need)?;
                Rule::Latency {
                    min: Duration::from_millis(s.threshold_ms),
                    max: (s.upper_threshold_ms != 0)
                        .then(|| Duration::from_millis(s.upper_threshold_ms)),
                }
            }
            PolicyType::StatusCode => {
                use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
                let s = c.status_code.clone().unwrap_or_default();
                Rule::Status(
                    s.status_codes
                        .iter()
                        .map(|n| match n {
                            StatusName::Ok => StatusCode::Ok as i32,
                            StatusName::Error => StatusCode::Error as i32,
                            StatusName::Unset => StatusCode::Unset as i32,
                        })
                        .collect(),
                )
            }
            PolicyType::NumericAttribute => {
                let s = c.numeric_attribute.as_ref().ok_or_else(need)?;
                Rule::Numeric {
                    key: s.key.clone(),
                    min: s.min_value.unwrap_or(f64::NEG_INFINITY),
                    max: s.max_value.unwrap_or(f64::INFINITY),
                    invert: s.invert_match,
                }
            }
            PolicyType::StringAttribute => {
                let s = c.string_attribute.as_ref().ok_or_else(need)?;
                let matcher = if s.enabled_regex_matching {
                    Matcher::Regex(
                        s.values
                            .iter()
                            .map(|v| regex::Regex::new(v).map_err(|e| e.to_string()))
                            .collect::<Result<_, _>>()?,
                    )
                } else {
                    Matcher::Exact(s.values.iter().cloned().collect())
                };
                Rule::Str {
                    key: s.key.clone(),
                    matcher,
                    invert: s.invert_match,
                }
            }
            PolicyType::BooleanAttribute => {
                let s = c.boolean_attribute.as_ref().ok_or_else(need)?;
                Rule::Bool {
                    key: s.key.clone(),
                    value: s.value,
                    invert: s.invert_match,
                }
            }
            PolicyType::Probabilistic => {
                let s = c.probabilistic.as_ref().ok_or_else(need)?;
                Rule::Probabilistic(Chance {
                    seed: s.hash_seed,
                    threshold: tracestate::threshold_for(s.sampling_percentage / 100.0),
                })
            }
            PolicyType::RateLimiting => {
                let s = c.rate_limiting.as_ref().ok_or_else(need)?;
                Rule::RateLimit {
                    bucket: Default::default(),
                    limit: s.spans_per_second,
                }
            }
            PolicyType::SpanCount => {
                let s = c.span_count.as_ref().ok_or_else(need)?;
                Rule::SpanCount {
                    min: s.min_spans,
                    max: s.max_spans,
                }
            }
            PolicyType::And => Rule::And(subs(&c.and.as_ref().ok_or_else(need)?.and_sub_policy)?),
            PolicyType::Drop => {
                Rule::Drop(subs(&c.drop.as_ref().ok_or_else(need)?.drop_sub_policy)?)
            }
            PolicyType::Composite => {
                let s = c.composite.as_ref().ok_or_else(need)?;
                let built = subs(&s.composite_sub_policy)?;
                let total = s.max_total_spans_per_second as f64;
                let allotted: f64 = s.rate_allocation.iter().map(|r| r.percent).sum();
                let unlisted = built
                    .iter()
                    .filter(|p| !s.rate_allocation.iter().any(|r| r.policy == p.name))
                    .count();
                // What no allocation names is shared equally by the sub-policies not named.
                let rest = if unlisted > 0 {
                    ((100.0 - allotted).max(0.0) / unlisted as f64) * total / 100.0
                } else {
                    0.0
                };
                let rate = |p: &Policy| {
                    s.rate_allocation
                        .iter()
                        .find(|r| r.policy == p.name)
                        .map_or(rest, |r| r.percent * total / 100.0)
                        .floor() as u64
                };
                let mut order: Vec<Policy> = Vec::new();
                for n in &s.policy_order {
                    if let Some(p) = built.iter().find(|p| &p.name == n)
                        && !order.iter().any(|o| &o.name == n)
                    {
                        order.push(p.clone());
                    }
                }
                for p in &built {
                    if !order.iter().any(|o| o.name == p.name) {
                        order.push(p.clone());
                    }
                }
                Rule::Composite(
                    order
                        .into_iter()
                        .map(|p| {
                            let r = rate(&p);
                            (p, Default::default(), r)
                        })
                        .collect(),
                )
            }
            PolicyType::TraceCost => {
                Rule::TraceCost(c.trace_cost.as_ref().ok_or_else(need)?.min_usd)
            }
            PolicyType::Quality => Rule::Quality(c.quality.as_ref().ok_or_else(need)?.max_score),
            PolicyType::Anomaly => Rule::Anomaly,
            PolicyType::Finding => Rule::Finding(c.finding.clone().unwrap_or_default().names),
            PolicyType::Bottleneck => {
                let s = c.bottleneck.clone().unwrap_or_default();
                Rule::Bottleneck {
                    stages: s.stages,
                    min_share: s.min_share,
                }
            }
            PolicyType::SloBurn => Rule::SloBurn(c.slo_burn.clone().unwrap_or_default().slos),
            PolicyType::UnpricedModel => Rule::Unpriced,
            PolicyType::Agent => Rule::Agent(c.agent.as_ref().ok_or_else(need)?.outcomes.clone()),
        };
        Ok(Policy {
            name: c.name.clone(),
            rule,
        })
    }

    /// What this policy says of trace `t`.
    pub fn evaluate(&self, t: &TraceRef<'_>, cx: &Context<'_>) -> Outcome {
        let yes = |b: bool| if b { Outcome::Yes } else { Outcome::No };
        match &self.rule {
            Rule::Always => Outcome::Yes,
            Rule::Latency { min, max } => {
                let d = t.duration();
                yes(d >= *min && max.is_none_or(|m| d <= m))
            }
            Rule::Status(codes) => yes(t.spans.iter().any(|s| {
                let code = s.span.status.as_ref().map_or(0, |st| st.code);
                codes.contains(&code)
            })),
            Rule::Numeric {
                key,
                min,
                max,
                invert,
            } => {
                let m = t.spans.iter().any(|s| {
                    get_f64(&s.span.attributes, key)
                        .or_else(|| get_f64(s.resource, key))
                        .is_some_and(|x| x >= *min && x <= *max)
                });
                yes(m != *invert)
            }
            Rule::Str {
                key,
                matcher,
                invert,
            } => {
                let m = t.any_attr(
                    key,
                    |v| matches!(v, Value::StringValue(s) if matcher.matches(s)),
                );
                yes(m != *invert)
            }
            Rule::Bool { key, value, invert } => {
                let m = t.any_attr(key, |v| matches!(v, Value::BoolValue(b) if b == value));
                yes(m != *invert)
            }
            Rule::Probabilistic(c) => match c.threshold {
                0 => Outcome::Yes,
                t if t >= tracestate::MAX => Outcome::No,
                _ => Outcome::Chance(*c),
            },
            Rule::RateLimit { bucket, limit } => yes(take(bucket, cx.now, t.spans.len(), *limit)),
            Rule::SpanCount { min, max } => {
                let n = t.spans.len() as u64;
                yes(n >= *min && (*max == 0 || n <= *max))
            }
            Rule::And(subs) => {
                let mut out = Outcome::Yes;
                for p in subs {
                    out = match (out, p.evaluate(t, cx)) {
                        (_, Outcome::No | Outcome::Drop) => return Outcome::No,
                        (o, Outcome::Yes) => o,
                        (Outcome::Yes, c @ Outcome::Chance(_)) => c,
                        (Outcome::Chance(a), Outcome::Chance(b)) if a.seed == b.seed => {
                            Outcome::Chance(Chance {
                                seed: a.seed,
                                threshold: a.threshold.max(b.threshold),
                            })
                        }
                        // Two independent chances: decide now.
                        (Outcome::Chance(a), Outcome::Chance(b)) => {
                            if a.holds(t) && b.holds(t) {
                                Outcome::Yes
                            } else {
                                return Outcome::No;
                            }
                        }
                        (o, Outcome::Chance(_)) => o,
                    };
                }
                out
            }
            Rule::Drop(subs) => {
                let all = subs.iter().all(|p| match p.evaluate(t, cx) {
                    Outcome::Yes | Outcome::Drop => true,
                    Outcome::Chance(c) => c.holds(t),
                    Outcome::No => false,
                });
                if all { Outcome::Drop } else { Outcome::No }
            }
            Rule::Composite(subs) => {
                for (p, bucket, rate) in subs {
                    let o = p.evaluate(t, cx);
                    let sampled = match o {
                        Outcome::Yes => true,
                        Outcome::Chance(c) => c.holds(t),
                        Outcome::No | Outcome::Drop => false,
                    };
                    if sampled && take(bucket, cx.now, t.spans.len(), *rate) {
                        return o;
                    }
                }
                Outcome::No
            }
            Rule::TraceCost(min) => {
                let cost = t.summary_f64(a::TRACE_COST_USD).unwrap_or_else(|| {
                    t.spans
                        .iter()
                        .filter_map(|s| get_f64(&s.span.attributes, a::COST_USD))
                        .sum()
                });
                yes(cost >= *min)
            }
            Rule::Quality(max) => yes(t.summary_f64(a::QUALITY_SCORE).is_some_and(|q| q <= *max)),
            Rule::Anomaly => yes(t.spans.iter().any(|s| {
                matches!(
                    get(&s.span.attributes, a::ANOMALY),
                    Some(Value::BoolValue(true))
                )
            })),
            Rule::Finding(names) => yes(t.spans.iter().any(|s| {
                s.span.events.iter().any(|e| {
                    e.name == a::FINDING_EVENT
                        && (names.is_empty()
                            || get_str(&e.attributes, a::FINDING_NAME)
                                .is_some_and(|n| names.iter().any(|x| x == n)))
                })
            })),
            Rule::Bottleneck { stages, min_share } => {
                let stage = match t.summary(a::TRACE_BOTTLENECK_STAGE) {
                    Some(Value::StringValue(s)) => s.as_str(),
                    _ => return Outcome::No,
                };
                let share = t.summary_f64(a::TRACE_BOTTLENECK_SHARE).unwrap_or(0.0);
                yes((stages.is_empty() || stages.iter().any(|s| s == stage)) && share >= *min_share)
            }
            Rule::SloBurn(slos) => yes(cx.burning.iter().any(|b| {
                (slos.is_empty() || slos.contains(&b.slo))
                    && t.spans.iter().any(|s| {
                        s.service == b.service
                            && if b.over == "request" {
                                s.span.parent_span_id.is_empty()
                            } else {
                                get_str(&s.span.attributes, a::RAG_STAGE) == Some(b.over.as_str())
                            }
                    })
            })),
            Rule::Unpriced => yes(t.spans.iter().any(|s| {
                matches!(
                    get(&s.span.attributes, a::COST_UNPRICED),
                    Some(Value::BoolValue(true))
                )
            })),
            Rule::Agent(outcomes) => yes(t.spans.iter().any(|s| {
                get_str(&s.span.attributes, AGENT_OUTCOME)
                    .is_some_and(|o| outcomes.iter().any(|x| x == o))
            })),
        }
    }
}

/// The decision on one trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub keep: bool,
    /// The policy (index) that kept it, or the `drop` policy that dropped it.
    pub policy: Option<usize>,
    /// How the kept trace was kept.
    pub weight: Weight,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weight {
    /// By a rule: it stands for itself.
    Rule,
    /// At random with OpenTelemetry's randomness: threshold T, written in tracestate.
    Threshold(u64),
    /// At random with hashed randomness: it stands for this many (no threshold written).
    Count(f64),
}

/// The Collector's rule: any drop → dropped; else any sample → kept; else dropped. Every policy
/// is evaluated (rate limits count what they let through). Among probabilistic policies the
/// trace is kept if its randomness reaches the lowest threshold of each source of randomness.
pub fn decide(policies: &[Policy], t: &TraceRef<'_>, cx: &Context<'_>) -> Decision {
    let outcomes: Vec<Outcome> = policies.iter().map(|p| p.evaluate(t, cx)).collect();
    let first = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().position(f);
    if let Some(i) = first(&|o| *o == Outcome::Drop) {
        return Decision {
            keep: false,
            policy: Some(i),
            weight: Weight::Rule,
        };
    }
    if let Some(i) = first(&|o| *o == Outcome::Yes) {
        return Decision {
            keep: true,
            policy: Some(i),
            weight: Weight::Rule,
        };
    }
    // The lowest threshold per source of randomness.
    let mut lowest: Vec<Chance> = Vec::new();
    for o in &outcomes {
        if let Outcome::Chance(c) = o {
            match lowest.iter_mut().find(|l| l.seed == c.seed) {
                Some(l) => l.threshold = l.threshold.min(c.threshold),
                None => lowest.push(*c),
            }
        }
    }
    let kept_by = first(&|o| matches!(o, Outcome::Chance(c) if c.holds(t)));
    let weight = match lowest.as_slice() {
        [] => Weight::Rule,
        [c] if c.seed == 0 => Weight::Threshold(c.threshold),
        [c] => Weight::Count(tracestate::adjusted_count(c.threshold)),
        // Independent sources: dropped only when every one says no.
        many => {
            let all_no: f64 = many
                .iter()
                .map(|c| c.threshold as f64 / tracestate::MAX as f64)
                .product();
            Weight::Count(1.0 / (1.0 - all_no).max(f64::MIN_POSITIVE))
        }
    };
    Decision {
        keep: kept_by.is_some(),
        policy: kept_by,
        weight,
    }
}
