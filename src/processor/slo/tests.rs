//! SLO window arithmetic and evaluation, driven by a hand-set clock. Every expected number is
//! worked out in the comment above its assertion.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

use super::*;
use crate::attributes::{kv_f64, kv_str};
use crate::derived::Limits;

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

#[test]
fn ring_sums_the_buckets_of_a_window_and_forgets_old_ones() {
    let t0 = Instant::now();
    // Buckets of 10 s, six of them (60 s).
    let mut r = Ring::new(t0, Duration::from_secs(10), Duration::from_secs(60));
    r.record(secs(t0, 1.0), 1.0, 1.0); // bucket 0
    r.record(secs(t0, 15.0), 0.0, 1.0); // bucket 1
    // 10 s ending at 15 s: bucket 1 alone.
    let c = r.window(secs(t0, 15.0), Duration::from_secs(10));
    assert_eq!((c.good, c.total), (0.0, 1.0));
    // 20 s: buckets 1 and 0.
    let c = r.window(secs(t0, 15.0), Duration::from_secs(20));
    assert_eq!((c.good, c.total), (1.0, 2.0));
    // A window longer than the ring is the whole ring.
    let c = r.window(secs(t0, 15.0), Duration::from_secs(600));
    assert_eq!((c.good, c.total), (1.0, 2.0));
    // At 55 s (bucket 5) both are still inside 60 s; at 65 s (bucket 6) bucket 0 is gone; at
    // 75 s bucket 1 is gone too.
    assert_eq!(r.window(secs(t0, 55.0), Duration::from_secs(60)).total, 2.0);
    assert_eq!(r.window(secs(t0, 65.0), Duration::from_secs(60)).total, 1.0);
    assert_eq!(r.window(secs(t0, 75.0), Duration::from_secs(60)).total, 0.0);
    // A jump of many rings clears everything and keeps working.
    r.record(secs(t0, 10_000.0), 1.0, 1.0);
    let c = r.window(secs(t0, 10_000.0), Duration::from_secs(60));
    assert_eq!((c.good, c.total), (1.0, 1.0));
}

#[test]
fn burn_rate_is_the_error_ratio_over_the_budget() {
    let c = Counts {
        good: 50.0,
        total: 100.0,
    };
    // Error ratio 0.5, budget 1 - 0.95 = 0.05: burn 10.
    assert!((c.burn_rate(0.95).unwrap() - 10.0).abs() < 1e-9);
    // 999 good of 1000 against 99.9%: exactly 1.
    let c = Counts {
        good: 999.0,
        total: 1000.0,
    };
    assert!((c.burn_rate(0.999).unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(Counts::default().burn_rate(0.99), None);
}

fn store() -> Arc<DerivedMetrics> {
    Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
        Limits {
            max_series_per_metric: 100,
            series_ttl: Duration::from_secs(100_000),
        },
    ))
}

