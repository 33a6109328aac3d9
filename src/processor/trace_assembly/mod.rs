//! The `trace_assembly` processor (mode `hold`): spans wait, grouped by trace id, until the
//! trace's root has arrived and `wait_after_root` has passed, or `max_trace_age` after the first
//! span; then the whole trace is analyzed and exported together. Bounded: at most `max_traces`
//! traces and `max_spans_per_trace` spans each; what does not fit is analyzed as partial and
//! exported, never dropped. A span of a trace already flushed is exported at once and counted.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
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
use crate::genai::{Facts, SpanFacts};
use crate::processor::{Processor, WithFacts, dropping_facts};
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
type Origin<T> = Arc<Keyed<T>>;

/// A resource or scope with its schema URL, and a hash of both computed once per request, so
/// that the equal origins of spans from different requests are found by hash (and checked for
/// equality only on a match) instead of comparing every origin with every other.
struct Keyed<T> {
    value: Option<T>,
    schema_url: String,
    hash: u64,
}

impl<T: StructuralHash> Keyed<T> {
    fn new(value: Option<T>, schema_url: String) -> Origin<T> {
        // Keys random per process: a sender cannot pick origins that all collide.
        static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        let mut h = KEYS.get_or_init(std::hash::RandomState::new).build_hasher();
        match &value {
            Some(v) => {
                h.write_u8(1);
                v.structural_hash(&mut h);
            }
            None => h.write_u8(0),
        }
        schema_url.hash(&mut h);
        Arc::new(Keyed {
            value,
            schema_url,
            hash: h.finish(),
        })
    }
}

/// A hash agreeing with `PartialEq` (equal values hash alike; the prost types derive no `Hash`,
/// floats being in them): what makes two origins equal is hashed, counts of dropped attributes
/// and entity references are left to the equality check.
trait StructuralHash {
    fn structural_hash(&self, h: &mut impl Hasher);
}

impl StructuralHash for Resource {
    fn structural_hash(&self, h: &mut impl Hasher) {
        hash_attributes(&self.attributes, h);
    }
}

impl StructuralHash for InstrumentationScope {
    fn structural_hash(&self, h: &mut impl Hasher) {
        self.name.hash(h);
        self.version.hash(h);
        hash_attributes(&self.attributes, h);
    }
}

fn hash_attributes(attributes: &[KeyValue], h: &mut impl Hasher) {
    h.write_usize(attributes.len());
    for kv in attributes {
        kv.key.hash(h);
        match &kv.value {
            Some(v) => hash_any(v, h),
            None => h.write_u8(0),
        }
    }
}

fn hash_any(v: &AnyValue, h: &mut impl Hasher) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match &v.value {
        None => h.write_u8(0),
        Some(Value::StringValue(s)) => {
            h.write_u8(1);
            s.hash(h);
        }
        Some(Value::BoolValue(b)) => {
            h.write_u8(2);
            b.hash(h);
        }
        Some(Value::IntValue(i)) => {
            h.write_u8(3);
            i.hash(h);
        }
        Some(Value::DoubleValue(d)) => {
            h.write_u8(4);
            // 0.0 == -0.0 (and NaN equals nothing, so its bits may be anything).
            h.write_u64(if *d == 0.0 { 0 } else { d.to_bits() });
        }
        Some(Value::ArrayValue(a)) => {
            h.write_u8(5);
            h.write_usize(a.values.len());
            for x in &a.values {
                hash_any(x, h);
            }
        }
        Some(Value::KvlistValue(l)) => {
            h.write_u8(6);
            hash_attributes(&l.values, h);
        }
        Some(Value::BytesValue(b)) => {
            h.write_u8(7);
            b.hash(h);
        }
        Some(Value::StringValueStrindex(i)) => {
            h.write_u8(8);
            i.hash(h);
        }
    }
}

/// The same origin: the same request's (cheap), or an equal one from another request.
fn same<T: PartialEq>(a: &Origin<T>, b: &Origin<T>) -> bool {
    Arc::ptr_eq(a, b) || (a.hash == b.hash && a.value == b.value && a.schema_url == b.schema_url)
}

