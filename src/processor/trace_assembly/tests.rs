use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use super::*;
use crate::processor::trace_assembly::summary::TraceSummary;

fn span(trace: u8, id: u8, parent: Option<u8>, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("s{id}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_250_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn req(service: &str, spans: Vec<Span>) -> Batch {
    Batch::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("scope-{service}"),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn config(max_traces: usize, max_spans: usize) -> TraceAssemblyConfig {
    TraceAssemblyConfig {
        mode: Mode::Hold,
        wait_after_root: Duration::from_secs(2),
        max_trace_age: Duration::from_secs(30),
        max_traces,
        max_spans_per_trace: max_spans,
        max_held_mib: 32,
        min_share: 0.4,
        patterns: Default::default(),
    }
}

fn assembler(max_traces: usize, max_spans: usize) -> (TraceAssembly, AssemblyCounters) {
    let c = AssemblyCounters::default();
    (
        TraceAssembly::new(
            config(max_traces, max_spans),
            vec![Box::new(TraceSummary)],
            c.clone(),
        ),
        c,
    )
}

/// (trace id byte, span id byte) of every span in `out`, in order.
fn ids(out: &[Batch]) -> Vec<(u8, u8)> {
    out.iter()
        .flat_map(|b| match b {
            Batch::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| (s.trace_id[0], s.span_id[0]))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

fn attr<'a>(out: &'a [Batch], span: u8, key: &str) -> Option<&'a Value> {
    out.iter()
        .filter_map(|b| match b {
            Batch::Traces(r) => Some(r),
            _ => None,
        })
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .find(|s| s.span_id[0] == span)
        .and_then(|s| s.attributes.iter().find(|kv| kv.key == key))
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[test]
fn a_trace_waits_for_its_root_plus_the_grace_then_leaves_whole() {
    let (mut p, c) = assembler(100, 100);
    let t0 = Instant::now();
    let mut out = Vec::new();
    p.on_input(
        req(
            "api",
            vec![span(1, 11, Some(10), vec![]), span(2, 21, Some(20), vec![])],
        ),
        t0,
        &mut out,
    );
    p.on_input(
        req("llm", vec![span(1, 12, Some(11), vec![])]),
        t0,
        &mut out,
    );
    p.on_input(
        req("api", vec![span(1, 10, None, vec![])]),
        t0 + Duration::from_secs(1),
        &mut out,
    );
    assert!(out.is_empty(), "nothing leaves before its time");
    assert_eq!(c.in_flight.get(), 2);
    p.on_tick(t0 + Duration::from_millis(2999), &mut out);
    assert!(out.is_empty(), "root + 2 s is not yet reached");
    p.on_tick(t0 + Duration::from_secs(3), &mut out);
    assert_eq!(
        ids(&out),
        vec![(1, 11), (1, 10), (1, 12)],
        "trace 1 whole, grouped by origin"
    );
    // Resource and scope stay with their spans.
    let Batch::Traces(r) = &out[0] else { panic!() };
    assert_eq!(r.resource_spans.len(), 2);
    assert_eq!(
        r.resource_spans[1].scope_spans[0]
            .scope
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("scope-llm")
    );
    assert_eq!(
        attr(&out, 10, "rag.trace.complete"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(
        attr(&out, 10, "rag.trace.span_count"),
        Some(&Value::IntValue(3))
    );
    assert_eq!(
        attr(&out, 10, "rag.trace.duration_ms"),
        Some(&Value::DoubleValue(250.0))
    );

    // Trace 2 never gets its root: it leaves after max_trace_age, marked incomplete.
    out.clear();
    p.on_tick(t0 + Duration::from_secs(29), &mut out);
    assert!(out.is_empty());
    p.on_tick(t0 + Duration::from_secs(30), &mut out);
    assert_eq!(ids(&out), vec![(2, 21)]);
    assert_eq!(
        attr(&out, 21, "rag.trace.complete"),
        Some(&Value::BoolValue(false))
    );
    assert_eq!(c.in_flight.get(), 0);
}

#[test]
fn the_oldest_trace_is_flushed_when_max_traces_is_reached() {
    let (mut p, c) = assembler(2, 100);
    let t0 = Instant::now();
    let mut out = Vec::new();
    for (i, t) in [1u8, 2, 3].iter().enumerate() {
        p.on_input(
            req("api", vec![span(*t, 10 * t + 1, Some(10 * t), vec![])]),
            t0 + Duration::from_secs(i as u64),
            &mut out,
        );
    }
    assert_eq!(ids(&out), vec![(1, 11)], "trace 1 was the oldest");
    assert_eq!(c.evictions.get(), 1);
    assert_eq!(p.traces_held(), 2);
}

#[test]
fn too_many_spans_flush_the_trace_and_later_spans_pass_at_once() {
    let (mut p, c) = assembler(100, 3);
    let t0 = Instant::now();
    let mut out = Vec::new();
    p.on_input(
        req(
            "api",
            vec![
                span(1, 2, Some(1), vec![]),
                span(1, 3, Some(1), vec![]),
                span(1, 4, Some(1), vec![]),
            ],
        ),
        t0,
        &mut out,
    );
    assert_eq!(ids(&out), vec![(1, 2), (1, 3), (1, 4)]);
    out.clear();
    p.on_input(req("api", vec![span(1, 1, None, vec![])]), t0, &mut out);
    assert_eq!(ids(&out), vec![(1, 1)], "a late span is exported at once");
    assert_eq!(c.late_spans.get(), 1);
}

#[test]
fn shutdown_flushes_everything_held() {
    let (mut p, _) = assembler(100, 100);
    let t0 = Instant::now();
    let mut out = Vec::new();
    p.on_input(
        req(
            "api",
            vec![
                span(1, 10, None, vec![]),
                span(2, 20, None, vec![]),
                span(3, 31, Some(30), vec![]),
            ],
        ),
        t0,
        &mut out,
    );
    assert!(out.is_empty());
    p.on_shutdown(&mut out);
    let mut got = ids(&out);
    got.sort();
    assert_eq!(got, vec![(1, 10), (2, 20), (3, 31)]);
}

#[test]
fn the_root_summary_adds_up_the_model_calls() {
    let (mut p, _) = assembler(100, 100);
    let t0 = Instant::now();
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let llm = |id: u8, cost: f64, i: i64, o: i64| {
        span(
            1,
            id,
            Some(10),
            vec![
                kv("rag.stage", Value::StringValue("llm".into())),
                kv("rag.cost.usd", Value::DoubleValue(cost)),
                kv("gen_ai.usage.input_tokens", Value::IntValue(i)),
                kv("gen_ai.usage.output_tokens", Value::IntValue(o)),
            ],
        )
    };
    // A chain span repeating its children's totals is not counted again.
    let chain = span(
        1,
        12,
        Some(10),
        vec![
            kv("rag.stage", Value::StringValue("chain".into())),
            kv("gen_ai.usage.input_tokens", Value::IntValue(300)),
        ],
    );
    let mut out = Vec::new();
    p.on_input(
        req(
            "api",
            vec![
                span(1, 10, None, vec![]),
                llm(11, 0.25, 100, 10),
                llm(13, 0.5, 200, 20),
                chain,
            ],
        ),
        t0,
        &mut out,
    );
    p.on_tick(t0 + Duration::from_secs(2), &mut out);
    assert_eq!(
        attr(&out, 10, "rag.trace.cost.usd"),
        Some(&Value::DoubleValue(0.75))
    );
    assert_eq!(
        attr(&out, 10, "rag.trace.tokens.input"),
        Some(&Value::IntValue(300))
    );
    assert_eq!(
        attr(&out, 10, "rag.trace.tokens.output"),
        Some(&Value::IntValue(30))
    );
}

// Found by fuzz/fuzz_targets/genai_view.rs: token counts near i64::MAX overflowed the root's sum
// (a panic in the pipeline with debug assertions, a negative total without).
#[test]
fn the_root_token_sums_saturate() {
    let (mut p, _) = assembler(100, 100);
    let t0 = Instant::now();
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let llm = |id: u8| {
        span(
            1,
            id,
            Some(10),
            vec![
                kv("rag.stage", Value::StringValue("llm".into())),
                kv("gen_ai.usage.input_tokens", Value::IntValue(i64::MAX)),
                kv("gen_ai.usage.output_tokens", Value::IntValue(i64::MAX)),
            ],
        )
    };
    let mut out = Vec::new();
    p.on_input(
        req("api", vec![span(1, 10, None, vec![]), llm(11), llm(12)]),
        t0,
        &mut out,
    );
    p.on_tick(t0 + Duration::from_secs(2), &mut out);
    assert_eq!(
        attr(&out, 10, "rag.trace.tokens.input"),
        Some(&Value::IntValue(i64::MAX))
    );
    assert_eq!(
        attr(&out, 10, "rag.trace.tokens.output"),
        Some(&Value::IntValue(i64::MAX))
    );
}

#[test]
fn above_the_memory_limit_held_traces_leave_oldest_first_a_portion_a_tick() {
    let limiter = std::sync::Arc::new(crate::memory::MemoryLimiter::default());
    let (a, _) = assembler(100, 5000);
    let mut a = a.with_memory_limiter(limiter.clone());
    let t0 = Instant::now();
    // Five traces of 3,000 spans each (no roots, so none is due), arriving in order.
    for t in 1..=5u8 {
        let spans = (0..3000u16)
            .map(|i| {
                let mut s = span(t, 1, Some(9), Vec::new());
                s.span_id[..2].copy_from_slice(&(i + 1).to_be_bytes());
                s
            })
            .collect();
        let mut out = Vec::new();
        a.on_input(
            req("svc", spans),
            t0 + Duration::from_millis(u64::from(t)),
            &mut out,
        );
        assert!(out.is_empty());
    }
    let traces_in = |out: &[Batch]| {
        let mut v: Vec<u8> = ids(out).into_iter().map(|(t, _)| t).collect();
        v.dedup();
        v
    };
    let tick = |a: &mut TraceAssembly, ms: u64| {
        let mut out = Vec::new();
        a.on_tick(t0 + Duration::from_millis(ms), &mut out);
        out
    };
    assert!(
        tick(&mut a, 100).is_empty(),
        "below the limit nothing leaves"
    );
    // Above the soft limit: whole traces, oldest first, until 8,192 spans have left this tick:
    // 3,000 + 3,000 + 3,000.
    limiter.update(200, 100);
    let out = tick(&mut a, 200);
    assert_eq!(traces_in(&out), vec![1, 2, 3]);
    assert_eq!(ids(&out).len(), 9000);
    assert_eq!(a.traces_held(), 2);
    // Back below before the next tick: the rest waits for its own deadline.
    limiter.update(50, 100);
    assert!(tick(&mut a, 300).is_empty());
    assert_eq!(a.traces_held(), 2);
    limiter.update(200, 100);
    assert_eq!(traces_in(&tick(&mut a, 400)), vec![4, 5]);
    assert_eq!(a.traces_held(), 0);
}

#[test]
fn past_max_held_mib_the_oldest_traces_leave_early_and_are_counted() {
    let c = AssemblyCounters::default();
    let mut cfg = config(1000, 1000);
    cfg.max_held_mib = 1;
    let mut p = TraceAssembly::new(cfg, vec![Box::new(TraceSummary)], c.clone());
    let t0 = Instant::now();
    let mut out = Vec::new();
    // Spans of about 100 KiB each (a big attribute): eleven traces of one span take 1100 KiB.
    let big = |trace: u8| {
        span(
            trace,
            1,
            Some(9),
            vec![KeyValue {
                key: "blob".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("x".repeat(100 * 1024))),
                }),
                ..Default::default()
            }],
        )
    };
    for t in 1..=10u8 {
        p.on_input(req("api", vec![big(t)]), t0, &mut out);
    }
    assert!(out.is_empty(), "1000 KiB fit in 1024");
    p.on_input(req("api", vec![big(11)]), t0, &mut out);
    // 1100 KiB > 1 MiB: the oldest (trace 1) left early; without it, 1000 KiB fit again.
    assert_eq!(ids(&out), vec![(1, 1)]);
    assert_eq!(c.evictions.get(), 1);
    assert_eq!(p.traces_held(), 10);
    // Below the bound again: nothing more leaves early.
    p.on_input(req("api", vec![span(11, 1, Some(9), vec![])]), t0, &mut out);
    assert_eq!(ids(&out).len(), 1);
}

#[test]
fn the_held_mark_is_the_lowest_mark_of_any_trace_still_held() {
    let (mut p, _) = assembler(100, 100);
    let t0 = Instant::now();
    let mut out = Vec::new();
    assert_eq!(p.held_mark(), None);
    p.input_mark(Some(5));
    p.on_input(
        req("api", vec![span(1, 11, Some(10), vec![])]),
        t0,
        &mut out,
    );
    p.input_mark(Some(6));
    p.on_input(
        req("api", vec![span(2, 21, Some(20), vec![])]),
        t0,
        &mut out,
    );
    // A span of trace 2 from an older record (marks need not arrive in order).
    p.input_mark(Some(3));
    p.on_input(
        req("api", vec![span(2, 22, Some(20), vec![])]),
        t0,
        &mut out,
    );
    assert_eq!(p.held_mark(), Some(3));
    // Trace 2's root: it leaves after the grace; trace 1 (mark 5) stays.
    p.input_mark(Some(7));
    p.on_input(req("api", vec![span(2, 20, None, vec![])]), t0, &mut out);
    p.on_tick(t0 + Duration::from_secs(3), &mut out);
    assert_eq!(ids(&out).len(), 3);
    assert_eq!(p.held_mark(), Some(5));
    p.on_shutdown(&mut out);
    assert_eq!(p.held_mark(), None);
}

#[test]
fn equal_origins_from_different_requests_leave_under_one_resource_and_scope() {
    use crate::attributes::{kv_f64, kv_str};
    let (mut p, _) = assembler(100, 100);
    let t0 = Instant::now();
    let resource = |weight: f64| Resource {
        attributes: vec![kv_str("service.name", "api"), kv_f64("weight", weight)],
        ..Default::default()
    };
    let one = |resource: Resource, scope: &str, span: Span| {
        Batch::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.into(),
                        ..Default::default()
                    }),
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    };
    let mut out = Vec::new();
    // One trace in four requests. 0.0 and -0.0 are equal numbers (their bits differ), so the
    // first three resources are one; NaN equals nothing, so the fourth's is another.
    for (weight, scope, s) in [
        (0.0, "a", span(1, 10, None, vec![])),
        (-0.0, "b", span(1, 11, Some(10), vec![])),
        (0.0, "a", span(1, 12, Some(10), vec![])),
        (f64::NAN, "a", span(1, 13, Some(10), vec![])),
    ] {
        p.on_input(one(resource(weight), scope, s), t0, &mut out);
    }
    p.on_tick(t0 + Duration::from_secs(3), &mut out);
    assert_eq!(ids(&out), vec![(1, 10), (1, 12), (1, 11), (1, 13)]);
    let Batch::Traces(r) = &out[0] else { panic!() };
    assert_eq!(r.resource_spans.len(), 2);
    let scopes = |rs: &ResourceSpans| -> Vec<(String, usize)> {
        rs.scope_spans
            .iter()
            .map(|ss| {
                let name = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                (name, ss.spans.len())
            })
            .collect()
    };
    assert_eq!(
        scopes(&r.resource_spans[0]),
        vec![("a".to_string(), 2), ("b".to_string(), 1)]
    );
    assert_eq!(scopes(&r.resource_spans[1]), vec![("a".to_string(), 1)]);
    assert_eq!(r.resource_spans[0].resource, Some(resource(0.0)));
}