/// One trace: a root of `dur` seconds (error status when `error`) with extra attributes, and an
/// LLM child with `child` attributes.
fn trace(
    id: u8,
    service: &str,
    dur: f64,
    error: bool,
    root_attrs: Vec<KeyValue>,
    child: Vec<KeyValue>,
) -> Batch {
    let root = Span {
        trace_id: vec![id; 16],
        span_id: vec![1; 8],
        name: "rag.query".into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + (dur * 1e9) as u64,
        attributes: root_attrs,
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut spans = vec![root];
    if !child.is_empty() {
        spans.push(Span {
            trace_id: vec![id; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![1; 8],
            name: "chat".into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_100_000_000,
            attributes: child,
            ..Default::default()
        });
    }
    Batch::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn feed(p: &mut SloProcessor, b: Batch, now: Instant) {
    let mut out = Vec::new();
    p.on_input(b, now, &mut out);
    assert_eq!(out.len(), 1, "the batch goes on unchanged");
}

fn latency_config() -> SloProcessorConfig {
    SloProcessorConfig {
        slos: vec![SloConfig {
            name: "fast".into(),
            kind: SloKind::Latency,
            objective: 0.9,
            threshold: Some(Threshold::Text("1s".into())),
            service: None,
            over: "request".into(),
            by: None,
            period: Duration::from_secs(100),
        }],
        // Scaled-down windows: page when 60 s and 10 s both burn faster than 5.
        burn_rules: vec![BurnRule {
            severity: RuleSeverity::Critical,
            long: Duration::from_secs(60),
            short: Duration::from_secs(10),
            burn_rate: 5.0,
            min_events: 1,
        }],
        resolution: Duration::from_secs(1),
        ..Default::default()
    }
}

#[test]
fn a_page_needs_both_windows_burning() {
    let t0 = Instant::now();
    let derived = store();
    let findings = Arc::new(Findings::default());
    let mut p = SloProcessor::with_clock(
        latency_config(),
        derived.clone(),
        findings.clone(),
        (t0, SystemTime::now()),
    );
    // One trace a second: good (0.5 s) for 0..=49 s, slow (3 s) from 50 s.
    for s in 0..50u32 {
        feed(
            &mut p,
            trace(1, "api", 0.5, false, vec![], vec![]),
            secs(t0, s as f64),
        );
    }
    for s in 50..60u32 {
        feed(
            &mut p,
            trace(1, "api", 3.0, false, vec![], vec![]),
            secs(t0, s as f64),
        );
    }
    p.evaluate(secs(t0, 59.5));
    // 60 s window (buckets 0..=59): 50 good of 60, error ratio 1/6, burn (1/6)/0.1 = 1.667.
    // 10 s window (buckets 50..=59): 0 good of 10, burn 1/0.1 = 10. Only the short one burns.
    let v = |w: &str| {
        derived.sample(
            "rag_slo_burn_rate",
            &[("slo", "fast"), ("service", "api"), ("window", w)],
        )
    };
    assert!((v("1m").unwrap() - 10.0 / 6.0).abs() < 1e-9);
    assert!((v("10s").unwrap() - 10.0).abs() < 1e-9);
    let sli = derived
        .sample(
            "rag_slo_sli_ratio",
            &[("slo", "fast"), ("service", "api"), ("window", "1m")],
        )
        .unwrap();
    assert!((sli - 50.0 / 60.0).abs() < 1e-9);
    // Error budget over the 100 s period: 10 bad of 60, burn 1.667, remaining 1 - 1.667.
    let rem = derived
        .sample(
            "rag_slo_error_budget_remaining",
            &[("slo", "fast"), ("service", "api")],
        )
        .unwrap();
    assert!((rem - (1.0 - 10.0 / 6.0)).abs() < 1e-9);
    assert_eq!(findings.published(), 0);

    // Slow until 79 s: at 79.5 the 60 s window is buckets 20..=79: good 20..=49 (30) and bad
    // 50..=79 (30): burn 0.5/0.1 = 5.0, not above 5.
    for s in 60..80u32 {
        feed(
            &mut p,
            trace(1, "api", 3.0, false, vec![], vec![]),
            secs(t0, s as f64),
        );
    }
    p.evaluate(secs(t0, 79.5));
    assert!((v("1m").unwrap() - 5.0).abs() < 1e-9);
    assert_eq!(
        findings.published(),
        0,
        "a burn of exactly 5 does not exceed 5"
    );
    // One more slow second: buckets 21..=80 hold 29 good, 31 bad: burn (31/60)/0.1 = 5.167.
    feed(
        &mut p,
        trace(7, "api", 3.0, false, vec![], vec![]),
        secs(t0, 80.0),
    );
    p.evaluate(secs(t0, 80.5));
    let f = findings.recent();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].name, "slo_burn");
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[0].labels.get("slo").map(String::as_str), Some("fast"));
    assert_eq!(f[0].labels.get("service").map(String::as_str), Some("api"));
    assert_eq!(f[0].trace_id.as_deref(), Some("07".repeat(16).as_str()));
    assert!(f[0].description.contains("5.17"), "{}", f[0].description);

    // Recovery: good again from 81 s. At 90.5 the 10 s window (81..=90) is all good, so the
    // page stops although the long window still burns.
    for s in 81..91u32 {
        feed(
            &mut p,
            trace(1, "api", 0.5, false, vec![], vec![]),
            secs(t0, s as f64),
        );
    }
    p.evaluate(secs(t0, 90.5));
    assert!(v("1m").unwrap() > 5.0);
    assert_eq!(v("10s"), Some(0.0));
    assert_eq!(findings.published(), 1);
}

