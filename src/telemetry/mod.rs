//! Self-observability: ragwatch's own metrics (Prometheus text on the admin endpoint) and the
//! log-and-count events that keep metrics and log lines from drifting apart.

pub mod logging;

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use crate::names::metrics as m;
use crate::signal::Signal;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub receiver: String,
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub receiver: String,
    pub transport: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

pub type PerSignal<L> = [Family<L, Counter>; 3];

pub fn idx(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

/// A component's own set of metrics, defined beside the component (its internal events) and
/// collected here without this module knowing the component: [`SelfMetrics::component`]
/// registers a set on first use.
pub trait ComponentMetrics: Clone + Default + Send + Sync + 'static {
    /// Register every metric of the set.
    fn register(&self, registry: &mut Registry);
}

/// All of ragwatch's own metrics, registered once.
pub struct SelfMetrics {
    registry: Mutex<Registry>,
    receiver_tls_handshake_failures: Family<ReceiverLabels, Counter>,
    receiver_tls_reloads: Family<RequestLabels, Counter>,
    exporter_sent: PerSignal<ExporterLabels>,
    exporter_send_failed: PerSignal<ExporterLabels>,
    exporter_enqueue_failed: PerSignal<ExporterLabels>,
    exporter_queue_size: Family<ExporterLabels, Gauge>,
    exporter_queue_capacity: Family<ExporterLabels, Gauge>,
    exporter_storage_bytes: Family<ExporterLabels, Gauge>,
    exporter_storage_capacity: Family<ExporterLabels, Gauge>,
    exporter_storage_corrupted: Family<ExporterLabels, Counter>,
    exporter_retries: Family<ExporterLabels, Counter>,
    pipeline_queue_items: Family<PipelineLabels, Gauge>,
    pipeline_queue_capacity: Family<PipelineLabels, Gauge>,
    pipeline_dropped: Family<PipelineLabels, Counter>,
    pipeline_storage_bytes: Family<PipelineLabels, Gauge>,
    pipeline_storage_capacity: Family<PipelineLabels, Gauge>,
    pipeline_storage_records: Family<PipelineLabels, Gauge>,
    pipeline_storage_corrupted: Family<PipelineLabels, Counter>,
    pipeline_replayed: Family<PipelineLabels, Counter>,
    components:
        Mutex<std::collections::HashMap<std::any::TypeId, Box<dyn std::any::Any + Send + Sync>>>,
    embedding_vectors_dropped: Counter,
    alerts_firing: Family<AlertLabels, Gauge>,
    alerts_firing_known: Mutex<std::collections::BTreeSet<(String, String)>>,
    alert_notifications: Family<NotificationLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub alertname: String,
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub receiver: String,
    pub result: String,
}

fn per_signal<L>(reg: &mut Registry, names: [&str; 3], help: &str) -> PerSignal<L>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f: PerSignal<L> = Default::default();
    for (name, fam) in names.iter().zip(f.iter()) {
        reg.register(*name, help, fam.clone());
    }
    f
}

