//! The `anomaly` processor: streaming detection of what behaves unlike itself, per key
//! (service × stage × model; `request` is the stage of the root span), with the number of keys
//! capped by least-recently-used eviction.
//!
//! Signals: request latency, stage latency, time to first token, input and output tokens per
//! call, cost per request, error rate, quality score. Each has its own detector per key (see
//! [`detector`]). A trace gets a verdict when a sustained-shift test fires, or when point
//! outliers appear in at least `min_groups` independent groups of signals (performance: request
//! and stage latency, TTFT, tokens and cost, which drive one another; errors; quality), so that
//! one random slow call is not an anomaly but a slow call that also answers badly is.
//!
//! Put it after `trace_assembly` (hold mode) and `quality`, which hand it whole, scored traces.

pub mod detector;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use lru::LruCache;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::{Deserialize, Serialize};

use crate::attributes::{duration_secs as secs, get_f64, get_str, hex, is_error, put};
use crate::config::{Problems, Validate};
use crate::derived::DerivedMetrics;
use crate::findings::{Finding, Findings, Severity};
use crate::genai::{Facts, Names};
use crate::names::attrs as a;
use crate::processor::{Processor, WithFacts, dropping_facts, with_trace_facts};
use crate::signal::Batch;
use crate::trace::group_by_trace;
pub use detector::Direction;
use detector::{Outcome, Rate, RateParams, Robust, RobustParams};

/// The signals watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    RequestLatency,
    StageLatency,
    Ttft,
    InputTokens,
    OutputTokens,
    Cost,
    Quality,
    ErrorRate,
}

