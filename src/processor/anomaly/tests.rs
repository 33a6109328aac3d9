//! Detectors by hand, the verdict rule, key eviction, and the labelled evaluation on a small
//! stream. Expected numbers are worked out in the comments.

use super::detector::*;
use super::*;

fn params() -> RobustParams {
    RobustParams {
        warmup: 5,
        k: 4.0,
        drift: 0.5,
        h: 12.0,
        adapt: 1e-12,
        min_sigma: 0.01,
        direction: Direction::Up,
    }
}

const SIGMA: f64 = 1.4826;

/// A detector warmed up on 1..=5: median 3, MAD median(2, 1, 0, 1, 2) = 1, sigma 1.4826.
fn warmed(p: &RobustParams) -> Robust {
    let mut d = Robust::default();
    for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
        assert_eq!(d.observe(x, p, |_| true), Outcome::default());
    }
    assert_eq!(d.baseline(p), Some((3.0, SIGMA)));
    d
}

fn at(d: &mut Robust, z: f64, p: &RobustParams) -> Outcome {
    d.observe(3.0 + z * SIGMA, p, |_| true)
}

#[test]
fn a_point_outlier_counts_only_in_the_adverse_direction() {
    let p = params();
    let mut d = warmed(&p);
    let o = at(&mut d, 4.5, &p);
    assert!((o.z.unwrap() - 4.5).abs() < 1e-9);
    assert!(o.point && !o.sustained, "one outlier is no shift");
    assert!(!at(&mut d, 3.9, &p).point);
    // Latency that falls is good news, never an anomaly.
    let o = at(&mut d, -20.0, &p);
    assert!(!o.point && !o.sustained);
    assert_eq!(d.observe(f64::NAN, &p, |_| true), Outcome::default());
    // Quality judges the other way.
    let down = RobustParams {
        direction: Direction::Down,
        ..params()
    };
    let mut q = warmed(&down);
    assert!(at(&mut q, -4.5, &down).point);
    assert!(!at(&mut q, 4.5, &down).point);
}

#[test]
fn too_small_a_change_in_the_signals_own_units_is_not_judged() {
    let p = params();
    let mut d = warmed(&p);
    for _ in 0..10 {
        let o = d.observe(3.0 + 10.0 * SIGMA, &p, |_| false);
        assert!(!o.point && !o.sustained);
    }
}

#[test]
fn two_outliers_in_three_start_a_shift_that_marks_every_value_on_its_side() {
    let p = params();
    let mut d = warmed(&p);
    assert!(!at(&mut d, 5.0, &p).sustained);
    assert!(!at(&mut d, 0.0, &p).sustained);
    // 5σ, 0, 5σ: two of the last three were outliers.
    assert!(at(&mut d, 5.0, &p).sustained);
    assert!(d.shifted());
    // The shift's mean z is 5: values from 2.5σ up are on its side, whether outliers or not.
    assert!(at(&mut d, 5.0, &p).sustained);
    let o = at(&mut d, 3.0, &p);
    assert!(o.sustained && !o.point);
    // Mean z is now (5 + 5 + 3) / 3 = 4.33: 1σ is off the side; three in a row end the shift.
    for _ in 0..3 {
        assert!(!at(&mut d, 1.0, &p).sustained);
    }
    assert!(!d.shifted());
    let o = at(&mut d, 5.0, &p);
    assert!(
        o.point && !o.sustained,
        "a new episode needs two outliers again"
    );
}

#[test]
fn a_slow_shift_below_the_point_threshold_is_found_by_the_cusum() {
    let p = params();
    let mut d = warmed(&p);
    // z = 3 each time: the CUSUM grows by 3 - 0.5 = 2.5 a value: 2.5, 5, 7.5, 10, 12.5 > 12.
    for i in 1..=4 {
        let o = at(&mut d, 3.0, &p);
        assert!(!o.point && !o.sustained, "value {i}");
    }
    assert!(at(&mut d, 3.0, &p).sustained);
    assert!(at(&mut d, 3.0, &p).sustained);
}

#[test]
fn a_shift_that_lasts_warmup_values_is_the_new_normal() {
    let p = params();
    let mut d = warmed(&p);
    at(&mut d, 6.0, &p);
    // Five values at 6σ marked (the second outlier starts the shift): warmup = 5 of them and
    // the baseline is learnt again from them.
    for i in 0..5 {
        assert!(at(&mut d, 6.0, &p).sustained, "value {i}");
    }
    assert!(!d.shifted());
    let (median, _) = d.baseline(&p).unwrap();
    assert!((median - (3.0 + 6.0 * SIGMA)).abs() < 1e-9);
    let o = at(&mut d, 6.0, &p);
    assert!(!o.point && !o.sustained);
}

