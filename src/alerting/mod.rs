//! Alerting: findings and ragwatch's own health become alerts with Alertmanager's lifecycle
//! (see [`engine`]), delivered to webhooks (Alertmanager's webhook body, version 4, optionally
//! signed per Standard Webhooks) and to Alertmanager itself (POST /api/v2/alerts).

/// The alert engine, once alerting has started.
pub type AlertsSlot = Arc<std::sync::OnceLock<Arc<std::sync::Mutex<engine::Engine>>>>;

pub mod engine;
pub mod notify;
pub mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, Secret, Validate, duration};
use engine::{Delivery, Engine, EngineConfig, Labels, Route, Silence};

/// Per-source settings; every source is on by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long the condition must hold before the alert fires.
    #[serde(
        default,
        rename = "for",
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,
    /// How long it must be clear before the alert resolves.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_after: Option<Duration>,
    /// Overrides the severity the source gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    /// Pattern rates: the window, the share of a service's requests with the finding, and the
    /// fewest requests in the window to judge.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Queue fill: the share of capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| crate::config::duration::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::config::duration::format(*d)),
            None => s.serialize_none(),
        }
    }
}

/// The alert sources and their alert names.
pub const SOURCES: &[(&str, &str)] = &[
    ("slo_burn", "RagSloBurn"),
    ("budget_projection", "RagBudgetProjection"),
    ("anomaly", "RagAnomaly"),
    ("trace_pattern", "RagTracePattern"),
    ("unpriced_model", "RagUnpricedModel"),
    ("exporter_failing", "RagwatchExporterFailing"),
    ("queue_full", "RagwatchQueueFull"),
    ("traces_evicted", "RagwatchTracesEvicted"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    Webhook,
    Alertmanager,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    #[serde(rename = "type")]
    pub kind: ReceiverKind,
    /// Webhook: the URL posted to. Alertmanager: its base URL (`/api/v2/alerts` is appended).
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Standard Webhooks signing secret (at least 24 bytes; `whsec_<base64>` is decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// At most this many alerts per notification (0: all); the rest are counted in
    /// `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
    #[serde(default = "ten_seconds", with = "duration")]
    pub timeout: Duration,
    /// Retries on 5xx, 429 and timeouts.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default = "one_second", with = "duration")]
    pub initial_backoff: Duration,
    /// Alertmanager: re-send firing alerts this often.
    #[serde(default = "sixty_seconds", with = "duration")]
    pub resend_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub receiver: String,
    /// `label: value`, or `label: "!value"` for not equal.
    #[serde(default)]
    pub matchers: Labels,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    pub matchers: Labels,
    /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
    pub ends_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default = "one_second", with = "duration")]
    pub evaluation_interval: Duration,
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    #[serde(default = "thirty_seconds", with = "duration")]
    pub group_wait: Duration,
    #[serde(default = "five_minutes", with = "duration")]
    pub group_interval: Duration,
    #[serde(default = "four_hours", with = "duration")]
    pub repeat_interval: Duration,
    /// Default for every source.
    #[serde(default = "five_minutes", with = "duration")]
    pub resolve_after: Duration,
    /// Per source (see [`SOURCES`]).
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
    #[serde(default)]
    pub silences: Vec<SilenceConfig>,
    #[serde(default)]
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// In order; without routes every receiver gets every alert.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Links: `externalURL` and `generatorURL` of notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// With it, alerts carry a link to their example trace in Jaeger's UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jaeger_url: Option<String>,
    /// Where alert state is kept across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_dir: Option<PathBuf>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn four_hours() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_retries() -> u32 {
    5
}
fn default_group_by() -> Vec<String> {
    vec!["alertname".into(), "service".into()]
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s.trim()).map_err(|e| {
        format!("`{s}` is not an RFC 3339 time ({e}); write e.g. 2026-12-01T00:00:00Z")
    })
}

impl Validate for AlertsConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        for (k, r) in &self.rules {
            if !SOURCES.iter().any(|(s, _)| s == k) {
                let known: Vec<&str> = SOURCES.iter().map(|(s, _)| *s).collect();
                problems.push(
                    &format!("{path}.rules.{k}"),
                    format!("unknown source; known: {}", known.join(", ")),
                );
            }
            if let Some(s) = &r.severity
                && !["critical", "warning", "info"].contains(&s.as_str())
            {
                problems.push(
                    &format!("{path}.rules.{k}.severity"),
                    "must be critical, warning or info",
                );
            }
            if r.min_share.is_some_and(|x| !(x > 0.0 && x <= 1.0)) {
                problems.push(&format!("{path}.rules.{k}.min_share"), "must be in (0, 1]");
            }
            if r.threshold.is_some_and(|x| !(x > 0.0 && x <= 1.0)) {
                problems.push(&format!("{path}.rules.{k}.threshold"), "must be in (0, 1]");
            }
        }
        for (i, s) in self.silences.iter().enumerate() {
            if let Err(e) = parse_time(&s.ends_at) {
                problems.push(&format!("{path}.silences.{i}.ends_at"), e);
            }
            if s.matchers.is_empty() {
                problems.push(
                    &format!("{path}.silences.{i}.matchers"),
                    "a silence needs at least one matcher",
                );
            }
        }
        for (name, r) in &self.receivers {
            let p = format!("{path}.receivers.{name}");
            match reqwest::Url::parse(&r.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => problems.push(&format!("{p}.url"), "must be an http:// or https:// URL"),
            }
            if let Some(s) = &r.secret
                && notify::signing_key(s.expose()).is_err()
            {
                problems.push(
                    &format!("{p}.secret"),
                    "must be at least 24 bytes (or whsec_ followed by base64 of at least 24)",
                );
            }
            if r.secret.is_some() && r.kind == ReceiverKind::Alertmanager {
                problems.push(&format!("{p}.secret"), "only webhook receivers sign");
            }
            if r.timeout.is_zero() {
                problems.push(&format!("{p}.timeout"), "must be greater than 0");
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.receivers.contains_key(&r.receiver) {
                problems.push(
                    &format!("{path}.routes.{i}.receiver"),
                    format!("no receiver named `{}` in {path}.receivers", r.receiver),
                );
            }
        }
        if self.evaluation_interval.is_zero() {
            problems.push(
                &format!("{path}.evaluation_interval"),
                "must be greater than 0",
            );
        }
        if self.group_by.is_empty() {
            problems.push(&format!("{path}.group_by"), "name at least one label");
        }
    }
}

