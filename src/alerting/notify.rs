//! Delivery of notifications: one task per receiver, with a bounded queue, a 10 s timeout per
//! attempt, and retries with exponential backoff on 5xx, 429 and timeouts (never on other 4xx).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngExt;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::engine::{Alert, Notification, State};
use super::{ReceiverConfig, ReceiverKind};
use crate::telemetry::SelfMetrics;

/// The HMAC key of a Standard Webhooks secret: `whsec_<base64>` decoded, else the bytes as
/// written; at least 24 bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("whsec_ secret is not base64: {e}"))?,
        None => secret.as_bytes().to_vec(),
    };
    if key.len() < 24 {
        return Err("a signing secret needs at least 24 bytes".into());
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Alertmanager's "zero" endsAt of a firing alert in webhook bodies.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn status(s: State) -> &'static str {
    match s {
        State::Resolved => "resolved",
        _ => "firing",
    }
}

fn common(maps: Vec<&super::engine::Labels>) -> super::engine::Labels {
    let mut it = maps.into_iter();
    let Some(first) = it.next() else {
        return Default::default();
    };
    let mut c = first.clone();
    for m in it {
        c.retain(|k, v| m.get(k) == Some(v));
    }
    c
}

/// The Alertmanager webhook body, version 4.
pub fn webhook_body(
    n: &Notification,
    receiver: &str,
    external_url: &str,
    max_alerts: usize,
) -> Value {
    let shown = if max_alerts == 0 {
        n.alerts.len()
    } else {
        n.alerts.len().min(max_alerts)
    };
    let alerts: Vec<Value> = n.alerts[..shown]
        .iter()
        .map(|a| alert_json(a, external_url, true))
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": n.alerts.len() - shown,
        "status": status(n.status),
        "receiver": receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(n.alerts.iter().map(|a| &a.labels).collect()),
        "commonAnnotations": common(n.alerts.iter().map(|a| &a.annotations).collect()),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

fn alert_json(a: &Alert, external_url: &str, webhook: bool) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at.unwrap_or(a.active_since)),
        "generatorURL": if external_url.is_empty() { String::new() } else { format!("{}/api/v1/alerts", external_url.trim_end_matches('/')) },
    });
    if let Some(e) = a.ends_at {
        v["endsAt"] = json!(rfc3339(e));
    } else if webhook {
        v["endsAt"] = json!(ZERO_TIME);
    }
    if webhook {
        v["status"] = json!(status(a.state));
        v["fingerprint"] = json!(a.fingerprint);
    }
    v
}

enum Outcome {
    Done,
    Retry(Option<Duration>),
    Fail(String),
}

/// Start the delivery task of one receiver.
pub fn spawn(
    name: String,
    cfg: ReceiverConfig,
    external_url: String,
    metrics: Arc<SelfMetrics>,
    stop: CancellationToken,
) -> (mpsc::Sender<Notification>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Notification>(1024);
    let task = tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(cfg.timeout).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(receiver = %name, error = %e, "alerting: cannot build an HTTP client");
                return;
            }
        };
        let key = cfg
            .secret
            .as_ref()
            .and_then(|s| signing_key(s.expose()).ok());
        let url = match cfg.kind {
            ReceiverKind::Webhook => cfg.url.clone(),
            ReceiverKind::Alertmanager => {
                format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'))
            }
        };
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => break,
                n = rx.recv() => match n { Some(n) => n, None => break },
            };
            let body = match cfg.kind {
                ReceiverKind::Webhook => webhook_body(&n, &name, &external_url, cfg.max_alerts),
                ReceiverKind::Alertmanager => Value::Array(
                    n.alerts
                        .iter()
                        .map(|a| alert_json(a, &external_url, false))
                        .collect(),
                ),
            };
            let body = match serde_json::to_vec(&body) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(receiver = %name, error = %e, "alerting: cannot encode a notification");
                    metrics.count_notification(&name, "failed");
                    continue;
                }
            };
            let mut backoff = cfg.initial_backoff;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let mut req = client
                    .post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(
                        http::header::USER_AGENT,
                        concat!("ragwatch/", env!("CARGO_PKG_VERSION")),
                    );
                for (k, v) in &cfg.headers {
                    req = req.header(k.as_str(), v.expose());
                }
                if let Some(key) = &key {
                    let id = format!("msg_{:032x}", rand::rng().random::<u128>());
                    let ts = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    req = req
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", sign(key, &id, ts, &body));
                }
                let outcome = match req.body(body.clone()).send().await {
                    Ok(r) if r.status().is_success() => Outcome::Done,
                    Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                        let after = r
                            .headers()
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        Outcome::Retry(after)
                    }
                    Ok(r) => Outcome::Fail(format!("answered {}", r.status())),
                    Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => {
                        tracing::debug!(receiver = %name, error = %e, "alerting: send failed");
                        Outcome::Retry(None)
                    }
                    Err(e) => Outcome::Fail(e.to_string()),
                };
                match outcome {
                    Outcome::Done => {
                        metrics.count_notification(&name, "success");
                        break;
                    }
                    Outcome::Retry(after) if attempt <= cfg.max_retries => {
                        metrics.count_notification(&name, "retried");
                        let wait = after.unwrap_or(backoff).min(Duration::from_secs(60));
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    Outcome::Retry(_) => {
                        metrics.count_notification(&name, "failed");
                        tracing::warn!(receiver = %name, attempts = attempt, "alerting: notification failed after retries");
                        break;
                    }
                    Outcome::Fail(why) => {
                        metrics.count_notification(&name, "failed");
                        tracing::warn!(receiver = %name, reason = %why, "alerting: notification refused; not retried");
                        break;
                    }
                }
            }
        }
    });
    (tx, task)
}
