//! Hand-built traces through each policy type, the decision rule, and the processor.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{Status, status::StatusCode};

use super::config::PolicyConfig;
use super::policy::{Chance, Outcome, decide};
use super::*;
use crate::attributes::{get, get_f64, get_str, kv, kv_f64, kv_str};
use crate::config::Validate;

/// A trace id whose randomness (last 7 bytes) is `r`, its first byte `tag`.
fn tid(tag: u8, r: u64) -> Vec<u8> {
    let mut id = vec![tag; 16];
    id[9..].copy_from_slice(&r.to_be_bytes()[1..]);
    id
}

/// Builds one trace: a root `request` (1 s) and children.
struct TraceBuilder {
    id: Vec<u8>,
    service: String,
    spans: Vec<Span>,
}

impl TraceBuilder {
    fn new(tag: u8) -> Self {
        Self::with_randomness(tag, 0)
    }

    fn with_randomness(tag: u8, r: u64) -> Self {
        let id = tid(tag, r);
        let root = Span {
            trace_id: id.clone(),
            span_id: vec![1; 8],
            name: "request".into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 2_000_000_000,
            ..Default::default()
        };
        TraceBuilder {
            id,
            service: "rag-api".into(),
            spans: vec![root],
        }
    }

    fn service(mut self, s: &str) -> Self {
        self.service = s.into();
        self
    }

    fn root_attr(mut self, k: KeyValue) -> Self {
        self.spans[0].attributes.push(k);
        self
    }

    fn root_ms(mut self, ms: u64) -> Self {
        self.spans[0].end_time_unix_nano = 1_000_000_000 + ms * 1_000_000;
        self
    }

    fn root_tracestate(mut self, ts: &str) -> Self {
        self.spans[0].trace_state = ts.into();
        self
    }

    /// A child of the root (span id `n + 1`) with attributes.
    fn child(mut self, name: &str, attrs: Vec<KeyValue>) -> Self {
        let n = self.spans.len() as u8 + 1;
        self.spans.push(Span {
            trace_id: self.id.clone(),
            span_id: vec![n; 8],
            parent_span_id: vec![1; 8],
            name: name.into(),
            start_time_unix_nano: 1_100_000_000,
            end_time_unix_nano: 1_200_000_000,
            attributes: attrs,
            ..Default::default()
        });
        self
    }

    fn last_status(mut self, code: StatusCode) -> Self {
        if let Some(s) = self.spans.last_mut() {
            s.status = Some(Status {
                code: code as i32,
                ..Default::default()
            });
        }
        self
    }

    fn last_event(mut self, name: &str, attrs: Vec<KeyValue>) -> Self {
        if let Some(s) = self.spans.last_mut() {
            s.events.push(Event {
                name: name.into(),
                attributes: attrs,
                ..Default::default()
            });
        }
        self
    }

    fn request(self) -> ExportTraceServiceRequest {
        request(vec![self])
    }
}

fn request(traces: Vec<TraceBuilder>) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::default();
    for t in traces {
        req.resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", &t.service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    ..Default::default()
                }),
                spans: t.spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    req
}

/// Policies from YAML, as a user writes them.
fn policies_yaml(yaml: &str) -> Vec<PolicyConfig> {
    let v: serde_json::Value = crate::config::yaml::from_str(yaml).expect("yaml");
    let mut problems = Problems::default();
    let c: TailSamplingConfig = crate::config::deserialize_collecting(
        serde_json::json!({ "policies": v }),
        "p",
        &mut problems,
    )
    .expect("config");
    c.validate("p", &mut problems);
    assert!(problems.is_empty(), "{:?}", problems.as_slice());
    c.policies
}

fn policy(yaml: &str) -> Policy {
    let p = policies_yaml(yaml);
    Policy::build(&p[0]).expect("build")
}

/// What `p` says of the (single) trace of `req`.
fn eval_with(p: &Policy, req: &ExportTraceServiceRequest, cx: &Context<'_>) -> Outcome {
    let positions: Vec<(usize, usize, usize)> = req
        .resource_spans
        .iter()
        .enumerate()
        .flat_map(|(ri, rs)| {
            rs.scope_spans
                .iter()
                .enumerate()
                .flat_map(move |(si, ss)| (0..ss.spans.len()).map(move |xi| (ri, si, xi)))
        })
        .collect();
    let id: [u8; 16] = req.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .as_slice()
        .try_into()
        .expect("id");
    let t = trace_at(req, &id, &positions);
    p.evaluate(&t, cx)
}

fn eval(p: &Policy, t: TraceBuilder) -> Outcome {
    let burning = HashSet::new();
    let cx = Context {
        now: Instant::now(),
        burning: &burning,
    };
    eval_with(p, &t.request(), &cx)
}

use Outcome::{Drop as D, No, Yes};

#[test]
fn always_sample() {
    let p = policy("[{name: all, type: always_sample}]");
    assert_eq!(eval(&p, TraceBuilder::new(1)), Yes);
}

#[test]
fn latency_between_thresholds() {
    let p = policy(
        "[{name: slow, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 2000}}]",
    );
    assert_eq!(eval(&p, TraceBuilder::new(1).root_ms(1000)), Yes);
    assert_eq!(eval(&p, TraceBuilder::new(1).root_ms(500)), Yes);
    assert_eq!(eval(&p, TraceBuilder::new(1).root_ms(300)), No);
    assert_eq!(eval(&p, TraceBuilder::new(1).root_ms(3000)), No);
    // The trace's duration spans all its spans: a child ending after the root counts.
    let open = policy("[{name: slow, type: latency, latency: {threshold_ms: 1000}}]");
    assert_eq!(eval(&open, TraceBuilder::new(1).root_ms(950)), No);
    assert_eq!(eval(&open, TraceBuilder::new(1).root_ms(5000)), Yes);
}

