//! The hot functions, one criterion group each: OTLP decode, the GenAI view, cost lookup, trace
//! assembly, the critical path, tail sampling, a payload's encoding and the fan-out to pipelines.
//! `cargo bench --bench hot`; the numbers are in the README.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use ragwatch::analysis::path::{Kind, SpanNode, analyze};
use ragwatch::analysis::{TraceAssembly, TraceAssemblyConfig};
use ragwatch::genai::prices::{PriceTable, SuppliedCost};
use ragwatch::genai::view;
use ragwatch::processor::Processor;
use ragwatch::signal::Batch;
use ragwatch::synth::{Profile, rag_trace};
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
    }
    g.finish();
}

fn assembly(c: &mut Criterion) {
    let req = request(3);
    let mut g = c.benchmark_group("trace_assembly");
    g.throughput(Throughput::Elements(400));
    g.bench_function("hold_and_flush_100_traces", |b| {
        b.iter_batched(
            || {
                (
                    TraceAssembly::new(
                        TraceAssemblyConfig::default(),
                        vec![Box::new(ragwatch::analysis::TraceSummary)],
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

fn critical_path(c: &mut Criterion) {
    // A wide trace: a root with 50 children, each with 3 children.
    let mut nodes = vec![SpanNode {
        span_id: vec![0, 0],
        parent: Vec::new(),
        start: 0,
        end: 1_000_000,
        kind: Kind::Other,
    }];
    for i in 0..50u8 {
        nodes.push(SpanNode {
            span_id: vec![1, i],
            parent: vec![0, 0],
            start: u64::from(i) * 20_000,
            end: u64::from(i) * 20_000 + 30_000,
            kind: Kind::Other,
        });
        for j in 0..3u8 {
            nodes.push(SpanNode {
                span_id: vec![2, i, j],
                parent: vec![1, i],
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

fn assembly_origins(c: &mut Criterion) {
    let req = scattered_request(5);
    let mut g = c.benchmark_group("trace_assembly");
    g.throughput(Throughput::Elements(800));
    g.bench_function(
        "hold_and_flush_100_traces_of_8_services_span_per_request",
        |b| {
            b.iter_batched(
                || {
                    (
                        TraceAssembly::new(
                            TraceAssemblyConfig::default(),
                            vec![Box::new(ragwatch::analysis::TraceSummary)],
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
        },
    );
    g.finish();
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
    let req = wide_trace_request(8);
    let mut g = c.benchmark_group("trace_assembly");
    g.throughput(Throughput::Elements(2000));
    g.bench_function(
        "hold_and_flush_one_trace_of_2000_spans_from_200_pods",
        |b| {
            b.iter_batched(
                || {
                    (
                        TraceAssembly::new(
                            TraceAssemblyConfig::default(),
                            vec![Box::new(ragwatch::analysis::TraceSummary)],
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
        },
    );
    g.finish();
}

/// What the exporters of a pipeline do with one batch: two take its size (their queues' byte
/// budgets), one sends its encoding.
fn payload(c: &mut Criterion) {
    use ragwatch::exporter::Payload;
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
    use ragwatch::exporter::{DebugExporterConfig, ExporterConfig, ExporterContext};
    use ragwatch::pipeline::{Fanin, Pipeline, PipelineParts, WhenFull};
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
            ragwatch::genai::metrics::DEFS,
            Default::default(),
        ));
        let (hard_stop, stop) = (CancellationToken::new(), CancellationToken::new());
        let ctx = ExporterContext {
            metrics: &metrics,
            derived: &derived,
            hard_stop: hard_stop.clone(),
            stop_servers: stop.clone(),
        };
        let Ok(running) = ragwatch::exporter::start("bench", &exporter, &ctx) else {
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
    tail_sampling
);
criterion_group!(copies, assembly_origins, assembly_wide, payload, fanout);
criterion_main!(benches, copies);
