//! The `tail_sampling` processor: keep every trace that matters, sample the rest, count
//! everything.
//!
//! Placed after the analysis in the traces pipeline, it decides on whole, analysed traces: the
//! Collector's policy types and decision rule (any drop → dropped; else any sample → kept), and
//! policies that read ragwatch's analysis (cost, quality, anomalies, findings, bottleneck, SLO
//! burn, unpriced models, agent outcomes). Every metric is derived before it, from all traffic,
//! so sampling changes what is exported, never the numbers.
//!
//! Behind `trace_assembly` in hold mode each trace arrives whole and is decided at once; else its
//! spans wait `decision_wait` after the first. A span arriving after its trace's decision
//! follows it (a bounded cache of decisions). The root of a kept trace says which policy kept it
//! and how many traces it stands for; a trace kept at random also carries the OpenTelemetry
//! sampling threshold in its `tracestate`.

pub mod config;
pub mod policy;
pub mod tracestate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use config::TailSamplingConfig;
use policy::{Context, Decision, Policy, SpanRef, TraceRef, Weight};

use crate::config::Problems;
use crate::names::attrs as a;
use crate::names::metrics as m;
use crate::processor::Processor;
use crate::processor::slo::burning::{Burning, BurningSlo};
use crate::signal::Batch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SamplingLabels {
    pub policy: String,
    pub decision: String,
}

/// The `policy` label of a trace no policy kept.
pub const NO_POLICY: &str = "(none)";

/// Self-metrics of tail sampling, one set per service.
#[derive(Clone, Default)]
pub struct SamplingCounters {
    pub traces: Family<SamplingLabels, Counter>,
    pub spans_dropped: Counter,
    pub cache_evictions: Counter,
    pub early_decisions: Counter,
    pub late_spans: Counter,
}

impl crate::telemetry::ComponentMetrics for SamplingCounters {
    fn register(&self, r: &mut Registry) {
        r.register(
            m::SAMPLING_TRACES,
            "Traces decided by tail sampling, by decision (kept, dropped) and the policy that kept (or dropped) them",
            self.traces.clone(),
        );
        r.register(
            m::SAMPLING_SPANS_DROPPED,
            "Spans tail sampling dropped",
            self.spans_dropped.clone(),
        );
        r.register(
            m::SAMPLING_DECISION_CACHE_EVICTIONS,
            "Decisions forgotten because the decision cache was full (a later span of such a trace is decided on its own)",
            self.cache_evictions.clone(),
        );
        r.register(
            m::SAMPLING_EARLY_DECISIONS,
            "Traces decided before decision_wait because num_traces were waiting or the trace was too large",
            self.early_decisions.clone(),
        );
        r.register(
            m::SAMPLING_LATE_SPANS,
            "Spans that arrived after their trace's decision and followed it",
            self.late_spans.clone(),
        );
    }
}

/// Spans one waiting trace may hold; past it the trace is decided at once.
const MAX_HELD_SPANS: usize = 10_000;
/// Kept spans are sent on in requests of about this many spans.
const SPANS_PER_REQUEST: usize = 4096;

/// A trace's decision as remembered.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decided {
    keep: bool,
    policy: Option<usize>,
    /// The threshold to write in the tracestate.
    threshold: Option<u64>,
    adjusted: f64,
}

struct Fifo {
    map: HashMap<[u8; 16], Decided>,
    order: VecDeque<[u8; 16]>,
    cap: usize,
}

impl Fifo {
    fn new(cap: usize) -> Fifo {
        Fifo {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Remember; true when the oldest had to be forgotten.
    fn insert(&mut self, id: [u8; 16], d: Decided) -> bool {
        if self.cap == 0 {
            return false;
        }
        if self.map.insert(id, d).is_some() {
            return false;
        }
        self.order.push_back(id);
        let mut evicted = false;
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
                evicted = true;
            }
        }
        evicted
    }
}

type Origin<T> = Arc<(Option<T>, String)>;
/// A span's place in a request: resource, scope and span index.
type Position = (usize, usize, usize);

struct Held {
    resource: Origin<Resource>,
    scope: Origin<InstrumentationScope>,
    span: Span,
}

