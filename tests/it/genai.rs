//! The genai processor end to end: fixtures in, enriched spans out of the real exporter, derived
//! metrics on the Prometheus endpoint (parsed with a Prometheus text parser) and as OTLP.

use crate::harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::backend::Backend;
use harness::fixtures;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::Span;
use ragwatch::signal::Batch;

fn config(down: &Backend) -> String {
    format!(
        r#"
receivers:
{}
  derived_metrics:
    interval: 100ms
processors:
  genai:
exporters:
  otlp:
    endpoint: {}
  prometheus:
    endpoint: 127.0.0.1:0
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai], exporters: [otlp] }}
    metrics: {{ receivers: [derived_metrics], exporters: [otlp, prometheus] }}
"#,
        harness::otlp_receiver(""),
        down.grpc_endpoint()
    )
}

fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == k)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(s: &Span, k: &str) -> Option<String> {
    match attr(s, k) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

fn num(s: &Span, k: &str) -> Option<f64> {
    match attr(s, k) {
        Some(Value::DoubleValue(v)) => Some(*v),
        Some(Value::IntValue(v)) => Some(*v as f64),
        _ => None,
    }
}

async fn send_traces(s: &ragwatch::Service, file: &str) -> usize {
    let mut spans = 0;
    for (batch, json) in fixtures::load(&fixtures::dir().join(file)) {
        if let Batch::Traces(_) = &batch {
            spans += batch.item_count();
            let r = reqwest::Client::new()
                .post(harness::http_url(s, "/v1/traces"))
                .header("content-type", "application/json")
                .body(json)
                .send()
                .await
                .expect("post");
            assert_eq!(r.status().as_u16(), 200);
        }
    }
    spans
}

fn all_spans(down: &Backend) -> Vec<Span> {
    down.spans()
}

async fn scrape(s: &ragwatch::Service) -> (String, prometheus_parse::Scrape) {
    let addr = s.exporter_addr("prometheus").expect("prometheus exporter");
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let parsed =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
    (body, parsed)
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Sum of a metric's samples whose labels match all of `labels`.
fn sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| value(&s.value))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_library_capture_is_priced_and_counted_as_computed_by_hand() {
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let s = harness::start(&config(&down)).await;
    let n = send_traces(&s, "otel-v2-normal.jsonl").await;
    assert!(down.wait_for_spans(n, Duration::from_secs(10)).await);
    let spans = all_spans(&down);

    // The five chat calls: gpt-4o-mini at $0.15 in / $0.60 out per 1M tokens.
    let chats: BTreeMap<(i64, i64), usize> = spans
        .iter()
        .filter(|s| text(s, "rag.stage").as_deref() == Some("llm"))
        .map(|s| {
            let (i, o) = (
                num(s, "gen_ai.usage.input_tokens").unwrap_or(-1.0),
                num(s, "gen_ai.usage.output_tokens").unwrap_or(-1.0),
            );
            let want = i * 0.15 / 1e6 + o * 0.60 / 1e6;
            let got = num(s, "rag.cost.usd").expect("cost");
            assert!((got - want).abs() < 1e-9, "{}: {got} != {want}", s.name);
            assert_eq!(
                text(s, "rag.cost.price_id").as_deref(),
                Some("openai/gpt-4o-mini")
            );
            ((i as i64, o as i64), 1)
        })
        .fold(BTreeMap::new(), |mut m, (k, c)| {
            *m.entry(k).or_insert(0) += c;
            m
        });
    assert_eq!(
        chats,
        BTreeMap::from([
            ((207, 60), 1),
            ((209, 60), 1),
            ((210, 60), 2),
            ((220, 60), 1)
        ])
    );
    // Embeddings: text-embedding-3-small at $0.02 per 1M input tokens.
    let embeddings: Vec<f64> = spans
        .iter()
        .filter(|s| text(s, "rag.stage").as_deref() == Some("embedding"))
        .map(|s| num(s, "rag.cost.usd").expect("cost"))
        .collect();
    assert_eq!(embeddings.len(), 5);
    assert!(
        (embeddings.iter().sum::<f64>() - (11.0 + 13.0 + 15.0 + 11.0 + 16.0) * 0.02 / 1e6).abs()
            < 1e-12
    );
    assert_eq!(
        spans
            .iter()
            .filter(|s| text(s, "rag.stage").as_deref() == Some("retrieval"))
            .count(),
        5
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "rag.query")
            .all(|s| text(s, "rag.stage").as_deref() != Some("llm"))
    );

    let (body, p) = scrape(&s).await;
    let svc = ("service", "rag-otel-v2");
    let chat_cost = (210.0 + 209.0 + 220.0 + 207.0 + 210.0) * 0.15 / 1e6 + 300.0 * 0.60 / 1e6;
    assert!(
        (sum(
            &p,
            "rag_llm_cost_usd_total",
            &[svc, ("model", "gpt-4o-mini")]
        ) - chat_cost)
            .abs()
            < 1e-12,
        "{body}"
    );
    assert!(
        (sum(
            &p,
            "rag_llm_cost_usd_total",
            &[svc, ("model", "text-embedding-3-small")]
        ) - 66.0 * 0.02 / 1e6)
            .abs()
            < 1e-12
    );
    assert_eq!(
        sum(
            &p,
            "rag_llm_tokens_total",
            &[svc, ("model", "gpt-4o-mini"), ("type", "input")]
        ),
        1056.0
    );
    assert_eq!(
        sum(
            &p,
            "rag_llm_tokens_total",
            &[svc, ("model", "gpt-4o-mini"), ("type", "output")]
        ),
        300.0
    );
    assert_eq!(
        sum(&p, "rag_llm_calls_total", &[svc, ("status", "ok")]),
        10.0
    );
    assert_eq!(sum(&p, "rag_requests_total", &[svc]), 5.0);
    assert_eq!(
        sum(
            &p,
            "traces_span_metrics_calls_total",
            &[("service_name", "rag-otel-v2")]
        ),
        n as f64
    );
    let token_usage_count = p
        .samples
        .iter()
        .find(|s| {
            s.metric == "gen_ai_client_token_usage_count"
                && s.labels.get("gen_ai_token_type") == Some("input")
                && s.labels.get("gen_ai_request_model") == Some("gpt-4o-mini")
        })
        .map(|s| value(&s.value));
    assert_eq!(token_usage_count, Some(5.0), "{body}");

    // The same numbers reach the OTLP backend through the derived_metrics receiver.
    assert!(
        down.wait(Duration::from_secs(10), |b| !b.metrics().is_empty())
            .await
    );
    let cost = down
        .metrics()
        .iter()
        .rev()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .find(|m| m.name == "rag.llm.cost")
        .and_then(|m| match &m.data {
            Some(Data::Sum(sum)) => Some(sum.data_points.iter().filter_map(|p| match p.value {
                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v)) => Some(v),
                _ => None,
            }).sum::<f64>()),
            _ => None,
        })
        .expect("rag.llm.cost as OTLP");
    assert!((cost - (chat_cost + 66.0 * 0.02 / 1e6)).abs() < 1e-12);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_enriched_and_metrics_equal_sums_over_the_spans() {
    ragwatch::service::install_crypto_provider();
    let down = Backend::start().await;
    let s = harness::start(&config(&down)).await;
    let mut n = 0;
    for f in fixtures::files() {
        n += send_traces(&s, f.file_name().and_then(|x| x.to_str()).expect("name")).await;
    }
    assert!(down.wait_for_spans(n, Duration::from_secs(20)).await);
    let spans = all_spans(&down);
    assert_eq!(spans.len(), n);
    let model_calls: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            matches!(
                text(s, "rag.stage").as_deref(),
                Some("llm" | "embedding" | "rerank")
            )
        })
        .collect();
    assert!(model_calls.len() >= 9 * 5, "every capture has LLM calls");
    for s in &model_calls {
        assert!(
            num(s, "rag.cost.usd").is_some() || attr(s, "rag.cost.unpriced").is_some(),
            "{} has neither a cost nor the unpriced flag",
            s.name
        );
    }
    let cost_on_spans: f64 = model_calls
        .iter()
        .filter_map(|s| num(s, "rag.cost.usd"))
        .sum();
    let (_, p) = scrape(&s).await;
    assert!((sum(&p, "rag_llm_cost_usd_total", &[]) - cost_on_spans).abs() < 1e-9);
    assert_eq!(
        sum(&p, "rag_llm_calls_total", &[]),
        model_calls.len() as f64
    );
    assert_eq!(sum(&p, "traces_span_metrics_calls_total", &[]), n as f64);
    let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count();
    assert_eq!(sum(&p, "rag_requests_total", &[]), roots as f64);
    s.shutdown().await;
}