impl Signal {
    pub const ALL: [Signal; 8] = [
        Signal::RequestLatency,
        Signal::StageLatency,
        Signal::Ttft,
        Signal::InputTokens,
        Signal::OutputTokens,
        Signal::Cost,
        Signal::Quality,
        Signal::ErrorRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::RequestLatency => "request_latency",
            Signal::StageLatency => "stage_latency",
            Signal::Ttft => "ttft",
            Signal::InputTokens => "input_tokens",
            Signal::OutputTokens => "output_tokens",
            Signal::Cost => "cost",
            Signal::Quality => "quality",
            Signal::ErrorRate => "error_rate",
        }
    }

    /// Signals of one group are not independent evidence: a slow stage makes a slow request,
    /// and a long answer makes a slow, costly call.
    fn group(self) -> u8 {
        match self {
            Signal::RequestLatency
            | Signal::StageLatency
            | Signal::Ttft
            | Signal::InputTokens
            | Signal::OutputTokens
            | Signal::Cost => 0,
            Signal::ErrorRate => 1,
            Signal::Quality => 2,
        }
    }

    /// Latencies, tokens and cost are judged on a log scale (their spread grows with their
    /// level); the quality score as it is.
    fn transform(self, x: f64) -> f64 {
        match self {
            Signal::RequestLatency | Signal::StageLatency | Signal::Ttft => x.max(1e-4).ln(),
            Signal::InputTokens | Signal::OutputTokens => (x.max(0.0) + 1.0).ln(),
            Signal::Cost => (x.max(0.0) + 1e-7).ln(),
            Signal::Quality | Signal::ErrorRate => x,
        }
    }

    fn untransform(self, y: f64) -> f64 {
        match self {
            Signal::RequestLatency | Signal::StageLatency | Signal::Ttft => y.exp(),
            Signal::InputTokens | Signal::OutputTokens => y.exp() - 1.0,
            Signal::Cost => y.exp() - 1e-7,
            Signal::Quality | Signal::ErrorRate => y,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Signal::RequestLatency | Signal::StageLatency | Signal::Ttft => " s",
            Signal::InputTokens | Signal::OutputTokens => " tokens",
            Signal::Cost => " USD",
            Signal::Quality | Signal::ErrorRate => "",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Which way the signal goes bad unless configured: quality down, the rest up.
    pub fn default_direction(self) -> Direction {
        match self {
            Signal::Quality => Direction::Down,
            _ => Direction::Up,
        }
    }

    /// The smallest distance from the baseline median, in the signal's own units, that is
    /// judged at all.
    fn min_shift(self, latency_secs: f64) -> f64 {
        match self {
            Signal::RequestLatency | Signal::StageLatency | Signal::Ttft => latency_secs,
            Signal::InputTokens | Signal::OutputTokens => 10.0,
            Signal::Quality => 0.05,
            Signal::Cost | Signal::ErrorRate => 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Values of a key's signal seen before it can give a verdict.
    #[serde(default = "d_warmup")]
    pub warmup: usize,
    /// Point test: |robust z| above this.
    #[serde(default = "d_k")]
    pub z_threshold: f64,
    /// CUSUM allowance, in sigmas.
    #[serde(default = "d_drift")]
    pub cusum_drift: f64,
    /// CUSUM decision threshold, in sigmas.
    #[serde(default = "d_h")]
    pub cusum_threshold: f64,
    /// How far a baseline moves towards each normal value, in sigmas.
    #[serde(default = "d_adapt")]
    pub adapt: f64,
    /// Error rate: the evidence an error burst needs, in nats (the burst's binomial tail
    /// probability under the baseline rate is below e^-threshold; 10: 1 in 22,000).
    #[serde(default = "d_error_h")]
    pub error_threshold: f64,
    /// Error rate: the prior's mean, the rate assumed of a service before its requests say
    /// otherwise (`min_error_rate` is accepted as an older name).
    #[serde(default = "d_min_rate", alias = "min_error_rate")]
    pub prior_error_rate: f64,
    /// Error rate: how many requests the prior is worth.
    #[serde(default = "d_prior_weight")]
    pub prior_weight: f64,
    /// Latencies (request, stage, time to first token): a value must lie at least this far from
    /// the baseline median, in ms, to be judged (a 0.2 ms glue span taking 0.6 ms is not news).
    #[serde(default = "d_min_latency_shift")]
    pub min_latency_shift_ms: f64,
    /// The direction in which each signal goes bad (`up`, `down` or `both`); defaults: quality
    /// `down`, every other signal `up`.
    #[serde(default)]
    pub directions: BTreeMap<Signal, Direction>,
    /// Independent groups of signals with point outliers that make a verdict on their own.
    #[serde(default = "d_groups")]
    pub min_groups: usize,
    /// Keys tracked at most; the least recently seen is forgotten first.
    #[serde(default = "d_keys")]
    pub max_keys: usize,
    /// The signals watched (default: all).
    #[serde(default = "d_signals")]
    pub signals: Vec<Signal>,
}

fn d_warmup() -> usize {
    50
}
fn d_k() -> f64 {
    4.0
}
fn d_drift() -> f64 {
    0.5
}
fn d_h() -> f64 {
    16.0
}
fn d_adapt() -> f64 {
    0.02
}
fn d_error_h() -> f64 {
    10.0
}
fn d_min_rate() -> f64 {
    0.01
}
fn d_prior_weight() -> f64 {
    50.0
}
fn d_min_latency_shift() -> f64 {
    25.0
}
fn d_groups() -> usize {
    2
}
fn d_keys() -> usize {
    10_000
}
fn d_signals() -> Vec<Signal> {
    Signal::ALL.to_vec()
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            warmup: d_warmup(),
            z_threshold: d_k(),
            cusum_drift: d_drift(),
            cusum_threshold: d_h(),
            adapt: d_adapt(),
            error_threshold: d_error_h(),
            prior_error_rate: d_min_rate(),
            prior_weight: d_prior_weight(),
            min_latency_shift_ms: d_min_latency_shift(),
            directions: BTreeMap::new(),
            min_groups: d_groups(),
            max_keys: d_keys(),
            signals: d_signals(),
        }
    }
}

impl Validate for AnomalyConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.warmup < 5 {
            problems.push(&format!("{path}.warmup"), "must be at least 5");
        }
        for (k, v) in [
            ("z_threshold", self.z_threshold),
            ("cusum_threshold", self.cusum_threshold),
            ("error_threshold", self.error_threshold),
        ] {
            if !positive(v) {
                problems.push(&format!("{path}.{k}"), "must be greater than 0");
            }
        }
        if !(self.cusum_drift.is_finite() && self.cusum_drift >= 0.0) {
            problems.push(&format!("{path}.cusum_drift"), "must be >= 0");
        }
        if !(self.adapt > 0.0 && self.adapt <= 1.0) {
            problems.push(&format!("{path}.adapt"), "must be in (0, 1]");
        }
        if !(self.prior_error_rate > 0.0 && self.prior_error_rate < 0.5) {
            problems.push(&format!("{path}.prior_error_rate"), "must be in (0, 0.5)");
        }
        if !(self.prior_weight.is_finite() && self.prior_weight >= 1.0) {
            problems.push(&format!("{path}.prior_weight"), "must be at least 1");
        }
        if !(self.min_latency_shift_ms.is_finite() && self.min_latency_shift_ms >= 0.0) {
            problems.push(&format!("{path}.min_latency_shift_ms"), "must be >= 0");
        }
        if self.directions.contains_key(&Signal::ErrorRate) {
            problems.push(
                &format!("{path}.directions.error_rate"),
                "the error rate is judged on increases only",
            );
        }
        if !(1..=3).contains(&self.min_groups) {
            problems.push(&format!("{path}.min_groups"), "must be 1 to 3");
        }
        if self.max_keys == 0 {
            problems.push(&format!("{path}.max_keys"), "must be at least 1");
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    stage: String,
    model: String,
}

/// A [`Key`] borrowed from the spans, while a trace is measured.
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    service: &'a str,
    stage: &'a str,
    model: &'a str,
}