/// Up to this many distinct origins in a trace, they are compared by hash one after the other
/// (no table to build).
const FEW_ORIGINS: usize = 16;

/// Attributes the analyzers (and the quality stage after them) add to a root at most, about:
/// the summary, the time per stage on the path, the bottleneck, the quality signals.
const ROOT_ATTRIBUTES_ADDED: usize = 32;
/// Attributes they add to any other span: self time, the critical path's three, a bottleneck.
const SPAN_ATTRIBUTES_ADDED: usize = 6;

/// Two hashes as one (for a resource and scope pair).
fn pair_hash(a: u64, b: u64) -> u64 {
    a.rotate_left(29) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[derive(Clone)]
struct HeldSpan {
    resource: Origin<Resource>,
    scope: Origin<InstrumentationScope>,
    span: Span,
    /// The span's GenAI facts handed along by the stages before (genai), kept with it.
    facts: Option<SpanFacts>,
}

/// One trace as it is flushed: its spans with their resource and scope.
pub struct AssembledTrace {
    pub trace_id: [u8; 16],
    pub spans: Vec<Span>,
    /// Per span: index into `origins`.
    origin: Vec<usize>,
    origins: Vec<(Origin<Resource>, Origin<InstrumentationScope>)>,
    /// Per span: its facts, when they were handed along.
    facts: Vec<Option<SpanFacts>>,
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
        crate::attributes::service_name(&res.value.as_ref()?.attributes)
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
    /// Keyed by trace ids the senders choose: std's SipHash, seeded per map, keeps crafted
    /// ids from colliding (foldhash would be a little faster).
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
        // Distinct origins in order of first appearance, found by hash: comparing hashes while
        // there are few (most traces), through a hash table past that. The spans of one request
        // (one pair of `Arc`s) usually come one after the other.
        let mut origins: Vec<(Origin<Resource>, Origin<InstrumentationScope>)> = Vec::new();
        let mut index: HashTable<usize> = HashTable::new();
        let hash_of =
            |(r, s): &(Origin<Resource>, Origin<InstrumentationScope>)| pair_hash(r.hash, s.hash);
        let mut origin = Vec::with_capacity(held.spans.len());
        let mut spans = Vec::with_capacity(held.spans.len());
        let mut facts = Vec::with_capacity(held.spans.len());
        let mut previous: Option<usize> = None;
        for h in held.spans {
            let again = previous.filter(|&i| {
                origins
                    .get(i)
                    .is_some_and(|(r, s)| Arc::ptr_eq(r, &h.resource) && Arc::ptr_eq(s, &h.scope))
            });
            let idx = match again {
                Some(i) => i,
                None => {
                    let hash = pair_hash(h.resource.hash, h.scope.hash);
                    let equal = |(r, s): &(Origin<Resource>, Origin<InstrumentationScope>)| {
                        same(r, &h.resource) && same(s, &h.scope)
                    };
                    let found = if origins.len() < FEW_ORIGINS {
                        origins.iter().position(|o| hash_of(o) == hash && equal(o))
                    } else {
                        if index.is_empty() {
                            for (i, o) in origins.iter().enumerate() {
                                index.insert_unique(hash_of(o), i, |&j| {
                                    origins.get(j).map_or(0, hash_of)
                                });
                            }
                        }
                        index
                            .find(hash, |&i| origins.get(i).is_some_and(equal))
                            .copied()
                    };
                    match found {
                        Some(i) => i,
                        None => {
                            let i = origins.len();
                            origins.push((h.resource, h.scope));
                            if !index.is_empty() {
                                index
                                    .insert_unique(hash, i, |&j| origins.get(j).map_or(0, hash_of));
                            }
                            i
                        }
                    }
                }
            };
            previous = Some(idx);
            origin.push(idx);
            spans.push(h.span);
            facts.push(h.facts);
        }
        let mut t = AssembledTrace {
            trace_id: id,
            spans,
            origin,
            origins,
            facts,
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
            // Room for what the analyzers add (a span's self time and critical-path share, the
            // root's summary), reserved once: pushed one by one, they reallocated each span's
            // attributes several times.
            for s in &mut t.spans {
                let extra = if s.parent_span_id.is_empty() {
                    ROOT_ATTRIBUTES_ADDED
                } else {
                    SPAN_ATTRIBUTES_ADDED
                };
                s.attributes.reserve(extra);
            }
            for a in &mut self.analyzers {
                a.analyze(&mut t, now);
            }
        }
        out.push(t);
    }

    fn take(
        &mut self,
        batch: ExportTraceServiceRequest,
        mut facts: Option<&mut Facts>,
        now: Instant,
        flushed: &mut Vec<AssembledTrace>,
        late: &mut Vec<HeldSpan>,
    ) {
        for rs in batch.resource_spans {
            let resource = Keyed::new(rs.resource, rs.schema_url);
            for ss in rs.scope_spans {
                let scope = Keyed::new(ss.scope, ss.schema_url);
                for span in ss.spans {
                    let stream = self.config.mode == Mode::Stream;
                    let h = HeldSpan {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        // In stream mode the span leaves now with the facts handed along (the
                        // copy held for the analysis needs none); held, it keeps its own.
                        facts: facts
                            .as_deref_mut()
                            .filter(|_| !stream)
                            .and_then(|f| f.take(&span)),
                        span,
                    };
                    if stream {
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
        facts: None,
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
/// The requests of flushed traces and late spans, each with its spans' facts. In stream mode
/// the spans went out as they came: `passed` are the facts handed with them.
fn to_requests(
    mode: Mode,
    traces: Vec<AssembledTrace>,
    mut late: Vec<HeldSpan>,
    passed: Option<Facts>,
) -> Vec<WithFacts> {
    let mut out = Vec::new();
    if mode == Mode::Stream {
        late.extend(traces.iter().filter_map(analysis_span));
        if !late.is_empty() {
            out.push((
                Batch::Traces(build(
                    late.into_iter()
                        .map(|h| (h.resource, h.scope, vec![h.span])),
                )),
                passed,
            ));
        }
        return out;
    }
    // Traces flushed together leave in as few requests as possible (never splitting one), so a
    // burst of small traces does not become a burst of tiny requests.
    let mut chunk: Vec<(Origin<Resource>, Origin<InstrumentationScope>, Vec<Span>)> = Vec::new();
    let mut chunk_facts = Facts::default();
    let mut chunk_spans = 0;
    for t in traces {
        // Origins are numbered in order of first appearance: the groups, by origin, are in
        // that order too.
        let mut groups: Vec<Vec<Span>> = vec![Vec::new(); t.origins.len()];
        chunk_spans += t.spans.len();
        for ((span, o), f) in t.spans.into_iter().zip(t.origin).zip(t.facts) {
            if let Some(f) = f {
                chunk_facts.insert(&span, f);
            }
            if let Some(g) = groups.get_mut(o) {
                g.push(span);
            }
        }
        chunk.extend(
            t.origins
                .into_iter()
                .zip(groups)
                .filter(|(_, spans)| !spans.is_empty())
                .map(|((r, s), spans)| (r, s, spans)),
        );
        if chunk_spans >= MAX_SPANS_PER_REQUEST {
            out.push((
                Batch::Traces(build(std::mem::take(&mut chunk).into_iter())),
                Some(std::mem::take(&mut chunk_facts)),
            ));
            chunk_spans = 0;
        }
    }
    if !chunk.is_empty() {
        out.push((Batch::Traces(build(chunk.into_iter())), Some(chunk_facts)));
    }
    if !late.is_empty() {
        let mut late_facts = Facts::default();
        for h in &mut late {
            if let Some(f) = h.facts.take() {
                late_facts.insert(&h.span, f);
            }
        }
        out.push((
            Batch::Traces(build(
                late.into_iter()
                    .map(|h| (h.resource, h.scope, vec![h.span])),
            )),
            Some(late_facts),
        ));
    }
    out
}

/// Flushed traces are combined into requests of about this many spans.
const MAX_SPANS_PER_REQUEST: usize = 4096;
/// Spans flushed per tick while memory is above the soft limit.
const MEMORY_FLUSH_SPANS: usize = 2 * MAX_SPANS_PER_REQUEST;

fn build(
    groups: impl Iterator<Item = (Origin<Resource>, Origin<InstrumentationScope>, Vec<Span>)>,
) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::default();
    // Resources, and scopes under them (resource index, scope index, scope), in order of first
    // appearance and found by hash.
    let mut resources: Vec<Origin<Resource>> = Vec::new();
    let mut resource_index: HashTable<usize> = HashTable::new();
    let mut scopes: Vec<(usize, usize, Origin<InstrumentationScope>)> = Vec::new();
    let mut scope_index: HashTable<usize> = HashTable::new();
    for (r, s, spans) in groups {
        let ri = match resource_index
            .find(r.hash, |&i| resources.get(i).is_some_and(|x| same(x, &r)))
        {
            Some(&i) => i,
            None => {
                let i = resources.len();
                req.resource_spans.push(ResourceSpans {
                    resource: r.value.clone(),
                    schema_url: r.schema_url.clone(),
                    scope_spans: Vec::new(),
                });
                let hash = r.hash;
                resources.push(r);
                resource_index.insert_unique(hash, i, |&j| resources.get(j).map_or(0, |x| x.hash));
                i
            }
        };
        let Some(rs) = req.resource_spans.get_mut(ri) else {
            continue;
        };
        let hash = pair_hash(ri as u64, s.hash);
        let found = scope_index.find(hash, |&k| {
            scopes
                .get(k)
                .is_some_and(|(kr, _, x)| *kr == ri && same(x, &s))
        });
        match found.and_then(|&k| scopes.get(k)) {
            Some(&(_, si, _)) => {
                if let Some(ss) = rs.scope_spans.get_mut(si) {
                    ss.spans.extend(spans);
                }
            }
            None => {
                rs.scope_spans.push(ScopeSpans {
                    scope: s.value.clone(),
                    schema_url: s.schema_url.clone(),
                    spans,
                });
                let k = scopes.len();
                scopes.push((ri, rs.scope_spans.len() - 1, s));
                scope_index.insert_unique(hash, k, |&j| {
                    scopes
                        .get(j)
                        .map_or(0, |(jr, _, x)| pair_hash(*jr as u64, x.hash))
                });
            }
        }
    }
    req
}

impl Processor for TraceAssembly {
    fn on_input(&mut self, batch: Batch, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_input_with(batch, None, now, with));
    }

    /// Each held span keeps its facts; they leave with it.
    fn on_input_with(
        &mut self,
        batch: Batch,
        mut facts: Option<Facts>,
        now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        let Batch::Traces(req) = batch else {
            out.push((batch, facts));
            return;
        };
        let (mut flushed, mut late) = (Vec::new(), Vec::new());
        self.take(req, facts.as_mut(), now, &mut flushed, &mut late);
        // In hold mode each span took its own facts; what is left belongs to none.
        let passed = facts.filter(|_| self.config.mode == Mode::Stream);
        out.extend(to_requests(self.config.mode, flushed, late, passed));
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_tick_with(now, with));
    }

    fn on_shutdown(&mut self, out: &mut Vec<Batch>) {
        dropping_facts(out, |with| self.on_shutdown_with(with));
    }

    fn on_tick_with(&mut self, now: Instant, out: &mut Vec<WithFacts>) {
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
        out.extend(to_requests(self.config.mode, flushed, Vec::new(), None));
    }

    fn on_shutdown_with(&mut self, out: &mut Vec<WithFacts>) {
        let now = Instant::now();
        let ids: Vec<[u8; 16]> = self.traces.keys().copied().collect();
        let mut flushed = Vec::new();
        for id in ids {
            self.flush(id, FlushReason::Shutdown, now, &mut flushed);
        }
        out.extend(to_requests(self.config.mode, flushed, Vec::new(), None));
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
