//! The `trace_assembly` processor (mode `hold`): spans wait, grouped by trace id, until the
//! trace's root has arrived and `wait_after_root` has passed, or `max_trace_age` after the first
//! span; then the whole trace is analyzed and exported together. Bounded: at most `max_traces`
//! traces and `max_spans_per_trace` spans each; what does not fit is analyzed as partial and
//! exported, never dropped. A span of a trace already flushed is exported at once and counted.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde::{Deserialize, Serialize};

pub mod agents;
pub mod critical_path;
mod events;
pub mod patterns;
pub mod summary;

pub use events::AssemblyCounters;
use events::{HeldBytesOverLimit, LateSpan, MemoryFlush, TraceFlushed, TraceHeld};

use crate::config::{Problems, Validate, duration};
use crate::processor::Processor;
use crate::signal::Batch;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceAssemblyConfig {
    /// `hold` (default): export each trace whole, after analysis.
    #[serde(default)]
    pub mode: Mode,
    /// How long to wait for late children after the root span arrived (default 2s).
    #[serde(default = "default_wait_after_root", with = "duration")]
    pub wait_after_root: Duration,
    /// The longest a trace is held, from its first span (default 30s).
    #[serde(default = "default_max_trace_age", with = "duration")]
    pub max_trace_age: Duration,
    /// Traces held at once (default 100,000); past it the oldest is flushed as partial.
    #[serde(default = "default_max_traces")]
    pub max_traces: usize,
    /// Spans held per trace (default 10,000); past it the trace is flushed as partial.
    #[serde(default = "default_max_spans")]
    pub max_spans_per_trace: usize,
    /// The spans held, in MiB of their OTLP encoding (default 16, shared out among the
    /// pipeline's shards; in memory they take about three to five times that); past it the
    /// oldest traces are flushed as partial (counted).
    #[serde(default = "default_max_held_mib")]
    pub max_held_mib: u64,
    /// A stage owning at least this share of the critical path is the trace's bottleneck
    /// (default 0.4).
    #[serde(default = "default_min_share")]
    pub min_share: f64,
    /// Thresholds of the patterns reported as rag.finding events.
    #[serde(default)]
    pub patterns: patterns::PatternsConfig,
}

fn default_min_share() -> f64 {
    0.4
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Spans wait and leave with their trace, analysis written on them.
    #[default]
    Hold,
    /// Spans leave at once; the trace's findings follow on a synthetic `ragwatch.analysis`
    /// span, a child of the root.
    Stream,
}

fn default_wait_after_root() -> Duration {
    Duration::from_secs(2)
}
fn default_max_trace_age() -> Duration {
    Duration::from_secs(30)
}
fn default_max_traces() -> usize {
    100_000
}
fn default_max_spans() -> usize {
    10_000
}
fn default_max_held_mib() -> u64 {
    16
}

impl Default for TraceAssemblyConfig {
    fn default() -> Self {
        TraceAssemblyConfig {
            mode: Mode::Hold,
            wait_after_root: default_wait_after_root(),
            max_trace_age: default_max_trace_age(),
            max_traces: default_max_traces(),
            max_spans_per_trace: default_max_spans(),
            max_held_mib: default_max_held_mib(),
            min_share: default_min_share(),
            patterns: Default::default(),
        }
    }
}

impl Validate for TraceAssemblyConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.max_trace_age.is_zero() {
            problems.push(
                &format!("{path}.max_trace_age"),
                "must be greater than zero",
            );
        }
        if self.wait_after_root > self.max_trace_age {
            problems.push(
                &format!("{path}.wait_after_root"),
                "must not exceed max_trace_age",
            );
        }
        if self.max_traces == 0 {
            problems.push(&format!("{path}.max_traces"), "must be greater than zero");
        }
        if !(0.0..=1.0).contains(&self.min_share) {
            problems.push(&format!("{path}.min_share"), "must be between 0 and 1");
        }
        self.patterns
            .validate(&format!("{path}.patterns"), problems);
        if self.max_held_mib == 0 {
            problems.push(&format!("{path}.max_held_mib"), "must be greater than zero");
        }
        if self.max_spans_per_trace == 0 {
            problems.push(
                &format!("{path}.max_spans_per_trace"),
                "must be greater than zero",
            );
        }
    }
}

