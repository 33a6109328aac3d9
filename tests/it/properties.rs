//! Properties over generated input: the receivers answer any body without failing (400 or
//! 200, never a 5xx or a crash), the GenAI view and the processors never panic on any
//! attributes, and pass-through is lossless for any valid request.

use crate::harness;

use std::time::Duration;

use harness::backend::Backend;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;

/// Attribute keys the GenAI view reads, and some it does not.
const KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt",
    "llm.model_name",
    "openinference.span.kind",
    "gen_ai.retrieval.documents",
    "retrieval.documents.0.document.score",
    "retrieval.documents.99999999999.document.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.server.time_to_first_token",
    "langfuse.observation.completion_start_time",
    "gen_ai.usage.cost",
    "gen_ai.evaluation.score.value",
    "gen_ai.output.messages",
    "rag.stage",
    "x.other",
];

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        ".{0,40}".prop_map(Value::StringValue),
        any::<i64>().prop_map(Value::IntValue),
        any::<f64>().prop_map(Value::DoubleValue),
        any::<bool>().prop_map(Value::BoolValue),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::BytesValue),
        Just(Value::StringValue(
            "[{\"id\": 1, \"score\": \"x\"}, null, 3]".into()
        )),
        Just(Value::StringValue("2025-13-45T99:99:99Z".into())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        proptest::collection::vec(inner, 0..4).prop_map(|v| {
            Value::ArrayValue(ArrayValue {
                values: v.into_iter().map(|x| AnyValue { value: Some(x) }).collect(),
            })
        })
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(
        (
            proptest::sample::select(KEYS),
            proptest::option::of(any_value()),
        ),
        0..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(k, x)| KeyValue {
                key: k.to_string(),
                value: x.map(|x| AnyValue { value: Some(x) }),
                ..Default::default()
            })
            .collect()
    })
}

/// A valid request: traces of 1..4 spans with unique non-zero ids, any attributes and times.
fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    proptest::collection::vec((attributes(), any::<u64>(), any::<u64>(), 1u8..4), 1..6).prop_map(
        |traces| {
            let mut spans = Vec::new();
            for (t, (attrs, a, b, n)) in traces.into_iter().enumerate() {
                let t = t as u8 + 1;
                for i in 0..n {
                    spans.push(Span {
                        trace_id: vec![t; 16],
                        span_id: vec![t, i + 1, 1, 1, 1, 1, 1, 1],
                        parent_span_id: if i == 0 {
                            Vec::new()
                        } else {
                            vec![t, 1, 1, 1, 1, 1, 1, 1]
                        },
                        name: format!("span {i}"),
                        start_time_unix_nano: a.min(b),
                        end_time_unix_nano: a.max(b),
                        attributes: attrs.clone(),
                        ..Default::default()
                    });
                }
            }
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(Value::StringValue("prop".into())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_genai_view_never_panics(attrs in attributes()) {
        let s = Span { attributes: attrs, ..Default::default() };
        let v = ragwatch::genai::view(&s);
        let _ = (v.model(), v.tokens, v.documents.len());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn any_body_gets_an_answer_and_any_valid_request_passes_unchanged() {
    let rt = runtime();
    rt.block_on(async {
        ragwatch::service::install_crypto_provider();
        let down = Backend::start().await;
        // The full analysis chain, to exercise every processor on generated spans; the
        // pass-through comparison uses a second pipeline with none.
        let s = harness::start(&format!(
            r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    wait_after_root: 10ms
  quality:
    groundedness: true
  anomaly:
    warmup: 5
  slo:
    slos: [ {{ name: any, kind: latency, objective: 0.9, threshold: 1s }} ]
exporters:
  otlp:
    endpoint: {}
  debug:
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
    traces/analysis: {{ receivers: [otlp], processors: [genai, trace_assembly, quality, anomaly, slo], exporters: [debug] }}
"#,
            harness::otlp_receiver(""),
            down.grpc_endpoint()
        ))
        .await;
        let url = harness::http_url(&s, "/v1/traces");
        let client = reqwest::Client::new();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        });
        // Arbitrary bytes as protobuf and as JSON: 400 or 200, never anything else.
        let bodies = proptest::collection::vec(any::<u8>(), 0..512);
        for _ in 0..64 {
            let body = bodies
                .new_tree(&mut runner)
                .expect("bytes")
                .current();
            for ct in ["application/x-protobuf", "application/json"] {
                let r = client
                    .post(&url)
                    .header("content-type", ct)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("an answer");
                let code = r.status().as_u16();
                assert!(code == 200 || code == 400, "{ct}: {code} for {body:?}");
            }
        }
        // Valid requests come out exactly as they went in (pass-through pipeline).
        let mut sent = Vec::new();
        let mut n = 0;
        let strategy = request();
        for _ in 0..64 {
            let req = strategy.new_tree(&mut runner).expect("request").current();
            n += req.resource_spans[0].scope_spans[0].spans.len();
            let r = client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(req.encode_to_vec())
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 200);
            sent.push(req);
        }
        assert!(down.wait_for_spans(n, Duration::from_secs(20)).await);
        assert_eq!(
            harness::fixtures::canonical_traces(&down.traces()),
            harness::fixtures::canonical_traces(&sent)
        );
        s.shutdown().await;
    });
}
