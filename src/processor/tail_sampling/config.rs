//! The configuration of `tail_sampling`, in the Collector's shape: `decision_wait`, `num_traces`,
//! `policies: [{name, type, <type>: {...}}]`, plus ragwatch's own policy types.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Problems, Validate, duration};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// Without `trace_assembly` (hold mode) before this stage: how long after a trace's first
    /// span its decision is made (default 30s, as the Collector). Behind trace assembly in hold
    /// mode the decision is made when the trace arrives, whole, and this is not used.
    #[serde(default = "default_decision_wait", with = "duration")]
    pub decision_wait: Duration,
    /// Traces waiting for their decision at most (default 50,000); past it the oldest is
    /// decided at once (counted in ragwatch_sampling_early_decisions_total).
    #[serde(default = "default_num_traces")]
    pub num_traces: usize,
    /// Decisions remembered, so that a span arriving after its trace's decision follows it.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Evaluated for every trace: any `drop` policy that matches drops it; else any policy that
    /// samples keeps it; else it is dropped.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

fn default_decision_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_num_traces() -> usize {
    50_000
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: default_decision_wait(),
            num_traces: default_num_traces(),
            decision_cache: DecisionCacheConfig::default(),
            policies: Vec::new(),
        }
    }
}

/// Sizes of the caches of decisions (trace ids), kept and dropped apart as in the Collector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Kept traces remembered (default 100,000); past it the oldest is forgotten (counted).
    #[serde(default = "default_cache")]
    pub sampled_cache_size: usize,
    /// Dropped traces remembered (default 100,000).
    #[serde(default = "default_cache")]
    pub non_sampled_cache_size: usize,
}

fn default_cache() -> usize {
    100_000
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: default_cache(),
            non_sampled_cache_size: default_cache(),
        }
    }
}

/// Every policy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    AlwaysSample,
    Latency,
    StatusCode,
    NumericAttribute,
    StringAttribute,
    BooleanAttribute,
    Probabilistic,
    RateLimiting,
    SpanCount,
    And,
    Drop,
    Composite,
    TraceCost,
    Quality,
    Anomaly,
    Finding,
    Bottleneck,
    SloBurn,
    UnpricedModel,
    Agent,
}

impl PolicyType {
    /// The name written in `type`, which is also the key of the type's settings.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::AlwaysSample => "always_sample",
            PolicyType::Latency => "latency",
            PolicyType::StatusCode => "status_code",
            PolicyType::NumericAttribute => "numeric_attribute",
            PolicyType::StringAttribute => "string_attribute",
            PolicyType::BooleanAttribute => "boolean_attribute",
            PolicyType::Probabilistic => "probabilistic",
            PolicyType::RateLimiting => "rate_limiting",
            PolicyType::SpanCount => "span_count",
            PolicyType::And => "and",
            PolicyType::Drop => "drop",
            PolicyType::Composite => "composite",
            PolicyType::TraceCost => "trace_cost",
            PolicyType::Quality => "quality",
            PolicyType::Anomaly => "anomaly",
            PolicyType::Finding => "finding",
            PolicyType::Bottleneck => "bottleneck",
            PolicyType::SloBurn => "slo_burn",
            PolicyType::UnpricedModel => "unpriced_model",
            PolicyType::Agent => "agent",
        }
    }

    /// Whether the type's settings may be left out (every setting has a default).
    fn settings_optional(self) -> bool {
        matches!(
            self,
            PolicyType::AlwaysSample
                | PolicyType::Anomaly
                | PolicyType::UnpricedModel
                | PolicyType::SloBurn
                | PolicyType::Finding
                | PolicyType::Bottleneck
                | PolicyType::StatusCode
        )
    }
}

/// One policy: a name, a type, and the settings of that type under the type's name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PolicyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_sample: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<StatusCodeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_attribute: Option<StringAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<ProbabilisticConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimitingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_count: Option<SpanCountConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<AndConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite: Option<CompositeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_cost: Option<TraceCostConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityPolicyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<FindingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<BottleneckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_burn: Option<SloBurnConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_model: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentConfig>,
}

