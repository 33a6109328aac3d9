//! Findings: verdicts of the analysis stages (SLO burn, budget projection, anomalies, trace
//! patterns) handed to whoever listens, alerting first among them.
//!
//! Stages are synchronous, so publishing never waits: a finding goes into a bounded broadcast
//! channel; a listener that falls behind loses the oldest ones and the loss is counted and logged.
//! The last few findings are also kept for inspection.
//!
//! The log tells each finding's episode once: a line when a finding (its name and labels) is
//! first published, and one when it has not been published again for [`QUIET`] — with how
//! many times it was published in between and how long it lasted — never a line per
//! publication (an SLO burning for an hour is published at every evaluation).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use serde::Serialize;

use crate::attributes::hex;
use crate::names::attrs as a;
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
    episodes: Mutex<Episodes>,
}

/// A finding not published again for this long has ended (its end is logged).
pub const QUIET: Duration = Duration::from_secs(60);
/// Episodes followed at most; beyond, new ones are neither logged nor followed (counted, and
/// said once).
const MAX_EPISODES: usize = 10_000;

/// One finding's episode: since when, how often, last seen.
struct Episode {
    name: &'static str,
    severity: Severity,
    labels: BTreeMap<&'static str, String>,
    first: SystemTime,
    last: SystemTime,
    count: u64,
}

#[derive(Default)]
struct Episodes {
    open: std::collections::HashMap<(String, String), Episode>,
    untracked: u64,
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
            episodes: Mutex::new(Episodes::default()),
        }
    }
}

impl Findings {
    /// Publish a finding; never blocks.
    pub fn publish(&self, f: Finding) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.episode(&f);
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(f.clone());
        }
        // No listener is not an error: the finding is still logged and kept in `recent`.
        let _ = self.tx.send(f);
    }

    /// Open or continue the finding's episode; close those that went quiet.
    fn episode(&self, f: &Finding) {
        let Ok(mut eps) = self.episodes.lock() else {
            return;
        };
        close_quiet(&mut eps, f.at);
        let key = (f.name.to_string(), format!("{:?}", f.labels));
        if let Some(e) = eps.open.get_mut(&key) {
            e.count += 1;
            e.last = f.at;
            e.severity = e.severity.max(f.severity);
            return;
        }
        if eps.open.len() >= MAX_EPISODES {
            eps.untracked += 1;
            if eps.untracked == 1 {
                tracing::warn!(
                    max = MAX_EPISODES,
                    "findings: too many at once; further ones are not logged (counted in ragwatch's published findings)"
                );
            }
            return;
        }
        match f.severity {
            Severity::Critical | Severity::Warning => tracing::warn!(
                finding = f.name,
                severity = f.severity.as_str(),
                labels = ?f.labels,
                description = %f.description,
                "finding started"
            ),
            Severity::Info => tracing::info!(
                finding = f.name,
                labels = ?f.labels,
                description = %f.description,
                "finding started"
            ),
        }
        eps.open.insert(
            key,
            Episode {
                name: f.name,
                severity: f.severity,
                labels: f.labels.clone(),
                first: f.at,
                last: f.at,
                count: 1,
            },
        );
    }

    /// Close (and log) the episodes not published again for [`QUIET`] as of `now`; the
    /// service calls it every few seconds, so an end is logged even when nothing else is
    /// published.
    pub fn sweep(&self, now: SystemTime) {
        if let Ok(mut eps) = self.episodes.lock() {
            close_quiet(&mut eps, now);
        }
    }

    /// Findings open now (published within [`QUIET`] of the last sweep or publication).
    pub fn open_episodes(&self) -> usize {
        self.episodes.lock().map(|e| e.open.len()).unwrap_or(0)
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

fn close_quiet(eps: &mut Episodes, now: SystemTime) {
    eps.open.retain(|_, e| {
        let quiet = now.duration_since(e.last).unwrap_or_default();
        if quiet < QUIET {
            return true;
        }
        let lasted = e.last.duration_since(e.first).unwrap_or_default();
        tracing::info!(
            finding = e.name,
            severity = e.severity.as_str(),
            labels = ?e.labels,
            published = e.count,
            lasted_secs = lasted.as_secs(),
            "finding ended"
        );
        false
    });
    if eps.open.is_empty() {
        eps.untracked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_logs::logged;

    fn burn(at: SystemTime, service: &str) -> Finding {
        let mut labels = BTreeMap::new();
        labels.insert("slo", "fast".to_string());
        labels.insert("service", service.to_string());
        Finding {
            name: "slo_burn",
            severity: Severity::Critical,
            labels,
            summary: "burning".into(),
            description: "burn rate 20".into(),
            trace_id: None,
            at,
        }
    }

    #[test]
    fn a_finding_is_logged_when_it_starts_and_when_it_ends_never_per_tick() {
        let f = Findings::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lines = logged(|| {
            // Published at every 10 s evaluation for 10 minutes: one episode.
            for i in 0..60 {
                f.publish(burn(t0 + Duration::from_secs(10 * i), "api"));
            }
            // Another service's burn is its own episode.
            f.publish(burn(t0, "web"));
            assert_eq!(f.open_episodes(), 2);
            // web went quiet 649 s ago: ended. api, 59 s after its last publication, holds;
            // at 60 s it has ended.
            f.sweep(t0 + Duration::from_secs(590 + 59));
            assert_eq!(f.open_episodes(), 1);
            f.sweep(t0 + Duration::from_secs(590 + 60));
            assert_eq!(f.open_episodes(), 0);
        });
        let started: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("finding started"))
            .collect();
        let ended: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("finding ended"))
            .collect();
        assert_eq!(started.len(), 2, "{lines:#?}");
        assert_eq!(ended.len(), 2, "{lines:#?}");
        assert!(
            ended
                .iter()
                .any(|l| l.contains("published=60") && l.contains("lasted_secs=590")),
            "{ended:#?}"
        );
        assert_eq!(lines.len(), 4, "nothing else: {lines:#?}");
        assert_eq!(f.published(), 61);
    }
}