/// The resource (or scope) a span came with, shared by every span of one request.
type Origin<T> = Arc<(Option<T>, String)>;

#[derive(Clone)]
struct HeldSpan {
    resource: Origin<Resource>,
    scope: Origin<InstrumentationScope>,
    span: Span,
}

/// One trace as it is flushed: its spans with their resource and scope.
pub struct AssembledTrace {
    pub trace_id: [u8; 16],
    pub spans: Vec<Span>,
    /// Per span: index into `origins`.
    origin: Vec<usize>,
    origins: Vec<(Origin<Resource>, Origin<InstrumentationScope>)>,
    /// Whether the root span (a span without a parent) is present.
    pub has_root: bool,
    /// Why it was flushed.
    pub reason: FlushReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// The root arrived and `wait_after_root` passed.
    Complete,
    /// `max_trace_age` passed.
    Age,
    /// `max_traces` or `max_held_mib` was reached and this was the oldest.
    Evicted,
    /// `max_spans_per_trace` was reached.
    TooManySpans,
    /// ragwatch is shutting down.
    Shutdown,
    /// The memory limiter's soft limit was crossed.
    Memory,
}

impl AssembledTrace {
    /// The service.name of span `i`'s resource.
    pub fn service(&self, i: usize) -> Option<&str> {
        let (res, _) = self.origins.get(*self.origin.get(i)?)?;
        crate::attributes::service_name(&res.0.as_ref()?.attributes)
    }
}

/// Analysis of a whole trace, run at flush time; writes onto the trace's spans.
pub trait TraceAnalyzer: Send {
    fn analyze(&mut self, trace: &mut AssembledTrace, now: Instant);
}

struct Held {
    first_seen: Instant,
    deadline: Instant,
    has_root: bool,
    spans: Vec<HeldSpan>,
    /// The lowest pipeline-log mark of the spans held (see `pipeline::storage`).
    mark: Option<u64>,
    /// The spans' encoded size.
    bytes: usize,
}

pub struct TraceAssembly {
    config: TraceAssemblyConfig,
    traces: HashMap<[u8; 16], Held>,
    /// (deadline, trace id): the next traces due.
    due: BTreeSet<(Instant, [u8; 16])>,
    /// (first seen, trace id), oldest first; entries of flushed traces are skipped lazily.
    age: VecDeque<(Instant, [u8; 16])>,
    /// Recently flushed trace ids, for recognising late spans (bounded).
    flushed: HashMap<[u8; 16], ()>,
    flushed_order: VecDeque<[u8; 16]>,
    analyzers: Vec<Box<dyn TraceAnalyzer>>,
    counters: AssemblyCounters,
    memory: Option<(std::sync::Arc<crate::memory::MemoryLimiter>, u64)>,
    /// Flushing early for the memory limiter (for one log line per episode).
    memory_flushing: bool,
    /// The pipeline-log mark of the batch being taken, and the held traces' marks (a multiset).
    input_mark: Option<u64>,
    marks: std::collections::BTreeMap<u64, usize>,
    /// The encoded size of every span held, against `max_held` (this shard's share of
    /// `max_held_mib`).
    held_bytes: usize,
    max_held: usize,
    /// Flushing early for `max_held_mib` (for one log line per episode).
    bytes_flushing: bool,
}

