//! The alert lifecycle, as Alertmanager defines it, without any I/O: conditions come in, alerts
//! go pending → firing → resolved, are routed to receivers, grouped, inhibited or silenced, and
//! notifications come out. Time is passed in, so tests drive it by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// One observation that a condition holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub labels: Labels,
    pub annotations: Labels,
    /// How long it must hold before the alert fires.
    pub for_: Duration,
    /// How long it must be clear before the alert resolves.
    pub resolve_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub state: State,
    /// When the condition was first seen (this episode).
    pub active_since: SystemTime,
    pub last_seen: SystemTime,
    /// When it fired (Alertmanager's startsAt).
    pub starts_at: Option<SystemTime>,
    /// When it resolved (endsAt).
    pub ends_at: Option<SystemTime>,
    pub for_: Duration,
    pub resolve_after: Duration,
    /// How many times the condition was observed this episode (for the log lines).
    #[serde(default)]
    pub observations: u64,
}

impl Alert {
    /// One log line for a change of state: when an alert turns pending, fires, resolves or
    /// clears before firing; never on the ticks in between.
    fn log_change(&self, what: &str) {
        let name = self
            .labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("");
        let severity = self
            .labels
            .get("severity")
            .map(String::as_str)
            .unwrap_or("");
        let summary = self
            .annotations
            .get("summary")
            .map(String::as_str)
            .unwrap_or("");
        match what {
            "firing" => tracing::warn!(
                alert = name,
                severity,
                labels = ?self.labels,
                observations = self.observations,
                summary,
                "alert firing"
            ),
            _ => tracing::info!(
                alert = name,
                severity,
                labels = ?self.labels,
                observations = self.observations,
                summary,
                "alert {what}"
            ),
        }
    }
}

/// Alertmanager's fingerprint: FNV-1a (64 bit) over the sorted label names and values.
pub fn fingerprint(labels: &Labels) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A label matcher: `name: value` (equal) or `name: "!value"` (not equal).
pub fn matches(matchers: &Labels, labels: &Labels) -> bool {
    matchers.iter().all(|(k, want)| {
        let have = labels.get(k).map(String::as_str).unwrap_or("");
        match want.strip_prefix('!') {
            Some(not) => have != not,
            None => have == want,
        }
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub matchers: Labels,
    pub ends_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub receiver: String,
    pub matchers: Labels,
    /// Go on to the next routes after a match.
    pub continue_: bool,
}

/// How a receiver takes alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Grouped notifications (group_wait, group_interval, repeat_interval).
    Grouped,
    /// Every alert pushed on its own, firing ones again every `resend` (Alertmanager's API).
    Push { resend: Duration },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub routes: Vec<Route>,
    pub receivers: BTreeMap<String, Delivery>,
    pub silences: Vec<Silence>,
    /// How long a resolved alert is kept (listed, and its resolution delivered).
    pub resolved_retention: Duration,
}

/// One notification for one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// `firing` when any alert fires, else `resolved`.
    pub status: State,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    receiver: String,
    labels: Labels,
    created: Option<SystemTime>,
    last_sent: Option<SystemTime>,
    /// The firing alerts of the last notification.
    sent_firing: BTreeSet<String>,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    alerts: Vec<Alert>,
    groups: Vec<Group>,
    /// (receiver, fingerprint) → last push, for push receivers.
    pushed: Vec<(String, String, SystemTime)>,
    /// (receiver, fingerprint) of resolutions still to push.
    resolved_unpushed: Vec<(String, String)>,
}

/// How an alert shows in the API.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub alert: Alert,
    pub silenced: bool,
    pub inhibited: bool,
    pub receivers: Vec<String>,
}

pub struct Engine {
    config: EngineConfig,
    alerts: BTreeMap<String, Alert>,
    groups: BTreeMap<String, Group>,
    pushed: BTreeMap<(String, String), SystemTime>,
    resolved_unpushed: BTreeSet<(String, String)>,
    changed: bool,
}

fn group_key(receiver: &str, labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}/{receiver}:{{{}}}", inner.join(", "))
}