#[test]
fn availability_quality_cost_and_ttft_count_their_own_events() {
    let t0 = Instant::now();
    let derived = store();
    let findings = Arc::new(Findings::default());
    let slo = |name: &str, kind, threshold: Option<Threshold>, over: &str, by| SloConfig {
        name: name.into(),
        kind,
        objective: 0.5,
        threshold,
        service: Some("api".into()),
        over: over.into(),
        by,
        period: Duration::from_secs(3600),
    };
    let config = SloProcessorConfig {
        slos: vec![
            slo("up", SloKind::Availability, None, "request", None),
            slo(
                "good",
                SloKind::Quality,
                Some(Threshold::Number(0.7)),
                "request",
                None,
            ),
            slo(
                "cheap",
                SloKind::Cost,
                Some(Threshold::Number(0.01)),
                "request",
                Some(GroupBy::Model),
            ),
            slo(
                "first-token",
                SloKind::Ttft,
                Some(Threshold::Text("500ms".into())),
                "llm",
                Some(GroupBy::Model),
            ),
        ],
        burn_rules: vec![BurnRule {
            severity: RuleSeverity::Warning,
            long: Duration::from_secs(60),
            short: Duration::from_secs(10),
            burn_rate: 100.0,
            min_events: 1,
        }],
        resolution: Duration::from_secs(1),
        ..Default::default()
    };
    let mut p =
        SloProcessor::with_clock(config, derived.clone(), findings, (t0, SystemTime::now()));
    let llm = |model: &str, cost: f64, ttft_ms: f64| {
        vec![
            kv_str(a::RAG_STAGE, "llm"),
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.request.model", model),
            kv_f64(a::COST_USD, cost),
            kv_f64(a::LLM_TTFT_MS, ttft_ms),
        ]
    };
    let now = secs(t0, 1.0);
    // Trace 1: ok, score 0.9, cost 0.002 (from its span), ttft 300 ms on model a.
    feed(
        &mut p,
        trace(
            1,
            "api",
            1.0,
            false,
            vec![kv_f64(a::QUALITY_SCORE, 0.9)],
            llm("a", 0.002, 300.0),
        ),
        now,
    );
    // Trace 2: error, score 0.5, trace cost 0.05 on the root, ttft 800 ms on model a.
    feed(
        &mut p,
        trace(
            2,
            "api",
            1.0,
            true,
            vec![
                kv_f64(a::QUALITY_SCORE, 0.5),
                kv_f64(a::TRACE_COST_USD, 0.05),
            ],
            llm("a", 0.05, 800.0),
        ),
        now,
    );
    // Trace 3: ok, no score (not counted by `good`), cost 0.001 on model b, ttft 100 ms.
    feed(
        &mut p,
        trace(3, "api", 1.0, false, vec![], llm("b", 0.001, 100.0)),
        now,
    );
    // Trace 4: another service, filtered out of every SLO.
    feed(
        &mut p,
        trace(4, "other", 1.0, true, vec![], llm("a", 9.0, 9000.0)),
        now,
    );
    p.evaluate(secs(t0, 1.5));
    let sli = |slo: &str, scope: &str| {
        derived.sample(
            "rag_slo_sli_ratio",
            &[
                ("slo", slo),
                ("service", "api"),
                ("scope", scope),
                ("window", "10s"),
            ],
        )
    };
    // up: 2 ok of 3. good: 1 of the 2 scored. cheap by model: a has traces 1 (0.002, good) and
    // 2 (0.05, bad): 0.5; b has trace 3: 1. first-token by model: a 300 ms good, 800 ms bad: 0.5;
    // b: 1.
    assert!((sli("up", "").unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(sli("good", ""), Some(0.5));
    assert_eq!(sli("cheap", "a"), Some(0.5));
    assert_eq!(sli("cheap", "b"), Some(1.0));
    assert_eq!(sli("first-token", "a"), Some(0.5));
    assert_eq!(sli("first-token", "b"), Some(1.0));
    assert_eq!(
        derived.sample("rag_slo_sli_ratio", &[("service", "other")]),
        None
    );
}

#[test]
fn a_budget_projects_the_recent_rate_to_the_end_of_its_period() {
    let t0 = Instant::now();
    let derived = store();
    let findings = Arc::new(Findings::default());
    let config = SloProcessorConfig {
        budgets: vec![BudgetConfig {
            name: "daily".into(),
            limit_usd: 10.0,
            service: None,
            model: Some("a".into()),
            period: Duration::from_secs(100),
            projection_window: Duration::from_secs(10),
        }],
        ..Default::default()
    };
    // The wall clock reads 1000 s after the epoch at t0: the start of period 10.
    let wall = UNIX_EPOCH + Duration::from_secs(1000);
    let mut p = SloProcessor::with_clock(config, derived.clone(), findings.clone(), (t0, wall));
    let llm = |model: &str| {
        vec![
            kv_str(a::RAG_STAGE, "llm"),
            kv_str("gen_ai.request.model", model),
            kv_f64(a::COST_USD, 1.0),
        ]
    };
    // 1 USD a second on model a at 0..=4 s, and spend on model b that does not count.
    for s in 0..5u32 {
        feed(
            &mut p,
            trace(1, "api", 0.1, false, vec![], llm("a")),
            secs(t0, s as f64),
        );
        feed(
            &mut p,
            trace(2, "api", 0.1, false, vec![], llm("b")),
            secs(t0, s as f64),
        );
    }
    p.evaluate(secs(t0, 5.0));
    // Spent 5; rate 5 USD over the 5 s seen = 1 USD/s; 95 s left: projected 5 + 95 = 100.
    let g = |name: &str| derived.sample(name, &[("budget", "daily")]).unwrap();
    assert!((g("rag_budget_spend_usd") - 5.0).abs() < 1e-9);
    assert!((g("rag_budget_projected_spend_usd") - 100.0).abs() < 1e-6);
    let f = findings.recent();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].name, "budget_projection");
    assert_eq!(f[0].severity, Severity::Warning);
    // It projected from the 5 s seen, not the 10 s window it has not had yet.
    assert!(
        f[0].description.ends_with("at the rate of the last 5s"),
        "{}",
        f[0].description
    );

    // Six more dollars by 10 s: spent 11 >= 10, critical.
    for s in 5..11u32 {
        feed(
            &mut p,
            trace(1, "api", 0.1, false, vec![], llm("a")),
            secs(t0, s as f64),
        );
    }
    p.evaluate(secs(t0, 10.5));
    assert_eq!(
        findings.recent().last().unwrap().severity,
        Severity::Critical
    );

    // A new period (wall 1100 s) starts from nothing, and nothing was spent in the last 10 s.
    p.evaluate(secs(t0, 100.0));
    assert_eq!(g("rag_budget_spend_usd"), 0.0);
    assert_eq!(g("rag_budget_projected_spend_usd"), 0.0);
    assert_eq!(findings.published(), 2);
}