#[test]
fn status_code_of_any_span() {
    let p = policy("[{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]");
    let failed = TraceBuilder::new(1)
        .child("chat", vec![])
        .last_status(StatusCode::Error);
    assert_eq!(eval(&p, failed), Yes);
    assert_eq!(eval(&p, TraceBuilder::new(1).child("chat", vec![])), No);
    // ERROR is the default; UNSET is a status too.
    let d = policy("[{name: errors, type: status_code}]");
    assert_eq!(
        eval(
            &d,
            TraceBuilder::new(1)
                .child("x", vec![])
                .last_status(StatusCode::Error)
        ),
        Yes
    );
    let unset = policy("[{name: u, type: status_code, status_code: {status_codes: [UNSET]}}]");
    assert_eq!(eval(&unset, TraceBuilder::new(1)), Yes);
}

#[test]
fn numeric_attribute_on_spans_and_resources() {
    let p = policy(
        "[{name: big, type: numeric_attribute, numeric_attribute: {key: gen_ai.usage.input_tokens, min_value: 1000}}]",
    );
    let big = TraceBuilder::new(1).child(
        "chat",
        vec![kv("gen_ai.usage.input_tokens", Value::IntValue(1500))],
    );
    let small = TraceBuilder::new(1).child(
        "chat",
        vec![kv("gen_ai.usage.input_tokens", Value::IntValue(10))],
    );
    assert_eq!(eval(&p, big), Yes);
    assert_eq!(eval(&p, small), No);
    let range = policy(
        "[{name: r, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, max_value: 2, invert_match: true}}]",
    );
    assert_eq!(
        eval(&range, TraceBuilder::new(1).root_attr(kv_f64("x", 1.5))),
        No
    );
    assert_eq!(
        eval(&range, TraceBuilder::new(1).root_attr(kv_f64("x", 2.5))),
        Yes
    );
    let res = policy(
        "[{name: r, type: numeric_attribute, numeric_attribute: {key: service.version, min_value: 2}}]",
    );
    let mut req = TraceBuilder::new(1).request();
    if let Some(r) = req.resource_spans[0].resource.as_mut() {
        r.attributes.push(kv("service.version", Value::IntValue(3)));
    }
    let burning = HashSet::new();
    let cx = Context {
        now: Instant::now(),
        burning: &burning,
    };
    assert_eq!(
        eval_with(&res, &req, &cx),
        Yes,
        "a resource attribute counts"
    );
}

#[test]
fn string_attribute_exact_regex_and_inverted() {
    let p = policy(
        "[{name: s, type: string_attribute, string_attribute: {key: gen_ai.request.model, values: [gpt-4o, o1]}}]",
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child("c", vec![kv_str("gen_ai.request.model", "gpt-4o")])
        ),
        Yes
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child("c", vec![kv_str("gen_ai.request.model", "gpt-4o-mini")])
        ),
        No
    );
    let re = policy(
        "[{name: s, type: string_attribute, string_attribute: {key: gen_ai.request.model, values: ['^claude-'], enabled_regex_matching: true}}]",
    );
    assert_eq!(
        eval(
            &re,
            TraceBuilder::new(1)
                .child("c", vec![kv_str("gen_ai.request.model", "claude-sonnet-4")])
        ),
        Yes
    );
    assert_eq!(
        eval(
            &re,
            TraceBuilder::new(1).child("c", vec![kv_str("gen_ai.request.model", "gpt-4o")])
        ),
        No
    );
    let not_health = policy(
        "[{name: s, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}]",
    );
    assert_eq!(
        eval(
            &not_health,
            TraceBuilder::new(1).root_attr(kv_str("http.route", "/health"))
        ),
        No
    );
    assert_eq!(
        eval(
            &not_health,
            TraceBuilder::new(1).root_attr(kv_str("http.route", "/ask"))
        ),
        Yes
    );
    // The service name is a resource attribute.
    let svc = policy(
        "[{name: s, type: string_attribute, string_attribute: {key: service.name, values: [billing]}}]",
    );
    assert_eq!(eval(&svc, TraceBuilder::new(1).service("billing")), Yes);
    assert_eq!(eval(&svc, TraceBuilder::new(1)), No);
}

#[test]
fn boolean_attribute() {
    let p = policy(
        "[{name: b, type: boolean_attribute, boolean_attribute: {key: gen_ai.is_streaming, value: true}}]",
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1)
                .child("c", vec![kv("gen_ai.is_streaming", Value::BoolValue(true))])
        ),
        Yes
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child(
                "c",
                vec![kv("gen_ai.is_streaming", Value::BoolValue(false))]
            )
        ),
        No
    );
    assert_eq!(eval(&p, TraceBuilder::new(1)), No);
}

#[test]
fn probabilistic_is_a_threshold_on_the_trace_randomness() {
    let p = policy("[{name: p, type: probabilistic, probabilistic: {sampling_percentage: 10}}]");
    let Outcome::Chance(c) = eval(&p, TraceBuilder::new(1)) else {
        panic!("a chance");
    };
    assert_eq!(
        c,
        Chance {
            seed: 0,
            threshold: 0xe6666666666666
        }
    );
    let burning = HashSet::new();
    let cx = Context {
        now: Instant::now(),
        burning: &burning,
    };
    // Randomness at the threshold is kept, one below is not.
    for (r, kept) in [
        (0xe6666666666666, true),
        (0xe6666666666665, false),
        (0xffffffffffffff, true),
        (0, false),
    ] {
        let req = TraceBuilder::with_randomness(1, r).request();
        let id: [u8; 16] = tid(1, r).try_into().expect("id");
        let t = trace_at(&req, &id, &[(0, 0, 0)]);
        assert_eq!(c.holds(&t), kept, "{r:x}");
        assert_eq!(decide(std::slice::from_ref(&p), &t, &cx).keep, kept);
    }
    assert_eq!(
        eval(
            &policy("[{name: p, type: probabilistic, probabilistic: {sampling_percentage: 100}}]"),
            TraceBuilder::new(1)
        ),
        Yes
    );
    assert_eq!(
        eval(
            &policy("[{name: p, type: probabilistic, probabilistic: {sampling_percentage: 0}}]"),
            TraceBuilder::new(1)
        ),
        No
    );
}

