//! Detectors by hand, the verdict rule, key eviction, and the labelled evaluation on a small
//! stream. Expected numbers are worked out in the comments.

use super::detector::*;
use super::eval;
use super::*;
use crate::synth::{Fault, Profile};

fn params() -> RobustParams {
    RobustParams {
        warmup: 5,
        k: 4.0,
        drift: 0.5,
        h: 12.0,
        adapt: 1e-12,
        min_sigma: 0.01,
    }
}

const SIGMA: f64 = 1.4826;

#[test]
fn robust_baseline_is_the_median_and_mad_of_the_warmup() {
    let p = params();
    let mut d = Robust::default();
    // 1..=5: no verdict while warming up; median 3, deviations 2,1,0,1,2: MAD 1.
    for x in [5.0, 1.0, 4.0, 2.0, 3.0] {
        assert_eq!(d.observe(x, &p), Outcome::default());
    }
    assert_eq!(d.baseline(&p), Some((3.0, SIGMA)));
    // 3 + 4.5 sigma: z 4.5, a point; not learned.
    let o = d.observe(3.0 + 4.5 * SIGMA, &p);
    assert!((o.z.unwrap() - 4.5).abs() < 1e-9);
    assert!(o.point && !o.sustained);
    assert_eq!(d.baseline(&p), Some((3.0, SIGMA)));
    // 3 + 3.9 sigma: no point.
    assert!(!d.observe(3.0 + 3.9 * SIGMA, &p).point);
    // A non-finite value is ignored.
    assert_eq!(d.observe(f64::NAN, &p), Outcome::default());
}

#[test]
fn cusum_fires_on_a_sustained_shift_and_restarts() {
    let p = params();
    let mut d = Robust::default();
    for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
        d.observe(x, &p);
    }
    // z = 3 each time: the upper sum grows by 3 - 0.5 = 2.5: 2.5, 5, 7.5, 10 (quiet), 12.5 > 12.
    for i in 1..=4 {
        let o = d.observe(3.0 + 3.0 * SIGMA, &p);
        assert!(!o.sustained && !o.point, "step {i}");
    }
    assert!(d.observe(3.0 + 3.0 * SIGMA, &p).sustained);
    // It restarted from zero: four more are quiet again.
    for _ in 0..4 {
        assert!(!d.observe(3.0 + 3.0 * SIGMA, &p).sustained);
    }
    // An outlier counts as z = 4 in the sum: 10 + 3.5 = 13.5 > 12.
    assert!(d.observe(3.0 + 100.0 * SIGMA, &p).sustained);
}

#[test]
fn one_huge_outlier_is_a_point_not_a_shift() {
    let p = params();
    let mut d = Robust::default();
    for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
        d.observe(x, &p);
    }
    // Clamped to 4: the sum is 3.5, far from 12.
    let o = d.observe(1e9, &p);
    assert!(o.point && !o.sustained);
    // And it decays with normal values: 3.5 - 0.5 per value at z = 0.
    for _ in 0..7 {
        d.observe(3.0, &p);
    }
    // Now three values at z 3 give 7.5 < 12: quiet.
    for _ in 0..3 {
        assert!(!d.observe(3.0 + 3.0 * SIGMA, &p).sustained);
    }
}

#[test]
fn the_baseline_adapts_slowly_towards_normal_values() {
    let p = RobustParams {
        adapt: 0.1,
        ..params()
    };
    let mut d = Robust::default();
    for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
        d.observe(x, &p);
    }
    // z = 2: the median moves up by 0.1 sigma.
    d.observe(3.0 + 2.0 * SIGMA, &p);
    let (m, _) = d.baseline(&p).unwrap();
    assert!((m - (3.0 + 0.1 * SIGMA)).abs() < 1e-9);
    // A point (z > 4) teaches nothing.
    d.observe(100.0, &p);
    assert!((d.baseline(&p).unwrap().0 - m).abs() < 1e-12);
}

#[test]
fn error_rate_cusum_by_hand() {
    let p = RateParams {
        warmup: 10,
        min_rate: 0.01,
        h: 5.0,
        adapt: 1e-12,
    };
    let mut r = Rate::default();
    for _ in 0..10 {
        assert_eq!(r.observe(false, &p), Outcome::default());
    }
    // No error in the warm-up: p0 is the floor 0.01; p1 = max(0.04, 0.11) = 0.11.
    assert_eq!(r.baseline(), Some(0.01));
    assert!((Rate::p1(0.01) - 0.11).abs() < 1e-12);
    // Each error adds ln(0.11/0.01) = 2.398: 2.398, 4.796 (< 5), 7.19 (> 5).
    assert!(!r.observe(true, &p).sustained);
    assert!(!r.observe(true, &p).sustained);
    assert!(r.observe(true, &p).sustained);
    // Each success takes ln(0.89/0.99) = -0.1065: two errors (4.796) then 3 successes
    // (4.477) and one error (6.875 > 5).
    r.observe(true, &p);
    r.observe(true, &p);
    for _ in 0..3 {
        assert!(!r.observe(false, &p).sustained);
    }
    assert!(r.observe(true, &p).sustained);
}