impl AlertsConfig {
    fn rule(&self, source: &str) -> RuleConfig {
        self.rules.get(source).cloned().unwrap_or_default()
    }

    fn engine_config(&self) -> EngineConfig {
        let routes = if self.routes.is_empty() {
            self.receivers
                .keys()
                .map(|r| Route {
                    receiver: r.clone(),
                    matchers: Labels::new(),
                    continue_: true,
                })
                .collect()
        } else {
            self.routes
                .iter()
                .map(|r| Route {
                    receiver: r.receiver.clone(),
                    matchers: r.matchers.clone(),
                    continue_: r.continue_,
                })
                .collect()
        };
        EngineConfig {
            group_by: self.group_by.clone(),
            group_wait: self.group_wait,
            group_interval: self.group_interval,
            repeat_interval: self.repeat_interval,
            routes,
            receivers: self
                .receivers
                .iter()
                .map(|(n, r)| {
                    let d = match r.kind {
                        ReceiverKind::Webhook => Delivery::Grouped,
                        ReceiverKind::Alertmanager => Delivery::Push {
                            resend: r.resend_interval,
                        },
                    };
                    (n.clone(), d)
                })
                .collect(),
            silences: self
                .silences
                .iter()
                .filter_map(|s| {
                    Some(Silence {
                        matchers: s.matchers.clone(),
                        ends_at: parse_time(&s.ends_at).ok()?,
                    })
                })
                .collect(),
            resolved_retention: Duration::from_secs(900).max(self.group_interval * 2),
        }
    }
}

/// The running alerting: the engine behind a lock (the admin API reads it), its tasks.
pub struct Alerting {
    pub engine: Arc<Mutex<Engine>>,
    pub tasks: Vec<JoinHandle<()>>,
}

const STATE_FILE: &str = "alerts.json";

fn load_state(dir: &std::path::Path) -> Option<engine::Persisted> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "alerting: cannot read saved state");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "alerting: saved state unreadable; starting afresh");
            None
        }
    }
}

fn save_state(dir: &std::path::Path, p: &engine::Persisted) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let body = serde_json::to_vec(p).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
    };
    if let Err(e) = write() {
        tracing::warn!(dir = %dir.display(), error = %e, "alerting: cannot save state");
    }
}

/// Start alerting: sources feed the engine every `evaluation_interval`, notifications go to
/// the receivers' delivery tasks.
pub fn start(
    config: &AlertsConfig,
    findings: &crate::findings::Findings,
    derived: Arc<crate::derived::DerivedMetrics>,
    metrics: Arc<crate::telemetry::SelfMetrics>,
    stop: CancellationToken,
) -> Alerting {
    let mut engine = Engine::new(config.engine_config());
    if let Some(dir) = &config.storage_dir
        && let Some(p) = load_state(dir)
    {
        engine.restore(p);
        tracing::info!(dir = %dir.display(), "alerting: state restored");
    }
    let engine = Arc::new(Mutex::new(engine));
    let mut tasks = Vec::new();
    let mut senders = BTreeMap::new();
    for (name, r) in &config.receivers {
        let (tx, task) = notify::spawn(
            name.clone(),
            r.clone(),
            config.external_url.clone().unwrap_or_default(),
            metrics.clone(),
            stop.clone(),
        );
        senders.insert(name.clone(), tx);
        tasks.push(task);
    }
    let mut src = sources::Sources::new(
        config.clone(),
        findings.subscribe(),
        derived,
        metrics.clone(),
    );
    let cfg = config.clone();
    let eng = engine.clone();
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(cfg.evaluation_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let now = SystemTime::now();
            let conditions = src.collect(now);
            let (notes, firing, saved) = {
                let mut e = eng.lock().unwrap_or_else(|p| p.into_inner());
                for c in conditions {
                    e.observe(c, now);
                }
                let notes = e.tick(now);
                let saved = (cfg.storage_dir.is_some() && e.take_changed()).then(|| e.persisted());
                (notes, e.firing(), saved)
            };
            metrics.set_alerts_firing(&firing);
            if let (Some(dir), Some(p)) = (&cfg.storage_dir, saved) {
                save_state(dir, &p);
            }
            for n in notes {
                if let Some(tx) = senders.get(&n.receiver)
                    && tx.try_send(n).is_err()
                {
                    metrics.count_notification("dropped", "queue_full");
                    tracing::warn!("alerting: a receiver's queue is full; notification dropped");
                }
            }
        }
    }));
    Alerting { engine, tasks }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod engine_tests;
