//! The lifecycle by hand-set clock.

use super::engine::*;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cond(name: &str, service: &str, severity: &str) -> Condition {
    Condition {
        labels: labels(&[
            ("alertname", name),
            ("service", service),
            ("severity", severity),
        ]),
        annotations: labels(&[("summary", "s")]),
        for_: Duration::from_secs(10),
        resolve_after: Duration::from_secs(30),
    }
}

fn config(receivers: &[(&str, Delivery)]) -> EngineConfig {
    EngineConfig {
        group_by: vec!["alertname".into(), "service".into()],
        group_wait: Duration::from_secs(5),
        group_interval: Duration::from_secs(60),
        repeat_interval: Duration::from_secs(600),
        routes: receivers
            .iter()
            .map(|(r, _)| Route {
                receiver: r.to_string(),
                matchers: Labels::new(),
                continue_: true,
            })
            .collect(),
        receivers: receivers
            .iter()
            .map(|(r, d)| (r.to_string(), *d))
            .collect::<BTreeMap<_, _>>(),
        silences: Vec::new(),
        resolved_retention: Duration::from_secs(900),
    }
}

/// Observe `c` every second from `from` to `to` (inclusive), ticking; all notifications.
fn hold(e: &mut Engine, c: &[Condition], from: u64, to: u64) -> Vec<(u64, Notification)> {
    let mut out = Vec::new();
    for s in from..=to {
        for c in c {
            e.observe(c.clone(), t(s));
        }
        out.extend(e.tick(t(s)).into_iter().map(|n| (s, n)));
    }
    out
}

fn idle(e: &mut Engine, from: u64, to: u64) -> Vec<(u64, Notification)> {
    (from..=to)
        .flat_map(|s| e.tick(t(s)).into_iter().map(move |n| (s, n)))
        .collect()
}

#[test]
fn pending_firing_grouped_repeated_and_resolved() {
    let mut e = Engine::new(config(&[("hook", Delivery::Grouped)]));
    let a = cond("SloBurn", "api", "critical");
    let b = Condition {
        labels: labels(&[
            ("alertname", "SloBurn"),
            ("service", "api"),
            ("severity", "critical"),
            ("slo", "other"),
        ]),
        ..a.clone()
    };
    // Both hold from 0 s: pending until for (10 s), firing at 10 s; the group waits 5 s: one
    // notification at 15 s with both alerts.
    let n = hold(&mut e, &[a.clone(), b.clone()], 0, 100);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, 15);
    assert_eq!(n[0].1.alerts.len(), 2);
    assert_eq!(n[0].1.status, State::Firing);
    assert_eq!(
        n[0].1.group_labels,
        labels(&[("alertname", "SloBurn"), ("service", "api")])
    );
    assert_eq!(
        n[0].1.group_key,
        r#"{}/hook:{alertname="SloBurn", service="api"}"#
    );
    assert_eq!(n[0].1.alerts[0].starts_at, Some(t(10)));
    // Unchanged: repeated after repeat_interval (600 s after 15 s).
    let n = hold(&mut e, &[a.clone(), b.clone()], 101, 700);
    assert_eq!(n.iter().map(|x| x.0).collect::<Vec<_>>(), vec![615]);
    // b clears at 701 (last seen 700): resolves at 730; the group tells at its next interval
    // check (615 + 60 = 675 passed) → at 730, with b resolved and a still firing.
    let n = hold(&mut e, std::slice::from_ref(&a), 701, 740);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, 730);
    let resolved: Vec<_> = n[0]
        .1
        .alerts
        .iter()
        .filter(|x| x.state == State::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].ends_at, Some(t(730)));
    // a clears at 741: resolved at 770 (last seen 740 + 30); group interval since 730 is due at
    // 790: the resolved notification then, and nothing after.
    let n = idle(&mut e, 741, 2000);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, 790);
    assert_eq!(n[0].1.status, State::Resolved);
    assert!(e.firing().is_empty());
}

#[test]
fn a_blip_shorter_than_for_never_fires() {
    // A condition holds while it was seen within resolve_after: seen 0..=5 with resolve_after
    // 3 s holds until 8 s, short of for (10 s).
    let mut e = Engine::new(config(&[("hook", Delivery::Grouped)]));
    let blip = Condition {
        resolve_after: Duration::from_secs(3),
        ..cond("A", "api", "warning")
    };
    let n = hold(&mut e, &[blip], 0, 5);
    assert!(n.is_empty());
    assert!(idle(&mut e, 6, 200).is_empty());
    assert!(e.view(t(200)).is_empty());
}