fn attr_bool(s: &Span, k: &str) -> Option<bool> {
    match crate::attributes::get(&s.attributes, k) {
        Some(Value::BoolValue(b)) => Some(*b),
        _ => None,
    }
}

fn spans(b: &Batch) -> Vec<&Span> {
    match b {
        Batch::Traces(r) => r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn a_verdict_needs_a_shift_or_two_independent_groups() {
    let profile = Profile {
        sigma: 0.1,
        error_rate: 0.0,
        ..Profile::new("api", "gpt-4o-mini")
    };
    let mut chain = eval::Chain::new(7, AnomalyConfig::default()).unwrap();
    for _ in 0..60 {
        assert!(!chain.step(&profile, None), "no verdict in a clean warm-up");
    }
    // One retrieval 20x slower: points in stage and request latency, one group: no verdict.
    let (b, v) = chain.step_batch(&profile, Some(Fault::SlowRetrieval(20.0)));
    assert!(v.signals.is_empty(), "{v:?}");
    assert!(spans(&b).iter().all(|s| attr_bool(s, a::ANOMALY).is_none()));
    for _ in 0..20 {
        chain.step(&profile, None);
    }
    // Slow and poor at once: performance and quality, two groups: a verdict, marked on the
    // retrieval span and the root.
    let mut marked = false;
    for _ in 0..3 {
        let profile = Profile {
            retrieval_ms: 80.0 * 20.0,
            ..profile.clone()
        };
        let (b, v) = chain.step_batch(&profile, Some(Fault::QualityDrop));
        if v.signals.is_empty() {
            continue;
        }
        assert!(v.signals.contains(&Signal::StageLatency), "{v:?}");
        assert!(v.signals.contains(&Signal::Quality), "{v:?}");
        let all = spans(&b);
        let retrieval = all
            .iter()
            .find(|s| s.name.starts_with("retrieval"))
            .unwrap();
        assert_eq!(attr_bool(retrieval, a::ANOMALY), Some(true));
        let sig = crate::attributes::get(&retrieval.attributes, a::ANOMALY_SIGNALS);
        assert!(format!("{sig:?}").contains("stage_latency"));
        assert!(get_f64(&retrieval.attributes, a::ANOMALY_SCORE).unwrap() > 4.0);
        let root = all.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
        assert_eq!(attr_bool(root, a::ANOMALY), Some(true));
        marked = true;
        break;
    }
    assert!(marked, "slow and poor traces got a verdict");
}

#[test]
fn keys_beyond_the_cap_evict_the_least_recently_seen() {
    let derived = Arc::new(DerivedMetrics::new(
        crate::genai::metrics::DEFS,
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
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let now = Instant::now();
    for svc in ["a", "b", "a", "c"] {
        let mut b = Batch::Traces(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                resource_spans: vec![crate::synth::rag_trace(
                    &mut rng,
                    &Profile::new(svc, "m"),
                    None,
                    1,
                )],
            },
        );
        p.process(&mut b, now);
    }
    // Without `genai` the spans have no stage: only the request keys of a, b, a, c. The cap of
    // 2 keeps a (seen again) and c; b, least recently seen, was forgotten.
    let keys: Vec<String> = p.keys.iter().map(|(k, _)| k.service.clone()).collect();
    assert_eq!(keys, vec!["c".to_string(), "a".to_string()]);
}

/// The labelled evaluation on a small stream: each fault found within 100 traces of its key,
/// no false verdict on the clean stretches.
#[test]
fn labelled_evaluation_small() {
    for (i, (name, fault)) in eval::scenarios().into_iter().enumerate() {
        let o = eval::run(100 + i as u64, fault, 500, 100).unwrap();
        assert_eq!(o.false_verdicts, 0, "{name}: false verdicts");
        let d = o
            .delay
            .unwrap_or_else(|| panic!("{name}: not detected in 100 traces"));
        assert!(d <= 100, "{name}: delay {d}");
    }
    assert_eq!(eval::false_verdicts(5, 3000).unwrap(), 0);
}