/// A type without settings: `anomaly: {}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The trace's duration (its first span's start to its last span's end) is at least
/// `threshold_ms` and, if set, at most `upper_threshold_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    #[serde(default)]
    pub threshold_ms: u64,
    /// 0 or absent: no upper bound.
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

/// A span of the trace has one of these statuses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// Default: [ERROR].
    #[serde(default = "default_status_codes")]
    pub status_codes: Vec<StatusName>,
}

impl Default for StatusCodeConfig {
    fn default() -> Self {
        StatusCodeConfig {
            status_codes: default_status_codes(),
        }
    }
}

fn default_status_codes() -> Vec<StatusName> {
    vec![StatusName::Error]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StatusName {
    Ok,
    Error,
    Unset,
}

/// A span (or its resource) has numeric attribute `key` within [min_value, max_value].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// Sample the traces that do not match instead.
    #[serde(default)]
    pub invert_match: bool,
}

/// A span (or its resource) has string attribute `key` equal to one of `values` (or matching
/// one of them as a regular expression).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for the Collector's configurations; ragwatch needs no cache of regex results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_size: Option<usize>,
    #[serde(default)]
    pub invert_match: bool,
}

/// A span (or its resource) has boolean attribute `key` equal to `value`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    pub key: String,
    pub value: bool,
    #[serde(default)]
    pub invert_match: bool,
}

/// A share of traces, consistent by trace id: replicas (and OpenTelemetry samplers) with the
/// same percentage agree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// 0 to 100.
    pub sampling_percentage: f64,
    /// 0 (default): the randomness is the trace id's (or the tracestate's `rv`), as
    /// OpenTelemetry's consistent probability sampling, and the threshold is written in
    /// `tracestate`. Another value hashes the trace id with it (the Collector's way) and no
    /// threshold is written (it would not be consistent with other samplers).
    #[serde(default)]
    pub hash_seed: u32,
}

/// At most this many spans per second, across the pipeline's shards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    pub spans_per_second: u64,
}

/// The trace has at least `min_spans` and, if set, at most `max_spans` spans.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    #[serde(default)]
    pub min_spans: u64,
    /// 0 or absent: no upper bound.
    #[serde(default)]
    pub max_spans: u64,
}

/// Every sub-policy samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// Every sub-policy samples: then the trace is dropped, whatever the other policies say.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// Sub-policies in `policy_order`, each with its share of `max_total_spans_per_second`: the
/// first that samples the trace and has room left this second keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    pub max_total_spans_per_second: u64,
    /// Names of the sub-policies, in the order they are tried (default: as listed).
    #[serde(default)]
    pub policy_order: Vec<String>,
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Shares of the rate, in percent; a sub-policy not listed shares what is left equally
    /// with the others not listed.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    pub policy: String,
    pub percent: f64,
}

/// The trace's model calls cost at least `min_usd` (`rag.trace.cost.usd` on the root).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceCostConfig {
    pub min_usd: f64,
}

/// The trace's quality score (`rag.quality.score` on the root) is at most `max_score`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityPolicyConfig {
    pub max_score: f64,
}

/// A `rag.finding` event of the trace has one of these names (empty: any finding).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingConfig {
    #[serde(default)]
    pub names: Vec<String>,
}

/// The trace's bottleneck is one of these stages (empty: any) with at least `min_share` of the
/// critical path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleneckConfig {
    #[serde(default)]
    pub stages: Vec<String>,
    #[serde(default)]
    pub min_share: f64,
}

/// A burn rule of an SLO of the trace's service fires now (only these SLOs; empty: any).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloBurnConfig {
    #[serde(default)]
    pub slos: Vec<String>,
}

/// An agent run of the trace ended with one of these outcomes (`ok`, `error`, `limit_reached`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default = "default_outcomes")]
    pub outcomes: Vec<String>,
}