impl KeyRef<'_> {
    fn is(&self, k: &Key) -> bool {
        self.service == k.service && self.stage == k.stage && self.model == k.model
    }

    fn to_owned(self) -> Key {
        Key {
            service: self.service.to_string(),
            stage: self.stage.to_string(),
            model: self.model.to_string(),
        }
    }
}

#[derive(Default)]
struct KeyState {
    robust: [Robust; 7],
    errors: Rate,
}

/// One signal's value on one span of a trace, and what its detector made of it.
struct Obs {
    span: usize,
    signal: Signal,
    /// Index into the trace's [`Measures::keys`].
    key: usize,
    value: f64,
    outcome: Outcome,
    /// Baseline median (in the signal's units) and sigma (transformed), for descriptions.
    baseline: Option<(f64, f64)>,
}

pub struct AnomalyProcessor {
    /// Per signal (by index; the error rate's entry is unused).
    robust: [RobustParams; 8],
    min_latency_shift: f64,
    rate: RateParams,
    min_groups: usize,
    enabled: [bool; 8],
    keys: LruCache<Key, KeyState>,
    derived: Arc<DerivedMetrics>,
    findings: Arc<Findings>,
    verdicts: u64,
}

/// What the processor concluded about one trace (for the evaluation and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub signals: Vec<Signal>,
}

impl AnomalyProcessor {
    pub fn new(
        config: AnomalyConfig,
        derived: Arc<DerivedMetrics>,
        findings: Arc<Findings>,
    ) -> Self {
        let robust = Signal::ALL.map(|signal| RobustParams {
            warmup: config.warmup,
            k: config.z_threshold,
            drift: config.cusum_drift,
            h: config.cusum_threshold,
            adapt: config.adapt,
            min_sigma: if signal == Signal::Quality {
                0.02
            } else {
                0.05
            },
            direction: config
                .directions
                .get(&signal)
                .copied()
                .unwrap_or(signal.default_direction()),
        });
        let mut enabled = [false; 8];
        for s in &config.signals {
            enabled[s.index()] = true;
        }
        AnomalyProcessor {
            robust,
            min_latency_shift: config.min_latency_shift_ms / 1000.0,
            rate: RateParams {
                prior_rate: config.prior_error_rate,
                prior_weight: config.prior_weight,
                h: config.error_threshold,
            },
            min_groups: config.min_groups,
            enabled,
            keys: LruCache::new(NonZeroUsize::new(config.max_keys).unwrap_or(NonZeroUsize::MIN)),
            derived,
            findings,
            verdicts: 0,
        }
    }