impl TraceAssembly {
    pub fn new(
        config: TraceAssemblyConfig,
        analyzers: Vec<Box<dyn TraceAnalyzer>>,
        counters: AssemblyCounters,
    ) -> Self {
        TraceAssembly {
            traces: HashMap::new(),
            due: BTreeSet::new(),
            age: VecDeque::new(),
            flushed: HashMap::new(),
            flushed_order: VecDeque::new(),
            analyzers,
            counters,
            memory: None,
            memory_flushing: false,
            input_mark: None,
            marks: Default::default(),
            held_bytes: 0,
            max_held: usize::try_from(config.max_held_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            bytes_flushing: false,
            config,
        }
    }

    /// This assembler is one of `shards` copies of the pipeline's: it holds its share of
    /// `max_held_mib`.
    pub fn one_of(mut self, shards: usize) -> Self {
        self.max_held = usize::try_from(self.config.max_held_mib.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX)
            / shards.max(1);
        self
    }

    fn unmark(&mut self, mark: Option<u64>) {
        if let Some(m) = mark
            && let Some(n) = self.marks.get_mut(&m)
        {
            *n -= 1;
            if *n == 0 {
                self.marks.remove(&m);
            }
        }
    }

    /// While the memory limiter finds memory above its soft limit, flush held traces early:
    /// oldest first, a portion each tick.
    pub fn with_memory_limiter(mut self, m: std::sync::Arc<crate::memory::MemoryLimiter>) -> Self {
        let g = m.flush_generation();
        self.memory = Some((m, g));
        self
    }

    pub fn traces_held(&self) -> usize {
        self.traces.len()
    }

    fn remember_flushed(&mut self, id: [u8; 16]) {
        if self.flushed.insert(id, ()).is_none() {
            self.flushed_order.push_back(id);
        }
        // Remember as many flushed ids as traces may be held.
        while self.flushed_order.len() > self.config.max_traces {
            if let Some(old) = self.flushed_order.pop_front() {
                self.flushed.remove(&old);
            }
        }
    }

    fn flush(
        &mut self,
        id: [u8; 16],
        reason: FlushReason,
        now: Instant,
        out: &mut Vec<AssembledTrace>,
    ) {
        let Some(held) = self.traces.remove(&id) else {
            return;
        };
        self.unmark(held.mark);
        self.held_bytes = self.held_bytes.saturating_sub(held.bytes);
        self.due.remove(&(held.deadline, id));
        TraceFlushed {
            evicted: reason == FlushReason::Evicted,
        }
        .emit(&self.counters);
        self.remember_flushed(id);
        let mut origins: Vec<(Origin<Resource>, Origin<InstrumentationScope>)> = Vec::new();
        let mut origin = Vec::with_capacity(held.spans.len());
        let mut spans = Vec::with_capacity(held.spans.len());
        for h in held.spans {
            let idx = match origins
                .iter()
                .position(|(r, s)| same(r, &h.resource) && same(s, &h.scope))
            {
                Some(i) => i,
                None => {
                    origins.push((h.resource, h.scope));
                    origins.len() - 1
                }
            };
            origin.push(idx);
            spans.push(h.span);
        }
        let mut t = AssembledTrace {
            trace_id: id,
            spans,
            origin,
            origins,
            has_root: held.has_root,
            reason,
        };
        // A trace analysed by a ragwatch before this one (chained) keeps that analysis: its
        // root carries the summary, and analysing again would add every finding twice.
        let analysed = t.spans.iter().any(|s| {
            s.parent_span_id.is_empty()
                && s.attributes
                    .iter()
                    .any(|kv| kv.key == crate::names::attrs::TRACE_DURATION_MS)
        });
        if !analysed {
            for a in &mut self.analyzers {
                a.analyze(&mut t, now);
            }
        }
        out.push(t);
    }

    fn take(
        &mut self,
        batch: ExportTraceServiceRequest,
        now: Instant,
        flushed: &mut Vec<AssembledTrace>,
        late: &mut Vec<HeldSpan>,
    ) {
        for rs in batch.resource_spans {
            let resource: Origin<Resource> = Arc::new((rs.resource, rs.schema_url));
            for ss in rs.scope_spans {
                let scope: Origin<InstrumentationScope> = Arc::new((ss.scope, ss.schema_url));
                for span in ss.spans {
                    let h = HeldSpan {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        span,
                    };
                    if self.config.mode == Mode::Stream {
                        // The span leaves now; a copy waits for the analysis.
                        late.push(h.clone());
                        self.hold(h, now, flushed, &mut Vec::new());
                    } else {
                        self.hold(h, now, flushed, late);
                    }
                }
            }
        }
    }

    fn hold(
        &mut self,
        h: HeldSpan,
        now: Instant,
        flushed: &mut Vec<AssembledTrace>,
        late: &mut Vec<HeldSpan>,
    ) {
        let Ok(id) = <[u8; 16]>::try_from(h.span.trace_id.as_slice()) else {
            // Receivers reject such spans; pass one on rather than lose it.
            late.push(h);
            return;
        };
        if !self.traces.contains_key(&id) {
            if self.flushed.contains_key(&id) {
                LateSpan.emit(&self.counters);
                late.push(h);
                return;
            }
            while self.traces.len() >= self.config.max_traces {
                let Some((_, oldest)) = self.age.pop_front() else {
                    break;
                };
                if self.traces.contains_key(&oldest) {
                    self.flush(oldest, FlushReason::Evicted, now, flushed);
                }
            }
            let deadline = now + self.config.max_trace_age;
            self.traces.insert(
                id,
                Held {
                    first_seen: now,
                    deadline,
                    has_root: false,
                    spans: Vec::new(),
                    mark: None,
                    bytes: 0,
                },
            );
            self.due.insert((deadline, id));
            self.age.push_back((now, id));
            TraceHeld.emit(&self.counters);
        }
        let is_root = h.span.parent_span_id.is_empty();
        let size = prost::Message::encoded_len(&h.span);
        let Some(held) = self.traces.get_mut(&id) else {
            return;
        };
        held.spans.push(h);
        held.bytes += size;
        self.held_bytes += size;
        // In stream mode the spans have left already: what is held is a copy for the analysis.
        if self.config.mode == Mode::Hold
            && let Some(m) = self.input_mark
            && held.mark.is_none_or(|h| m < h)
        {
            let old = held.mark.replace(m);
            *self.marks.entry(m).or_insert(0) += 1;
            self.unmark(old);
        }
        let Some(held) = self.traces.get_mut(&id) else {
            return;
        };
        let full = held.spans.len() >= self.config.max_spans_per_trace;
        if is_root && !held.has_root {
            held.has_root = true;
            let sooner = (now + self.config.wait_after_root)
                .min(held.first_seen + self.config.max_trace_age);
            if sooner < held.deadline {
                self.due.remove(&(held.deadline, id));
                held.deadline = sooner;
                self.due.insert((sooner, id));
            }
        }
        if full {
            self.flush(id, FlushReason::TooManySpans, now, flushed);
        }
        self.bound_bytes(now, flushed);
        // Drop stale entries of the age queue now and then, so it stays bounded.
        while let Some((_, front)) = self.age.front() {
            if self.traces.contains_key(front) {
                break;
            }
            self.age.pop_front();
        }
    }

    /// Over this shard's share of `max_held_mib`: flush the oldest traces until under it,
    /// counted as evictions. One log line per episode: it ends once a tick finds the assembler
    /// at most 3/4 full.
    fn bound_bytes(&mut self, now: Instant, flushed: &mut Vec<AssembledTrace>) {
        let max = self.max_held;
        if self.held_bytes <= max {
            return;
        }
        if !self.bytes_flushing {
            self.bytes_flushing = true;
            HeldBytesOverLimit {
                held_bytes: self.held_bytes,
                max_held_mib: self.config.max_held_mib,
                share_bytes: self.max_held,
                traces_held: self.traces.len(),
            }
            .emit();
        }
        while self.held_bytes > max {
            let Some((_, oldest)) = self.age.pop_front() else {
                break;
            };
            if self.traces.contains_key(&oldest) {
                self.flush(oldest, FlushReason::Evicted, now, flushed);
            }
        }
    }

    fn due_now(&mut self, now: Instant, out: &mut Vec<AssembledTrace>) {
        while let Some(&(deadline, id)) = self.due.first() {
            if deadline > now {
                break;
            }
            let reason = match self.traces.get(&id) {
                Some(h) if h.has_root => FlushReason::Complete,
                _ => FlushReason::Age,
            };
            self.flush(id, reason, now, out);
        }
    }
}

/// The same origin: the same request's (cheap), or an equal one from another request.
fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// The synthetic `ragwatch.analysis` span of a trace in stream mode: a child of the root carrying
/// the root's `rag.trace.*` attributes and every finding of the trace as events.
fn analysis_span(t: &AssembledTrace) -> Option<HeldSpan> {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let root = t.spans.iter().position(|s| s.parent_span_id.is_empty())?;
    let (resource, scope) = t.origins.get(*t.origin.get(root)?)?.clone();
    let r = &t.spans[root];
    let attributes = r
        .attributes
        .iter()
        .filter(|kv| kv.key.starts_with("rag.trace."))
        .cloned()
        .collect();
    let events = t
        .spans
        .iter()
        .flat_map(|s| &s.events)
        .filter(|e| e.name == crate::names::attrs::FINDING_EVENT)
        .cloned()
        .collect();
    let mut span_id = [0u8; 8];
    while span_id == [0u8; 8] {
        rand::fill(&mut span_id);
    }
    Some(HeldSpan {
        resource,
        scope,
        span: Span {
            trace_id: r.trace_id.clone(),
            span_id: span_id.to_vec(),
            parent_span_id: r.span_id.clone(),
            name: crate::names::attrs::ANALYSIS_SPAN.into(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: r.start_time_unix_nano,
            end_time_unix_nano: r.end_time_unix_nano,
            attributes,
            events,
            ..Default::default()
        },
    })
}

/// Rebuild export requests from flushed traces and late spans, grouping spans by their original
/// resource and scope. In stream mode a flushed trace becomes its analysis span only.
fn to_requests(mode: Mode, traces: Vec<AssembledTrace>, mut late: Vec<HeldSpan>) -> Vec<Batch> {
    let mut out = Vec::new();
    if mode == Mode::Stream {
        late.extend(traces.iter().filter_map(analysis_span));
        if !late.is_empty() {
            out.push(Batch::Traces(build(
                late.into_iter()
                    .map(|h| (h.resource, h.scope, vec![h.span])),
            )));
        }
        return out;
    }
    // Traces flushed together leave in as few requests as possible (never splitting one), so a
    // burst of small traces does not become a burst of tiny requests.
    let mut chunk: Vec<(Origin<Resource>, Origin<InstrumentationScope>, Vec<Span>)> = Vec::new();
    let mut chunk_spans = 0;
    for t in traces {
        let mut groups: Vec<ScopeGroup> = Vec::new();
        let origins = t.origins;
        chunk_spans += t.spans.len();
        for (span, o) in t.spans.into_iter().zip(t.origin) {
            if let Some(g) = groups.iter_mut().find(|g| g.origin == o) {
                g.spans.push(span);
            } else {
                groups.push(ScopeGroup {
                    origin: o,
                    spans: vec![span],
                });
            }
        }
        chunk.extend(groups.into_iter().filter_map(|g| {
            let (r, s) = origins.get(g.origin)?;
            Some((r.clone(), s.clone(), g.spans))
        }));
        if chunk_spans >= MAX_SPANS_PER_REQUEST {
            out.push(Batch::Traces(build(std::mem::take(&mut chunk).into_iter())));
            chunk_spans = 0;
        }
    }
    if !chunk.is_empty() {
        out.push(Batch::Traces(build(chunk.into_iter())));
    }
    if !late.is_empty() {
        out.push(Batch::Traces(build(
            late.into_iter()
                .map(|h| (h.resource, h.scope, vec![h.span])),
        )));
    }
    out
}

/// Flushed traces are combined into requests of about this many spans.
const MAX_SPANS_PER_REQUEST: usize = 4096;
/// Spans flushed per tick while memory is above the soft limit.
const MEMORY_FLUSH_SPANS: usize = 2 * MAX_SPANS_PER_REQUEST;

struct ScopeGroup {
    origin: usize,
    spans: Vec<Span>,
}

fn build(
    groups: impl Iterator<Item = (Origin<Resource>, Origin<InstrumentationScope>, Vec<Span>)>,
) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::default();
    let mut resources: Vec<Origin<Resource>> = Vec::new();
    for (r, s, spans) in groups {
        let ri = match resources.iter().position(|x| same(x, &r)) {
            Some(i) => i,
            None => {
                resources.push(r.clone());
                req.resource_spans.push(ResourceSpans {
                    resource: r.0.clone(),
                    schema_url: r.1.clone(),
                    scope_spans: Vec::new(),
                });
                resources.len() - 1
            }
        };
        let Some(rs) = req.resource_spans.get_mut(ri) else {
            continue;
        };
        match rs
            .scope_spans
            .iter_mut()
            .find(|ss| ss.scope == s.0 && ss.schema_url == s.1)
        {
            Some(ss) => ss.spans.extend(spans),
            None => rs.scope_spans.push(ScopeSpans {
                scope: s.0.clone(),
                schema_url: s.1.clone(),
                spans,
            }),
        }
    }
    req
}

impl Processor for TraceAssembly {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        let Batch::Traces(req) = batch else {
            out.push(batch);
            return;
        };
        let (mut flushed, mut late) = (Vec::new(), Vec::new());
        self.take(req, now, &mut flushed, &mut late);
        out.extend(to_requests(self.config.mode, flushed, late));
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        let mut flushed = Vec::new();
        let pressed = match &mut self.memory {
            Some((m, seen)) => {
                let g = m.flush_generation();
                let pressed = g != *seen || m.refusing();
                *seen = g;
                pressed
            }
            None => false,
        };
        if pressed {
            // Oldest first, a portion a tick: flushing everything at once would need about as
            // much memory again for the analysis and the encoding, all at the same moment.
            let (mut spans, mut traces) = (0, 0);
            while spans < MEMORY_FLUSH_SPANS {
                let Some((_, id)) = self.age.pop_front() else {
                    break;
                };
                let Some(held) = self.traces.get(&id) else {
                    continue;
                };
                spans += held.spans.len();
                traces += 1;
                self.flush(id, FlushReason::Memory, now, &mut flushed);
            }
            if traces > 0 && !self.memory_flushing {
                MemoryFlush {
                    traces_held: self.traces.len() + traces,
                }
                .emit();
            }
            self.memory_flushing = traces > 0;
        } else {
            self.memory_flushing = false;
        }
        self.due_now(now, &mut flushed);
        if self.bytes_flushing && self.held_bytes <= self.max_held / 4 * 3 {
            self.bytes_flushing = false;
        }
        // After a burst, give memory back rather than keep the peak's tables for ever.
        if self.traces.capacity() > 1024 && self.traces.len() < self.traces.capacity() / 4 {
            self.traces.shrink_to(self.traces.len() * 2);
            self.age.shrink_to(self.traces.len() * 2);
        }
        out.extend(to_requests(self.config.mode, flushed, Vec::new()));
    }

    fn on_shutdown(&mut self, out: &mut Vec<Batch>) {
        let now = Instant::now();
        let ids: Vec<[u8; 16]> = self.traces.keys().copied().collect();
        let mut flushed = Vec::new();
        for id in ids {
            self.flush(id, FlushReason::Shutdown, now, &mut flushed);
        }
        out.extend(to_requests(self.config.mode, flushed, Vec::new()));
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(
            Duration::from_millis(100)
                .min(self.config.wait_after_root.max(Duration::from_millis(10))),
        )
    }

    fn input_mark(&mut self, mark: Option<u64>) {
        self.input_mark = mark;
    }

    fn held_mark(&self) -> Option<u64> {
        self.marks.keys().next().copied()
    }
}

#[cfg(test)]
mod tests;