/// Finding names (the `finding` label and the event's `name` attribute).
pub mod finding {
    pub const SEQUENTIAL_CALLS: &str = "sequential_calls";
    pub const REPEATED_RETRIEVAL: &str = "repeated_retrieval";
    pub const RETRY: &str = "retry";
    pub const SLOW_FIRST_TOKEN: &str = "slow_first_token";
    pub const CONTEXT_OVERFLOW_RISK: &str = "context_overflow_risk";
    pub const AGENT_LOOP: &str = "agent_loop";
    pub const TOOL_ERROR: &str = "tool_error";
    pub const EXCESSIVE_LLM_CALLS: &str = "excessive_llm_calls";
}

/// The instrumentation issue (not a finding) of a non-GenAI span that spends a large share of
/// the trace on the critical path outside any child span: code nobody traced.
pub const UNINSTRUMENTED_GAP: &str = "uninstrumented_gap";

/// A `rag.finding` event.
pub fn finding_event(
    time: u64,
    name: &str,
    description: String,
    severity: &str,
    span_ids: &[&[u8]],
) -> Event {
    let s = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v)),
        }),
        ..Default::default()
    };
    Event {
        time_unix_nano: time,
        name: a::FINDING_EVENT.into(),
        attributes: vec![
            s(a::FINDING_NAME, name.into()),
            s(a::FINDING_DESCRIPTION, description),
            s(a::FINDING_SEVERITY, severity.into()),
            KeyValue {
                key: a::FINDING_SPAN_IDS.into(),
                value: Some(AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: span_ids
                            .iter()
                            .map(|id| AnyValue {
                                value: Some(Value::StringValue(hex(id))),
                            })
                            .collect(),
                    })),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}