/// splitmix64: a fixed stream of well-spread numbers for trace ids.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn probabilistic_keeps_its_share_and_replicas_agree() {
    // 10,000 traces at 10 %: kept ~ Binomial(10000, 0.1), mean 1000, sd sqrt(10000 * 0.1 * 0.9)
    // = 30; 5 sd either side is [850, 1150]. The same for the hashed (seeded) randomness.
    for yaml in [
        "[{name: p, type: probabilistic, probabilistic: {sampling_percentage: 10}}]",
        "[{name: p, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_seed: 22}}]",
    ] {
        let config = TailSamplingConfig {
            policies: policies_yaml(yaml),
            ..Default::default()
        };
        let mut a = TailSampling::new(config.clone(), true, Default::default()).expect("build");
        let mut b = TailSampling::new(config, true, Default::default()).expect("build");
        let mut state = 7;
        let now = Instant::now();
        let (mut kept, mut agree) = (0, 0);
        for _ in 0..10_000 {
            let mut t = TraceBuilder::new(0);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&splitmix(&mut state).to_be_bytes());
            id[8..].copy_from_slice(&splitmix(&mut state).to_be_bytes());
            t.spans[0].trace_id = id.to_vec();
            let req = t.request();
            let (mut oa, mut ob) = (Vec::new(), Vec::new());
            a.on_input(Batch::Traces(req.clone()), now, &mut oa);
            b.on_input(Batch::Traces(req), now, &mut ob);
            kept += oa.len();
            agree += usize::from(oa.len() == ob.len());
        }
        assert!((850..=1150).contains(&kept), "{yaml}: kept {kept} of 10000");
        assert_eq!(agree, 10_000, "two replicas decide alike");
    }
}

#[test]
fn rate_limiting_per_second_shared_by_shards() {
    let p = policy("[{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 5}}]");
    let three = || TraceBuilder::new(1).child("a", vec![]).child("b", vec![]);
    let burning = HashSet::new();
    let t0 = Instant::now();
    let at = |now| Context {
        now,
        burning: &burning,
    };
    assert_eq!(eval_with(&p, &three().request(), &at(t0)), Yes);
    // 3 + 3 > 5 within the same second; a clone (another shard) shares the budget.
    let sibling = p.clone();
    assert_eq!(
        eval_with(
            &sibling,
            &three().request(),
            &at(t0 + Duration::from_millis(500))
        ),
        No
    );
    assert_eq!(
        eval_with(
            &p,
            &TraceBuilder::new(1).child("a", vec![]).request(),
            &at(t0 + Duration::from_millis(900))
        ),
        Yes
    );
    assert_eq!(
        eval_with(
            &p,
            &three().request(),
            &at(t0 + Duration::from_millis(1000))
        ),
        Yes
    );
}

#[test]
fn span_count_between_bounds() {
    let p = policy("[{name: c, type: span_count, span_count: {min_spans: 2, max_spans: 3}}]");
    assert_eq!(eval(&p, TraceBuilder::new(1)), No);
    assert_eq!(eval(&p, TraceBuilder::new(1).child("a", vec![])), Yes);
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1)
                .child("a", vec![])
                .child("b", vec![])
                .child("c", vec![])
        ),
        No
    );
}

#[test]
fn and_needs_every_sub_policy() {
    let p = policy(
        "[{name: a, type: and, and: {and_sub_policy: [
            {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [billing]}},
            {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}]}}]",
    );
    assert_eq!(
        eval(&p, TraceBuilder::new(1).service("billing")),
        Outcome::Chance(Chance {
            seed: 0,
            threshold: 1 << 55
        })
    );
    assert_eq!(eval(&p, TraceBuilder::new(1)), No);
    let both = policy(
        "[{name: a, type: and, and: {and_sub_policy: [
            {name: e, type: status_code},
            {name: slow, type: latency, latency: {threshold_ms: 500}}]}}]",
    );
    let failed = || {
        TraceBuilder::new(1)
            .child("x", vec![])
            .last_status(StatusCode::Error)
    };
    assert_eq!(eval(&both, failed()), Yes);
    assert_eq!(eval(&both, failed().root_ms(100)), No);
}

#[test]
fn drop_wins_over_every_sample() {
    let ps = policies_yaml(
        "[{name: all, type: always_sample},
          {name: no-health, type: drop, drop: {drop_sub_policy: [
            {name: h, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}]}}]",
    );
    let ps: Vec<Policy> = ps
        .iter()
        .map(|p| Policy::build(p).expect("build"))
        .collect();
    assert_eq!(
        eval(
            &ps[1],
            TraceBuilder::new(1).root_attr(kv_str("http.route", "/health"))
        ),
        D
    );
    assert_eq!(
        eval(
            &ps[1],
            TraceBuilder::new(1).root_attr(kv_str("http.route", "/ask"))
        ),
        No
    );
    let burning = HashSet::new();
    let cx = Context {
        now: Instant::now(),
        burning: &burning,
    };
    let req = TraceBuilder::new(1)
        .root_attr(kv_str("http.route", "/health"))
        .request();
    let id: [u8; 16] = tid(1, 0).try_into().expect("id");
    let d = decide(&ps, &trace_at(&req, &id, &[(0, 0, 0)]), &cx);
    assert_eq!((d.keep, d.policy), (false, Some(1)), "any drop → dropped");
}

#[test]
fn composite_shares_its_rate_in_order() {
    // 10 spans a second: errors get 60 % (6 spans), the rest (always) the 40 % left (4 spans).
    let p = policy(
        "[{name: c, type: composite, composite: {
            max_total_spans_per_second: 10,
            policy_order: [errors, rest],
            composite_sub_policy: [
              {name: rest, type: always_sample},
              {name: errors, type: status_code}],
            rate_allocation: [{policy: errors, percent: 60}]}}]",
    );
    let failed = || {
        TraceBuilder::new(1)
            .child("x", vec![])
            .last_status(StatusCode::Error)
    }; // 2 spans
    let ok = || TraceBuilder::new(2).child("x", vec![]); // 2 spans
    let burning = HashSet::new();
    let now = Instant::now();
    let cx = Context {
        now,
        burning: &burning,
    };
    // Errors: 2 + 2 + 2 = 6 fit their share; the fourth goes to `rest` (2 of its 4).
    for _ in 0..3 {
        assert_eq!(eval_with(&p, &failed().request(), &cx), Yes);
    }
    assert_eq!(eval_with(&p, &failed().request(), &cx), Yes);
    assert_eq!(eval_with(&p, &ok().request(), &cx), Yes);
    // `rest` is full now: 4 of 4.
    assert_eq!(eval_with(&p, &ok().request(), &cx), No);
    assert_eq!(eval_with(&p, &failed().request(), &cx), No);
}

