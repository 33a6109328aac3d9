//! The hot functions, one criterion group each: OTLP decode, the GenAI view, cost lookup, trace
//! assembly, the critical path, tail sampling, the derived metrics, a payload's encoding and the
//! fan-out to pipelines. `cargo bench --bench hot`; the numbers are in the README.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use ragwatch::derived::defs as m;
use ragwatch::derived::{DerivedMetrics, Limits};
use ragwatch::genai::aliases::canonical_provider;
use ragwatch::genai::prices::{PriceTable, SuppliedCost};
use ragwatch::genai::view;
use ragwatch::processor::Processor;
use ragwatch::processor::genai::{GenAiConfig, GenAiProcessor};
use ragwatch::processor::trace_assembly::{TraceAssembly, TraceAssemblyConfig};
use ragwatch::signal::Batch;
use ragwatch::stage::Stage;
use ragwatch::trace::path::{Kind, SpanNode, analyze};
use ragwatch_loadgen::synth::{Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 100 synthetic RAG traces (4 spans each) in one request.
fn request(seed: u64) -> ExportTraceServiceRequest {
    request_of(seed, 100)
}

/// `traces` synthetic RAG traces (4 spans each) in one request.
fn request_of(seed: u64, traces: u64) -> ExportTraceServiceRequest {
    let mut rng = StdRng::seed_from_u64(seed);
    let p = Profile::new("rag-api", "gpt-4o-mini");
    ExportTraceServiceRequest {
        resource_spans: (0..traces)
            .map(|i| rag_trace(&mut rng, &p, None, 1_700_000_000_000_000_000 + i))
            .collect(),
    }
}

fn spans(r: &ExportTraceServiceRequest) -> Vec<Span> {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

fn decode(c: &mut Criterion) {
    let bytes = request(1).encode_to_vec();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(400));
    g.bench_function("otlp_protobuf_400_spans", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(bytes.as_slice())))
    });
    g.finish();
}

