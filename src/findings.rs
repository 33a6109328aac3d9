//! Findings: verdicts of the analysis stages (SLO burn, budget projection, anomalies, trace
//! patterns) handed to whoever listens, alerting first among them.
//!
//! Stages are synchronous, so publishing never waits: a finding goes into a bounded broadcast
//! channel; a listener that falls behind loses the oldest ones and the loss is counted and logged.
//! The last few findings are also kept for inspection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// How serious a finding is; the same words as alert severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `slo_burn`, `budget_projection`, `anomaly`, or a trace pattern's name.
    pub name: &'static str,
    pub severity: Severity,
    /// What the finding is about: service, and stage / model / slo / budget where they apply.
    pub labels: BTreeMap<&'static str, String>,
    /// One line.
    pub summary: String,
    /// The numbers.
    pub description: String,
    /// An example trace (hex), where one applies.
    pub trace_id: Option<String>,
    pub at: SystemTime,
}

/// The findings hub of one service.
pub struct Findings {
    tx: broadcast::Sender<Finding>,
    recent: Mutex<VecDeque<Finding>>,
    published: AtomicU64,
}

/// How many findings a lagging listener may have pending before it loses the oldest.
const CHANNEL: usize = 4096;
/// How many recent findings are kept for inspection.
const RECENT: usize = 256;

impl Default for Findings {
    fn default() -> Self {
        Findings {
            tx: broadcast::channel(CHANNEL).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            published: AtomicU64::new(0),
        }
    }
}

impl Findings {
    /// Publish a finding; never blocks.
    pub fn publish(&self, f: Finding) {
        self.published.fetch_add(1, Ordering::Relaxed);
        match f.severity {
            Severity::Critical | Severity::Warning => tracing::warn!(
                finding = f.name,
                severity = f.severity.as_str(),
                labels = ?f.labels,
                description = %f.description,
                "finding"
            ),
            Severity::Info => tracing::debug!(
                finding = f.name,
                labels = ?f.labels,
                description = %f.description,
                "finding"
            ),
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(f.clone());
        }
        // No listener is not an error: the finding is still logged and kept in `recent`.
        let _ = self.tx.send(f);
    }

    /// Listen to findings published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Finding> {
        self.tx.subscribe()
    }

    /// The most recent findings, oldest first.
    pub fn recent(&self) -> Vec<Finding> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many findings were published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}
