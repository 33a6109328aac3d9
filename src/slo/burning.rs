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
}