    /// Traces judged anomalous so far.
    pub fn verdicts(&self) -> u64 {
        self.verdicts
    }

    fn observe(&mut self, span: usize, keys: &[Key], p: &Point, out: &mut Vec<Obs>) {
        let (signal, value) = (p.signal, p.value);
        if !self.enabled[signal.index()] || !value.is_finite() {
            return;
        }
        let Some(key) = keys.get(p.key) else {
            return;
        };
        if self.keys.get_mut(key).is_none() {
            // `push` evicts the least recently used key when full.
            self.keys.push(key.clone(), KeyState::default());
        }
        let Some(st) = self.keys.get_mut(key) else {
            return;
        };
        let (outcome, baseline) = if signal == Signal::ErrorRate {
            let p0 = st.errors.baseline(&self.rate);
            (st.errors.observe(value > 0.5, &self.rate), Some((p0, 0.0)))
        } else {
            let p = &self.robust[signal.index()];
            let min_shift = signal.min_shift(self.min_latency_shift);
            let d = &mut st.robust[signal.index()];
            let far = |median: f64| (value - signal.untransform(median)).abs() >= min_shift;
            let o = d.observe(signal.transform(value), p, far);
            (o, d.baseline(p).map(|(m, s)| (signal.untransform(m), s)))
        };
        out.push(Obs {
            span,
            signal,
            key: p.key,
            value,
            outcome,
            baseline,
        });
    }

    /// Judge one trace; mark its spans and publish a finding when it is anomalous.
    fn judge(
        &mut self,
        spans: &mut [(&str, &mut Span)],
        service: &str,
        facts: &Facts,
        now: Instant,
    ) -> Verdict {
        let m = measure(spans, service, facts);
        let (verdict, marks) = self.decide(m, now);
        mark(spans, marks);
        verdict
    }

