use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prometheus_parse::{Scrape, Value as PValue};

use super::*;

static DEFS: &[MetricDef] = &[
    MetricDef {
        otel_name: "test.calls",
        prom_name: "test_calls",
        help: "calls",
        unit: "{call}",
        kind: Kind::Counter,
        labels: &["service.name", "model"],
    },
    MetricDef {
        otel_name: "test.latency",
        prom_name: "test_latency_seconds",
        help: "latency",
        unit: "s",
        kind: Kind::Histogram {
            buckets: &[0.1, 0.5, 1.0],
        },
        labels: &["service.name"],
    },
    MetricDef {
        otel_name: "test.level",
        prom_name: "test_level",
        help: "a level",
        unit: "1",
        kind: Kind::Gauge,
        labels: &[],
    },
];

fn store(max: usize) -> DerivedMetrics {
    DerivedMetrics::new(
        DEFS,
        Limits {
            max_series_per_metric: max,
            series_ttl: Duration::from_secs(60),
        },
    )
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

#[test]
fn counters_histograms_and_gauges_parse_with_hand_computed_values() {
    let d = store(100);
    let t = Instant::now();
    d.add(0, &["svc", "gpt-4o"], 2.0, t);
    d.add(0, &["svc", "gpt-4o"], 0.5, t);
    d.add(0, &["svc", "we\"ird\\model\nx"], 1.0, t);
    // 0.1 is on a bound: it belongs to le="0.1". 0.3 → le=0.5; 1.0 → le=1; 7 → only +Inf.
    for v in [0.05, 0.1, 0.3, 1.0, 7.0] {
        d.observe(1, &["svc"], v, t);
    }
    d.set(2, &[], 0.25, t);
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    let scrape = parse(&text);
    let find = |metric: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{metric} missing in\n{text}"))
    };
    match &find("test_calls_total", Some(("model", "gpt-4o"))).value {
        PValue::Counter(v) => assert_eq!(*v, 2.5),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        find("test_calls_total", Some(("model", "gpt-4o")))
            .labels
            .get("service_name"),
        Some("svc")
    );
    // The parser keeps label values as written: backslash, quote and newline escaped.
    match &find("test_calls_total", Some(("model", r#"we\"ird\\model\nx"#))).value {
        PValue::Counter(v) => assert_eq!(*v, 1.0),
        other => panic!("escaping: {other:?}"),
    }
    match &find("test_latency_seconds", None).value {
        PValue::Histogram(buckets) => {
            let counts: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
            assert_eq!(
                counts,
                vec![(0.1, 2.0), (0.5, 3.0), (1.0, 4.0), (f64::INFINITY, 5.0)]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains("test_latency_seconds_sum{service_name=\"svc\"} 8.45"),
        "{text}"
    );
    assert!(
        text.contains("test_latency_seconds_count{service_name=\"svc\"} 5"),
        "{text}"
    );
    match &find("test_level", None).value {
        PValue::Gauge(v) => assert_eq!(*v, 0.25),
        other => panic!("{other:?}"),
    }
}

#[test]
fn beyond_the_limit_updates_go_to_one_overflow_series() {
    let d = store(2000);
    let t = Instant::now();
    for n in 0..100_000 {
        d.add(0, &["svc", &format!("model-{n}")], 1.0, t);
    }
    assert_eq!(d.series(0), 2001);
    assert_eq!(d.overflowed(0), 98_000);
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(text.contains("test_calls_total{otel_metric_overflow=\"true\"} 98000"));
    let otlp = d.to_otlp(1);
    let Some(Data::Sum(sum)) = &otlp[0].data else {
        panic!("a counter is a sum")
    };
    assert_eq!(sum.data_points.len(), 2001);
    let overflow = sum.data_points.last().expect("overflow point");
    assert_eq!(overflow.attributes[0].key, "otel.metric.overflow");
}

#[test]
fn idle_series_expire_and_restart_from_zero() {
    let d = store(10);
    let t0 = Instant::now();
    d.add(0, &["svc", "a"], 5.0, t0);
    d.add(0, &["svc", "b"], 1.0, t0 + Duration::from_secs(30));
    d.expire(t0 + Duration::from_secs(59));
    assert_eq!(d.series(0), 2);
    d.expire(t0 + Duration::from_secs(60));
    assert_eq!(d.series(0), 1, "a was idle for the whole ttl");
    d.add(0, &["svc", "a"], 2.0, t0 + Duration::from_secs(61));
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains("test_calls_total{service_name=\"svc\",model=\"a\"} 2\n"),
        "{text}"
    );
}

#[test]
fn otlp_has_cumulative_sums_and_histograms_with_bounds() {
    let d = store(10);
    let t = Instant::now();
    d.add(0, &["svc", "m"], 3.0, t);
    d.observe(1, &["svc"], 0.2, t);
    d.observe(1, &["svc"], 2.0, t);
    let metrics = d.to_otlp(123);
    assert_eq!(metrics.len(), 2, "the gauge has no series and is left out");
    assert_eq!(metrics[0].name, "test.calls");
    let Some(Data::Sum(sum)) = &metrics[0].data else {
        panic!()
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    assert_eq!(sum.data_points[0].time_unix_nano, 123);
    assert!(sum.data_points[0].start_time_unix_nano > 0);
    assert_eq!(
        sum.data_points[0].value,
        Some(number_data_point::Value::AsDouble(3.0))
    );
    let Some(Data::Histogram(h)) = &metrics[1].data else {
        panic!()
    };
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds, vec![0.1, 0.5, 1.0]);
    assert_eq!(p.bucket_counts, vec![0, 1, 0, 1]);
    assert_eq!((p.count, p.sum), (2, Some(2.2)));
    assert_eq!(metrics[1].unit, "s");
}

#[test]
fn misuse_never_panics() {
    let d = store(10);
    let t = Instant::now();
    d.add(0, &["only one label"], 1.0, t);
    d.add(99, &[], 1.0, t);
    d.add(0, &["svc", "m"], -1.0, t);
    d.add(0, &["svc", "m"], f64::NAN, t);
    d.observe(0, &["svc", "m"], 1.0, t);
    d.observe(1, &["svc"], f64::NAN, t);
    assert_eq!(d.misuse(), 6);
    assert_eq!(d.series(0), 0);
}

/// Makes this thread write to stripe `i` (modulo the store's stripes).
fn write_to_stripe(i: usize) {
    STRIPE.with(|s| s.set(i));
}

fn striped(max: usize, stripes: usize) -> DerivedMetrics {
    DerivedMetrics::with_stripes(
        DEFS,
        Limits {
            max_series_per_metric: max,
            series_ttl: Duration::from_secs(60),
        },
        stripes,
    )
}

#[test]
fn updates_spread_over_stripes_read_as_from_one_writer() {
    let one = striped(100, 1);
    let four = striped(100, 4);
    let t = Instant::now();
    // (stripe, counter delta, histogram value, gauge value): every value a binary fraction, so
    // that sums are exact whatever their order.
    let updates = [
        (0, 2.0, 0.0625, 1.0),
        (1, 0.5, 0.125, 4.0),
        (2, 0.25, 0.5, 0.5),
        (3, 1.0, 1.0, 2.0),
        (1, 0.25, 8.0, 0.25),
    ];
    for (i, &(stripe, delta, v, level)) in updates.iter().enumerate() {
        let now = t + Duration::from_secs(i as u64);
        for d in [&one, &four] {
            write_to_stripe(stripe);
            d.add(0, &["svc", "gpt-4o"], delta, now);
            d.observe(1, &["svc"], v, now);
            d.set(2, &[], level, now);
        }
    }
    write_to_stripe(0);
    assert_eq!(four.series(0), 1);
    let text = |d: &DerivedMetrics| {
        let mut text = String::new();
        d.encode_prometheus(&mut text);
        text
    };
    assert_eq!(text(&four), text(&one));
    // By hand: 2 + 0.5 + 0.25 + 1 + 0.25; the latest level (set in stripe 1, after a higher
    // one in stripe 3); 0.0625 in le=0.1, 0.125 and 0.5 in le=0.5, 1 in le=1, 8 only in +Inf.
    assert_eq!(four.sample("test_calls_total", &[]), Some(4.0));
    assert_eq!(four.sample("test_level", &[]), Some(0.25));
    assert_eq!(four.sample("test_latency_seconds_sum", &[]), Some(9.6875));
    let otlp = four.to_otlp(7);
    let Some(Data::Histogram(h)) = &otlp[1].data else {
        panic!("a histogram")
    };
    assert_eq!(h.data_points[0].bucket_counts, vec![1, 2, 1, 1]);
    assert_eq!(h.data_points[0].count, 5);
    // The series started with its first update, in whichever stripe.
    let Some(Data::Sum(sum)) = &otlp[0].data else {
        panic!("a sum")
    };
    assert_eq!(
        sum.data_points[0].start_time_unix_nano,
        four.unix_nanos(t),
        "{sum:?}"
    );
}

#[test]
fn the_series_limit_counts_each_series_once_whichever_stripes_hold_it() {
    let d = striped(2, 2);
    let t = Instant::now();
    write_to_stripe(0);
    d.add(0, &["svc", "a"], 1.0, t);
    write_to_stripe(1);
    d.add(0, &["svc", "b"], 1.0, t);
    // A third series: the overflow series, though stripe 0 holds only one.
    write_to_stripe(0);
    d.add(0, &["svc", "c"], 1.0, t);
    // b exists (in stripe 1): stripe 0 adds to it, not to the overflow series.
    d.add(0, &["svc", "b"], 1.0, t);
    write_to_stripe(1);
    d.add(0, &["svc", "a"], 1.0, t);
    d.add(0, &["svc", "d"], 1.0, t);
    write_to_stripe(0);
    assert_eq!(d.series(0), 3, "a, b and the overflow series");
    assert_eq!(d.overflowed(0), 2, "c and d");
    assert_eq!(
        d.values(0),
        vec![
            (vec!["svc".to_string(), "a".to_string()], 2.0),
            (vec!["svc".to_string(), "b".to_string()], 2.0),
        ]
    );
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains("test_calls_total{otel_metric_overflow=\"true\"} 2\n"),
        "{text}"
    );
}

#[test]
fn a_series_expires_when_idle_in_every_stripe() {
    let d = striped(1, 2);
    let t0 = Instant::now();
    let secs = |s: u64| t0 + Duration::from_secs(s);
    write_to_stripe(0);
    d.add(0, &["svc", "a"], 5.0, t0);
    d.add(0, &["svc", "x"], 1.0, t0);
    write_to_stripe(1);
    d.add(0, &["svc", "a"], 1.0, secs(30));
    d.add(0, &["svc", "y"], 1.0, secs(30));
    // a and the overflow series were last updated at 30 s, in stripe 1.
    d.expire(secs(89));
    assert_eq!(d.series(0), 2);
    assert_eq!(d.sample("test_calls_total", &[("model", "a")]), Some(6.0));
    d.expire(secs(90));
    assert_eq!(d.series(0), 0, "idle for the whole ttl in both stripes");
    write_to_stripe(0);
    d.add(0, &["svc", "b"], 2.0, secs(91));
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert_eq!(
        text,
        "# HELP test_calls_total calls\n# TYPE test_calls_total counter\n\
         test_calls_total{service_name=\"svc\",model=\"b\"} 2\n"
    );
}

#[test]
fn two_writers_at_once_lose_no_update_and_scrapes_never_go_back() {
    let d = striped(100, 2);
    let t = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let writer = |service: &'static str| {
        for _ in 0..5_000 {
            d.add(0, &["svc", "shared"], 1.0, t);
            d.add(0, &[service, "own"], 2.0, t);
            d.observe(1, &["svc"], 0.5, t);
        }
        done.fetch_add(1, Ordering::Relaxed);
    };
    std::thread::scope(|s| {
        s.spawn(|| writer("first"));
        s.spawn(|| writer("second"));
        // Scrapes while they write: each counter only grows, and the histogram's +Inf bucket
        // always equals its count.
        let mut last = 0.0;
        loop {
            let finished = done.load(Ordering::Relaxed) == 2;
            let shared = d
                .sample("test_calls_total", &[("model", "shared")])
                .unwrap_or(0.0);
            assert!(shared >= last, "{shared} after {last}");
            last = shared;
            let otlp = d.to_otlp(1);
            if let Some(Data::Histogram(h)) = otlp.get(1).and_then(|m| m.data.as_ref()) {
                let p = &h.data_points[0];
                assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
            }
            if finished {
                break;
            }
        }
    });
    assert_eq!(
        d.sample("test_calls_total", &[("model", "shared")]),
        Some(10_000.0)
    );
    for service in ["first", "second"] {
        assert_eq!(
            d.sample("test_calls_total", &[("service_name", service)]),
            Some(10_000.0)
        );
    }
    assert_eq!(d.sample("test_latency_seconds_count", &[]), Some(10_000.0));
    assert_eq!(d.sample("test_latency_seconds_sum", &[]), Some(5_000.0));
    assert_eq!(d.series(0), 3);
}