fn default_outcomes() -> Vec<String> {
    vec!["error".into(), "limit_reached".into()]
}

/// The agent outcomes ragwatch writes on agent spans.
pub const AGENT_OUTCOMES: [&str; 3] = [
    crate::processor::trace_assembly::agents::Outcome::Ok.as_str(),
    crate::processor::trace_assembly::agents::Outcome::Error.as_str(),
    crate::processor::trace_assembly::agents::Outcome::LimitReached.as_str(),
];
/// The bottleneck stages: the fixed stages, and `app` for the application's own spans.
pub fn bottleneck_stages() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = crate::stage::Stage::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    v.push(crate::names::values::APP_STAGE);
    v
}

/// Levels of policies: a policy, its sub-policies (`and`, `drop`, `composite`), theirs.
const MAX_DEPTH: usize = 3;

impl Validate for TailSamplingConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.decision_wait.is_zero() {
            problems.push(
                &format!("{path}.decision_wait"),
                "must be greater than zero",
            );
        }
        if self.num_traces == 0 {
            problems.push(&format!("{path}.num_traces"), "must be greater than zero");
        }
        if self.policies.is_empty() {
            problems.push(
                &format!("{path}.policies"),
                "at least one policy is needed (with none, every trace would be dropped)",
            );
        }
        validate_policies(&self.policies, &format!("{path}.policies"), 0, problems);
    }
}

fn validate_policies(policies: &[PolicyConfig], path: &str, depth: usize, problems: &mut Problems) {
    let mut names = std::collections::HashSet::new();
    for (i, p) in policies.iter().enumerate() {
        let pp = format!("{path}.{i}");
        if p.name.trim().is_empty() || !names.insert(p.name.as_str()) {
            problems.push(&format!("{pp}.name"), "must be a non-empty name, unique");
        }
        p.validate_at(&pp, depth, problems);
    }
}

fn finite_in(x: f64, lo: f64, hi: f64) -> bool {
    x.is_finite() && x >= lo && x <= hi
}

impl PolicyConfig {
    /// The settings keys present, by type.
    fn present(&self) -> Vec<PolicyType> {
        use PolicyType as T;
        let mut v = Vec::new();
        let mut add = |set: bool, t: T| {
            if set {
                v.push(t)
            }
        };
        add(self.always_sample.is_some(), T::AlwaysSample);
        add(self.latency.is_some(), T::Latency);
        add(self.status_code.is_some(), T::StatusCode);
        add(self.numeric_attribute.is_some(), T::NumericAttribute);
        add(self.string_attribute.is_some(), T::StringAttribute);
        add(self.boolean_attribute.is_some(), T::BooleanAttribute);
        add(self.probabilistic.is_some(), T::Probabilistic);
        add(self.rate_limiting.is_some(), T::RateLimiting);
        add(self.span_count.is_some(), T::SpanCount);
        add(self.and.is_some(), T::And);
        add(self.drop.is_some(), T::Drop);
        add(self.composite.is_some(), T::Composite);
        add(self.trace_cost.is_some(), T::TraceCost);
        add(self.quality.is_some(), T::Quality);
        add(self.anomaly.is_some(), T::Anomaly);
        add(self.finding.is_some(), T::Finding);
        add(self.bottleneck.is_some(), T::Bottleneck);
        add(self.slo_burn.is_some(), T::SloBurn);
        add(self.unpriced_model.is_some(), T::UnpricedModel);
        add(self.agent.is_some(), T::Agent);
        v
    }