#[test]
fn critical_inhibits_warning_of_the_same_group_and_silences_mute() {
    let mut cfg = config(&[("hook", Delivery::Grouped)]);
    cfg.silences.push(Silence {
        matchers: labels(&[("service", "quiet")]),
        ends_at: t(50),
    });
    let mut e = Engine::new(cfg);
    let crit = cond("Burn", "api", "critical");
    let warn = Condition {
        labels: labels(&[
            ("alertname", "Burn"),
            ("service", "api"),
            ("severity", "warning"),
        ]),
        ..crit.clone()
    };
    let quiet = cond("Burn", "quiet", "critical");
    let n = hold(&mut e, &[crit, warn, quiet.clone()], 0, 20);
    // Only the critical one of api is told; the warning is inhibited, quiet silenced.
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].1.alerts.len(), 1);
    assert_eq!(n[0].1.alerts[0].labels["severity"], "critical");
    let v = e.view(t(20));
    assert!(
        v.iter()
            .any(|x| x.inhibited && x.alert.labels["severity"] == "warning")
    );
    assert!(
        v.iter()
            .any(|x| x.silenced && x.alert.labels["service"] == "quiet")
    );
    // The silence ends at 50: quiet's group is told after its group wait.
    let n = hold(&mut e, &[quiet], 21, 60);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, 55);
    assert_eq!(n[0].1.group_labels["service"], "quiet");
}

#[test]
fn push_receivers_resend_firing_alerts_and_send_the_resolution_once() {
    let mut e = Engine::new(config(&[(
        "am",
        Delivery::Push {
            resend: Duration::from_secs(60),
        },
    )]));
    let a = cond("A", "api", "warning");
    // Fires at 10, pushed at 10, 70, 130.
    let n = hold(&mut e, std::slice::from_ref(&a), 0, 150);
    assert_eq!(n.iter().map(|x| x.0).collect::<Vec<_>>(), vec![10, 70, 130]);
    // Clear from 151: resolved at 180 (150 + 30), pushed once with endsAt.
    let n = idle(&mut e, 151, 400);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].0, 180);
    assert_eq!(n[0].1.alerts[0].ends_at, Some(t(180)));
}

#[test]
fn state_survives_a_restart_without_a_storm_or_a_lost_resolution() {
    let cfg = config(&[("hook", Delivery::Grouped)]);
    let mut e = Engine::new(cfg.clone());
    let a = cond("A", "api", "critical");
    assert_eq!(hold(&mut e, std::slice::from_ref(&a), 0, 20).len(), 1);
    let saved = serde_json::to_string(&e.persisted()).unwrap();
    // A new process: the condition still holds. No new "firing" before repeat_interval.
    let mut e = Engine::new(cfg);
    e.restore(serde_json::from_str(&saved).unwrap());
    assert!(hold(&mut e, std::slice::from_ref(&a), 21, 300).is_empty());
    // It clears: the resolution still comes.
    let n = idle(&mut e, 301, 500);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].1.status, State::Resolved);
}

#[test]
fn fingerprints_and_matchers() {
    let a = labels(&[("alertname", "A"), ("service", "api")]);
    let b = labels(&[("service", "api"), ("alertname", "A")]);
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_ne!(fingerprint(&a), fingerprint(&labels(&[("alertname", "A")])));
    assert_eq!(fingerprint(&a).len(), 16);
    assert!(matches(&labels(&[("service", "api")]), &a));
    assert!(matches(&labels(&[("service", "!web")]), &a));
    assert!(!matches(&labels(&[("service", "!api")]), &a));
    assert!(!matches(&labels(&[("stage", "llm")]), &a));
}

#[test]
fn each_change_of_state_is_one_log_line() {
    let mut e = Engine::new(config(&[]));
    let c = cond("RagSloBurn", "api", "critical");
    let lines = crate::test_logs::logged(|| {
        // Observed every second for a minute: pending at 0, firing at 10 (for: 10s); clear
        // from 61, resolved 30 s later.
        hold(&mut e, std::slice::from_ref(&c), 0, 60);
        for s in 61..=120 {
            e.tick(t(s));
        }
    });
    let of = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(of("alert pending"), 1, "{lines:#?}");
    assert_eq!(of("alert firing"), 1, "{lines:#?}");
    assert_eq!(of("alert resolved"), 1, "{lines:#?}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("alert resolved") && l.contains("observations=61")),
        "{lines:#?}"
    );
}