fn genai_view(c: &mut Criterion) {
    let all = spans(&request(2));
    let chat = all
        .iter()
        .find(|s| s.name.starts_with("chat"))
        .cloned()
        .unwrap_or_default();
    let mut g = c.benchmark_group("genai");
    g.throughput(Throughput::Elements(1));
    g.bench_function("view_llm_span", |b| {
        b.iter(|| view(black_box(&chat)).tokens)
    });
    let table = PriceTable::builtin().ok();
    if let Some(table) = table {
        let v = view(&chat);
        g.bench_function("cost_lookup", |b| {
            b.iter(|| {
                table
                    .cost(black_box(&v), SuppliedCost::Prefer)
                    .priced()
                    .is_some()
            })
        });
        // A model no entry prices: every entry is tried, then every vendor's (the worst case).
        let mut unknown = chat.clone();
        for kv in &mut unknown.attributes {
            if kv.key.ends_with(".model") {
                kv.value = Some(AnyValue {
                    value: Some(Value::StringValue("acme-llm-7b-2024-01-01".into())),
                });
            }
        }
        let v = view(&unknown);
        g.bench_function("cost_lookup_unknown_model", |b| {
            b.iter(|| {
                table
                    .cost(black_box(&v), SuppliedCost::Prefer)
                    .priced()
                    .is_none()
            })
        });
    }
    // The whole genai processor (view, cost, attributes, derived metrics) over 400 spans.
    let req = request(5);
    let derived = std::sync::Arc::new(DerivedMetrics::new(m::DEFS, Limits::default()));
    if let Ok(mut p) = GenAiProcessor::new(GenAiConfig::default(), derived) {
        g.throughput(Throughput::Elements(400));
        g.bench_function("process_400_spans", |b| {
            b.iter_batched(
                || Batch::Traces(req.clone()),
                |batch| {
                    let mut out = Vec::new();
                    p.on_input(batch, Instant::now(), &mut out);
                    out
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// One derived-metrics update: metric, label values, value, histogram or counter.
struct Update {
    metric: usize,
    labels: Vec<String>,
    value: f64,
    histogram: bool,
}

/// The updates the genai processor makes for the spans of `r` (as its `record_span_metrics` and
/// cost do): span calls and durations for every span, request metrics for roots, stage durations,
/// and the GenAI histograms and counters of model calls.
fn updates(r: &ExportTraceServiceRequest) -> Vec<Update> {
    let mut out = Vec::new();
    let mut push = |metric: usize, labels: &[&str], value: f64, histogram: bool| {
        out.push(Update {
            metric,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            value,
            histogram,
        })
    };
    let service = "rag-api";
    for s in spans(r) {
        let secs = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e9;
        let kind = SpanKind::try_from(s.kind)
            .unwrap_or(SpanKind::Unspecified)
            .as_str_name();
        let span_labels = [service, s.name.as_str(), kind, "STATUS_CODE_UNSET"];
        push(m::SPAN_CALLS, &span_labels, 1.0, false);
        push(m::SPAN_DURATION, &span_labels, secs * 1000.0, true);
        if s.parent_span_id.is_empty() {
            push(m::REQUESTS, &[service, "ok"], 1.0, false);
            push(m::REQUEST_DURATION, &[service], secs, true);
        }
        let v = view(&s);
        let Some(stage) = v.stage else { continue };
        push(m::STAGE_DURATION, &[service, stage.as_str()], secs, true);
        if !matches!(stage, Stage::Llm | Stage::Embedding | Stage::Rerank) {
            continue;
        }
        let provider = v.provider.map(canonical_provider).unwrap_or("unknown");
        let model = v.model().unwrap_or("unknown");
        let op = v.operation.unwrap_or("chat");
        let g = [op, provider, model, service];
        push(m::OP_DURATION, &g, secs, true);
        for (ty, n) in [("input", v.tokens.input), ("output", v.tokens.output)] {
            if let Some(n) = n {
                push(
                    m::TOKEN_USAGE,
                    &[op, provider, model, service, ty],
                    n as f64,
                    true,
                );
                push(m::TOKENS, &[service, provider, model, ty], n as f64, false);
            }
        }
        let call = [service, provider, model, stage.as_str(), "ok"];
        push(m::CALLS, &call, 1.0, false);
        push(
            m::COST,
            &[service, provider, model, stage.as_str()],
            0.0042,
            false,
        );
    }
    out
}

fn apply(d: &DerivedMetrics, updates: &[(usize, Vec<&str>, f64, bool)], now: Instant) {
    for (metric, labels, value, histogram) in updates {
        if *histogram {
            d.observe(*metric, labels, *value, now);
        } else {
            d.add(*metric, labels, *value, now);
        }
    }
}

/// The derived-metrics updates of 400 spans into a store whose series exist (the steady state),
/// from one thread and from two at once (two pipeline shards).
fn derived_metrics(c: &mut Criterion) {
    let owned = updates(&request(6));
    let list: Vec<(usize, Vec<&str>, f64, bool)> = owned
        .iter()
        .map(|u| {
            let labels = u.labels.iter().map(String::as_str).collect();
            (u.metric, labels, u.value, u.histogram)
        })
        .collect();
    let d = DerivedMetrics::new(m::DEFS, Limits::default());
    let now = Instant::now();
    apply(&d, &list, now);
    let mut g = c.benchmark_group("derived");
    g.throughput(Throughput::Elements(400));
    g.bench_function("record_400_spans", |b| {
        b.iter(|| apply(&d, black_box(&list), now))
    });
    // Each iteration: both threads record 400 spans each, at the same time.
    g.throughput(Throughput::Elements(800));
    g.bench_function("record_400_spans_x2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            std::thread::scope(|s| {
                let worker = || {
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        apply(&d, black_box(&list), now);
                    }
                    t.elapsed()
                };
                let other = s.spawn(worker);
                let mine = worker();
                let theirs = other.join().unwrap_or(mine);
                mine.max(theirs)
            })
        })
    });
    g.finish();
}

fn assembly(c: &mut Criterion) {
    hold_and_flush(c, "hold_and_flush_100_traces", request(3), 400);
}

fn critical_path(c: &mut Criterion) {
    // A wide trace: a root with 50 children, each with 3 children.
    let mut nodes = vec![SpanNode {
        span_id: vec![0, 0].into(),
        parent: Vec::new().into(),
        start: 0,
        end: 1_000_000,
        kind: Kind::Other,
    }];
    for i in 0..50u8 {
        nodes.push(SpanNode {
            span_id: vec![1, i].into(),
            parent: vec![0, 0].into(),
            start: u64::from(i) * 20_000,
            end: u64::from(i) * 20_000 + 30_000,
            kind: Kind::Other,
        });
        for j in 0..3u8 {
            nodes.push(SpanNode {
                span_id: vec![2, i, j].into(),
                parent: vec![1, i].into(),
                start: u64::from(i) * 20_000 + u64::from(j) * 9_000,
                end: u64::from(i) * 20_000 + u64::from(j) * 9_000 + 8_000,
                kind: Kind::Other,
            });
        }
    }
    let mut g = c.benchmark_group("critical_path");
    g.throughput(Throughput::Elements(nodes.len() as u64));
    g.bench_function("analyze_201_spans", |b| {
        b.iter(|| analyze(black_box(&nodes)))
    });
    g.finish();
}

