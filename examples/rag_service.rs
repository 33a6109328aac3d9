//! A small RAG service instrumented with the OpenTelemetry Rust SDK the way the GenAI semantic
//! conventions describe, exporting OTLP to ragwatch: the example to copy.
//!
//! ```sh
//! cargo run --release                                  # ragwatch, in one terminal
//! cargo run --example rag_service -- --requests 20     # this service, in another
//! ```
//!
//! Each request is a `rag.query` server span with three children: an `embeddings` call, a
//! `retrieval` (with the documents and their scores), and a `chat` call with tokens, time to
//! first token and finish reason; a `gen_ai.evaluation.result` event on the root carries an
//! answer-relevance score. The "models" are simulated (sleeps), the telemetry is real.

use std::time::Duration;

use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use rand::RngExt;

struct Args {
    endpoint: String,
    requests: usize,
    service: String,
}

fn args() -> Args {
    let mut a = Args {
        endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:4317".into()),
        requests: 10,
        service: "rag-example".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--endpoint", Some(v)) => a.endpoint = v,
            ("--requests", Some(v)) => a.requests = v.parse().unwrap_or(a.requests),
            ("--service", Some(v)) => a.service = v,
            _ => {
                eprintln!("usage: rag_service [--endpoint URL] [--requests N] [--service NAME]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// One RAG request: embed the question, retrieve, then ask the model.
async fn handle(tracer: &impl Tracer<Span = impl Span + Send + Sync + 'static>, question: &str) {
    let mut rng = rand::rng();
    let root = tracer
        .span_builder("rag.query")
        .with_kind(SpanKind::Server)
        .start(tracer);
    let cx = Context::current_with_span(root);

    let mut embed = tracer
        .span_builder("embeddings text-embedding-3-small")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("gen_ai.operation.name", "embeddings"),
            KeyValue::new("gen_ai.provider.name", "openai"),
            KeyValue::new("gen_ai.request.model", "text-embedding-3-small"),
        ])
        .start_with_context(tracer, &cx);
    tokio::time::sleep(Duration::from_millis(rng.random_range(10..30))).await;
    embed.set_attribute(KeyValue::new(
        "gen_ai.usage.input_tokens",
        question.split_whitespace().count() as i64 * 2,
    ));
    embed.end();

    let mut retrieve = tracer
        .span_builder("retrieval docs")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("gen_ai.operation.name", "retrieval"),
            KeyValue::new("gen_ai.data_source.id", "docs"),
            KeyValue::new("db.vector.query.top_k", 3),
        ])
        .start_with_context(tracer, &cx);
    tokio::time::sleep(Duration::from_millis(rng.random_range(40..120))).await;
    retrieve.set_attribute(KeyValue::new(
        "gen_ai.retrieval.documents",
        r#"[{"id":"kb-12","score":0.91},{"id":"kb-3","score":0.84},{"id":"kb-40","score":0.77}]"#,
    ));
    retrieve.end();

    let mut chat = tracer
        .span_builder("chat gpt-4o-mini")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", "openai"),
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("gen_ai.request.max_tokens", 512),
        ])
        .start_with_context(tracer, &cx);
    let ttft = Duration::from_millis(rng.random_range(150..400));
    tokio::time::sleep(ttft).await;
    let failed = rng.random::<f64>() < 0.02;
    if failed {
        chat.set_attribute(KeyValue::new("error.type", "rate_limited"));
        chat.set_status(Status::error("429 from the model provider"));
    } else {
        let out = rng.random_range(80..300i64);
        tokio::time::sleep(Duration::from_millis(out as u64 * 2)).await;
        chat.set_attributes([
            KeyValue::new("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            KeyValue::new(
                "gen_ai.usage.input_tokens",
                900 + rng.random_range(0..400i64),
            ),
            KeyValue::new("gen_ai.usage.output_tokens", out),
            KeyValue::new("gen_ai.response.time_to_first_chunk", ttft.as_secs_f64()),
            KeyValue::new(
                "gen_ai.response.finish_reasons",
                opentelemetry::Value::Array(opentelemetry::Array::String(vec!["stop".into()])),
            ),
        ]);
    }
    chat.end();

    let root = cx.span();
    root.add_event(
        "gen_ai.evaluation.result",
        vec![
            KeyValue::new("gen_ai.evaluation.name", "answer_relevance"),
            KeyValue::new("gen_ai.evaluation.score.value", rng.random_range(0.7..0.95)),
        ],
    );
    if failed {
        root.set_status(Status::error("the model call failed"));
    }
    root.end();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&a.endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(a.service.clone())
                .build(),
        )
        .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
        .build();
    let tracer = provider.tracer("rag-example");
    for i in 0..a.requests {
        handle(
            &tracer,
            &format!("question number {i} about the refund policy"),
        )
        .await;
    }
    provider.force_flush()?;
    provider.shutdown()?;
    println!(
        "sent {} RAG requests ({} spans) to {}",
        a.requests,
        a.requests * 4,
        a.endpoint
    );
    Ok(())
}
