//! A real OpenTelemetry SDK application (opentelemetry-otlp over gRPC and over HTTP) sends
//! traces, metrics and logs through ragwatch to a downstream OTLP server, which gets them all.

use crate::harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::backend::Backend;
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{Span, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    Http,
}

/// What the application recorded: span id → (trace id, name, attributes).
type Sent = BTreeMap<Vec<u8>, (Vec<u8>, String, Vec<(String, String)>)>;

fn run_app(transport: Transport, grpc: String, http: String) -> Sent {
    let resource = Resource::builder()
        .with_service_name(format!("sdk-app-{transport:?}"))
        .build();
    let (spans, metrics, logs) = match transport {
        Transport::Grpc => (
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&grpc)
                .build(),
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&grpc)
                .build(),
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(&grpc)
                .build(),
        ),
        Transport::Http => (
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{http}/v1/traces"))
                .build(),
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{http}/v1/metrics"))
                .build(),
            opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{http}/v1/logs"))
                .build(),
        ),
    };
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                spans.expect("span exporter"),
                Tokio,
            )
            .build(),
        )
        .build();
    let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(
            opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                metrics.expect("metric exporter"),
                Tokio,
            )
            .build(),
        )
        .build();
    let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_log_processor(
            opentelemetry_sdk::logs::log_processor_with_async_runtime::BatchLogProcessor::builder(
                logs.expect("log exporter"),
                Tokio,
            )
            .build(),
        )
        .build();

    let mut sent = Sent::new();
    let tracer = tracer_provider.tracer("rag-app");
    let mut root = tracer.start("rag.query");
    root.set_attribute(KeyValue::new("rag.question.length", 42));
    let cx = opentelemetry::Context::current_with_span(root);
    for (name, model) in [
        ("embeddings", "text-embedding-3-small"),
        ("chat", "gpt-4o-mini"),
    ] {
        let mut child = tracer.start_with_context(name.to_string(), &cx);
        child.set_attribute(KeyValue::new("gen_ai.request.model", model));
        child.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 120));
        let sc = child.span_context().clone();
        sent.insert(
            sc.span_id().to_bytes().to_vec(),
            (
                sc.trace_id().to_bytes().to_vec(),
                name.to_string(),
                vec![
                    ("gen_ai.request.model".into(), model.into()),
                    ("gen_ai.usage.input_tokens".into(), "120".into()),
                ],
            ),
        );
        child.end();
    }
    let root_sc = cx.span().span_context().clone();
    sent.insert(
        root_sc.span_id().to_bytes().to_vec(),
        (
            root_sc.trace_id().to_bytes().to_vec(),
            "rag.query".into(),
            vec![("rag.question.length".into(), "42".into())],
        ),
    );
    cx.span().end();

    let meter = meter_provider.meter("rag-app");
    meter
        .u64_counter("rag_app_requests")
        .build()
        .add(3, &[KeyValue::new("route", "/ask")]);

    let logger = logger_provider.logger("rag-app");
    let mut record = logger.create_log_record();
    record.set_body(AnyValue::from(format!("answered over {transport:?}")));
    record.set_severity_number(Severity::Info);
    logger.emit(record);

    tracer_provider.force_flush().expect("flush spans");
    meter_provider.force_flush().expect("flush metrics");
    logger_provider.force_flush().expect("flush logs");
    let _ = tracer_provider.shutdown();
    let _ = meter_provider.shutdown();
    let _ = logger_provider.shutdown();
    sent
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_over_grpc_and_http_delivers_every_signal() {
    let down = Backend::start().await;
    let s = harness::start(&format!(
        r#"
receivers:
{}
exporters:
  otlp:
    endpoint: {}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
    metrics: {{ receivers: [otlp], exporters: [otlp] }}
    logs: {{ receivers: [otlp], exporters: [otlp] }}
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint()
    ))
    .await;
    let grpc = harness::grpc_url(&s);
    let http = format!("http://{}", s.http_addr("otlp").expect("http"));
    let mut sent = Sent::new();
    for t in [Transport::Grpc, Transport::Http] {
        let (g, h) = (grpc.clone(), http.clone());
        let handle = tokio::runtime::Handle::current();
        let part = tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            run_app(t, g, h)
        })
        .await
        .expect("app");
        sent.extend(part);
    }
    assert_eq!(sent.len(), 6);
    assert!(
        down.wait(Duration::from_secs(20), |b| b.span_count() >= 6
            && b.point_count() >= 2
            && b.record_count() >= 2)
            .await,
        "spans {} points {} records {}",
        down.span_count(),
        down.point_count(),
        down.record_count()
    );

    // Every span arrives once, with its ids, name and attributes.
    let mut got = Sent::new();
    for rs in down.traces().iter().flat_map(|r| r.resource_spans.clone()) {
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let attrs = span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect();
            let prev = got.insert(
                span.span_id.clone(),
                (span.trace_id.clone(), span.name.clone(), attrs),
            );
            assert!(prev.is_none(), "span {} arrived twice", span.name);
        }
    }
    assert_eq!(got, sent);

    // The SDK exports its cumulative counter on flush and again on shutdown: every export of it
    // carries the value 3, from both applications.
    let mut counters = std::collections::BTreeSet::new();
    for rm in down
        .metrics()
        .iter()
        .flat_map(|r| r.resource_metrics.clone())
    {
        let service = rm
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            if m.name != "rag_app_requests" {
                continue;
            }
            let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) = &m.data
            else {
                panic!("a counter is a sum");
            };
            for p in &sum.data_points {
                assert_eq!(
                    p.value,
                    Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(3)
                    )
                );
                counters.insert(service.clone());
            }
        }
    }
    assert_eq!(
        counters.into_iter().collect::<Vec<_>>(),
        ["sdk-app-Grpc", "sdk-app-Http"]
    );
    let mut bodies: Vec<String> = down
        .logs()
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .map(|l| text(&l.body))
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["answered over Grpc", "answered over Http"]);
    s.shutdown().await;
}
