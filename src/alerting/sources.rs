//! Where alert conditions come from: findings (SLO burn, budget projection, anomalies), counters
//! over a window (trace patterns as a share of a service's requests, unpriced models), and
//! ragwatch's own health (exporters failing, queues filling, traces evicted).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::engine::{Condition, Labels};
use super::{AlertsConfig, SOURCES};
use crate::derived::DerivedMetrics;
use crate::derived::defs as dm;
use crate::findings::Finding;
use crate::names::metrics as sm;
use crate::telemetry::SelfMetrics;

/// Counters at one moment.
#[derive(Default)]
struct Snapshot {
    at: Option<SystemTime>,
    /// service → requests.
    requests: HashMap<String, f64>,
    /// (finding, service) → findings.
    findings: HashMap<(String, String), f64>,
    /// (service, provider, model) → unpriced calls.
    unpriced: HashMap<(String, String, String), f64>,
    /// exporter → (sent, failed), over every signal.
    exporters: HashMap<String, (f64, f64)>,
    evictions: f64,
}

pub struct Sources {
    config: AlertsConfig,
    findings: broadcast::Receiver<Finding>,
    derived: Arc<DerivedMetrics>,
    metrics: Arc<SelfMetrics>,
    history: VecDeque<Snapshot>,
}

fn alertname(source: &str) -> &'static str {
    SOURCES
        .iter()
        .find(|(s, _)| *s == source)
        .map(|(_, n)| *n)
        .unwrap_or("RagFinding")
}

fn sum_by<K: std::hash::Hash + Eq>(
    v: Vec<(Vec<String>, f64)>,
    key: impl Fn(&[String]) -> K,
) -> HashMap<K, f64> {
    let mut m = HashMap::new();
    for (labels, x) in v {
        *m.entry(key(&labels)).or_insert(0.0) += x;
    }
    m
}

impl Sources {
    pub fn new(
        config: AlertsConfig,
        findings: broadcast::Receiver<Finding>,
        derived: Arc<DerivedMetrics>,
        metrics: Arc<SelfMetrics>,
    ) -> Sources {
        Sources {
            config,
            findings,
            derived,
            metrics,
            history: VecDeque::new(),
        }
    }

    fn enabled(&self, source: &str) -> bool {
        self.config.rule(source).enabled.unwrap_or(true)
    }

    fn condition(
        &self,
        source: &str,
        severity: &str,
        mut labels: Labels,
        mut annotations: Labels,
    ) -> Condition {
        let rule = self.config.rule(source);
        labels.insert("alertname".into(), alertname(source).into());
        labels.insert(
            "severity".into(),
            rule.severity
                .clone()
                .unwrap_or_else(|| severity.to_string()),
        );
        if let Some(r) = &rule.runbook_url {
            annotations.insert("runbook_url".into(), r.clone());
        }
        let default_for = match source {
            "exporter_failing" => Duration::from_secs(300),
            "queue_full" => Duration::from_secs(60),
            _ => Duration::ZERO,
        };
        Condition {
            labels,
            annotations,
            for_: rule.for_.unwrap_or(default_for),
            resolve_after: rule.resolve_after.unwrap_or(self.config.resolve_after),
        }
    }

    fn condition_of(&self, f: Finding) -> Option<Condition> {
        if !matches!(f.name, "slo_burn" | "budget_projection" | "anomaly") || !self.enabled(f.name)
        {
            return None;
        }
        let labels: Labels = f
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut ann = Labels::new();
        ann.insert("summary".into(), f.summary.clone());
        ann.insert("description".into(), f.description.clone());
        if let Some(t) = &f.trace_id {
            ann.insert("trace_id".into(), t.clone());
            if let Some(j) = &self.config.jaeger_url {
                ann.insert(
                    "trace_url".into(),
                    format!("{}/trace/{t}", j.trim_end_matches('/')),
                );
            }
        }
        Some(self.condition(f.name, f.severity.as_str(), labels, ann))
    }

    /// ragwatch's own metrics, read once per evaluation.
    fn own_metrics(&self) -> Vec<prometheus_parse::Sample> {
        let text = self.metrics.encode();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .map(|s| s.samples)
            .unwrap_or_default()
    }