    /// Feed one trace's measures to the detectors, in order; the verdict, and the marks to
    /// write on its spans (span index, signals, score).
    fn decide(&mut self, m: Measures, now: Instant) -> (Verdict, Vec<Mark>) {
        let mut obs = Vec::new();
        let Measures {
            keys,
            points,
            trace_id,
            ..
        } = m;
        for p in &points {
            self.observe(p.span, &keys, p, &mut obs);
        }
        let key_of = |o: &Obs| keys.get(o.key).cloned().unwrap_or_default();
        let sustained = obs.iter().any(|o| o.outcome.sustained);
        let mut groups = [false; 3];
        for o in obs.iter().filter(|o| o.outcome.point) {
            groups[o.signal.group() as usize] = true;
        }
        let points_count = groups.iter().filter(|g| **g).count() >= self.min_groups;
        if !sustained && !points_count {
            return (Verdict::default(), Vec::new());
        }
        self.verdicts += 1;
        // What is marked: values on the shifted side of a sustained shift, and point outliers
        // when they make a verdict of their own (in at least `min_groups` groups).
        let flagged: Vec<&Obs> = obs
            .iter()
            .filter(|o| o.outcome.sustained || (points_count && o.outcome.point))
            .collect();
        // Mark each span concerned.
        let mut per_span: BTreeMap<usize, (Vec<&'static str>, f64)> = BTreeMap::new();
        for o in &flagged {
            let e = per_span.entry(o.span).or_default();
            if !e.0.contains(&o.signal.as_str()) {
                e.0.push(o.signal.as_str());
            }
            e.1 = e.1.max(o.outcome.z.map(f64::abs).unwrap_or(0.0));
            self.derived.add(
                crate::derived::defs::ANOMALIES,
                &[o.signal.as_str(), &key_of(o).service],
                1.0,
                now,
            );
        }
        // One finding per anomalous trace, about its strongest evidence.
        let lead = flagged
            .iter()
            .max_by(|x, y| {
                (
                    x.outcome.sustained,
                    x.outcome.z.map(f64::abs).unwrap_or(0.0),
                )
                    .partial_cmp(&(
                        y.outcome.sustained,
                        y.outcome.z.map(f64::abs).unwrap_or(0.0),
                    ))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .copied();
        let mut verdict = Verdict::default();
        for o in &flagged {
            if !verdict.signals.contains(&o.signal) {
                verdict.signals.push(o.signal);
            }
        }
        if let Some(l) = lead {
            let lk = key_of(l);
            let mut labels = BTreeMap::new();
            labels.insert("service", lk.service.clone());
            labels.insert("stage", lk.stage.clone());
            if !lk.model.is_empty() {
                labels.insert("model", lk.model.clone());
            }
            labels.insert("signal", l.signal.as_str().to_string());
            let description = flagged
                .iter()
                .take(4)
                .map(|o| describe(o, &key_of(o)))
                .collect::<Vec<_>>()
                .join("; ");
            self.findings.publish(Finding {
                name: "anomaly",
                severity: Severity::Warning,
                labels,
                summary: format!(
                    "{} of {} ({}) behaves unlike itself",
                    l.signal.as_str(),
                    lk.service,
                    lk.stage
                ),
                description,
                trace_id: Some(trace_id),
                at: SystemTime::now(),
            });
        }
        let marks = per_span
            .into_iter()
            .map(|(span, (signals, score))| Mark {
                span,
                signals,
                score,
            })
            .collect();
        (verdict, marks)
    }

    /// Judge every trace of a batch; the verdicts are returned in the order of the traces.
    pub fn process(&mut self, batch: &mut Batch, now: Instant) -> Vec<Verdict> {
        let mut out = Vec::new();
        if let Batch::Traces(r) = batch {
            let facts = Facts::for_request(None, r, &mut Names::default());
            for mut t in group_by_trace(r) {
                let service = t.service;
                out.push(self.judge(&mut t.spans, service, &facts, now));
            }
        }
        out
    }
}

/// One value for one detector: the span it came from, its key (an index into
/// [`Measures::keys`]), its signal.
struct Point {
    span: usize,
    key: usize,
    signal: Signal,
    value: f64,
}

/// A trace's measures, in the order the detectors are fed.
#[derive(Default)]
struct Measures {
    trace_id: String,
    keys: Vec<Key>,
    points: Vec<Point>,
}

impl Measures {
    /// Add one value; the key is copied only the first time the trace uses it.
    fn add(&mut self, span: usize, key: KeyRef<'_>, signal: Signal, value: f64) {
        let k = match self.keys.iter().position(|k| key.is(k)) {
            Some(k) => k,
            None => {
                self.keys.push(key.to_owned());
                self.keys.len() - 1
            }
        };
        self.points.push(Point {
            span,
            key: k,
            signal,
            value,
        });
    }
}

/// What a verdict writes on one span.
struct Mark {
    span: usize,
    signals: Vec<&'static str>,
    score: f64,
}

/// Write the marks of a verdict on the trace's spans.
fn mark(spans: &mut [(&str, &mut Span)], marks: Vec<Mark>) {
    for Mark {
        span: i,
        signals,
        score,
    } in marks
    {
        let attrs = &mut spans[i].1.attributes;
        put(attrs, a::ANOMALY, Value::BoolValue(true));
        put(
            attrs,
            a::ANOMALY_SIGNALS,
            Value::ArrayValue(ArrayValue {
                values: signals
                    .iter()
                    .map(|s| AnyValue {
                        value: Some(Value::StringValue(s.to_string())),
                    })
                    .collect(),
            }),
        );
        put(attrs, a::ANOMALY_SCORE, Value::DoubleValue(score));
    }
}

/// Which spans run inside an agent run (beneath a span of stage `agent`).
fn in_agent_run(spans: &[(&str, &mut Span)]) -> Vec<bool> {
    let index: crate::trace::FastMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.span_id.as_slice(), i))
        .collect();
    let is_agent = |i: usize| get_str(&spans[i].1.attributes, a::RAG_STAGE) == Some("agent");
    (0..spans.len())
        .map(|i| {
            let mut at = i;
            // Bounded by the trace's size, so a parent cycle cannot loop.
            for _ in 0..spans.len() {
                match index.get(spans[at].1.parent_span_id.as_slice()) {
                    Some(&p) if p != at => {
                        if is_agent(p) {
                            return true;
                        }
                        at = p;
                    }
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// What one trace gives the detectors, in the order they are fed: read from the spans alone
/// (no detector state), so a shard computes it without holding the shared detectors.
fn measure(spans: &[(&str, &mut Span)], service: &str, facts: &Facts) -> Measures {
    let mut obs = Measures::default();
    let root = spans.iter().position(|(_, s)| s.parent_span_id.is_empty());
    obs.trace_id = spans
        .first()
        .map(|(_, s)| hex(&s.trace_id))
        .unwrap_or_default();
    // A failed call is short, cheap and answers nothing: its latency, tokens, cost and the
    // trace's quality belong to another population, judged by the error rate alone. The
    // request's own error rate is the root's status (a call retried successfully is not a
    // failed request).
    let failed = spans.iter().any(|(_, s)| is_error(s));
    // Requests' latency and cost are keyed by the model that answered them too: a service
    // routing between models has one population per model, not one mixed. Their errors
    // and quality, and their cost once more, are the service's whatever model answered (a
    // failed request names no answering model; a switch to a pricier model is a cost
    // spike of the service).
    let request_model = spans
        .iter()
        .filter(|(_, s)| get_str(&s.attributes, a::RAG_STAGE) == Some("llm") && !is_error(s))
        .find_map(|(_, s)| facts.of(s).model.as_deref().map(str::to_string))
        .unwrap_or_default();
    let service_key = KeyRef {
        service,
        stage: "request",
        model: "",
    };
    let request_key = KeyRef {
        model: &request_model,
        ..service_key
    };
    if let Some(r) = root {
        let err = f64::from(u8::from(is_error(spans[r].1)));
        obs.add(r, service_key, Signal::ErrorRate, err);
    }
    if let Some(r) = root.filter(|_| !failed) {
        let s = &*spans[r].1;
        obs.add(r, request_key, Signal::RequestLatency, secs(s));
        let cost = get_f64(&s.attributes, a::TRACE_COST_USD).or_else(|| {
            let c: Vec<f64> = spans
                .iter()
                .filter_map(|(_, x)| get_f64(&x.attributes, a::COST_USD))
                .collect();
            (!c.is_empty()).then(|| c.iter().sum())
        });
        if let Some(c) = cost {
            obs.add(r, request_key, Signal::Cost, c);
            if !request_key.model.is_empty() {
                obs.add(r, service_key, Signal::Cost, c);
            }
        }
        if let Some(q) = get_f64(&spans[r].1.attributes, a::QUALITY_SCORE) {
            obs.add(r, service_key, Signal::Quality, q);
        }
    }
    let in_agent = in_agent_run(spans);
    for (i, (svc, s)) in spans.iter().enumerate() {
        let Some(stage) = get_str(&s.attributes, a::RAG_STAGE) else {
            continue;
        };
        let v = facts.of(s);
        // Agents and tools are keyed by their name, as model calls by their model.
        let key = KeyRef {
            service: svc,
            stage,
            model: match stage {
                "agent" => v.agent_name.as_deref(),
                "tool" => v.tool_name.as_deref(),
                _ => v.model.as_deref(),
            }
            .unwrap_or_default(),
        };
        let error = is_error(s);
        obs.add(i, key, Signal::ErrorRate, f64::from(u8::from(error)));
        // Glue (a chain's or an unknown GenAI span's duration is its children's) says
        // nothing of its own: the stages inside it are judged. An agent's model calls are
        // judged by their error rate alone: their latency and tokens depend on the turn (a
        // short tool request or an answer; the context grows turn by turn), so one agent's
        // calls are no single population (judged as one, clean runs were marked); its tool
        // calls, the run itself (the agent span) and the request are judged in full.
        let agent_turn = stage == "llm" && in_agent.get(i) == Some(&true);
        if error || matches!(stage, "chain" | "other") || agent_turn {
            continue;
        }
        let dur = secs(s);
        let ttft = get_f64(&s.attributes, a::LLM_TTFT_MS)
            .map(|ms| ms / 1000.0)
            .or_else(|| v.time_to_first_token.map(|d| d.as_secs_f64()));
        let (tin, tout) = (v.input_tokens, v.output_tokens);
        let is_llm = stage == "llm";
        obs.add(i, key, Signal::StageLatency, dur);
        if is_llm {
            if let Some(t) = ttft {
                obs.add(i, key, Signal::Ttft, t);
            }
            if let Some(n) = tin {
                obs.add(i, key, Signal::InputTokens, n as f64);
            }
            if let Some(n) = tout {
                obs.add(i, key, Signal::OutputTokens, n as f64);
            }
        }
    }
    obs
}

fn describe(o: &Obs, key: &Key) -> String {
    let how = if o.outcome.sustained {
        "sustained shift"
    } else {
        "outlier"
    };
    let model = if key.model.is_empty() {
        String::new()
    } else {
        format!(" {}", key.model)
    };
    match (o.signal, o.baseline) {
        (Signal::ErrorRate, Some((p0, _))) => format!(
            "error_rate of {}{}: {how}, baseline {:.3}",
            key.stage, model, p0
        ),
        (s, Some((median, _))) => format!(
            "{} of {}{}: observed {:.4}{u}, baseline median {:.4}{u}, z {:.1} ({how})",
            s.as_str(),
            key.stage,
            model,
            o.value,
            median,
            o.outcome.z.unwrap_or(0.0),
            u = s.unit()
        ),
        (s, None) => format!("{} of {}{}: {how}", s.as_str(), key.stage, model),
    }
}

impl Processor for AnomalyProcessor {
    fn on_input(&mut self, mut batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        self.process(&mut batch, now);
        out.push(batch);
    }

    /// Reads the facts handed along (the view only of spans without), and hands them on.
    fn on_input_with(
        &mut self,
        batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        with_trace_facts(batch, facts, &mut Names::default(), out, |r, facts| {
            for mut t in group_by_trace(r) {
                let service = t.service;
                self.judge(&mut t.spans, service, facts, now);
            }
        });
    }
}

/// The anomaly stage of one shard of a pipeline. The detectors are one for the whole pipeline
/// (a baseline is not additive); each shard reads its traces' measures without holding them,
/// takes the lock once per batch only to feed the measures to the detectors in order, and
/// writes the verdicts' marks on its spans after letting go. (A lock around the whole stage
/// made the shards wait on each other's attribute reading and GenAI views.)
pub struct AnomalyShard {
    state: Arc<std::sync::Mutex<AnomalyProcessor>>,
    /// Names shared by the facts this shard reads itself (spans that came without).
    names: Names,
}

impl AnomalyShard {
    pub fn new(p: AnomalyProcessor) -> Self {
        AnomalyShard {
            state: Arc::new(std::sync::Mutex::new(p)),
            names: Names::default(),
        }
    }
}

impl Processor for AnomalyShard {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// Reads the facts handed along (the view only of spans without), and hands them on.
    fn on_input_with(
        &mut self,
        batch: Batch,
        facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        let state = &self.state;
        with_trace_facts(batch, facts, &mut self.names, out, |r, facts| {
            let mut traces = group_by_trace(r);
            let measures: Vec<Measures> = traces
                .iter()
                .map(|t| measure(&t.spans, t.service, facts))
                .collect();
            let marks: Vec<Vec<Mark>> = {
                // A panic elsewhere while holding the lock must not stop the pipeline.
                let mut p = state.lock().unwrap_or_else(|e| e.into_inner());
                measures.into_iter().map(|m| p.decide(m, now).1).collect()
            };
            for (t, m) in traces.iter_mut().zip(marks) {
                mark(&mut t.spans, m);
            }
        });
    }

    fn share(&self) -> Option<Box<dyn Processor>> {
        Some(Box::new(AnomalyShard {
            state: self.state.clone(),
            names: Names::default(),
        }))
    }
}

#[cfg(test)]
mod tests;