impl SelfMetrics {
    pub fn new() -> Arc<SelfMetrics> {
        let mut r = Registry::default();
        let exporter_sent = per_signal(
            &mut r,
            [
                m::EXPORTER_SENT_SPANS,
                m::EXPORTER_SENT_METRIC_POINTS,
                m::EXPORTER_SENT_LOG_RECORDS,
            ],
            "Items an exporter delivered",
        );
        let exporter_send_failed = per_signal(
            &mut r,
            [
                m::EXPORTER_SEND_FAILED_SPANS,
                m::EXPORTER_SEND_FAILED_METRIC_POINTS,
                m::EXPORTER_SEND_FAILED_LOG_RECORDS,
            ],
            "Items an exporter dropped after a permanent error, exhausted retries or the shutdown deadline",
        );
        let exporter_enqueue_failed = per_signal(
            &mut r,
            [
                m::EXPORTER_ENQUEUE_FAILED_SPANS,
                m::EXPORTER_ENQUEUE_FAILED_METRIC_POINTS,
                m::EXPORTER_ENQUEUE_FAILED_LOG_RECORDS,
            ],
            "Items dropped because an exporter's sending queue was full (block_on_overflow: false)",
        );
        let s = SelfMetrics {
            receiver_tls_handshake_failures: Default::default(),
            receiver_tls_reloads: Default::default(),
            exporter_sent,
            exporter_send_failed,
            exporter_enqueue_failed,
            exporter_queue_size: Default::default(),
            exporter_queue_capacity: Default::default(),
            exporter_storage_bytes: Default::default(),
            exporter_storage_capacity: Default::default(),
            exporter_storage_corrupted: Default::default(),
            exporter_retries: Default::default(),
            pipeline_queue_items: Default::default(),
            pipeline_queue_capacity: Default::default(),
            pipeline_dropped: Default::default(),
            pipeline_storage_bytes: Default::default(),
            pipeline_storage_capacity: Default::default(),
            pipeline_storage_records: Default::default(),
            pipeline_storage_corrupted: Default::default(),
            pipeline_replayed: Default::default(),
            components: Default::default(),
            embedding_vectors_dropped: Default::default(),
            alerts_firing: Default::default(),
            alerts_firing_known: Mutex::new(Default::default()),
            alert_notifications: Default::default(),
            registry: Mutex::new(Registry::default()),
        };
        r.register(
            m::RECEIVER_TLS_HANDSHAKE_FAILURES,
            "TLS handshakes a receiver refused or that did not finish",
            s.receiver_tls_handshake_failures.clone(),
        );
        r.register(
            m::RECEIVER_TLS_RELOADS,
            "Changes of a receiver's TLS files, by outcome (reloaded, or failed and the certificate in use kept)",
            s.receiver_tls_reloads.clone(),
        );
        r.register(
            m::EXPORTER_QUEUE_SIZE,
            "Requests waiting in an exporter's sending queue",
            s.exporter_queue_size.clone(),
        );
        r.register(
            m::EXPORTER_QUEUE_CAPACITY,
            "Capacity of an exporter's sending queue in requests (0 when the queue is on disk)",
            s.exporter_queue_capacity.clone(),
        );
        r.register(
            m::EXPORTER_STORAGE_BYTES,
            "Bytes an exporter's on-disk sending queue takes",
            s.exporter_storage_bytes.clone(),
        );
        r.register(
            m::EXPORTER_STORAGE_CAPACITY_BYTES,
            "The size limit of an exporter's on-disk sending queue",
            s.exporter_storage_capacity.clone(),
        );
        r.register(
            m::EXPORTER_STORAGE_CORRUPTED,
            "Damaged or cut-short records skipped when the on-disk sending queue was opened",
            s.exporter_storage_corrupted.clone(),
        );
        r.register(
            m::EXPORTER_RETRIES,
            "Send attempts that failed retryably and were scheduled again",
            s.exporter_retries.clone(),
        );
        r.register(
            m::PIPELINE_QUEUE_ITEMS,
            "Items waiting in a pipeline's input queue",
            s.pipeline_queue_items.clone(),
        );
        r.register(
            m::PIPELINE_QUEUE_CAPACITY,
            "Capacity of a pipeline's input queue in items",
            s.pipeline_queue_capacity.clone(),
        );
        r.register(
            m::PIPELINE_DROPPED_ITEMS,
            "Items a pipeline dropped when the shutdown grace period ran out",
            s.pipeline_dropped.clone(),
        );
        r.register(
            m::PIPELINE_STORAGE_BYTES,
            "Bytes a pipeline's log (storage) takes",
            s.pipeline_storage_bytes.clone(),
        );
        r.register(
            m::PIPELINE_STORAGE_CAPACITY_BYTES,
            "The size limit of a pipeline's log (storage_max_mib)",
            s.pipeline_storage_capacity.clone(),
        );
        r.register(
            m::PIPELINE_STORAGE_RECORDS,
            "Requests in a pipeline's log that some exporter does not have yet",
            s.pipeline_storage_records.clone(),
        );
        r.register(
            m::PIPELINE_STORAGE_CORRUPTED,
            "Damaged or cut-short records skipped when a pipeline's log was opened",
            s.pipeline_storage_corrupted.clone(),
        );
        r.register(
            m::PIPELINE_REPLAYED_ITEMS,
            "Items replayed from a pipeline's log at start (at least once: some may be duplicates)",
            s.pipeline_replayed.clone(),
        );
        r.register(
            m::ALERTS_FIRING,
            "Alerts firing, by alert name and severity",
            s.alerts_firing.clone(),
        );
        r.register(
            m::ALERT_NOTIFICATIONS,
            "Alert notifications by receiver and result (success, retried, failed, dropped)",
            s.alert_notifications.clone(),
        );
        r.register(
            m::GENAI_EMBEDDING_VECTORS_DROPPED,
            "Embedding vectors removed from spans (genai.drop_embedding_vectors)",
            s.embedding_vectors_dropped.clone(),
        );
        if let Ok(mut reg) = s.registry.lock() {
            *reg = r;
        }
        Arc::new(s)
    }