struct Pending {
    due: Instant,
    spans: Vec<Held>,
    /// With a pipeline log: the lowest mark of the requests its spans came from.
    mark: Option<u64>,
}

/// The runtime of one `tail_sampling` processor (one per shard of its pipeline).
pub struct TailSampling {
    config: Arc<TailSamplingConfig>,
    policies: Vec<Policy>,
    /// An earlier stage hands on whole traces (trace_assembly, hold mode).
    whole_traces: bool,
    pending: HashMap<[u8; 16], Pending>,
    order: VecDeque<(Instant, [u8; 16])>,
    /// With a pipeline log: the mark of the batch being taken, and how many waiting traces hold
    /// each mark, so the log releases no record whose spans wait here.
    input_mark: Option<u64>,
    marks: std::collections::BTreeMap<u64, usize>,
    kept: Fifo,
    dropped: Fifo,
    burning: Option<Arc<Burning>>,
    burning_seen: (u64, Arc<HashSet<BurningSlo>>),
    counters: SamplingCounters,
    /// Per policy: traces it kept, traces it dropped (a `drop` policy).
    per_policy: Vec<(Counter, Counter)>,
    dropped_by_none: Counter,
}

impl TailSampling {
    pub fn new(
        config: TailSamplingConfig,
        whole_traces: bool,
        counters: SamplingCounters,
    ) -> Result<TailSampling, String> {
        let policies = config
            .policies
            .iter()
            .map(Policy::build)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_parts(
            Arc::new(config),
            policies,
            whole_traces,
            counters,
            None,
        ))
    }

    fn from_parts(
        config: Arc<TailSamplingConfig>,
        policies: Vec<Policy>,
        whole_traces: bool,
        counters: SamplingCounters,
        burning: Option<Arc<Burning>>,
    ) -> TailSampling {
        let counter = |policy: &str, decision: &str| {
            counters
                .traces
                .get_or_create(&SamplingLabels {
                    policy: policy.to_string(),
                    decision: decision.to_string(),
                })
                .clone()
        };
        // Only a `drop` policy drops: the others get no `dropped` series.
        let per_policy = policies
            .iter()
            .zip(&config.policies)
            .map(|(p, c)| {
                let dropped = if c.kind == Some(config::PolicyType::Drop) {
                    counter(&p.name, "dropped")
                } else {
                    Counter::default()
                };
                (counter(&p.name, "kept"), dropped)
            })
            .collect();
        let dropped_by_none = counter(NO_POLICY, "dropped");
        TailSampling {
            kept: Fifo::new(config.decision_cache.sampled_cache_size),
            dropped: Fifo::new(config.decision_cache.non_sampled_cache_size),
            config,
            policies,
            whole_traces,
            pending: HashMap::new(),
            order: VecDeque::new(),
            input_mark: None,
            marks: std::collections::BTreeMap::new(),
            burning,
            burning_seen: (0, Arc::new(HashSet::new())),
            counters,
            per_policy,
            dropped_by_none,
        }
    }

    /// Read which SLOs burn from `burning` (the `slo` processors write it).
    pub fn with_burning(mut self, burning: Arc<Burning>) -> Self {
        self.burning = Some(burning);
        self
    }

    /// Traces waiting for their decision.
    pub fn traces_waiting(&self) -> usize {
        self.pending.len()
    }

    fn refresh_burning(&mut self) {
        if let Some(b) = &self.burning {
            let v = b.version();
            if v != self.burning_seen.0 {
                self.burning_seen = (v, b.snapshot());
            }
        }
    }

    fn cached(&self, id: &[u8; 16]) -> Option<Decided> {
        self.kept
            .map
            .get(id)
            .or_else(|| self.dropped.map.get(id))
            .copied()
    }

    /// Decide trace `t` and remember and count the decision.
    fn decide(&mut self, id: [u8; 16], t: &TraceRef<'_>, now: Instant) -> Decided {
        let burning = self.burning_seen.1.clone();
        let cx = Context {
            now,
            burning: &burning,
        };
        let d = policy::decide(&self.policies, t, &cx);
        let decided = resolve(d, t);
        match (
            decided.keep,
            decided.policy.and_then(|i| self.per_policy.get(i)),
        ) {
            (true, Some((kept, _))) => kept.inc(),
            (false, Some((_, dropped))) => dropped.inc(),
            (_, None) => self.dropped_by_none.inc(),
        };
        let evicted = if decided.keep {
            self.kept.insert(id, decided)
        } else {
            self.dropped.insert(id, decided)
        };
        if evicted {
            self.counters.cache_evictions.inc();
        }
        decided
    }

    /// Write the decision on a kept span.
    fn annotate(&self, span: &mut Span, d: &Decided) {
        if span.parent_span_id.is_empty() {
            let name = d
                .policy
                .and_then(|i| self.policies.get(i))
                .map_or(NO_POLICY, |p| p.name.as_str());
            crate::attributes::put(
                &mut span.attributes,
                a::SAMPLING_POLICY,
                Value::StringValue(name.to_string()),
            );
            crate::attributes::put(
                &mut span.attributes,
                a::SAMPLING_ADJUSTED_COUNT,
                Value::DoubleValue(d.adjusted),
            );
        }
        if let Some(t) = d.threshold
            && let Some(ts) = tracestate::with_threshold(&span.trace_state, t)
        {
            span.trace_state = ts;
        }
    }

    fn take(&mut self, mut req: ExportTraceServiceRequest, now: Instant, out: &mut Vec<Batch>) {
        // Each trace of the request, in order of first appearance, with its spans' positions.
        let mut index: HashMap<[u8; 16], usize> = HashMap::new();
        let mut traces: Vec<([u8; 16], Vec<Position>)> = Vec::new();
        for (ri, rs) in req.resource_spans.iter().enumerate() {
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for (xi, s) in ss.spans.iter().enumerate() {
                    let Ok(id) = <[u8; 16]>::try_from(s.trace_id.as_slice()) else {
                        continue;
                    };
                    let i = *index.entry(id).or_insert_with(|| {
                        traces.push((id, Vec::new()));
                        traces.len() - 1
                    });
                    traces[i].1.push((ri, si, xi));
                }
            }
        }
        // Decide what can be decided now; None: wait.
        let mut decided: HashMap<[u8; 16], Option<Decided>> = HashMap::new();
        for (id, positions) in &traces {
            if let Some(d) = self.cached(id) {
                self.counters.late_spans.inc_by(positions.len() as u64);
                decided.insert(*id, Some(d));
            } else if self.whole_traces && !self.pending.contains_key(id) {
                let t = trace_at(&req, id, positions);
                let d = self.decide(*id, &t, now);
                decided.insert(*id, Some(d));
            } else {
                decided.insert(*id, None);
            }
        }
        let mut held: Vec<([u8; 16], Held)> = Vec::new();
        let mut dropped = 0u64;
        for rs in &mut req.resource_spans {
            let mut resource: Option<Origin<Resource>> = None;
            for ss in &mut rs.scope_spans {
                let mut scope: Option<Origin<InstrumentationScope>> = None;
                ss.spans.retain_mut(|s| {
                    let Ok(id) = <[u8; 16]>::try_from(s.trace_id.as_slice()) else {
                        // Receivers refuse such spans; pass one on rather than lose it.
                        return true;
                    };
                    match decided.get(&id) {
                        Some(Some(d)) if d.keep => {
                            self.annotate(s, d);
                            true
                        }
                        Some(Some(_)) => {
                            dropped += 1;
                            false
                        }
                        _ => {
                            let r = resource
                                .get_or_insert_with(|| {
                                    Arc::new((rs.resource.clone(), rs.schema_url.clone()))
                                })
                                .clone();
                            let sc = scope
                                .get_or_insert_with(|| {
                                    Arc::new((ss.scope.clone(), ss.schema_url.clone()))
                                })
                                .clone();
                            held.push((
                                id,
                                Held {
                                    resource: r,
                                    scope: sc,
                                    span: std::mem::take(s),
                                },
                            ));
                            false
                        }
                    }
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        self.counters.spans_dropped.inc_by(dropped);
        if !req.resource_spans.is_empty() {
            out.push(Batch::Traces(req));
        }
        let mut kept = Vec::new();
        for (id, h) in held {
            self.hold(id, h, now, &mut kept);
        }
        emit(kept, out);
    }

    fn hold(&mut self, id: [u8; 16], h: Held, now: Instant, kept: &mut Vec<Held>) {
        if !self.pending.contains_key(&id) {
            while self.pending.len() >= self.config.num_traces {
                let Some((_, oldest)) = self.order.pop_front() else {
                    break;
                };
                if self.pending.contains_key(&oldest) {
                    self.counters.early_decisions.inc();
                    self.decide_pending(oldest, now, kept);
                }
            }
            let due = now + self.config.decision_wait;
            self.pending.insert(
                id,
                Pending {
                    due,
                    spans: Vec::new(),
                    mark: None,
                },
            );
            self.order.push_back((due, id));
        }
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.spans.push(h);
        if let Some(m) = self.input_mark
            && p.mark.is_none_or(|old| m < old)
        {
            let old = p.mark.replace(m);
            *self.marks.entry(m).or_insert(0) += 1;
            unmark(&mut self.marks, old);
        }
        if p.spans.len() >= MAX_HELD_SPANS {
            self.counters.early_decisions.inc();
            self.decide_pending(id, now, kept);
        }
    }

    fn decide_pending(&mut self, id: [u8; 16], now: Instant, kept: &mut Vec<Held>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        unmark(&mut self.marks, p.mark);
        let d = {
            let t = TraceRef {
                trace_id: &id,
                spans: p
                    .spans
                    .iter()
                    .map(|h| {
                        let resource = h.resource.0.as_ref().map_or(&[][..], |r| &r.attributes);
                        SpanRef {
                            span: &h.span,
                            resource,
                            service: crate::attributes::service_name(resource)
                                .unwrap_or("unknown_service"),
                        }
                    })
                    .collect(),
            };
            self.decide(id, &t, now)
        };
        if d.keep {
            for mut h in p.spans {
                self.annotate(&mut h.span, &d);
                kept.push(h);
            }
        } else {
            self.counters.spans_dropped.inc_by(p.spans.len() as u64);
        }
    }

    fn due(&mut self, now: Instant, out: &mut Vec<Batch>) {
        let mut kept = Vec::new();
        while let Some(&(due, id)) = self.order.front() {
            if due > now {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.due <= now) {
                self.decide_pending(id, now, &mut kept);
            }
        }
        // After a burst, give memory back.
        if self.pending.capacity() > 1024 && self.pending.len() < self.pending.capacity() / 4 {
            self.pending.shrink_to(self.pending.len() * 2);
            self.order.shrink_to(self.order.len() * 2);
        }
        emit(kept, out);
    }

    /// A handle for another shard: the same policies (rate limits shared), its own waiting
    /// traces and decisions (a shard sees every span of its traces).
    fn sibling(&self) -> TailSampling {
        Self::from_parts(
            self.config.clone(),
            self.policies.clone(),
            self.whole_traces,
            self.counters.clone(),
            self.burning.clone(),
        )
    }
}

/// The decision with what the trace says of earlier sampling: a threshold already in its
/// tracestate (a head sampler's) multiplies what it stands for.
fn resolve(d: Decision, t: &TraceRef<'_>) -> Decided {
    let upstream = tracestate::threshold_in(t.tracestate());
    let before = upstream.map_or(1.0, tracestate::adjusted_count);
    let (threshold, adjusted) = match d.weight {
        Weight::Rule => (None, before),
        Weight::Threshold(th) => {
            let th = th.max(upstream.unwrap_or(0));
            (Some(th), tracestate::adjusted_count(th))
        }
        Weight::Count(w) => (None, w * before),
    };
    Decided {
        keep: d.keep,
        policy: d.policy,
        threshold: if d.keep { threshold } else { None },
        adjusted,
    }
}

/// The trace `id` of a request, from its spans' positions.
fn trace_at<'a>(
    req: &'a ExportTraceServiceRequest,
    id: &'a [u8; 16],
    positions: &[Position],
) -> TraceRef<'a> {
    let spans = positions
        .iter()
        .filter_map(|&(ri, si, xi)| {
            let rs = req.resource_spans.get(ri)?;
            let span = rs.scope_spans.get(si)?.spans.get(xi)?;
            let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
            Some(SpanRef {
                span,
                resource,
                service: crate::attributes::service_name(resource).unwrap_or("unknown_service"),
            })
        })
        .collect();
    TraceRef {
        trace_id: id,
        spans,
    }
}

fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Kept spans that waited, back into requests by resource and scope.
fn emit(kept: Vec<Held>, out: &mut Vec<Batch>) {
    let mut req = ExportTraceServiceRequest::default();
    let mut resources: Vec<Origin<Resource>> = Vec::new();
    let mut n = 0;
    for h in kept {
        let ri = match resources.iter().position(|r| same(r, &h.resource)) {
            Some(i) => i,
            None => {
                req.resource_spans.push(ResourceSpans {
                    resource: h.resource.0.clone(),
                    schema_url: h.resource.1.clone(),
                    scope_spans: Vec::new(),
                });
                resources.push(h.resource.clone());
                resources.len() - 1
            }
        };
        let Some(rs) = req.resource_spans.get_mut(ri) else {
            continue;
        };
        match rs
            .scope_spans
            .iter_mut()
            .find(|ss| ss.scope == h.scope.0 && ss.schema_url == h.scope.1)
        {
            Some(ss) => ss.spans.push(h.span),
            None => rs.scope_spans.push(ScopeSpans {
                scope: h.scope.0.clone(),
                schema_url: h.scope.1.clone(),
                spans: vec![h.span],
            }),
        }
        n += 1;
        if n >= SPANS_PER_REQUEST {
            out.push(Batch::Traces(std::mem::take(&mut req)));
            resources.clear();
            n = 0;
        }
    }
    if !req.resource_spans.is_empty() {
        out.push(Batch::Traces(req));
    }
}

