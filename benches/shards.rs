//! Scaling across cores: the processor chains of N shards of the full analysis (genai,
//! trace_assembly in hold mode, quality, anomaly, slo), each driven by its own thread over
//! pre-decoded batches — no network, no encoding, no channels — for N = 1, 2, … the cores
//! present. It prints spans per second per shard and the efficiency against one shard
//! (throughput per shard with N shards / throughput of one shard).
//!
//! `cargo bench --bench shards [-- <batches> <spans per batch>]` (default 400 batches of 1,000
//! spans); `STAGES=genai,trace_assembly` runs part of the chain. Time is driven by hand (each batch is 10 ms after the one before), so trace assembly
//! flushes as it would at 100,000 spans/s whatever the machine's speed.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use ragwatch::Config;
use ragwatch::processor::{run_chain, shutdown_chain, tick_chain};
use ragwatch::service::build_chains;
use ragwatch::service::registry::BuildContext;
use ragwatch::signal::Batch;
use ragwatch_loadgen::synth::{Profile, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

// The allocator the ragwatch binary runs with (src/main.rs): glibc's malloc would be a third of
// the profile here.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CONFIG: &str = r#"
receivers:
  otlp:
processors:
  genai:
  trace_assembly:
    mode: hold
    wait_after_root: 1s
  quality:
  anomaly:
  slo:
    slos:
      - { name: latency, kind: latency, objective: 0.95, threshold: 2s }
      - { name: availability, kind: availability, objective: 0.99 }
      - { name: quality, kind: quality, objective: 0.9, threshold: 0.5 }
    budgets:
      - { name: daily, limit_usd: 1000 }
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [STAGES]
      exporters: [debug]
"#;

/// `n` requests of about `spans` spans each: RAG traces of 8 services and 3 models.
fn batches(n: usize, spans: usize) -> Vec<ExportTraceServiceRequest> {
    let mut rng = StdRng::seed_from_u64(7);
    let profiles: Vec<Profile> = (0..8)
        .map(|i| {
            Profile::new(
                &format!("rag-{i}"),
                ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022"][i % 3],
            )
        })
        .collect();
    let mut t = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|_| {
            let mut r = ExportTraceServiceRequest::default();
            let mut count = 0;
            while count < spans {
                let p = &profiles[(t / 1_000) as usize % profiles.len()];
                let rs = rag_trace(&mut rng, p, None, t);
                count += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
                r.resource_spans.push(rs);
                t += 1_000_000;
            }
            r
        })
        .collect()
}

/// Run the chains of `shards` shards, one thread each, over `input`; spans per second (wall).
fn run(config: &Config, input: &[ExportTraceServiceRequest], shards: usize) -> (f64, usize) {
    let pipeline = &config.service.pipelines["traces"];
    let ctx = BuildContext {
        derived: Arc::new(ragwatch::derived::DerivedMetrics::new(
            ragwatch::derived::defs::DEFS,
            ragwatch::derived::Limits::default(),
        )),
        self_metrics: ragwatch::telemetry::SelfMetrics::new(),
        findings: Arc::new(ragwatch::findings::Findings::default()),
        memory: None,
        slo_burning: Default::default(),
        whole_traces: false,
        shards,
    };
    let chains = build_chains(config, pipeline, &ctx, shards).expect("chains");
    // Split every request by trace id as the pipeline does, before the clock starts.
    let mut per_shard: Vec<Vec<Batch>> = vec![Vec::new(); shards];
    for r in input {
        for (i, b) in ragwatch::pipeline::split_by_trace(r.clone(), shards) {
            per_shard[i].push(b);
        }
    }
    let total: usize = per_shard.iter().flatten().map(Batch::item_count).sum();
    let start_line = Arc::new(Barrier::new(shards + 1));
    let t0 = Instant::now();
    let threads: Vec<_> = chains
        .into_iter()
        .zip(per_shard)
        .map(|(mut chain, work)| {
            let start_line = start_line.clone();
            std::thread::spawn(move || {
                start_line.wait();
                let mut now = t0;
                let mut out = 0usize;
                for (k, b) in work.into_iter().enumerate() {
                    now += Duration::from_millis(10);
                    out += run_chain(&mut chain, vec![b], now)
                        .iter()
                        .map(Batch::item_count)
                        .sum::<usize>();
                    if k % 10 == 9 {
                        out += tick_chain(&mut chain, now)
                            .iter()
                            .map(Batch::item_count)
                            .sum::<usize>();
                    }
                }
                out + shutdown_chain(&mut chain, now)
                    .iter()
                    .map(Batch::item_count)
                    .sum::<usize>()
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    let out: usize = threads
        .into_iter()
        .map(|t| t.join().expect("shard thread"))
        .sum();
    let secs = start.elapsed().as_secs_f64();
    (total as f64 / secs, out)
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let args: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(400);
    let spans = args.get(1).copied().unwrap_or(1000);
    // STAGES=genai,trace_assembly runs part of the chain (to see which stage scales how).
    let stages = std::env::var("STAGES")
        .unwrap_or_else(|_| "genai, trace_assembly, quality, anomaly, slo".into());
    let config =
        Config::from_yaml_with_env(&CONFIG.replace("STAGES", &stages), "shards bench", &|_| {
            None
        })
        .expect("config");
    let input = batches(n, spans);
    let sent: usize = input
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("[{stages}], {n} batches of ~{spans} spans ({sent} spans), {cores} cores");
    println!("| shards | spans/s | spans/s per shard | efficiency |");
    println!("|---|---|---|---|");
    let mut one = None;
    for shards in 1..=cores {
        // Best of three: the first run also warms the allocator.
        let (rate, out) = (0..3)
            .map(|_| run(&config, &input, shards))
            .fold((0.0f64, 0), |a, b| if b.0 > a.0 { b } else { a });
        assert_eq!(out, sent, "every span comes out");
        let per = rate / shards as f64;
        let base = *one.get_or_insert(per);
        println!(
            "| {shards} | {rate:.0} | {per:.0} | {:.0}% |",
            per / base * 100.0
        );
    }
}