#[test]
fn trace_cost_from_the_root_or_the_spans() {
    let p = policy("[{name: costly, type: trace_cost, trace_cost: {min_usd: 0.05}}]");
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).root_attr(kv_f64(a::TRACE_COST_USD, 0.06))
        ),
        Yes
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).root_attr(kv_f64(a::TRACE_COST_USD, 0.01))
        ),
        No
    );
    // Without the root summary (no trace assembly): the spans' costs add up, 0.03 + 0.03.
    let spans = TraceBuilder::new(1)
        .child("chat", vec![kv_f64(a::COST_USD, 0.03)])
        .child("chat", vec![kv_f64(a::COST_USD, 0.03)]);
    assert_eq!(eval(&p, spans), Yes);
    // In stream mode the trace's summary is on the synthetic analysis span.
    let stream =
        TraceBuilder::new(1).child(a::ANALYSIS_SPAN, vec![kv_f64(a::TRACE_COST_USD, 0.07)]);
    assert_eq!(eval(&p, stream), Yes);
}

#[test]
fn quality_at_most() {
    let p = policy("[{name: poor, type: quality, quality: {max_score: 0.5}}]");
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).root_attr(kv_f64(a::QUALITY_SCORE, 0.4))
        ),
        Yes
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).root_attr(kv_f64(a::QUALITY_SCORE, 0.8))
        ),
        No
    );
    assert_eq!(eval(&p, TraceBuilder::new(1)), No, "no score, no verdict");
}

#[test]
fn anomaly_on_any_span() {
    let p = policy("[{name: odd, type: anomaly}]");
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child("r", vec![kv(a::ANOMALY, Value::BoolValue(true))])
        ),
        Yes
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child("r", vec![kv(a::ANOMALY, Value::BoolValue(false))])
        ),
        No
    );
    assert_eq!(eval(&p, TraceBuilder::new(1)), No);
}

#[test]
fn finding_by_name() {
    let p = policy("[{name: f, type: finding, finding: {names: [retry_storm]}}]");
    let with = |name: &str| {
        TraceBuilder::new(1)
            .child("chat", vec![])
            .last_event(a::FINDING_EVENT, vec![kv_str(a::FINDING_NAME, name)])
    };
    assert_eq!(eval(&p, with("retry_storm")), Yes);
    assert_eq!(eval(&p, with("sequential_calls")), No);
    let any = policy("[{name: f, type: finding}]");
    assert_eq!(eval(&any, with("sequential_calls")), Yes);
    assert_eq!(
        eval(
            &any,
            TraceBuilder::new(1)
                .child("c", vec![])
                .last_event("exception", vec![])
        ),
        No
    );
}

#[test]
fn bottleneck_stage_and_share() {
    let p =
        policy("[{name: b, type: bottleneck, bottleneck: {stages: [retrieval], min_share: 0.5}}]");
    let t = |stage: &str, share: f64| {
        TraceBuilder::new(1)
            .root_attr(kv_str(a::TRACE_BOTTLENECK_STAGE, stage))
            .root_attr(kv_f64(a::TRACE_BOTTLENECK_SHARE, share))
    };
    assert_eq!(eval(&p, t("retrieval", 0.7)), Yes);
    assert_eq!(eval(&p, t("retrieval", 0.45)), No);
    assert_eq!(eval(&p, t("llm", 0.9)), No);
    assert_eq!(eval(&p, TraceBuilder::new(1)), No);
}

#[test]
fn slo_burn_keeps_the_traces_of_a_burning_slo() {
    let p = policy("[{name: burn, type: slo_burn}]");
    let only = policy("[{name: burn, type: slo_burn, slo_burn: {slos: [fast-answers]}}]");
    let mut burning = HashSet::new();
    burning.insert(BurningSlo {
        slo: "fast-answers".into(),
        service: "rag-api".into(),
        over: "request".into(),
    });
    burning.insert(BurningSlo {
        slo: "fast-retrieval".into(),
        service: "search".into(),
        over: "retrieval".into(),
    });
    let cx = Context {
        now: Instant::now(),
        burning: &burning,
    };
    assert_eq!(eval_with(&p, &TraceBuilder::new(1).request(), &cx), Yes);
    assert_eq!(eval_with(&only, &TraceBuilder::new(1).request(), &cx), Yes);
    assert_eq!(
        eval_with(&p, &TraceBuilder::new(1).service("other").request(), &cx),
        No
    );
    // A stage SLO: the service's traces with a span of that stage.
    let retrieval = TraceBuilder::new(1)
        .service("search")
        .child("retrieve", vec![kv_str(a::RAG_STAGE, "retrieval")]);
    assert_eq!(eval_with(&p, &retrieval.request(), &cx), Yes);
    assert_eq!(
        eval_with(&p, &TraceBuilder::new(1).service("search").request(), &cx),
        No
    );
    let retrieval = TraceBuilder::new(1)
        .service("search")
        .child("retrieve", vec![kv_str(a::RAG_STAGE, "retrieval")]);
    assert_eq!(
        eval_with(&only, &retrieval.request(), &cx),
        No,
        "not a listed SLO"
    );
    let nothing = HashSet::new();
    let quiet = Context {
        now: Instant::now(),
        burning: &nothing,
    };
    assert_eq!(eval_with(&p, &TraceBuilder::new(1).request(), &quiet), No);
}