    /// Register a further metric (the analysis features' derived metrics use this).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut reg) = self.registry.lock() {
            reg.register(name, help, metric);
        }
    }

    /// Set the firing alerts' gauges; those no longer firing go to 0.
    pub fn set_alerts_firing(&self, firing: &std::collections::BTreeMap<(String, String), u64>) {
        let Ok(mut known) = self.alerts_firing_known.lock() else {
            return;
        };
        known.extend(firing.keys().cloned());
        for (name, severity) in known.iter() {
            let n = firing
                .get(&(name.clone(), severity.clone()))
                .copied()
                .unwrap_or(0);
            self.alerts_firing
                .get_or_create(&AlertLabels {
                    alertname: name.clone(),
                    severity: severity.clone(),
                })
                .set(n as i64);
        }
    }

    /// Count one notification outcome.
    pub fn count_notification(&self, receiver: &str, result: &str) {
        self.alert_notifications
            .get_or_create(&NotificationLabels {
                receiver: receiver.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock()
            && let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg)
        {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }

    /// A TLS receiver's handshake and reload counters.
    pub fn tls(&self, receiver: &str, transport: &str) -> TlsCounters {
        let l = ReceiverLabels {
            receiver: receiver.to_string(),
            transport: transport.to_string(),
        };
        let reload = |outcome: &str| {
            self.receiver_tls_reloads
                .get_or_create(&RequestLabels {
                    receiver: receiver.to_string(),
                    transport: transport.to_string(),
                    outcome: outcome.to_string(),
                })
                .clone()
        };
        TlsCounters {
            handshake_failures: self
                .receiver_tls_handshake_failures
                .get_or_create(&l)
                .clone(),
            reloaded: reload("reloaded"),
            reload_failed: reload("failed"),
        }
    }

    pub fn exporter(&self, exporter: &str) -> ExporterCounters {
        let l = ExporterLabels {
            exporter: exporter.to_string(),
        };
        ExporterCounters {
            exporter: exporter.to_string(),
            sent: self
                .exporter_sent
                .each_ref()
                .map(|f| f.get_or_create(&l).clone()),
            send_failed: self
                .exporter_send_failed
                .each_ref()
                .map(|f| f.get_or_create(&l).clone()),
            enqueue_failed: self
                .exporter_enqueue_failed
                .each_ref()
                .map(|f| f.get_or_create(&l).clone()),
            queue_size: self.exporter_queue_size.get_or_create(&l).clone(),
            queue_capacity: self.exporter_queue_capacity.get_or_create(&l).clone(),
            storage_bytes: self.exporter_storage_bytes.get_or_create(&l).clone(),
            storage_capacity: self.exporter_storage_capacity.get_or_create(&l).clone(),
            storage_corrupted: self.exporter_storage_corrupted.get_or_create(&l).clone(),
            retries: self.exporter_retries.get_or_create(&l).clone(),
        }
    }

    /// A component's own metrics (see [`ComponentMetrics`]): registered on first use, then the
    /// same set for every instance of the component.
    pub fn component<T: ComponentMetrics>(&self) -> T {
        let Ok(mut sets) = self.components.lock() else {
            return T::default();
        };
        if let Some(t) = sets
            .get(&std::any::TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
        {
            return t.clone();
        }
        let t = T::default();
        if let Ok(mut reg) = self.registry.lock() {
            t.register(&mut reg);
        }
        sets.insert(std::any::TypeId::of::<T>(), Box::new(t.clone()));
        t
    }

    /// The counter of embedding vectors the genai processor removed.
    pub fn embedding_vectors_dropped(&self) -> Counter {
        self.embedding_vectors_dropped.clone()
    }

    pub fn pipeline(&self, pipeline: &str) -> PipelineCounters {
        let l = PipelineLabels {
            pipeline: pipeline.to_string(),
        };
        PipelineCounters {
            pipeline: pipeline.to_string(),
            queue_items: self.pipeline_queue_items.get_or_create(&l).clone(),
            queue_capacity: self.pipeline_queue_capacity.get_or_create(&l).clone(),
            dropped: self.pipeline_dropped.get_or_create(&l).clone(),
            storage_bytes: self.pipeline_storage_bytes.get_or_create(&l).clone(),
            storage_capacity: self.pipeline_storage_capacity.get_or_create(&l).clone(),
            storage_records: self.pipeline_storage_records.get_or_create(&l).clone(),
            storage_corrupted: self.pipeline_storage_corrupted.get_or_create(&l).clone(),
            replayed: self.pipeline_replayed.get_or_create(&l).clone(),
        }
    }
}

/// A TLS receiver's counters.
#[derive(Clone, Default)]
pub struct TlsCounters {
    handshake_failures: Counter,
    reloaded: Counter,
    reload_failed: Counter,
}

impl TlsCounters {
    pub fn handshake_failed(&self) {
        self.handshake_failures.inc();
    }
    pub fn reloaded(&self) {
        self.reloaded.inc();
    }
    pub fn reload_failed(&self) {
        self.reload_failed.inc();
    }
}

/// An exporter's counters.
#[derive(Clone)]
pub struct ExporterCounters {
    pub exporter: String,
    sent: [Counter; 3],
    send_failed: [Counter; 3],
    enqueue_failed: [Counter; 3],
    pub queue_size: Gauge,
    pub queue_capacity: Gauge,
    pub storage_bytes: Gauge,
    pub storage_capacity: Gauge,
    pub storage_corrupted: Counter,
    retries: Counter,
}

impl ExporterCounters {
    pub fn sent(&self, s: Signal, n: usize) {
        self.sent[idx(s)].inc_by(n as u64);
    }
    /// Count items given up on and say why in a log line.
    pub fn send_failed(&self, s: Signal, n: usize, reason: &str) {
        self.send_failed[idx(s)].inc_by(n as u64);
        tracing::error!(exporter = %self.exporter, signal = %s, items = n, reason, "dropped {}", s.item_name());
    }
    pub fn enqueue_failed(&self, s: Signal, n: usize) {
        self.enqueue_failed[idx(s)].inc_by(n as u64);
        tracing::error!(
            exporter = %self.exporter,
            signal = %s,
            items = n,
            "sending queue is full; dropped {} (set sending_queue.block_on_overflow: true to push back on clients instead)",
            s.item_name()
        );
    }
    pub fn retry(&self, s: Signal, attempt: u32, delay: std::time::Duration, reason: &str) {
        self.retries.inc();
        tracing::warn!(
            exporter = %self.exporter,
            signal = %s,
            attempt,
            delay_ms = delay.as_millis() as u64,
            reason,
            "export failed; will retry"
        );
    }
}

/// A pipeline's counters.
#[derive(Clone)]
pub struct PipelineCounters {
    pub pipeline: String,
    pub queue_items: Gauge,
    pub queue_capacity: Gauge,
    dropped: Counter,
    pub storage_bytes: Gauge,
    pub storage_capacity: Gauge,
    pub storage_records: Gauge,
    pub storage_corrupted: Counter,
    pub replayed: Counter,
}

impl PipelineCounters {
    pub fn dropped(&self, s: Signal, n: usize, reason: &str) {
        self.dropped.inc_by(n as u64);
        tracing::error!(pipeline = %self.pipeline, signal = %s, items = n, reason, "dropped {}", s.item_name());
    }
}

/// The Prometheus text format of an OpenMetrics exposition: counter families are named with
/// their `_total` samples, `# UNIT` and `# EOF` lines go.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in om.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(om.len());
    for l in om.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(r) => out.push_str(&r),
            None => out.push_str(l),
        }
        out.push('\n');
    }
    out
}