#[test]
fn a_trace_from_many_services_is_grouped_by_origin_past_the_few_compared_one_by_one() {
    let (mut p, _) = assembler(100, 100);
    let t0 = Instant::now();
    let mut out = Vec::new();
    // 40 spans, each in a request of its own, from 20 services (more than FEW_ORIGINS): span
    // i comes from svc-(i mod 20), so svc-1 has spans 1 and 21, ..., svc-0 spans 20 and 40.
    for i in 1..=40u8 {
        let parent = (i > 1).then_some(1);
        p.on_input(
            req(&format!("svc-{}", i % 20), vec![span(1, i, parent, vec![])]),
            t0,
            &mut out,
        );
    }
    p.on_tick(t0 + Duration::from_secs(3), &mut out);
    let want: Vec<(u8, u8)> = (1..=20u8).flat_map(|i| [(1, i), (1, i + 20)]).collect();
    assert_eq!(ids(&out), want);
    let Batch::Traces(r) = &out[0] else { panic!() };
    assert_eq!(r.resource_spans.len(), 20);
    assert!(
        r.resource_spans
            .iter()
            .all(|rs| rs.scope_spans.len() == 1 && rs.scope_spans[0].spans.len() == 2)
    );
    assert_eq!(
        crate::attributes::service_name(
            &r.resource_spans[19]
                .resource
                .as_ref()
                .expect("resource")
                .attributes
        ),
        Some("svc-0")
    );
}
