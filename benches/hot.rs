//! The hot functions, one criterion group each: OTLP decode, the GenAI view, cost lookup, trace
//! assembly, the critical path and tail sampling. `cargo bench --bench hot`; the numbers are in the README.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use ragwatch::genai::prices::{PriceTable, SuppliedCost};
use ragwatch::genai::view;
use ragwatch::processor::Processor;
use ragwatch::processor::trace_assembly::{TraceAssembly, TraceAssemblyConfig};
use ragwatch::signal::Batch;
use ragwatch::trace::path::{Kind, SpanNode, analyze};
use ragwatch_loadgen::synth::{Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 100 synthetic RAG traces (4 spans each) in one request.
fn request(seed: u64) -> ExportTraceServiceRequest {
    let mut rng = StdRng::seed_from_u64(seed);
    let p = Profile::new("rag-api", "gpt-4o-mini");
    ExportTraceServiceRequest {
        resource_spans: (0..100)
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

criterion_group!(
    benches,
    decode,
    genai_view,
    assembly,
    critical_path,
    tail_sampling
);
criterion_main!(benches);