#[test]
fn config_problems_are_listed_with_their_paths() {
    let v = serde_json::json!({
        "slos": [
            {"name": "a", "kind": "latency", "objective": 1.5},
            {"name": "a", "kind": "quality", "objective": 0.9, "threshold": 3, "over": "nowhere"},
            {"name": "c", "kind": "availability", "objective": 0.9, "threshold": "1s"}
        ],
        "budgets": [{"name": "b", "limit_usd": 0}],
        "burn_rules": [{"severity": "critical", "long": "5m", "short": "1h", "burn_rate": 14.4}]
    });
    let mut problems = Problems::default();
    let c: SloProcessorConfig =
        crate::config::deserialize_collecting(v, "processors.slo", &mut problems).unwrap();
    c.validate("processors.slo", &mut problems);
    let text: String = problems
        .as_slice()
        .iter()
        .map(|p| format!("{p}\n"))
        .collect();
    for path in [
        "processors.slo.slos.0.objective",
        "processors.slo.slos.0.threshold",
        "processors.slo.slos.1.name",
        "processors.slo.slos.1.threshold",
        "processors.slo.slos.1.over",
        "processors.slo.slos.2.threshold",
        "processors.slo.budgets.0.limit_usd",
        "processors.slo.burn_rules.0.short",
    ] {
        assert!(text.contains(path), "{path} missing from:\n{text}");
    }
}

#[test]
fn one_slow_request_on_a_quiet_service_does_not_page_but_fifteen_bad_in_thirty_do() {
    // The default rules: critical when 1h and 5m both burn > 14.4, each with >= 10 events.
    let config = SloProcessorConfig {
        burn_rules: default_rules(),
        ..latency_config()
    };
    let t0 = Instant::now();
    let derived = store();
    let findings = Arc::new(Findings::default());
    let mut p = SloProcessor::with_clock(
        config,
        derived.clone(),
        findings.clone(),
        (t0, SystemTime::now()),
    );
    // A cold start: the service's first and only request takes 3 s (threshold 1 s). Both
    // windows hold 1 event, all bad: burn 1 / 0.1 = 10 — and with objective 0.95 it would be 20.
    feed(
        &mut p,
        trace(1, "quiet", 3.0, false, vec![], vec![]),
        secs(t0, 1.0),
    );
    p.evaluate(secs(t0, 2.0));
    let burn = derived
        .sample(
            "rag_slo_burn_rate",
            &[("slo", "fast"), ("service", "quiet"), ("window", "5m")],
        )
        .unwrap();
    assert!((burn - 10.0).abs() < 1e-9);
    assert_eq!(findings.published(), 0, "one request cannot page");
    // A real fault does page. With objective 0.9 no burn can exceed 10, below the page's
    // 14.4, so take 0.99: a slow first request (burn 100 over 1 event: no page), then 30
    // requests over 30 s, every other one slow: 16 bad of 31 in both windows, burn
    // (16/31)/0.01 = 51.6 > 14.4 with 31 events >= 10: a page.
    let strict = SloProcessorConfig {
        slos: vec![SloConfig {
            objective: 0.99,
            ..latency_config().slos[0].clone()
        }],
        burn_rules: default_rules(),
        ..latency_config()
    };
    let findings = Arc::new(Findings::default());
    let mut p =
        SloProcessor::with_clock(strict, store(), findings.clone(), (t0, SystemTime::now()));
    feed(
        &mut p,
        trace(1, "api", 3.0, false, vec![], vec![]),
        secs(t0, 0.0),
    );
    p.evaluate(secs(t0, 0.5));
    assert_eq!(findings.published(), 0, "burn 100 over one event: no page");
    for s in 1..=30u32 {
        let d = if s % 2 == 0 { 3.0 } else { 0.5 };
        feed(
            &mut p,
            trace(2, "api", d, false, vec![], vec![]),
            secs(t0, s as f64),
        );
    }
    p.evaluate(secs(t0, 30.5));
    let f = findings.recent();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(
        f[0].description.contains("(31 events)"),
        "{}",
        f[0].description
    );
}