    fn validate_at(&self, path: &str, depth: usize, problems: &mut Problems) {
        let Some(kind) = self.kind else {
            problems.push(
                &format!("{path}.type"),
                "missing; every policy needs a type",
            );
            return;
        };
        for other in self.present() {
            if other != kind {
                problems.push(
                    &format!("{path}.{}", other.as_str()),
                    format!(
                        "settings of type `{}` on a policy of type `{}`",
                        other.as_str(),
                        kind.as_str()
                    ),
                );
            }
        }
        let key = |k: &str| format!("{path}.{}.{k}", kind.as_str());
        let missing = || {
            if kind.settings_optional() {
                None
            } else {
                Some(format!(
                    "missing; a `{}` policy needs its settings",
                    kind.as_str()
                ))
            }
        };
        macro_rules! settings {
            ($field:ident) => {
                match &self.$field {
                    Some(s) => s,
                    None => {
                        if let Some(m) = missing() {
                            problems.push(&format!("{path}.{}", kind.as_str()), m);
                        }
                        return;
                    }
                }
            };
        }
        let nested = |subs: &[PolicyConfig], sub_key: &str, problems: &mut Problems| {
            let p = key(sub_key);
            if depth + 1 >= MAX_DEPTH {
                problems.push(
                    &p,
                    format!(
                        "policies nest at most {MAX_DEPTH} levels deep (a policy, its sub-policies, theirs)"
                    ),
                );
                return;
            }
            if subs.is_empty() {
                problems.push(&p, "needs at least one sub-policy");
            }
            validate_policies(subs, &p, depth + 1, problems);
        };
        match kind {
            PolicyType::AlwaysSample | PolicyType::Anomaly | PolicyType::UnpricedModel => {}
            PolicyType::Latency => {
                let s = settings!(latency);
                if s.upper_threshold_ms != 0 && s.upper_threshold_ms < s.threshold_ms {
                    problems.push(
                        &key("upper_threshold_ms"),
                        "must be at least threshold_ms (or 0 for no upper bound)",
                    );
                }
            }
            PolicyType::StatusCode => {
                if let Some(s) = &self.status_code
                    && s.status_codes.is_empty()
                {
                    problems.push(
                        &key("status_codes"),
                        "needs at least one of OK, ERROR, UNSET",
                    );
                }
            }
            PolicyType::NumericAttribute => {
                let s = settings!(numeric_attribute);
                if s.key.is_empty() {
                    problems.push(&key("key"), "must not be empty");
                }
                match (s.min_value, s.max_value) {
                    (None, None) => {
                        problems.push(&key("min_value"), "set min_value, max_value or both")
                    }
                    (Some(lo), Some(hi)) if lo > hi => {
                        problems.push(&key("max_value"), "must be at least min_value")
                    }
                    _ => {}
                }
                for (k, v) in [("min_value", s.min_value), ("max_value", s.max_value)] {
                    if v.is_some_and(|x| !x.is_finite()) {
                        problems.push(&key(k), "must be a finite number");
                    }
                }
            }
            PolicyType::StringAttribute => {
                let s = settings!(string_attribute);
                if s.key.is_empty() {
                    problems.push(&key("key"), "must not be empty");
                }
                if s.values.is_empty() {
                    problems.push(&key("values"), "needs at least one value");
                }
                if s.enabled_regex_matching {
                    for (i, v) in s.values.iter().enumerate() {
                        if let Err(e) = regex::Regex::new(v) {
                            problems.push(
                                &format!("{}.{i}", key("values")),
                                format!("not a regular expression: {e}"),
                            );
                        }
                    }
                }
            }
            PolicyType::BooleanAttribute => {
                let s = settings!(boolean_attribute);
                if s.key.is_empty() {
                    problems.push(&key("key"), "must not be empty");
                }
            }
            PolicyType::Probabilistic => {
                let s = settings!(probabilistic);
                if !finite_in(s.sampling_percentage, 0.0, 100.0) {
                    problems.push(&key("sampling_percentage"), "must be between 0 and 100");
                }
            }
            PolicyType::RateLimiting => {
                let s = settings!(rate_limiting);
                if s.spans_per_second == 0 {
                    problems.push(&key("spans_per_second"), "must be greater than zero");
                }
            }
            PolicyType::SpanCount => {
                let s = settings!(span_count);
                if s.max_spans != 0 && s.max_spans < s.min_spans {
                    problems.push(
                        &key("max_spans"),
                        "must be at least min_spans (or 0 for no upper bound)",
                    );
                }
            }
            PolicyType::And => {
                let s = settings!(and);
                nested(&s.and_sub_policy, "and_sub_policy", problems);
            }
            PolicyType::Drop => {
                let s = settings!(drop);
                nested(&s.drop_sub_policy, "drop_sub_policy", problems);
            }
            PolicyType::Composite => {
                let s = settings!(composite);
                if s.max_total_spans_per_second == 0 {
                    problems.push(
                        &key("max_total_spans_per_second"),
                        "must be greater than zero",
                    );
                }
                nested(&s.composite_sub_policy, "composite_sub_policy", problems);
                let names: Vec<&str> = s
                    .composite_sub_policy
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                for (i, n) in s.policy_order.iter().enumerate() {
                    if !names.contains(&n.as_str()) {
                        problems.push(
                            &format!("{}.{i}", key("policy_order")),
                            format!("`{n}` is not a composite_sub_policy"),
                        );
                    }
                }
                let mut total = 0.0;
                for (i, r) in s.rate_allocation.iter().enumerate() {
                    let p = format!("{}.{i}", key("rate_allocation"));
                    if !names.contains(&r.policy.as_str()) {
                        problems.push(
                            &format!("{p}.policy"),
                            format!("`{}` is not a composite_sub_policy", r.policy),
                        );
                    }
                    if !finite_in(r.percent, 0.0, 100.0) {
                        problems.push(&format!("{p}.percent"), "must be between 0 and 100");
                    } else {
                        total += r.percent;
                    }
                }
                if total > 100.0 + 1e-9 {
                    problems.push(
                        &key("rate_allocation"),
                        format!("the percents add up to {total}, more than 100"),
                    );
                }
            }
            PolicyType::TraceCost => {
                let s = settings!(trace_cost);
                if !(s.min_usd.is_finite() && s.min_usd >= 0.0) {
                    problems.push(&key("min_usd"), "must be a cost in USD, 0 or more");
                }
            }
            PolicyType::Quality => {
                let s = settings!(quality);
                if !finite_in(s.max_score, 0.0, 1.0) {
                    problems.push(&key("max_score"), "must be a score between 0 and 1");
                }
            }
            PolicyType::Finding => {
                if let Some(s) = &self.finding {
                    for (i, n) in s.names.iter().enumerate() {
                        if n.trim().is_empty() {
                            problems.push(&format!("{}.{i}", key("names")), "must not be empty");
                        }
                    }
                }
            }
            PolicyType::Bottleneck => {
                if let Some(s) = &self.bottleneck {
                    let known = bottleneck_stages();
                    for (i, st) in s.stages.iter().enumerate() {
                        if !known.contains(&st.as_str()) {
                            problems.push(
                                &format!("{}.{i}", key("stages")),
                                format!("unknown stage `{st}`; known: {}", known.join(", ")),
                            );
                        }
                    }
                    if !finite_in(s.min_share, 0.0, 1.0) {
                        problems.push(&key("min_share"), "must be between 0 and 1");
                    }
                }
            }
            PolicyType::SloBurn => {
                if let Some(s) = &self.slo_burn {
                    for (i, n) in s.slos.iter().enumerate() {
                        if n.trim().is_empty() {
                            problems.push(&format!("{}.{i}", key("slos")), "must not be empty");
                        }
                    }
                }
            }
            PolicyType::Agent => {
                let s = settings!(agent);
                if s.outcomes.is_empty() {
                    problems.push(&key("outcomes"), "needs at least one outcome");
                }
                for (i, o) in s.outcomes.iter().enumerate() {
                    if !AGENT_OUTCOMES.contains(&o.as_str()) {
                        problems.push(
                            &format!("{}.{i}", key("outcomes")),
                            format!(
                                "unknown outcome `{o}`; known: {}",
                                AGENT_OUTCOMES.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}
