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