impl Processor for TailSampling {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        let Batch::Traces(req) = batch else {
            out.push(batch);
            return;
        };
        self.refresh_burning();
        self.take(req, now, out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        if !self.pending.is_empty() {
            self.refresh_burning();
            self.due(now, out);
        }
    }

    fn on_shutdown(&mut self, out: &mut Vec<Batch>) {
        let now = Instant::now();
        self.refresh_burning();
        let mut kept = Vec::new();
        let mut ids: Vec<(Instant, [u8; 16])> =
            self.pending.iter().map(|(id, p)| (p.due, *id)).collect();
        ids.sort();
        for (_, id) in ids {
            self.decide_pending(id, now, &mut kept);
        }
        self.order.clear();
        emit(kept, out);
    }

    fn tick_interval(&self) -> Option<Duration> {
        (!self.whole_traces).then(|| Duration::from_millis(100).min(self.config.decision_wait))
    }

    fn share(&self) -> Option<Box<dyn Processor>> {
        Some(Box::new(self.sibling()))
    }

    fn input_mark(&mut self, mark: Option<u64>) {
        self.input_mark = mark;
    }

    fn held_mark(&self) -> Option<u64> {
        self.marks.keys().next().copied()
    }
}

/// One waiting trace fewer holds `mark`.
fn unmark(marks: &mut std::collections::BTreeMap<u64, usize>, mark: Option<u64>) {
    let Some(m) = mark else { return };
    if let Some(n) = marks.get_mut(&m) {
        *n -= 1;
        if *n == 0 {
            marks.remove(&m);
        }
    }
}

/// Stages whose numbers (derived metrics, SLOs, baselines, findings) need all traffic: in a
/// pipeline they come before `tail_sampling`.
const BEFORE_SAMPLING: [&str; 5] = ["genai", "trace_assembly", "quality", "anomaly", "slo"];

/// A stage that computes numbers placed after `tail_sampling` would see only the kept traces:
/// report it at the pipeline's key path.
pub(crate) fn check_placement(pipeline: &str, processors: &[String], problems: &mut Problems) {
    let Some(first) = processors
        .iter()
        .position(|p| crate::config::component_type(p) == "tail_sampling")
    else {
        return;
    };
    for (i, p) in processors.iter().enumerate().skip(first + 1) {
        if BEFORE_SAMPLING.contains(&crate::config::component_type(p)) {
            problems.push(
                &format!("{pipeline}.processors.{i}"),
                format!(
                    "`{p}` comes after tail_sampling `{}`: it would see only the kept traces, and \
                     the numbers it derives would change with sampling; put it before",
                    processors[first]
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