impl AlertView {
    /// The API's JSON: times in RFC 3339, Alertmanager's field names.
    pub fn to_json(&self) -> serde_json::Value {
        let t = |x: Option<SystemTime>| x.map(|x| humantime::format_rfc3339_millis(x).to_string());
        let a = &self.alert;
        serde_json::json!({
            "fingerprint": a.fingerprint,
            "labels": a.labels,
            "annotations": a.annotations,
            "state": a.state,
            "activeAt": t(Some(a.active_since)),
            "lastSeenAt": t(Some(a.last_seen)),
            "startsAt": t(a.starts_at),
            "endsAt": t(a.ends_at),
            "silenced": self.silenced,
            "inhibited": self.inhibited,
            "receivers": self.receivers,
        })
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
            pushed: BTreeMap::new(),
            resolved_unpushed: BTreeSet::new(),
            changed: false,
        }
    }

    /// A condition holds at `now`.
    pub fn observe(&mut self, c: Condition, now: SystemTime) {
        let fp = fingerprint(&c.labels);
        match self.alerts.get_mut(&fp) {
            Some(a) if a.state != State::Resolved => {
                a.last_seen = now;
                a.annotations = c.annotations;
                a.observations += 1;
            }
            _ => {
                let a = Alert {
                    fingerprint: fp.clone(),
                    labels: c.labels,
                    annotations: c.annotations,
                    state: State::Pending,
                    active_since: now,
                    last_seen: now,
                    starts_at: None,
                    ends_at: None,
                    for_: c.for_,
                    resolve_after: c.resolve_after,
                    observations: 1,
                };
                a.log_change("pending");
                self.alerts.insert(fp, a);
                self.changed = true;
            }
        }
    }

    fn silenced(&self, a: &Alert, now: SystemTime) -> bool {
        self.config
            .silences
            .iter()
            .any(|s| now < s.ends_at && matches(&s.matchers, &a.labels))
    }

    /// A warning (or info) alert is inhibited by a firing critical one of the same group
    /// (the `group_by` labels), as Alertmanager's usual inhibit rule.
    fn inhibited(&self, a: &Alert) -> bool {
        if a.labels.get("severity").map(String::as_str) == Some("critical") {
            return false;
        }
        fn key<'a>(group_by: &[String], x: &'a Alert) -> Vec<Option<&'a String>> {
            group_by.iter().map(|l| x.labels.get(l)).collect()
        }
        let key = |x| key(&self.config.group_by, x);
        let mine = key(a);
        self.alerts.values().any(|o| {
            o.state == State::Firing
                && o.labels.get("severity").map(String::as_str) == Some("critical")
                && key(o) == mine
        })
    }

    fn receivers_of(&self, labels: &Labels) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.config.routes {
            if matches(&r.matchers, labels) {
                if !out.contains(&r.receiver) {
                    out.push(r.receiver.clone());
                }
                if !r.continue_ {
                    break;
                }
            }
        }
        out
    }

    fn group_labels(&self, labels: &Labels) -> Labels {
        self.config
            .group_by
            .iter()
            .filter_map(|l| labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect()
    }

    /// Advance every alert and group to `now`; the notifications due.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Notification> {
        let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        // Lifecycle.
        let mut newly_resolved = Vec::new();
        for a in self.alerts.values_mut() {
            match a.state {
                State::Pending if since(a.last_seen) >= a.resolve_after => {
                    // Cleared before it fired: forget it (below).
                    a.state = State::Resolved;
                    a.log_change("cleared before firing");
                }
                State::Pending if since(a.active_since) >= a.for_ => {
                    a.state = State::Firing;
                    a.starts_at = Some(now);
                    self.changed = true;
                    a.log_change("firing");
                }
                State::Firing if since(a.last_seen) >= a.resolve_after => {
                    a.state = State::Resolved;
                    a.ends_at = Some(now);
                    newly_resolved.push(a.fingerprint.clone());
                    self.changed = true;
                    a.log_change("resolved");
                }
                _ => {}
            }
        }
        // A pending alert that cleared never fired: nothing to tell anyone.
        self.alerts
            .retain(|_, a| !(a.state == State::Resolved && a.starts_at.is_none()));
        for fp in newly_resolved {
            if let Some(a) = self.alerts.get(&fp) {
                for r in self.receivers_of(&a.labels) {
                    if matches!(self.config.receivers.get(&r), Some(Delivery::Push { .. })) {
                        self.resolved_unpushed.insert((r, fp.clone()));
                    }
                }
            }
        }

        let mut out = Vec::new();
        // Grouped receivers: gather the notifiable alerts of each (receiver, group).
        let mut members: BTreeMap<String, (String, Labels, Vec<Alert>)> = BTreeMap::new();
        for a in self.alerts.values() {
            let notifiable = match a.state {
                State::Firing => !self.silenced(a, now) && !self.inhibited(a),
                // A resolution is told to the groups that were told of the firing.
                State::Resolved => true,
                State::Pending => false,
            };
            if !notifiable {
                continue;
            }
            for r in self.receivers_of(&a.labels) {
                match self.config.receivers.get(&r) {
                    Some(Delivery::Grouped) => {
                        let gl = self.group_labels(&a.labels);
                        let key = group_key(&r, &gl);
                        members
                            .entry(key)
                            .or_insert_with(|| (r.clone(), gl, Vec::new()))
                            .2
                            .push(a.clone());
                    }
                    Some(Delivery::Push { resend }) => {
                        let k = (r.clone(), a.fingerprint.clone());
                        let due = match a.state {
                            State::Firing => {
                                self.pushed.get(&k).is_none_or(|t| since(*t) >= *resend)
                            }
                            _ => self.resolved_unpushed.contains(&k),
                        };
                        if due {
                            self.pushed.insert(k.clone(), now);
                            self.resolved_unpushed.remove(&k);
                            out.push(Notification {
                                receiver: r.clone(),
                                group_key: format!("{{}}/{r}:{{}}"),
                                group_labels: Labels::new(),
                                status: a.state,
                                alerts: vec![a.clone()],
                            });
                            self.changed = true;
                        }
                    }
                    None => {}
                }
            }
        }
        // Keep groups that still have members or that must tell of a resolution.
        for (key, (receiver, labels, _)) in &members {
            self.groups.entry(key.clone()).or_insert_with(|| Group {
                receiver: receiver.clone(),
                labels: labels.clone(),
                created: Some(now),
                last_sent: None,
                sent_firing: BTreeSet::new(),
            });
        }
        let cfg = &self.config;
        let mut drop_groups = Vec::new();
        for (key, g) in self.groups.iter_mut() {
            let alerts: Vec<Alert> = members
                .get(key)
                .map(|m| {
                    m.2.iter()
                        .filter(|a| {
                            a.state == State::Firing || g.sent_firing.contains(&a.fingerprint)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let firing: BTreeSet<String> = alerts
                .iter()
                .filter(|a| a.state == State::Firing)
                .map(|a| a.fingerprint.clone())
                .collect();
            let due = match g.last_sent {
                None => !firing.is_empty() && g.created.is_some_and(|c| since(c) >= cfg.group_wait),
                Some(last) => {
                    (since(last) >= cfg.group_interval && firing != g.sent_firing)
                        || (since(last) >= cfg.repeat_interval && !firing.is_empty())
                }
            };
            if due && !alerts.is_empty() {
                out.push(Notification {
                    receiver: g.receiver.clone(),
                    group_key: key.clone(),
                    group_labels: g.labels.clone(),
                    status: if firing.is_empty() {
                        State::Resolved
                    } else {
                        State::Firing
                    },
                    alerts,
                });
                g.last_sent = Some(now);
                g.sent_firing = firing.clone();
                self.changed = true;
            }
            if firing.is_empty() && g.sent_firing.is_empty() {
                drop_groups.push(key.clone());
            }
        }
        for k in drop_groups {
            self.groups.remove(&k);
        }
        // Forget resolved alerts after a while (their resolution has been delivered by then).
        let keep = self.config.resolved_retention;
        let before = self.alerts.len();
        self.alerts
            .retain(|_, a| a.state != State::Resolved || a.ends_at.is_none_or(|e| since(e) < keep));
        if self.alerts.len() != before {
            self.changed = true;
        }
        let alive: BTreeSet<&String> = self.alerts.keys().collect();
        self.pushed.retain(|(_, fp), _| alive.contains(fp));
        out
    }

    /// Every alert, with whether it is silenced or inhibited and where it goes.
    pub fn view(&self, now: SystemTime) -> Vec<AlertView> {
        self.alerts
            .values()
            .map(|a| AlertView {
                alert: a.clone(),
                silenced: self.silenced(a, now),
                inhibited: self.inhibited(a),
                receivers: self.receivers_of(&a.labels),
            })
            .collect()
    }

    /// Firing alerts by (alertname, severity).
    pub fn firing(&self) -> BTreeMap<(String, String), u64> {
        let mut m = BTreeMap::new();
        for a in self.alerts.values().filter(|a| a.state == State::Firing) {
            let l = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
            *m.entry((l("alertname"), l("severity"))).or_insert(0) += 1;
        }
        m
    }

    /// Whether anything changed since the last call (for persistence).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            alerts: self.alerts.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            pushed: self
                .pushed
                .iter()
                .map(|((r, f), t)| (r.clone(), f.clone(), *t))
                .collect(),
            resolved_unpushed: self.resolved_unpushed.iter().cloned().collect(),
        }
    }

    pub fn restore(&mut self, p: Persisted) {
        for a in p.alerts {
            self.alerts.insert(a.fingerprint.clone(), a);
        }
        for g in p.groups {
            self.groups.insert(group_key(&g.receiver, &g.labels), g);
        }
        for (r, f, t) in p.pushed {
            self.pushed.insert((r, f), t);
        }
        self.resolved_unpushed.extend(p.resolved_unpushed);
    }
}
