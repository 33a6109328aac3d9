//! Which SLOs burn now: the set of (SLO, service) pairs one of whose burn rules fired at the
//! latest evaluation, shared by the `slo` processors (writers, once per evaluation) and the
//! `tail_sampling` policy `slo_burn` (readers, once per batch).
//!
//! Readers never wait on writers for long: a version number says whether the set changed, and
//! the set itself is an immutable snapshot behind an `Arc`, swapped whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One SLO of one service that burns: its name, the service, and what it is over (`request`
/// or a stage).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BurningSlo {
    pub slo: String,
    pub service: String,
    pub over: String,
}

/// The SLOs burning now, across every `slo` processor of the service.
#[derive(Default)]
pub struct Burning {
    /// Per writer (one per `slo` processor): what burned at its latest evaluation.
    by_writer: Mutex<BTreeMap<u64, Vec<BurningSlo>>>,
    snapshot: RwLock<Arc<HashSet<BurningSlo>>>,
    version: AtomicU64,
    writers: AtomicU64,
}

impl Burning {
    /// An id for one writer; each writer replaces only its own entries.
    pub fn writer(&self) -> u64 {
        self.writers.fetch_add(1, Ordering::Relaxed)
    }

    /// What `writer` found burning at its latest evaluation (replaces what it said before).
    pub fn set(&self, writer: u64, mut burning: Vec<BurningSlo>) {
        burning.sort();
        burning.dedup();
        let Ok(mut w) = self.by_writer.lock() else {
            return;
        };
        if w.get(&writer)
            .map_or(burning.is_empty(), |old| *old == burning)
        {
            return;
        }
        if burning.is_empty() {
            w.remove(&writer);
        } else {
            w.insert(writer, burning);
        }
        let all: HashSet<BurningSlo> = w.values().flatten().cloned().collect();
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(all);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever the set does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The SLOs burning now.
    pub fn snapshot(&self) -> Arc<HashSet<BurningSlo>> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(slo: &str, service: &str) -> BurningSlo {
        BurningSlo {
            slo: slo.into(),
            service: service.into(),
            over: "request".into(),
        }
    }

    #[test]
    fn each_writer_replaces_only_its_own_entries() {
        let burning = Burning::default();
        let (w1, w2) = (burning.writer(), burning.writer());
        let v0 = burning.version();
        burning.set(w1, vec![b("fast", "a")]);
        burning.set(w2, vec![b("ok", "b")]);
        assert_eq!(burning.snapshot().len(), 2);
        let v1 = burning.version();
        assert!(v1 > v0);
        // The same set again is no change.
        burning.set(w1, vec![b("fast", "a")]);
        assert_eq!(burning.version(), v1);
        burning.set(w1, Vec::new());
        let s = burning.snapshot();
        assert_eq!(s.len(), 1);
        assert!(s.contains(&b("ok", "b")));
        assert!(burning.version() > v1);
    }

    /// The `slo` processor says which SLOs burn at each evaluation, and says it again when they
    /// stop.
    #[test]
    fn the_slo_processor_writes_what_burns() {
        use crate::processor::Processor;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
        use std::time::{Duration, Instant, SystemTime};

        let config: crate::processor::slo::SloProcessorConfig = crate::config::yaml::from_str(
            "slos: [{ name: answers-succeed, kind: availability, objective: 0.99 }]",
        )
        .expect("config");
        let burning = Arc::new(Burning::default());
        let derived = Arc::new(crate::derived::DerivedMetrics::new(
            crate::derived::defs::DEFS,
            Default::default(),
        ));
        let t0 = Instant::now();
        let mut slo = crate::processor::slo::SloProcessor::with_clock(
            config,
            derived,
            Default::default(),
            (t0, SystemTime::now()),
        )
        .with_burning(burning.clone());
        // 10 requests of rag-api, all failed: error ratio 1, burn rate 1 / 0.01 = 100 over every
        // window, above both default rules (14.4 and 6).
        let spans = (0..10u8)
            .map(|i| Span {
                trace_id: vec![i + 1; 16],
                span_id: vec![1; 8],
                status: Some(Status {
                    code: 2,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![crate::attributes::kv_str("service.name", "rag-api")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut out = Vec::new();
        slo.on_input(crate::signal::Batch::Traces(req), t0, &mut out);
        slo.evaluate(t0 + Duration::from_secs(10));
        let s = burning.snapshot();
        assert_eq!(s.len(), 1);
        assert!(s.contains(&BurningSlo {
            slo: "answers-succeed".into(),
            service: "rag-api".into(),
            over: "request".into(),
        }));
        // Seven hours on, every window is empty: nothing burns any more.
        slo.evaluate(t0 + Duration::from_secs(7 * 3600));
        assert!(burning.snapshot().is_empty());
    }
}