#[test]
fn unpriced_model() {
    let p = policy("[{name: u, type: unpriced_model}]");
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child("chat", vec![kv(a::COST_UNPRICED, Value::BoolValue(true))])
        ),
        Yes
    );
    assert_eq!(
        eval(
            &p,
            TraceBuilder::new(1).child("chat", vec![kv_f64(a::COST_USD, 0.01)])
        ),
        No
    );
}

#[test]
fn agent_outcomes() {
    let p = policy("[{name: a, type: agent, agent: {outcomes: [limit_reached]}}]");
    let run = |o: &str| {
        TraceBuilder::new(1).child("invoke_agent", vec![kv_str(policy::AGENT_OUTCOME, o)])
    };
    assert_eq!(eval(&p, run("limit_reached")), Yes);
    assert_eq!(eval(&p, run("ok")), No);
    let default = policy("[{name: a, type: agent, agent: {}}]");
    assert_eq!(eval(&default, run("error")), Yes);
    assert_eq!(eval(&default, run("ok")), No);
}

#[test]
fn the_decision_rule() {
    let ps: Vec<Policy> = policies_yaml(
        "[{name: errors, type: status_code},
          {name: ten-percent, type: probabilistic, probabilistic: {sampling_percentage: 10}},
          {name: costly, type: trace_cost, trace_cost: {min_usd: 1}}]",
    )
    .iter()
    .map(|p| Policy::build(p).expect("build"))
    .collect();
    let burning = HashSet::new();
    let cx = Context {
        now: Instant::now(),
        burning: &burning,
    };
    let decide_on = |t: TraceBuilder| {
        let id: [u8; 16] = t.id.clone().try_into().expect("id");
        let req = t.request();
        let n = req.resource_spans[0].scope_spans[0].spans.len();
        let pos: Vec<_> = (0..n).map(|i| (0, 0, i)).collect();
        decide(&ps, &trace_at(&req, &id, &pos), &cx)
    };
    let low = 0x01; // below the 10 % threshold
    let high = 0xf0_0000_0000_0000; // above it
    // A rule keeps it, whatever the randomness: it stands for itself.
    let d =
        decide_on(TraceBuilder::with_randomness(1, low).root_attr(kv_f64(a::TRACE_COST_USD, 2.0)));
    assert_eq!((d.keep, d.policy, d.weight), (true, Some(2), Weight::Rule));
    // Two rules: the first keeps it (the order of the policies).
    let d = decide_on(
        TraceBuilder::with_randomness(1, high)
            .root_attr(kv_f64(a::TRACE_COST_USD, 2.0))
            .child("x", vec![])
            .last_status(StatusCode::Error),
    );
    assert_eq!((d.keep, d.policy, d.weight), (true, Some(0), Weight::Rule));
    // Only chance: kept above the threshold, with the threshold.
    let d = decide_on(TraceBuilder::with_randomness(1, high));
    assert_eq!(
        (d.keep, d.policy, d.weight),
        (true, Some(1), Weight::Threshold(0xe6666666666666))
    );
    let d = decide_on(TraceBuilder::with_randomness(1, low));
    assert_eq!((d.keep, d.policy), (false, None));
    // No policy at all: dropped.
    let id: [u8; 16] = tid(1, high).try_into().expect("id");
    let req = TraceBuilder::with_randomness(1, high).request();
    let d = decide(&[], &trace_at(&req, &id, &[(0, 0, 0)]), &cx);
    assert_eq!((d.keep, d.policy), (false, None));
}