    fn snapshot(&self, now: SystemTime, own: &[prometheus_parse::Sample]) -> Snapshot {
        let requests = sum_by(self.derived.values(dm::REQUESTS), |l| {
            l.first().cloned().unwrap_or_default()
        });
        let findings = sum_by(self.derived.values(dm::FINDINGS), |l| {
            (
                l.first().cloned().unwrap_or_default(),
                l.get(1).cloned().unwrap_or_default(),
            )
        });
        let unpriced = sum_by(self.derived.values(dm::UNPRICED), |l| {
            (
                l.first().cloned().unwrap_or_default(),
                l.get(1).cloned().unwrap_or_default(),
                l.get(2).cloned().unwrap_or_default(),
            )
        });
        let mut exporters: HashMap<String, (f64, f64)> = HashMap::new();
        let mut evictions = 0.0;
        {
            for s in own {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => continue,
                };
                let exporter = || s.labels.get("exporter").unwrap_or("").to_string();
                let m = s.metric.as_str();
                let is = |base: &str| m == base || m == format!("{base}_total");
                if is(sm::EXPORTER_SENT_SPANS)
                    || is(sm::EXPORTER_SENT_METRIC_POINTS)
                    || is(sm::EXPORTER_SENT_LOG_RECORDS)
                {
                    exporters.entry(exporter()).or_default().0 += v;
                } else if is(sm::EXPORTER_SEND_FAILED_SPANS)
                    || is(sm::EXPORTER_SEND_FAILED_METRIC_POINTS)
                    || is(sm::EXPORTER_SEND_FAILED_LOG_RECORDS)
                {
                    exporters.entry(exporter()).or_default().1 += v;
                } else if is(sm::TRACE_EVICTIONS) {
                    evictions += v;
                }
            }
        }
        Snapshot {
            at: Some(now),
            requests,
            findings,
            unpriced,
            exporters,
            evictions,
        }
    }

    /// Queue fill per exporter and pipeline: (kind, name, which queue, fill). An exporter's
    /// on-disk queue is measured in bytes.
    fn queue_fill(
        own: &[prometheus_parse::Sample],
    ) -> Vec<(&'static str, String, &'static str, f64)> {
        let mut size: BTreeMap<(&'static str, String, &'static str), (f64, f64)> = BTreeMap::new();
        for s in own {
            let prometheus_parse::Value::Gauge(v) = s.value else {
                continue;
            };
            let (kind, which, is_cap) = match s.metric.as_str() {
                sm::EXPORTER_QUEUE_SIZE => ("exporter", "queue", false),
                sm::EXPORTER_QUEUE_CAPACITY => ("exporter", "queue", true),
                sm::EXPORTER_STORAGE_BYTES => ("exporter", "on-disk queue", false),
                sm::EXPORTER_STORAGE_CAPACITY_BYTES => ("exporter", "on-disk queue", true),
                sm::PIPELINE_QUEUE_ITEMS => ("pipeline", "queue", false),
                sm::PIPELINE_QUEUE_CAPACITY => ("pipeline", "queue", true),
                _ => continue,
            };
            let e = size
                .entry((kind, s.labels.get(kind).unwrap_or("").to_string(), which))
                .or_default();
            if is_cap {
                e.1 = v;
            } else {
                e.0 = v;
            }
        }
        size.into_iter()
            .filter(|(_, (_, cap))| *cap > 0.0)
            .map(|((k, n, w), (used, cap))| (k, n, w, used / cap))
            .collect()
    }

    /// Every condition that holds at `now`.
    pub fn collect(&mut self, now: SystemTime) -> Vec<Condition> {
        let mut out = Vec::new();
        loop {
            match self.findings.try_recv() {
                Ok(f) => out.extend(self.condition_of(f)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.metrics.count_notification("findings", "dropped");
                    tracing::warn!(
                        missed = n,
                        "alerting: fell behind the findings; some were skipped"
                    );
                }
                Err(_) => break,
            }
        }
        let own = self.own_metrics();
        let snap = self.snapshot(now, &own);
        let pattern = self.config.rule("trace_pattern");
        let window = pattern.window.unwrap_or(Duration::from_secs(300));
        let unpriced_window = self
            .config
            .rule("unpriced_model")
            .window
            .unwrap_or(Duration::from_secs(3600));
        let keep = window.max(unpriced_window);
        while self
            .history
            .front()
            .and_then(|s| s.at)
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() > keep)
        {
            self.history.pop_front();
        }
        let oldest_within = |w: Duration| {
            self.history.iter().find(|s| {
                s.at.is_some_and(|t| now.duration_since(t).unwrap_or_default() <= w)
            })
        };
        // Trace patterns as a share of a service's requests.
        if self.enabled("trace_pattern")
            && let Some(base) = oldest_within(window)
        {
            let min_share = pattern.min_share.unwrap_or(0.2);
            let min_requests = pattern.min_requests.unwrap_or(20) as f64;
            for ((finding, service), n) in &snap.findings {
                let d_find = n - base
                    .findings
                    .get(&(finding.clone(), service.clone()))
                    .copied()
                    .unwrap_or(0.0);
                let reqs = snap.requests.get(service).copied().unwrap_or(0.0);
                let d_req = reqs - base.requests.get(service).copied().unwrap_or(0.0);
                if d_req >= min_requests && d_find / d_req >= min_share {
                    let mut l = Labels::new();
                    l.insert("service".into(), service.clone());
                    l.insert("finding".into(), finding.clone());
                    let mut a = Labels::new();
                    a.insert(
                        "summary".into(),
                        format!(
                            "{finding} in {:.0}% of {service}'s requests",
                            100.0 * d_find / d_req
                        ),
                    );
                    a.insert(
                        "description".into(),
                        format!(
                            "{d_find:.0} {finding} findings in {d_req:.0} requests of {service} over the last {}",
                            crate::config::duration::format(window)
                        ),
                    );
                    out.push(self.condition("trace_pattern", "warning", l, a));
                }
            }
        }
        if self.enabled("unpriced_model")
            && let Some(base) = oldest_within(unpriced_window)
        {
            for ((service, provider, model), n) in &snap.unpriced {
                let key = (service.clone(), provider.clone(), model.clone());
                let d = n - base.unpriced.get(&key).copied().unwrap_or(0.0);
                if d > 0.0 || (base.at == snap.at && *n > 0.0) {
                    let mut l = Labels::new();
                    l.insert("service".into(), service.clone());
                    l.insert("model".into(), model.clone());
                    let mut a = Labels::new();
                    a.insert(
                        "summary".into(),
                        format!("model {model} ({provider}) has no price"),
                    );
                    a.insert(
                        "description".into(),
                        format!("{n:.0} calls of {service} to {model} ({provider}) could not be priced; add it to processors.genai.prices"),
                    );
                    out.push(self.condition("unpriced_model", "warning", l, a));
                }
            }
        }
        // Own health, against the previous evaluation.
        if let Some(prev) = self.history.back() {
            if self.enabled("exporter_failing") {
                for (exp, (sent, failed)) in &snap.exporters {
                    let (ps, pf) = prev.exporters.get(exp).copied().unwrap_or((0.0, 0.0));
                    if failed - pf > 0.0 && sent - ps <= 0.0 {
                        let mut l = Labels::new();
                        l.insert("exporter".into(), exp.clone());
                        let mut a = Labels::new();
                        a.insert("summary".into(), format!("exporter {exp} is failing"));
                        a.insert(
                            "description".into(),
                            format!(
                                "{:.0} items failed and none was delivered in the last evaluation",
                                failed - pf
                            ),
                        );
                        out.push(self.condition("exporter_failing", "critical", l, a));
                    }
                }
            }
            if self.enabled("traces_evicted") && snap.evictions > prev.evictions {
                let mut a = Labels::new();
                a.insert(
                    "summary".into(),
                    "traces were flushed early (trace_assembly.max_traces reached)".into(),
                );
                a.insert(
                    "description".into(),
                    format!(
                        "{:.0} traces evicted since the last evaluation",
                        snap.evictions - prev.evictions
                    ),
                );
                out.push(self.condition("traces_evicted", "warning", Labels::new(), a));
            }
        }
        if self.enabled("queue_full") {
            let threshold = self.config.rule("queue_full").threshold.unwrap_or(0.8);
            for (kind, name, which, fill) in Self::queue_fill(&own) {
                if fill >= threshold {
                    let mut l = Labels::new();
                    l.insert(kind.into(), name.clone());
                    let mut a = Labels::new();
                    a.insert(
                        "summary".into(),
                        format!("{kind} {name} {which} is {:.0}% full", fill * 100.0),
                    );
                    a.insert("description".into(), format!("the {kind} {which} of {name} holds {:.0}% of its capacity (threshold {:.0}%)", fill * 100.0, threshold * 100.0));
                    out.push(self.condition("queue_full", "warning", l, a));
                }
            }
        }
        self.history.push_back(snap);
        out
    }
}