/// Deciding 100 whole traces (as behind trace assembly) with rules and a 10 % share.
fn tail_sampling(c: &mut Criterion) {
    use ragwatch::processor::tail_sampling::{TailSampling, TailSamplingConfig};
    let req = request(4);
    let yaml = r#"
policies:
  - { name: errors, type: status_code }
  - { name: costly, type: trace_cost, trace_cost: { min_usd: 0.05 } }
  - { name: anomalous, type: anomaly }
  - { name: slow, type: latency, latency: { threshold_ms: 5000 } }
  - { name: ten-percent, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
"#;
    let Ok(config) = ragwatch::config::yaml::from_str::<TailSamplingConfig>(yaml) else {
        return;
    };
    let mut g = c.benchmark_group("tail_sampling");
    g.throughput(Throughput::Elements(400));
    g.bench_function("decide_100_whole_traces", |b| {
        b.iter_batched(
            || {
                (
                    TailSampling::new(config.clone(), true, Default::default()).ok(),
                    Batch::Traces(req.clone()),
                )
            },
            |(p, batch)| {
                let mut out = Vec::new();
                if let Some(mut p) = p {
                    p.on_input(batch, Instant::now(), &mut out);
                }
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// 100 traces of 8 spans, one span from each of 8 services, every span in a request of its own
/// (as SDKs exporting span by span send them): the assembler sees 800 origins, 8 distinct.
fn scattered_request(seed: u64) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use ragwatch::attributes::kv_str;
    // An SDK's resource: the shared attributes first, the service's own last.
    let resource = |svc: usize| Resource {
        attributes: vec![
            kv_str("telemetry.sdk.language", "python"),
            kv_str("telemetry.sdk.name", "opentelemetry"),
            kv_str("telemetry.sdk.version", "1.29.0"),
            kv_str("deployment.environment.name", "production"),
            kv_str("cloud.provider", "aws"),
            kv_str("cloud.region", "eu-west-1"),
            kv_str("k8s.cluster.name", "prod-eu-1"),
            kv_str("k8s.namespace.name", "rag"),
            kv_str("service.version", "2.14.1"),
            kv_str("service.name", &format!("rag-svc-{svc}")),
        ],
        ..Default::default()
    };
    let mut out = ExportTraceServiceRequest::default();
    // Two 4-span RAG traces make one 8-span trace: the first span is its root.
    let all = spans(&request_of(seed, 200));
    for (t, trace) in all.chunks(8).enumerate() {
        let id = |k: usize| {
            ((1u64 << 40) | ((t as u64) << 8) | k as u64)
                .to_be_bytes()
                .to_vec()
        };
        for (k, s) in trace.iter().enumerate() {
            let mut s = s.clone();
            s.trace_id = trace[0].trace_id.clone();
            s.span_id = id(k);
            s.parent_span_id = if k == 0 { Vec::new() } else { id(0) };
            out.resource_spans.push(ResourceSpans {
                resource: Some(resource(k)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.openai".into(),
                        version: "0.40.0".into(),
                        ..Default::default()
                    }),
                    spans: vec![s],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    out
}

/// Trace assembly holding one request of `spans` spans and flushing it all (one tick a minute
/// later), in the `trace_assembly` group under `name`.
fn hold_and_flush(c: &mut Criterion, name: &str, req: ExportTraceServiceRequest, spans: u64) {
    let mut g = c.benchmark_group("trace_assembly");
    g.throughput(Throughput::Elements(spans));
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                (
                    TraceAssembly::new(
                        TraceAssemblyConfig::default(),
                        vec![Box::new(
                            ragwatch::processor::trace_assembly::summary::TraceSummary,
                        )],
                        Default::default(),
                    ),
                    Batch::Traces(req.clone()),
                )
            },
            |(mut a, batch)| {
                let now = Instant::now();
                let mut out = Vec::new();
                a.on_input(batch, now, &mut out);
                a.on_tick(now + Duration::from_secs(60), &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn assembly_origins(c: &mut Criterion) {
    hold_and_flush(
        c,
        "hold_and_flush_100_traces_of_8_services_span_per_request",
        scattered_request(5),
        800,
    );
}

/// One trace of 2000 spans from 200 pods of one service (their resources differ only in
/// `k8s.pod.name`, the last attribute), every span in a request of its own.
fn wide_trace_request(seed: u64) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use ragwatch::attributes::kv_str;
    let all = spans(&request_of(seed, 500));
    let trace_id = all[0].trace_id.clone();
    let id = |k: usize| ((1u64 << 40) | k as u64).to_be_bytes().to_vec();
    let resource_spans = all
        .into_iter()
        .enumerate()
        .map(|(k, mut s)| {
            s.trace_id = trace_id.clone();
            s.span_id = id(k);
            s.parent_span_id = if k == 0 { Vec::new() } else { id(0) };
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv_str("telemetry.sdk.language", "python"),
                        kv_str("telemetry.sdk.name", "opentelemetry"),
                        kv_str("telemetry.sdk.version", "1.29.0"),
                        kv_str("service.name", "rag-api"),
                        kv_str("service.version", "2.14.1"),
                        kv_str("k8s.namespace.name", "rag"),
                        kv_str("k8s.pod.name", &format!("rag-api-7d9f8-{:05}", k % 200)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![s],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn assembly_wide(c: &mut Criterion) {
    hold_and_flush(
        c,
        "hold_and_flush_one_trace_of_2000_spans_from_200_pods",
        wide_trace_request(8),
        2000,
    );
}

/// What the exporters of a pipeline do with one batch: two take its size (their queues' byte
/// budgets), one sends its encoding.
fn payload(c: &mut Criterion) {
    use ragwatch::exporter::helper::Payload;
    let req = request_of(6, 250);
    let mut g = c.benchmark_group("payload");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("size_twice_then_encode_1000_spans", |b| {
        b.iter_batched(
            || Batch::Traces(req.clone()),
            |batch| {
                let p = Payload::new(batch, None);
                black_box(p.size());
                black_box(p.size());
                black_box(p.protobuf().len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// One 1000-span request handed to 3 pipelines without processors that share one exporter, on
/// a current-thread runtime. Each pipeline queue holds one request, so a send waits until every
/// pipeline has handed the one before to the exporter: the time per send is the whole trip.
fn fanout(c: &mut Criterion) {
    use ragwatch::exporter::debug::DebugExporterConfig;
    use ragwatch::exporter::helper::ExporterContext;
    use ragwatch::pipeline::{Fanin, Pipeline, PipelineParts, WhenFull};
    use ragwatch::service::registry::ExporterConfig;
    use ragwatch::signal::Signal;
    use tokio_util::sync::CancellationToken;

    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let req = request_of(7, 250);
    let otlp = r#"
endpoint: 127.0.0.1:1
tls: { insecure: true }
sending_queue: { queue_size: 1, block_on_overflow: false }
"#;
    let Ok(otlp) = ragwatch::config::yaml::from_str(otlp) else {
        return;
    };
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1000));
    // debug: the exporters take the batch; otlp: they take its encoding only (an endpoint
    // that refuses connections and a one-request queue: the encoded request is dropped).
    for (name, exporter) in [
        (
            "to_3_pipelines_debug_1000_spans",
            ExporterConfig::Debug(DebugExporterConfig::default()),
        ),
        ("to_3_pipelines_otlp_1000_spans", ExporterConfig::Otlp(otlp)),
    ] {
        let _guard = rt.enter();
        let metrics = ragwatch::telemetry::SelfMetrics::new();
        let derived = std::sync::Arc::new(ragwatch::derived::DerivedMetrics::new(
            ragwatch::derived::defs::DEFS,
            Default::default(),
        ));
        let (hard_stop, stop) = (CancellationToken::new(), CancellationToken::new());
        let ctx = ExporterContext {
            metrics: &metrics,
            derived: &derived,
            hard_stop: hard_stop.clone(),
            stop_servers: stop.clone(),
        };
        let Ok(running) = ragwatch::service::registry::start_exporter("bench", &exporter, &ctx)
        else {
            return;
        };
        let mut pipelines = Vec::new();
        for i in 0..3 {
            let id = format!("traces/{i}");
            let parts = PipelineParts {
                queue_size: 1000,
                queue_max_bytes: 64 << 20,
                chains: vec![Vec::new()],
                exporters: vec![running.handle.clone()],
                storage: None,
            };
            let Ok(p) = Pipeline::start(
                &id,
                Signal::Traces,
                parts,
                metrics.pipeline(&id),
                hard_stop.clone(),
                stop.clone(),
            ) else {
                return;
            };
            pipelines.push(p);
        }
        let fanin = Fanin::new(pipelines.iter().map(|p| p.input.clone()).collect());
        g.bench_function(name, |b| {
            b.iter_batched(
                || Batch::Traces(req.clone()),
                |batch| rt.block_on(fanin.send(batch, WhenFull::Block)).is_ok(),
                BatchSize::LargeInput,
            )
        });
        hard_stop.cancel();
    }
    g.finish();
}

criterion_group!(
    benches,
    decode,
    genai_view,
    assembly,
    critical_path,
    tail_sampling,
    derived_metrics
);
criterion_group!(copies, assembly_origins, assembly_wide, payload, fanout);
criterion_main!(benches, copies);