/// Spans (trace tag, span id byte) in the output.
fn spans_of(out: &[Batch]) -> Vec<&Span> {
    out.iter()
        .flat_map(|b| match b {
            Batch::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

fn metric(c: &SamplingCounters, policy: &str, decision: &str) -> u64 {
    c.traces
        .get_or_create(&SamplingLabels {
            policy: policy.into(),
            decision: decision.into(),
        })
        .get()
}

fn processor(yaml: &str, whole: bool) -> (TailSampling, SamplingCounters) {
    let c = SamplingCounters::default();
    let config = TailSamplingConfig {
        policies: policies_yaml(yaml),
        decision_wait: Duration::from_secs(5),
        ..Default::default()
    };
    (
        TailSampling::new(config, whole, c.clone()).expect("build"),
        c,
    )
}

const POLICIES: &str = "[{name: errors, type: status_code},
  {name: ten-percent, type: probabilistic, probabilistic: {sampling_percentage: 10}}]";

#[test]
fn whole_traces_are_kept_with_every_span_and_say_why() {
    let (mut p, c) = processor(POLICIES, true);
    let failed = TraceBuilder::with_randomness(1, 5)
        .child("chat", vec![])
        .last_status(StatusCode::Error)
        .child("retrieval", vec![]);
    let lucky = TraceBuilder::with_randomness(2, 0xff_0000_0000_0000)
        .root_tracestate("vendor=abc")
        .child("chat", vec![]);
    let normal = TraceBuilder::with_randomness(3, 5)
        .child("chat", vec![])
        .child("retrieval", vec![]);
    let mut out = Vec::new();
    p.on_input(
        Batch::Traces(request(vec![failed, lucky, normal])),
        Instant::now(),
        &mut out,
    );
    let spans = spans_of(&out);
    let of = |tag: u8| {
        spans
            .iter()
            .filter(|s| s.trace_id[0] == tag)
            .collect::<Vec<_>>()
    };
    assert_eq!((of(1).len(), of(2).len(), of(3).len()), (3, 2, 0));
    let root = |tag: u8| {
        *of(tag)
            .into_iter()
            .find(|s| s.parent_span_id.is_empty())
            .expect("root")
    };
    assert_eq!(
        get_str(&root(1).attributes, a::SAMPLING_POLICY),
        Some("errors")
    );
    assert_eq!(
        get_f64(&root(1).attributes, a::SAMPLING_ADJUSTED_COUNT),
        Some(1.0)
    );
    assert!(
        of(1).iter().all(|s| s.trace_state.is_empty()),
        "a rule changes no threshold"
    );
    assert_eq!(
        get_str(&root(2).attributes, a::SAMPLING_POLICY),
        Some("ten-percent")
    );
    let adjusted = get_f64(&root(2).attributes, a::SAMPLING_ADJUSTED_COUNT).expect("count");
    assert!((adjusted - 10.0).abs() < 1e-9, "{adjusted}");
    // Every span of a trace kept at random carries the threshold; other entries stay.
    for s in of(2) {
        let want = if s.parent_span_id.is_empty() {
            "ot=th:e6666666666666,vendor=abc"
        } else {
            "ot=th:e6666666666666"
        };
        assert_eq!(s.trace_state, want);
    }
    // Only the root says why.
    assert!(
        of(2)
            .iter()
            .filter(|s| !s.parent_span_id.is_empty())
            .all(|s| get(&s.attributes, a::SAMPLING_POLICY).is_none())
    );
    assert_eq!(metric(&c, "errors", "kept"), 1);
    assert_eq!(metric(&c, "ten-percent", "kept"), 1);
    assert_eq!(metric(&c, NO_POLICY, "dropped"), 1);
    assert_eq!(c.spans_dropped.get(), 3);
    assert_eq!(p.traces_waiting(), 0, "nothing waits behind trace assembly");
    assert_eq!(p.tick_interval(), None);
}

#[test]
fn late_spans_follow_their_traces_decision() {
    let (mut p, c) = processor(POLICIES, true);
    let now = Instant::now();
    let lucky = TraceBuilder::with_randomness(2, 0xff_0000_0000_0000).child("chat", vec![]);
    let normal = TraceBuilder::with_randomness(3, 5).child("chat", vec![]);
    let mut out = Vec::new();
    p.on_input(Batch::Traces(request(vec![lucky, normal])), now, &mut out);
    assert_eq!(spans_of(&out).len(), 2);
    // Late children: one of the kept trace (it gets the threshold), one of the dropped one —
    // even though it failed, the decision was made.
    let late = |tag: u8, r: u64| {
        let mut t = TraceBuilder::with_randomness(tag, r)
            .child("late", vec![])
            .last_status(StatusCode::Error);
        t.spans.remove(0);
        t
    };
    let mut out = Vec::new();
    p.on_input(
        Batch::Traces(request(vec![late(2, 0xff_0000_0000_0000), late(3, 5)])),
        now,
        &mut out,
    );
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id[0], 2);
    assert_eq!(spans[0].trace_state, "ot=th:e6666666666666");
    assert_eq!(c.late_spans.get(), 2);
    assert_eq!(c.spans_dropped.get(), 3);
    assert_eq!(
        metric(&c, "errors", "kept"),
        0,
        "a late span is no new decision"
    );
}

#[test]
fn the_decision_cache_is_bounded_and_counts_what_it_forgets() {
    let c = SamplingCounters::default();
    let config = TailSamplingConfig {
        policies: policies_yaml("[{name: all, type: always_sample}]"),
        decision_cache: config::DecisionCacheConfig {
            sampled_cache_size: 2,
            non_sampled_cache_size: 2,
        },
        ..Default::default()
    };
    let mut p = TailSampling::new(config, true, c.clone()).expect("build");
    let mut out = Vec::new();
    for tag in 1..=5 {
        p.on_input(
            Batch::Traces(TraceBuilder::new(tag).request()),
            Instant::now(),
            &mut out,
        );
    }
    assert_eq!(c.cache_evictions.get(), 3);
    assert_eq!(p.kept.map.len(), 2);
    assert_eq!(p.kept.order.len(), 2);
}

#[test]
fn without_trace_assembly_spans_wait_for_decision_wait() {
    let (mut p, c) = processor(POLICIES, false);
    let t0 = Instant::now();
    let failed = TraceBuilder::with_randomness(1, 5).child("chat", vec![]);
    let mut parts = failed.request();
    // The root first, the failing child a second later.
    let child = parts.resource_spans[0].scope_spans[0].spans.remove(1);
    let mut out = Vec::new();
    p.on_input(Batch::Traces(parts), t0, &mut out);
    let mut child_req = TraceBuilder::with_randomness(1, 5).request();
    let mut child = child;
    child.status = Some(Status {
        code: StatusCode::Error as i32,
        ..Default::default()
    });
    child_req.resource_spans[0].scope_spans[0].spans = vec![child];
    p.on_input(
        Batch::Traces(child_req),
        t0 + Duration::from_secs(1),
        &mut out,
    );
    let normal = TraceBuilder::with_randomness(3, 5).child("chat", vec![]);
    p.on_input(
        Batch::Traces(normal.request()),
        t0 + Duration::from_secs(1),
        &mut out,
    );
    assert!(out.is_empty(), "everything waits");
    assert_eq!(p.traces_waiting(), 2);
    p.on_tick(t0 + Duration::from_millis(4999), &mut out);
    assert!(out.is_empty());
    p.on_tick(t0 + Duration::from_secs(5), &mut out);
    // The failed trace, both spans, in one request under its resource and scope.
    assert_eq!(out.len(), 1);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s.trace_id[0] == 1));
    let Batch::Traces(r) = &out[0] else {
        panic!("traces")
    };
    assert_eq!(r.resource_spans.len(), 1);
    assert_eq!(r.resource_spans[0].scope_spans.len(), 1);
    out.clear();
    p.on_tick(t0 + Duration::from_secs(6), &mut out);
    assert!(out.is_empty());
    assert_eq!(p.traces_waiting(), 0);
    assert_eq!(c.spans_dropped.get(), 2);
    assert_eq!(metric(&c, "errors", "kept"), 1);
    assert_eq!(p.tick_interval(), Some(Duration::from_millis(100)));
}

