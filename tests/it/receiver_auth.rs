//! Bearer-token auth on the OTLP receivers: UNAUTHENTICATED / 401 without the right token
//! (clients do not retry those), accepted with it; the token never appears in print-config.

use crate::harness;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const TOKEN: &str = "s3cr3t-t0ken-of-24-chars";

fn request() -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    harness::traces_request(vec![Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "x".into(),
        ..Default::default()
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_require_the_bearer_token() {
    let s = harness::start(&format!(
        r#"
receivers:
{}
    auth:
      bearer_token: {TOKEN}
exporters:
  debug:
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [debug] }}
"#,
        harness::otlp_receiver("")
    ))
    .await;
    // gRPC: none, wrong, right.
    let mut c = TraceServiceClient::connect(harness::grpc_url(&s))
        .await
        .expect("connect");
    let e = c.export(request()).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(request());
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer s3cr3t-t0ken-of-24-chaRS".parse().expect("value"),
    );
    assert_eq!(
        c.export(wrong).await.expect_err("wrong token").code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(request());
    right.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("value"),
    );
    c.export(right).await.expect("right token");

    // HTTP: none, a prefix of the token, right.
    let url = harness::http_url(&s, "/v1/traces");
    let post = |auth: Option<String>| {
        let mut r = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request().encode_to_vec());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let r = post(None).await.expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = post(Some(format!("Bearer {}", &TOKEN[..10])))
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    let r = post(Some(format!("Bearer {TOKEN}"))).await.expect("post");
    assert_eq!(r.status().as_u16(), 200);

    // Two accepted spans (one per protocol), four refusals counted.
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}"#
        ),
        1.0
    );
    assert_eq!(
        harness::metric(
            &s,
            r#"ragwatch_receiver_accepted_spans_total{receiver="otlp",transport="http"}"#
        ),
        1.0
    );
    s.shutdown().await;
}

#[test]
fn the_token_is_never_printed() {
    let yaml = format!(
        "receivers:\n  otlp:\n    auth:\n      bearer_token: {TOKEN}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [debug] }}\n"
    );
    let c = ragwatch::Config::from_yaml(&yaml, "test").expect("valid");
    assert!(!c.to_redacted_yaml().contains(TOKEN));
    assert!(!format!("{c:?}").contains(TOKEN));
    // Too short a token is a config problem with its path.
    let short = yaml.replace(TOKEN, "short");
    let e = ragwatch::Config::from_yaml(&short, "test").expect_err("too short");
    assert!(
        e.to_string().contains("receivers.otlp.auth.bearer_token"),
        "{e}"
    );
}