#[test]
fn no_projection_from_seconds_of_data() {
    let t0 = Instant::now();
    let derived = store();
    let findings = Arc::new(Findings::default());
    let config = SloProcessorConfig {
        budgets: vec![BudgetConfig {
            name: "daily".into(),
            limit_usd: 10.0,
            service: None,
            model: None,
            period: Duration::from_secs(86_400),
            projection_window: Duration::from_secs(3600),
        }],
        ..Default::default()
    };
    let wall = UNIX_EPOCH + Duration::from_secs(1000);
    let mut p = SloProcessor::with_clock(config, derived.clone(), findings.clone(), (t0, wall));
    let llm = vec![kv_str(a::RAG_STAGE, "llm"), kv_f64(a::COST_USD, 0.07)];
    feed(
        &mut p,
        trace(1, "api", 0.1, false, vec![], llm),
        secs(t0, 0.5),
    );
    // One second after start: 0.07 USD in 1 s would project to 6,000 USD by the day's end.
    p.evaluate(secs(t0, 1.0));
    let g = |name: &str| derived.sample(name, &[("budget", "daily")]).unwrap();
    assert!((g("rag_budget_projected_spend_usd") - 0.07).abs() < 1e-12);
    assert_eq!(findings.published(), 0);
}

#[test]
fn agent_runs_have_slos_of_their_own_split_by_agent() {
    // `over: agent, by: model` splits agent runs by agent name; a run's cost is its model
    // calls' (rag.agent.cost.usd).
    let config = SloProcessorConfig {
        slos: vec![SloConfig {
            name: "cheap-runs".into(),
            kind: SloKind::Cost,
            objective: 0.9,
            threshold: Some(Threshold::Number(0.01)),
            service: None,
            over: "agent".into(),
            by: Some(GroupBy::Model),
            period: Duration::from_secs(100),
        }],
        burn_rules: vec![BurnRule {
            severity: RuleSeverity::Warning,
            long: Duration::from_secs(60),
            short: Duration::from_secs(10),
            burn_rate: 1.0,
            min_events: 1,
        }],
        resolution: Duration::from_secs(1),
        ..Default::default()
    };
    let t0 = Instant::now();
    let derived = store();
    let mut p = SloProcessor::with_clock(
        config,
        derived.clone(),
        Arc::new(Findings::default()),
        (t0, SystemTime::now()),
    );
    let agent = |name: &str, cost: f64| {
        vec![
            kv_str(a::RAG_STAGE, "agent"),
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.name", name),
            kv_f64(a::AGENT_COST_USD, cost),
        ]
    };
    // researcher: 0.05 USD a run (bad); writer: 0.001 (good).
    feed(
        &mut p,
        trace(1, "api", 1.0, false, vec![], agent("researcher", 0.05)),
        secs(t0, 1.0),
    );
    feed(
        &mut p,
        trace(2, "api", 1.0, false, vec![], agent("writer", 0.001)),
        secs(t0, 1.0),
    );
    p.evaluate(secs(t0, 2.0));
    let sli = |scope: &str| {
        derived.sample(
            "rag_slo_sli_ratio",
            &[("slo", "cheap-runs"), ("scope", scope), ("window", "1m")],
        )
    };
    assert_eq!(sli("researcher"), Some(0.0));
    assert_eq!(sli("writer"), Some(1.0));
}
