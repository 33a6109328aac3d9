//! Delivery under trouble: a backend that is down, one that refuses for good, and a pipeline
//! that is full.

use crate::harness;

use std::time::Duration;

use harness::backend::{Backend, Behavior};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// `n` spans of one trace, with ids derived from `seed` so every request is distinct.
fn spans(seed: u32, n: usize) -> ExportTraceServiceRequest {
    let mut trace_id = [7u8; 16];
    trace_id[..4].copy_from_slice(&seed.to_be_bytes());
    let spans = (0..n)
        .map(|i| {
            let mut span_id = [1u8; 8];
            span_id[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: format!("op-{i}"),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_050_000_000,
                ..Default::default()
            }
        })
        .collect();
    harness::traces_request(spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_for_ten_seconds_then_back_loses_nothing() {
    let (grpc_port, http_port) = (harness::free_port(), harness::free_port());
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: http://{grpc_port}
    timeout: 1s
    retry_on_failure: {{ initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 60s }}
  otlphttp:
    endpoint: http://{http_port}
    timeout: 1s
    retry_on_failure: {{ initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 60s }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp, otlphttp] }}
"#,
        harness::otlp_receiver("")
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    let mut sent = Vec::new();
    for seed in 0..20 {
        let r = spans(seed, 5);
        c.export(r.clone())
            .await
            .expect("accepted while the backend is down");
        sent.push(r);
    }
    // Retries are happening against a closed port.
    assert!(
        harness::eventually(Duration::from_secs(5), || {
            harness::metric(&s, r#"ragwatch_exporter_retries_total{exporter="otlp"}"#) >= 2.0
                && harness::metric(
                    &s,
                    r#"ragwatch_exporter_retries_total{exporter="otlphttp"}"#,
                ) >= 2.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself, not a wait for a result
    let down = Backend::start_at(grpc_port, http_port).await;
    assert!(
        down.wait(Duration::from_secs(20), |b| b.span_count() >= 200)
            .await,
        "got {} of 200 spans (100 through each exporter)",
        down.span_count()
    );
    let mut expected = harness::fixtures::canonical_traces(&sent);
    expected.extend(harness::fixtures::canonical_traces(&sent));
    expected.sort();
    assert_eq!(
        harness::fixtures::canonical_traces(&down.traces()),
        expected
    );
    for e in ["otlp", "otlphttp"] {
        assert_eq!(
            harness::metric(
                &s,
                &format!("ragwatch_exporter_send_failed_spans_total{{exporter=\"{e}\"}}")
            ),
            0.0
        );
        assert!(
            harness::metric(
                &s,
                &format!("ragwatch_exporter_retries_total{{exporter=\"{e}\"}}")
            ) >= 2.0
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_backend_answering_400_is_not_retried_and_the_drop_is_counted() {
    let down = Backend::start().await;
    down.set_behavior(Behavior::FailPermanent);
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 10ms, max_interval: 10ms }}
  otlphttp:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 10ms, max_interval: 10ms }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp, otlphttp] }}
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint(),
        down.http_endpoint()
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    c.export(spans(1, 3)).await.expect("accepted");
    let failed = |e: &str| {
        harness::metric(
            &s,
            &format!("ragwatch_exporter_send_failed_spans_total{{exporter=\"{e}\"}}"),
        )
    };
    assert!(
        harness::eventually(Duration::from_secs(5), || failed("otlp") == 3.0
            && failed("otlphttp") == 3.0)
        .await
    );
    // A retry would come 10 ms later; give it ten times that to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(down.attempts(), 2, "one attempt per exporter, no retry");
    assert_eq!(
        harness::metric(&s, r#"ragwatch_exporter_retries_total{exporter="otlp"}"#),
        0.0
    );
    assert_eq!(down.span_count(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn retryable_answers_are_retried_until_delivered_exactly_once() {
    let down = Backend::start().await;
    down.set_behavior(Behavior::FailRetryable {
        times: 2,
        retry_after: Some(Duration::from_millis(50)),
    });
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: {}
    retry_on_failure: {{ initial_interval: 5s, max_interval: 5s }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint()
    ))
    .await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    c.export(spans(2, 4)).await.expect("accepted");
    // RetryInfo says 50 ms; without honouring it the retry would wait 5 s.
    assert!(
        down.wait_for_spans(4, Duration::from_secs(3)).await,
        "RetryInfo's delay was not honoured"
    );
    assert_eq!(down.attempts(), 3);
    assert_eq!(down.span_count(), 4);
    assert_eq!(
        harness::metric(&s, r#"ragwatch_exporter_retries_total{exporter="otlp"}"#),
        2.0
    );
    s.shutdown().await;
}

fn full_config(down: &Backend, when_full: &str) -> String {
    format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: {}
    sending_queue: {{ queue_size: 1, num_consumers: 1 }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp], queue_size: 10 }}
"#,
        harness::otlp_receiver(&format!("    when_full: {when_full}\n")),
        down.grpc_endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_refuses_retryably_and_never_loses_silently() {
    let down = Backend::start().await;
    down.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let s = harness::start(&full_config(&down, "refuse")).await;
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    let http = harness::http_url(&s, "/v1/traces");
    let (mut accepted, mut refused_grpc, mut refused_http) = (0usize, 0usize, 0usize);
    for seed in 0..40 {
        match c.export(spans(seed, 5)).await {
            Ok(_) => accepted += 5,
            Err(st) => {
                assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
                let info = tonic_types::StatusExt::get_details_retry_info(&st).expect("RetryInfo");
                assert_eq!(info.retry_delay, Some(Duration::from_secs(1)));
                refused_grpc += 1;
            }
        }
        let resp = reqwest::Client::new()
            .post(&http)
            .header("content-type", "application/x-protobuf")
            .body(spans(1000 + seed, 5).encode_to_vec())
            .send()
            .await
            .expect("post");
        match resp.status().as_u16() {
            200 => accepted += 5,
            503 => {
                assert_eq!(
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                refused_http += 1;
            }
            other => panic!("unexpected {other}"),
        }
        // The pipeline queue never holds more than its capacity.
        assert!(harness::metric(&s, r#"ragwatch_pipeline_queue_items{pipeline="traces"}"#) <= 10.0);
    }
    assert!(
        refused_grpc > 0 && refused_http > 0,
        "the pipeline never filled"
    );
    // Everything accepted arrives; everything refused was counted as refused.
    assert!(down.wait_for_spans(accepted, Duration::from_secs(30)).await);
    assert_eq!(down.span_count(), accepted);
    let refused = harness::metric(
        &s,
        r#"ragwatch_receiver_refused_spans_total{receiver="otlp",transport="grpc"}"#,
    ) + harness::metric(
        &s,
        r#"ragwatch_receiver_refused_spans_total{receiver="otlp",transport="http"}"#,
    );
    assert_eq!(refused, ((refused_grpc + refused_http) * 5) as f64);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_block_a_full_pipeline_makes_clients_wait_and_takes_everything() {
    let down = Backend::start().await;
    down.set_behavior(Behavior::Delay(Duration::from_millis(50)));
    let s = harness::start(&full_config(&down, "block")).await;
    let url = harness::grpc_url(&s);
    let mut tasks = Vec::new();
    for client in 0..4u32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = TraceServiceClient::connect(url).await.expect("connect");
            for i in 0..10 {
                c.export(spans(client * 100 + i, 5))
                    .await
                    .expect("blocks, never refuses");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    assert!(down.wait_for_spans(200, Duration::from_secs(30)).await);
    assert_eq!(down.span_count(), 200);
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_refused_spans_total{receiver="otlp",transport="grpc"}"#
        ),
        0.0
    );
    s.shutdown().await;
}
