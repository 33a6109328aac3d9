//! The labelled evaluation of the anomaly processor: synthetic RAG streams (see
//! [`crate::synth`]) with a fault injected after a clean stretch, run through the real chain
//! `genai` → `quality` → `anomaly`. It measures the detection delay (traces of the key from the
//! fault's start to the first verdict, that trace included), the recall (the share of faulty
//! traces marked with the fault's own signal) and false verdicts on clean traces, on two
//! profiles: the synthetic one (log-normal spread 0.2) and one shaped like the real captures in
//! `tests/fixtures/otlp/` (their stage latencies, token counts and spread, errors 429/500/503).
//!
//! The test suite runs a small stream; `cargo run --release --example anomaly_eval` runs the full
//! one documented in the README.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::synth::{Fault, Profile, rag_trace};
use ragwatch::derived::{DerivedMetrics, Limits};
use ragwatch::findings::Findings;
use ragwatch::processor::Processor;
use ragwatch::processor::anomaly::{AnomalyConfig, AnomalyProcessor, Signal, Verdict};
use ragwatch::processor::genai::{GenAiConfig, GenAiProcessor};
use ragwatch::processor::quality::{QualityConfig, QualityProcessor};
use ragwatch::signal::Batch;

/// The faults of the evaluation, by name, with the signal that must mark each faulty trace.
pub fn scenarios() -> Vec<(&'static str, Fault, Signal)> {
    vec![
        (
            "retrieval latency x3",
            Fault::SlowRetrieval(3.0),
            Signal::StageLatency,
        ),
        ("model call x3", Fault::SlowLlm(3.0), Signal::StageLatency),
        (
            "time to first token x2",
            Fault::SlowFirstToken(2.0),
            Signal::Ttft,
        ),
        (
            "output tokens x2",
            Fault::OutputTokens(2.0),
            Signal::OutputTokens,
        ),
        ("prompt (cost) x4", Fault::CostSpike(4.0), Signal::Cost),
        ("quality drop", Fault::QualityDrop, Signal::Quality),
        ("error burst 20%", Fault::ErrorBurst(0.2), Signal::ErrorRate),
    ]
}

/// The two profiles evaluated: the synthetic service, and one shaped like the real captures
/// (medians read off `tests/fixtures/otlp/`: embeddings 34 ms, retrieval 36 ms, chat 205 ms with
/// 210 input and 60 output tokens; log-normal spread 0.3, the retrieval's within one service —
/// chat calls spread 0.07, embeddings 0.4).
pub fn profiles() -> Vec<(&'static str, Profile)> {
    let captured = Profile {
        embed_ms: 34.0,
        retrieval_ms: 36.0,
        ttft_ms: 120.0,
        per_token_ms: 1.4,
        input_tokens: 210.0,
        output_tokens: 60.0,
        sigma: 0.3,
        ..Profile::new("rag-captured", "gpt-4o-mini")
    };
    vec![
        ("synthetic", Profile::new("rag-api", "gpt-4o-mini")),
        ("capture-shaped", captured),
    ]
}

/// What one stream showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Verdicts on clean traces.
    pub false_verdicts: usize,
    pub clean_traces: usize,
    /// Traces from the fault's start to the first verdict (that one included); None: missed.
    pub delay: Option<usize>,
    /// Faulty traces (for an error burst: failed ones) and how many were marked with the
    /// fault's signal.
    pub faulty: usize,
    pub marked: usize,
}

/// A chain genai → quality → anomaly as configured in production.
pub struct Chain {
    stages: Vec<Box<dyn Processor>>,
    anomaly: AnomalyProcessor,
    now: Instant,
    clock_ns: u64,
    rng: StdRng,
}

impl Chain {
    pub fn new(seed: u64, config: AnomalyConfig) -> Result<Chain, String> {
        let derived = Arc::new(DerivedMetrics::new(
            ragwatch::derived::defs::DEFS,
            Limits {
                max_series_per_metric: 2000,
                series_ttl: Duration::from_secs(600),
            },
        ));
        let genai: Box<dyn Processor> = Box::new(GenAiProcessor::new(
            GenAiConfig::default(),
            derived.clone(),
        )?);
        let quality: Box<dyn Processor> = Box::new(QualityProcessor::new(
            QualityConfig::default(),
            derived.clone(),
        ));
        Ok(Chain {
            stages: vec![genai, quality],
            anomaly: AnomalyProcessor::new(config, derived, Arc::new(Findings::default())),
            now: Instant::now(),
            clock_ns: 1_700_000_000_000_000_000,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The anomaly stage, for inspection.
    pub fn anomaly(&self) -> &AnomalyProcessor {
        &self.anomaly
    }

    /// Generate one trace of `profile` (with `fault`), run it through; whether it got a verdict.
    pub fn step(&mut self, profile: &Profile, fault: Option<Fault>) -> bool {
        !self.step_batch(profile, fault).1.signals.is_empty()
    }

    /// As [`Chain::step`], returning the trace as it left the chain and its verdict.
    pub fn step_batch(&mut self, profile: &Profile, fault: Option<Fault>) -> (Batch, Verdict) {
        let rs = rag_trace(&mut self.rng, profile, fault, self.clock_ns);
        self.clock_ns += 50_000_000;
        self.now += Duration::from_millis(50);
        let batch = Batch::Traces(ExportTraceServiceRequest {
            resource_spans: vec![rs],
        });
        let mut cur = vec![batch];
        for stage in &mut self.stages {
            let mut next = Vec::new();
            for b in cur {
                stage.on_input(b, self.now, &mut next);
            }
            cur = next;
        }
        let mut verdict = Verdict::default();
        let mut out = Batch::Traces(ExportTraceServiceRequest::default());
        for mut b in cur {
            for v in self.anomaly.process(&mut b, self.now) {
                verdict.signals.extend(v.signals);
            }
            out = b;
        }
        (out, verdict)
    }
}

/// `clean` clean traces of `profile`, then `fault_len` with the fault.
pub fn run(
    seed: u64,
    profile: &Profile,
    fault: Fault,
    signal: Signal,
    clean: usize,
    fault_len: usize,
) -> Result<Outcome, String> {
    let mut chain = Chain::new(seed, AnomalyConfig::default())?;
    let false_verdicts = (0..clean).filter(|_| chain.step(profile, None)).count();
    let (mut delay, mut faulty, mut marked) = (None, 0, 0);
    for k in 1..=fault_len {
        let (b, v) = chain.step_batch(profile, Some(fault));
        if delay.is_none() && !v.signals.is_empty() {
            delay = Some(k);
        }
        let counts = signal != Signal::ErrorRate || failed(&b);
        if counts {
            faulty += 1;
            marked += usize::from(v.signals.contains(&signal));
        }
    }
    Ok(Outcome {
        false_verdicts,
        clean_traces: clean,
        delay,
        faulty,
        marked,
    })
}

/// Whether the trace's root failed.
fn failed(b: &Batch) -> bool {
    let Batch::Traces(r) = b else { return false };
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .any(|s| s.parent_span_id.is_empty() && ragwatch::attributes::is_error(s))
}

/// Verdicts on `n` clean traces of `profile`.
pub fn false_verdicts(seed: u64, profile: &Profile, n: usize) -> Result<usize, String> {
    let mut chain = Chain::new(seed, AnomalyConfig::default())?;
    Ok((0..n).filter(|_| chain.step(profile, None)).count())
}
