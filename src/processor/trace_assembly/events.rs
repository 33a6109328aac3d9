//! What trace assembly reports about itself, one small struct per event (in the spirit of
//! Vector's internal events): `emit` logs it with its fields and bumps its counter, so the log
//! line and the metric cannot drift apart. The counters are registered with ragwatch's own
//! metrics through [`ComponentMetrics`]; the telemetry module knows nothing of this component.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::names::metrics as m;
use crate::telemetry::ComponentMetrics;

/// Self-metrics of the assembler.
#[derive(Clone, Default)]
pub struct AssemblyCounters {
    pub in_flight: Gauge,
    pub evictions: Counter,
    pub late_spans: Counter,
}

impl ComponentMetrics for AssemblyCounters {
    fn register(&self, r: &mut Registry) {
        r.register(
            m::TRACES_IN_FLIGHT,
            "Traces held by trace assembly",
            self.in_flight.clone(),
        );
        r.register(
            m::TRACE_EVICTIONS,
            "Traces flushed early as partial because max_traces was reached",
            self.evictions.clone(),
        );
        r.register(
            m::TRACE_LATE_SPANS,
            "Spans that arrived after their trace was flushed, exported at once",
            self.late_spans.clone(),
        );
    }
}

/// A trace starts being held.
pub(super) struct TraceHeld;

impl TraceHeld {
    pub(super) fn emit(self, c: &AssemblyCounters) {
        c.in_flight.inc();
    }
}

/// A held trace is handed on; `evicted` when early, as partial, because `max_traces` or
/// `max_held_mib` was reached.
pub(super) struct TraceFlushed {
    pub evicted: bool,
}

impl TraceFlushed {
    pub(super) fn emit(self, c: &AssemblyCounters) {
        c.in_flight.dec();
        if self.evicted {
            c.evictions.inc();
        }
    }
}

/// A span arrived after its trace was handed on: exported at once.
pub(super) struct LateSpan;

impl LateSpan {
    pub(super) fn emit(self, c: &AssemblyCounters) {
        c.late_spans.inc();
    }
}

/// The first tick of an episode over `max_held_mib` (the traces it flushes are counted by
/// [`TraceFlushed`]); logged once per episode, by the caller's choice of when to emit.
pub(super) struct HeldBytesOverLimit {
    pub held_bytes: usize,
    pub max_held_mib: u64,
    pub share_bytes: usize,
    pub traces_held: usize,
}

impl HeldBytesOverLimit {
    pub(super) fn emit(self) {
        tracing::warn!(
            held_mib = self.held_bytes >> 20,
            max_held_mib = self.max_held_mib,
            share_mib = self.share_bytes >> 20,
            traces_held = self.traces_held,
            "trace assembly holds more than max_held_mib: flushing the oldest traces early (counted in ragwatch_trace_evictions_total)"
        );
    }
}

/// The memory limiter asked for held traces to go: the first flush of an episode.
pub(super) struct MemoryFlush {
    pub traces_held: usize,
}

impl MemoryFlush {
    pub(super) fn emit(self) {
        tracing::warn!(
            traces_held = self.traces_held,
            "memory limit: flushing held traces early, oldest first"
        );
    }
}