#[test]
fn the_baseline_adapts_slowly_towards_normal_values() {
    let mut p = params();
    p.adapt = 0.1;
    let mut d = warmed(&p);
    // One value above the median moves it 0.1 sigma up.
    at(&mut d, 1.0, &p);
    let m = d.baseline(&p).unwrap().0;
    assert!((m - (3.0 + 0.1 * SIGMA)).abs() < 1e-9);
    // An outlier teaches it nothing.
    at(&mut d, 10.0, &p);
    assert!((d.baseline(&p).unwrap().0 - m).abs() < 1e-12);
}

#[test]
fn binomial_tails_by_hand() {
    // P(X >= 3 | n = 5, p = 0.01) = 10·1e-6·0.99² + 5·1e-8·0.99 + 1e-10 = 9.8506e-6.
    assert!((binomial_tail(5, 3, 0.01) - 9.8506e-6).abs() < 1e-10);
    assert_eq!(binomial_tail(5, 0, 0.3), 1.0);
    assert_eq!(binomial_tail(5, 6, 0.3), 0.0);
    // P(X >= 1 | 2, 0.5) = 0.75.
    assert!((binomial_tail(2, 1, 0.5) - 0.75).abs() < 1e-12);
}

#[test]
fn an_error_burst_on_a_young_service_is_found_from_an_informed_prior() {
    let p = RateParams {
        prior_rate: 0.01,
        prior_weight: 50.0,
        h: 10.0,
    };
    let mut r = Rate::default();
    // 60 clean requests: 20 wait in the window, 40 joined the baseline: p0 = 0.5 / 90.
    for _ in 0..60 {
        assert!(!r.observe(false, &p).sustained);
    }
    assert!((r.baseline(&p) - 0.5 / 90.0).abs() < 1e-12);
    // Then error, ok, error, ok, error. At the third error the last 10 hold 3 errors:
    // P(X >= 3 | 10, 0.005556) = 120·p³·(1-p)⁷ + 210·p⁴·(1-p)⁶ + ... = 1.998e-5, times 2
    // windows = 4.0e-5 < e^-10 = 4.54e-5: a burst. After two errors (P(X >= 2 | 10) × 2 =
    // 2.6e-3) it was not.
    assert!(!r.observe(true, &p).sustained);
    assert!(!r.observe(false, &p).sustained);
    assert!(!r.observe(true, &p).sustained);
    assert!(!r.observe(false, &p).sustained);
    assert!(r.observe(true, &p).sustained);
    assert!(r.bursting());
    // A success during a burst is not marked; another failure is.
    assert!(!r.observe(false, &p).sustained);
    assert!(r.observe(true, &p).sustained);
    // The CUSUM (p1 = p0 + 0.1) stands at 4 × ln(0.10556 / 0.00556) − 3 × 0.106 = 11.45
    // nats (capped at h + 2.94 = 12.94); each clean request takes 0.106 off, so after about
    // 61 of them it is below h / 2 and the windows are clean: the burst is over, and one
    // error alone is no burst.
    for _ in 0..55 {
        r.observe(false, &p);
    }
    assert!(r.bursting());
    for _ in 0..10 {
        r.observe(false, &p);
    }
    assert!(!r.bursting());
    assert!(!r.observe(true, &p).sustained);
    // The burst's requests did not teach the baseline: only clean ones joined it.
    assert!(r.baseline(&p) < 0.01);
}

#[test]
fn one_error_among_few_requests_is_no_burst() {
    let p = RateParams {
        prior_rate: 0.01,
        prior_weight: 50.0,
        h: 10.0,
    };
    let mut r = Rate::default();
    // A fresh service whose first request fails, and whose second does too: P(X >= 2 | 2,
    // 0.01) × 2 = 2e-4, far from 4.5e-5.
    assert!(!r.observe(true, &p).sustained);
    assert!(!r.observe(true, &p).sustained);
}

#[test]
fn keys_beyond_the_cap_evict_the_least_recently_seen() {
    let derived = Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
        crate::derived::Limits {
            max_series_per_metric: 10,
            series_ttl: std::time::Duration::from_secs(60),
        },
    ));
    let mut p = AnomalyProcessor::new(
        AnomalyConfig {
            max_keys: 2,
            ..Default::default()
        },
        derived,
        Arc::new(Findings::default()),
    );
    let now = Instant::now();
    for (i, svc) in ["a", "b", "a", "c"].into_iter().enumerate() {
        // One root span of 100 ms per request, in its service's resource.
        let root = Span {
            trace_id: vec![i as u8 + 1; 16],
            span_id: vec![1; 8],
            name: "request".into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_100_000_000,
            ..Default::default()
        };
        let mut b = Batch::Traces(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                    resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                        attributes: vec![crate::attributes::kv_str("service.name", svc)],
                        ..Default::default()
                    }),
                    scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                        spans: vec![root],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
        );
        p.process(&mut b, now);
    }
    // Without `genai` the spans have no stage: only the request keys of a, b, a, c. The cap of
    // 2 keeps a (seen again) and c; b, least recently seen, was forgotten.
    let keys: Vec<String> = p.keys.iter().map(|(k, _)| k.service.clone()).collect();
    assert_eq!(keys, vec!["c".to_string(), "a".to_string()]);
}