#[test]
fn num_traces_bounds_what_waits_and_shutdown_decides_the_rest() {
    let c = SamplingCounters::default();
    let config = TailSamplingConfig {
        policies: policies_yaml("[{name: all, type: always_sample}]"),
        num_traces: 2,
        ..Default::default()
    };
    let mut p = TailSampling::new(config, false, c.clone()).expect("build");
    let now = Instant::now();
    let mut out = Vec::new();
    for tag in 1..=3 {
        p.on_input(
            Batch::Traces(TraceBuilder::new(tag).request()),
            now,
            &mut out,
        );
    }
    // The third trace made the first be decided early.
    assert_eq!(c.early_decisions.get(), 1);
    assert_eq!(
        spans_of(&out)
            .iter()
            .map(|s| s.trace_id[0])
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(p.traces_waiting(), 2);
    out.clear();
    p.on_shutdown(&mut out);
    assert_eq!(spans_of(&out).len(), 2);
    assert_eq!(p.traces_waiting(), 0);
    assert_eq!(metric(&c, "all", "kept"), 3);
}

#[test]
fn an_upstream_threshold_is_kept_and_multiplies() {
    let (mut p, _) = processor(POLICIES, true);
    // Sampled at 50 % by the application's sampler (th:8): kept at 10 % now, the threshold is
    // the stricter one; kept by a rule, it still stands for 2.
    let lucky = TraceBuilder::with_randomness(2, 0xff_0000_0000_0000)
        .root_tracestate("ot=th:8;rv:ff000000000000");
    let failed = TraceBuilder::with_randomness(1, 0x90_0000_0000_0000)
        .root_tracestate("ot=th:8")
        .child("x", vec![])
        .last_status(StatusCode::Error);
    let mut out = Vec::new();
    p.on_input(
        Batch::Traces(request(vec![lucky, failed])),
        Instant::now(),
        &mut out,
    );
    let spans = spans_of(&out);
    let root = |tag: u8| {
        *spans
            .iter()
            .find(|s| s.trace_id[0] == tag && s.parent_span_id.is_empty())
            .expect("root")
    };
    assert_eq!(
        root(2).trace_state,
        "ot=th:e6666666666666;rv:ff000000000000"
    );
    assert!(
        (get_f64(&root(2).attributes, a::SAMPLING_ADJUSTED_COUNT).expect("n") - 10.0).abs() < 1e-9
    );
    assert_eq!(root(1).trace_state, "ot=th:8");
    assert_eq!(
        get_f64(&root(1).attributes, a::SAMPLING_ADJUSTED_COUNT),
        Some(2.0)
    );
}

#[test]
fn slo_burn_reads_what_the_slo_processor_says() {
    let burning = Arc::new(Burning::default());
    let (p, c) = processor("[{name: burn, type: slo_burn}]", true);
    let mut p = p.with_burning(burning.clone());
    let now = Instant::now();
    let mut out = Vec::new();
    p.on_input(Batch::Traces(TraceBuilder::new(1).request()), now, &mut out);
    assert!(out.is_empty());
    let w = burning.writer();
    burning.set(
        w,
        vec![BurningSlo {
            slo: "answers".into(),
            service: "rag-api".into(),
            over: "request".into(),
        }],
    );
    p.on_input(Batch::Traces(TraceBuilder::new(2).request()), now, &mut out);
    assert_eq!(spans_of(&out).len(), 1);
    burning.set(w, Vec::new());
    out.clear();
    p.on_input(Batch::Traces(TraceBuilder::new(3).request()), now, &mut out);
    assert!(out.is_empty(), "no longer burning");
    assert_eq!(metric(&c, "burn", "kept"), 1);
}

#[test]
fn other_signals_and_odd_spans_pass() {
    let (mut p, _) = processor(POLICIES, true);
    let mut out = Vec::new();
    let logs = Batch::Logs(Default::default());
    p.on_input(logs.clone(), Instant::now(), &mut out);
    assert_eq!(out, vec![logs]);
    out.clear();
    let mut t = TraceBuilder::new(1);
    t.spans[0].trace_id = vec![1, 2, 3];
    p.on_input(Batch::Traces(t.request()), Instant::now(), &mut out);
    assert_eq!(
        spans_of(&out).len(),
        1,
        "a span without a valid trace id is passed on"
    );
    // Empty requests and resources without spans: nothing comes out, nothing breaks.
    out.clear();
    p.on_input(Batch::Traces(request(vec![])), Instant::now(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn every_configuration_problem_with_its_path() {
    let yaml = r#"
decision_wait: 0s
num_traces: 0
bogus: 1
policies:
  - {name: a, type: probabilistic, probabilistic: {sampling_percentage: 150}}
  - {name: a, type: latency}
  - {name: c, type: quality, quality: {max_score: 2}, latency: {threshold_ms: 1}}
  - {name: d, type: bottleneck, bottleneck: {stages: [retrieval, nap], min_share: 1.5}}
  - {name: e, type: composite, composite: {max_total_spans_per_second: 0, policy_order: [x],
      composite_sub_policy: [{name: s, type: always_sample}], rate_allocation: [{policy: s, percent: 120}]}}
  - {name: f, type: agent, agent: {outcomes: [crashed]}}
  - {name: g}
  - {name: h, type: string_attribute, string_attribute: {key: k, values: ['(['], enabled_regex_matching: true}}
  - {name: i, type: and, and: {and_sub_policy: []}}
  - {name: j, type: drop, drop: {drop_sub_policy: [{name: k, type: and, and: {and_sub_policy: [
      {name: l, type: and, and: {and_sub_policy: [{name: m, type: always_sample}]}}]}}]}}
"#;
    let v: serde_json::Value = crate::config::yaml::from_str(yaml).expect("yaml");
    let mut problems = Problems::default();
    let c: Option<TailSamplingConfig> =
        crate::config::deserialize_collecting(v, "processors.tail_sampling", &mut problems);
    if let Some(c) = c {
        c.validate("processors.tail_sampling", &mut problems);
    }
    let got: Vec<String> = problems.as_slice().iter().map(|p| p.to_string()).collect();
    let p = "processors.tail_sampling";
    for want in [
        format!("{p}.bogus"),
        format!("{p}.decision_wait"),
        format!("{p}.num_traces"),
        format!("{p}.policies.0.probabilistic.sampling_percentage"),
        format!("{p}.policies.1.name"),
        format!("{p}.policies.1.latency"),
        format!("{p}.policies.2.quality.max_score"),
        format!("{p}.policies.2.latency"),
        format!("{p}.policies.3.bottleneck.stages.1"),
        format!("{p}.policies.3.bottleneck.min_share"),
        format!("{p}.policies.4.composite.max_total_spans_per_second"),
        format!("{p}.policies.4.composite.policy_order.0"),
        format!("{p}.policies.4.composite.rate_allocation.0.percent"),
        format!("{p}.policies.5.agent.outcomes.0"),
        format!("{p}.policies.6.type"),
        format!("{p}.policies.7.string_attribute.values.0"),
        format!("{p}.policies.8.and.and_sub_policy"),
        format!("{p}.policies.9.drop.drop_sub_policy.0.and.and_sub_policy.0.and.and_sub_policy"),
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(&format!("{want}:"))),
            "no problem at {want} in {got:#?}"
        );
    }
}

#[test]
fn stages_that_compute_come_before_sampling() {
    let mut problems = Problems::default();
    let names: Vec<String> = ["genai", "tail_sampling/keep", "slo", "batch"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    check_placement("service.pipelines.traces", &names, &mut problems);
    let got: Vec<String> = problems.as_slice().iter().map(|p| p.to_string()).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("service.pipelines.traces.processors.2:"),
        "{got:?}"
    );
}

#[test]
fn the_example_configuration_builds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tail-sampling.yaml");
    let text = std::fs::read_to_string(path).expect("config/tail-sampling.yaml");
    // The whole file's validity is checked with every example configuration (service::config);
    // here, what its tail_sampling section builds.
    let root: serde_json::Value = crate::config::yaml::from_str(&text).expect("yaml");
    let t: TailSamplingConfig = serde_json::from_value(root["processors"]["tail_sampling"].clone())
        .expect("a tail_sampling processor");
    let p = TailSampling::new(t.clone(), true, Default::default()).expect("build");
    assert_eq!(p.policies.len(), 13);
    // A health check is dropped even though it failed; a premium tenant's normal trace is
    // kept at 50 % (its randomness is above 0x80000000000000 here).
    let mut p = p;
    let mut out = Vec::new();
    let health = TraceBuilder::new(1)
        .root_attr(kv_str("http.route", "/health"))
        .child("x", vec![])
        .last_status(StatusCode::Error);
    let premium = TraceBuilder::with_randomness(2, 0x90_0000_0000_0000)
        .root_attr(kv_str("tenant.tier", "premium"));
    p.on_input(
        Batch::Traces(request(vec![health, premium])),
        Instant::now(),
        &mut out,
    );
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 1);
    assert_eq!(
        get_str(&spans[0].attributes, a::SAMPLING_POLICY),
        Some("premium-tenants")
    );
    assert_eq!(
        get_f64(&spans[0].attributes, a::SAMPLING_ADJUSTED_COUNT),
        Some(2.0)
    );
    assert_eq!(spans[0].trace_state, "ot=th:8");
}

#[test]
fn shards_share_counters_and_rate_limits_but_not_waiting_traces() {
    let (p, c) = processor(
        "[{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 3}}]",
        true,
    );
    let mut other = p.share().expect("a handle for another shard");
    let mut p: Box<dyn Processor> = Box::new(p);
    let now = Instant::now();
    let two = |tag: u8| TraceBuilder::new(tag).child("x", vec![]).request();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    p.on_input(Batch::Traces(two(1)), now, &mut a);
    // 2 + 2 > 3 spans this second, across shards.
    other.on_input(Batch::Traces(two(2)), now, &mut b);
    assert_eq!((spans_of(&a).len(), spans_of(&b).len()), (2, 0));
    assert_eq!(metric(&c, "r", "kept"), 1);
    assert_eq!(metric(&c, NO_POLICY, "dropped"), 1);
    assert_eq!(
        other.tick_interval(),
        None,
        "the handle also takes whole traces"
    );
}

#[test]
fn a_drop_is_counted_under_its_policy() {
    let (mut p, c) = processor(
        "[{name: all, type: always_sample},
          {name: no-health, type: drop, drop: {drop_sub_policy: [
            {name: h, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}]}}]",
        true,
    );
    let mut out = Vec::new();
    let health = TraceBuilder::new(1)
        .root_attr(kv_str("http.route", "/health"))
        .child("x", vec![]);
    p.on_input(
        Batch::Traces(request(vec![health, TraceBuilder::new(2)])),
        Instant::now(),
        &mut out,
    );
    assert_eq!(spans_of(&out).len(), 1);
    assert_eq!(metric(&c, "no-health", "dropped"), 1);
    assert_eq!(metric(&c, "all", "kept"), 1);
    assert_eq!(c.spans_dropped.get(), 2);
    // A policy that cannot drop counts no drops.
    let series = c
        .traces
        .get_or_create(&SamplingLabels {
            policy: "all".into(),
            decision: "dropped".into(),
        })
        .get();
    assert_eq!(series, 0);
}

#[test]
fn waiting_traces_hold_the_marks_of_their_requests_for_the_pipeline_log() {
    // Without trace assembly, spans wait for their decision: the pipeline log must keep the
    // records they came from until then.
    let c = SamplingCounters::default();
    let config = TailSamplingConfig {
        policies: policies_yaml("[{name: all, type: always_sample}]"),
        decision_wait: Duration::from_secs(5),
        ..Default::default()
    };
    let mut p = TailSampling::new(config, false, c).expect("build");
    let now = Instant::now();
    let mut out = Vec::new();
    assert_eq!(p.held_mark(), None);
    p.input_mark(Some(7));
    p.on_input(Batch::Traces(TraceBuilder::new(1).request()), now, &mut out);
    p.input_mark(Some(9));
    p.on_input(Batch::Traces(TraceBuilder::new(2).request()), now, &mut out);
    assert!(out.is_empty());
    assert_eq!(p.held_mark(), Some(7));
    // Once decided, nothing is held.
    p.on_tick(now + Duration::from_secs(6), &mut out);
    assert_eq!(spans_of(&out).len(), 2);
    assert_eq!(p.held_mark(), None);
}
