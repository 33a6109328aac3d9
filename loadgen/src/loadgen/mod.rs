//! The load generator behind `ragwatch-loadgen`: realistic RAG traces (from [`crate::synth`]),
//! pre-encoded once and re-stamped with fresh ids and times per send, over OTLP/gRPC or
//! OTLP/HTTP, with a fault scenario switched on for a time window.
//!
//! Workers (`--connections`) each loop: claim spans from the budget, wait for the pacer, stamp a
//! template, send it and retry refusals with back-off until acknowledged. Everything is counted
//! (sent, acknowledged, refused, failed) and export latencies go into an HDR histogram.

pub mod send;
pub mod template;
pub mod traffic;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::synth::Fault;
use send::{Outcome, Transport};
use template::{Stamper, Template};
use traffic::PoolSpec;

/// Why the generator could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A bad argument (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The generator could not be set up.
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Template(#[from] template::WireError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

/// A fault injected for `--fault-duration` seconds from `--fault-start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Retrieval takes 3x longer.
    SlowRetrieval,
    /// The first token comes 3x later.
    SlowFirstToken,
    /// 20% of model calls fail.
    ErrorBurst,
    /// Prompts 4x longer (input tokens, so cost).
    CostSpike,
    /// Poor retrieval scores and poor evaluations.
    QualityDrop,
    /// Two chat calls one after the other where one would do.
    SequentialCalls,
    /// Agent runs call the same tool with the same arguments until their limit stops them
    /// (with --agent-share above 0).
    AgentLoop,
    /// Agent runs: the order-status tool (over MCP) fails, and fails again when retried.
    ToolError,
    /// Agent runs: the search tool takes 100x longer (80 ms to 8 s: a hanging API).
    SlowTool,
}

impl Scenario {
    pub fn fault(self) -> Fault {
        match self {
            Scenario::SlowRetrieval => Fault::SlowRetrieval(3.0),
            Scenario::SlowFirstToken => Fault::SlowFirstToken(3.0),
            Scenario::ErrorBurst => Fault::ErrorBurst(0.2),
            Scenario::CostSpike => Fault::CostSpike(4.0),
            Scenario::QualityDrop => Fault::QualityDrop,
            Scenario::SequentialCalls => Fault::SequentialCalls,
            Scenario::AgentLoop => Fault::AgentLoop,
            Scenario::ToolError => Fault::ToolError,
            Scenario::SlowTool => Fault::SlowTool(100.0),
        }
    }
}

fn secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a number of seconds >= 0")),
    }
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a rate >= 0")),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

fn model(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err("a model name cannot be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// Sends realistic RAG traces to an OTLP endpoint and reports what was acknowledged.
#[derive(Parser, Debug, Clone)]
#[command(name = "ragwatch-loadgen", version)]
pub struct Args {
    /// Where to send [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http,
    /// where /v1/traces is appended].
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// Spans per second; 0 = as fast as the endpoint acknowledges.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub rate: f64,
    /// Seconds to generate for; 0 = until --spans are sent, or Ctrl-C / SIGTERM.
    #[arg(long, default_value_t = 0.0, value_parser = secs)]
    pub duration: f64,
    /// Stop after this many spans (rounded down to whole traces); 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub spans: u64,
    /// Spans per request, rounded down to whole traces.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// Concurrent requests in flight (workers; with grpc, one connection each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connections: u16,
    /// Services sending (named rag-api-0, rag-api-1, ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub services: u16,
    /// The models called, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gpt-4o-mini,gpt-4o,claude-sonnet-4",
        value_parser = model
    )]
    pub models: Vec<String>,
    /// Seed for the generated traces (ids are always fresh); random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Only generate and encode, on one thread, and report the rate (5 s unless --duration or
    /// --spans say otherwise).
    #[arg(long)]
    pub dry_run: bool,
    /// A fault to inject.
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// Seconds after the start when the fault begins.
    #[arg(long, default_value_t = 0.0, value_parser = secs)]
    pub fault_start: f64,
    /// Seconds the fault lasts; 0 = until the end.
    #[arg(long, default_value_t = 0.0, value_parser = secs)]
    pub fault_duration: f64,
    /// Share of traces with a failed-then-retried model call.
    #[arg(long, default_value_t = 0.03, value_parser = share)]
    pub retry_share: f64,
    /// Share of traces that are agent runs (tool calls, one over MCP) instead of plain RAG
    /// requests; the agent scenarios (agent-loop, tool-error, slow-tool) change those.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub agent_share: f64,
    /// Seconds to wait for one attempt's answer.
    #[arg(long, default_value_t = 10.0, value_parser = secs)]
    pub timeout: f64,
    /// Seconds a request is retried (refusals, connection errors) before it counts as failed.
    #[arg(long, default_value_t = 30.0, value_parser = secs)]
    pub retry_timeout: f64,
    /// Seconds, after generation stops, for requests in flight to be acknowledged.
    #[arg(long, default_value_t = 5.0, value_parser = secs)]
    pub drain_timeout: f64,
    /// Seconds between progress lines on stderr; 0 = none.
    #[arg(long, default_value_t = 5.0, value_parser = secs)]
    pub report_every: f64,
}

/// Export latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The final report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    pub protocol: String,
    pub endpoint: String,
    pub scenario: Option<String>,
    pub dry_run: bool,
    pub elapsed_secs: f64,
    /// Spans stamped (in a dry run, the work measured).
    pub generated: u64,
    /// Encoded bytes stamped.
    pub bytes: u64,
    /// Spans sent at least once.
    pub sent: u64,
    pub acknowledged: u64,
    /// Spans in attempts refused retryably (each refusal counts; they were retried).
    pub refused: u64,
    /// Spans given up on: permanent errors, retries exhausted, partial-success rejections.
    pub failed: u64,
    pub requests: u64,
    pub retries: u64,
    pub transport_errors: u64,
    /// Acknowledged spans per second (generated per second in a dry run).
    pub spans_per_sec: f64,
    /// Export latency of acknowledged requests (the successful attempt).
    pub latency_ms: Latency,
    /// The first distinct error messages.
    pub errors: Vec<String>,
}

impl Report {
    /// Every span sent was acknowledged and nothing failed.
    pub fn success(&self) -> bool {
        self.dry_run || (self.failed == 0 && self.acknowledged == self.sent)
    }

    pub fn text(&self) -> String {
        let mut s = if self.dry_run {
            format!(
                "dry run: {} spans ({:.1} MB) generated and encoded in {:.2} s: {:.0} spans/s, {:.0} MB/s\n",
                self.generated,
                self.bytes as f64 / 1e6,
                self.elapsed_secs,
                self.spans_per_sec,
                self.bytes as f64 / 1e6 / self.elapsed_secs.max(1e-9),
            )
        } else {
            format!(
                "{} {}: {:.1} s, sent {} acknowledged {} refused {} failed {} ({} requests, {} retries, {} transport errors)\n\
                 {:.0} spans/s acknowledged; export latency p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms\n",
                self.protocol,
                self.endpoint,
                self.elapsed_secs,
                self.sent,
                self.acknowledged,
                self.refused,
                self.failed,
                self.requests,
                self.retries,
                self.transport_errors,
                self.spans_per_sec,
                self.latency_ms.p50,
                self.latency_ms.p90,
                self.latency_ms.p99,
                self.latency_ms.max,
            )
        };
        for e in &self.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    }
}

/// The template pools and when the fault phase is on.
pub struct Generator {
    clean: Vec<Template>,
    faulty: Vec<Template>,
    window: Option<(f64, f64)>,
}

impl Generator {
    pub fn new(args: &Args) -> Result<Generator, LoadgenError> {
        let seed = args.seed.unwrap_or_else(|| rand::rng().random());
        let mut rng = StdRng::seed_from_u64(seed);
        let spec = PoolSpec {
            services: args.services.into(),
            models: args.models.clone(),
            batch: args.batch,
            retry_share: args.retry_share,
            agent_share: args.agent_share,
        };
        if spec.models.is_empty() {
            return Err(LoadgenError::Usage("--models: give at least one".into()));
        }
        let clean = traffic::pool(&spec, None, &mut rng)?;
        let (faulty, window) = match args.scenario {
            Some(s) => {
                let end = if args.fault_duration > 0.0 {
                    args.fault_start + args.fault_duration
                } else {
                    f64::INFINITY
                };
                (
                    traffic::pool(&spec, Some(s.fault()), &mut rng)?,
                    Some((args.fault_start, end)),
                )
            }
            None => (Vec::new(), None),
        };
        Ok(Generator {
            clean,
            faulty,
            window,
        })
    }

    /// The pool in use `elapsed` seconds into the run.
    fn pool(&self, elapsed: f64) -> &[Template] {
        match self.window {
            Some((a, b)) if elapsed >= a && elapsed < b => &self.faulty,
            _ => &self.clean,
        }
    }

    fn pick(&self, elapsed: f64, rng: &mut StdRng) -> &Template {
        let pool = self.pool(elapsed);
        &pool[rng.random_range(0..pool.len())]
    }
}

/// Spans left to send (when --spans is given).
struct Budget {
    remaining: Option<AtomicU64>,
}

impl Budget {
    /// Claim the spans of `t` (or of as many leading traces of it as fit, or of another template
    /// of `pool` that fits better at the very end): the template and entries to send.
    fn claim<'a>(
        &self,
        t: &'a Template,
        pool: &'a [Template],
    ) -> Option<(&'a Template, usize, u64)> {
        let Some(rem) = &self.remaining else {
            return Some((t, t.entries(), t.spans()));
        };
        let mut cur = rem.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return None;
            }
            let (t, entries, n) = match t.cut_for(cur) {
                Some((e, n)) if n == t.spans() || n == cur => (t, e, n),
                first => pool
                    .iter()
                    .filter_map(|p| p.cut_for(cur).map(|(e, n)| (p, e, n)))
                    .chain(first.map(|(e, n)| (t, e, n)))
                    .max_by_key(|x| x.2)?,
            };
            match rem.compare_exchange_weak(cur, cur - n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some((t, entries, n)),
                Err(now) => cur = now,
            }
        }
    }

    /// Give up on the rest (nothing fits).
    fn close(&self) {
        if let Some(r) = &self.remaining {
            r.store(0, Ordering::Relaxed);
        }
    }
}

/// Paces sends to a rate of spans per second (a token bucket allowing 100 ms of burst).
struct Pacer {
    rate: f64,
    next: Mutex<Instant>,
}

impl Pacer {
    /// When a request of `n` spans may go.
    fn reserve(&self, n: u64) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let floor = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
        let slot = (*next).max(floor);
        *next = slot + Duration::from_secs_f64(n as f64 / self.rate);
        slot
    }
}

#[derive(Default)]
struct Counters {
    generated: AtomicU64,
    bytes: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    transport_errors: AtomicU64,
}

struct Latencies {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to an hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

struct Shared {
    generator: Generator,
    budget: Budget,
    pacer: Option<Pacer>,
    counters: Counters,
    latencies: Mutex<Latencies>,
    errors: Mutex<Vec<String>>,
    start: Instant,
    /// Generation stops.
    stop: CancellationToken,
    /// Requests in flight are abandoned.
    abort: CancellationToken,
    retry_timeout: Duration,
}

impl Shared {
    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 5 && !errors.contains(&e) {
            errors.push(e);
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn worker(sh: Arc<Shared>, transport: Transport, n: u16, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut stamper = Stamper::new(n, rand::rng().random());
    while !sh.stop.is_cancelled() {
        let elapsed = sh.start.elapsed().as_secs_f64();
        let t = sh.generator.pick(elapsed, &mut rng);
        let Some((t, entries, spans)) = sh.budget.claim(t, sh.generator.pool(elapsed)) else {
            sh.budget.close();
            sh.stop.cancel();
            break;
        };
        if let Some(p) = &sh.pacer {
            let at = p.reserve(spans);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = sh.stop.cancelled() => break,
            }
        }
        let body = stamper.stamp(t, entries, now_ns());
        let c = &sh.counters;
        c.generated.fetch_add(spans, Ordering::Relaxed);
        c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        c.sent.fetch_add(spans, Ordering::Relaxed);
        c.requests.fetch_add(1, Ordering::Relaxed);
        deliver(&sh, &transport, Bytes::from(body), spans).await;
    }
}

/// Send one request until it is acknowledged, refused for good, or given up on.
async fn deliver(sh: &Shared, transport: &Transport, body: Bytes, spans: u64) {
    let c = &sh.counters;
    let first = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let t0 = Instant::now();
        let outcome = tokio::select! {
            o = transport.send(body.clone()) => o,
            _ = sh.abort.cancelled() => {
                c.failed.fetch_add(spans, Ordering::Relaxed);
                sh.error("requests still unacknowledged when the drain timeout ran out".into());
                return;
            }
        };
        let wait = match outcome {
            Outcome::Acked { rejected, message } => {
                let rejected = rejected.min(spans);
                c.acked.fetch_add(spans - rejected, Ordering::Relaxed);
                if rejected > 0 {
                    c.failed.fetch_add(rejected, Ordering::Relaxed);
                    sh.error(format!(
                        "partial success, {rejected} spans rejected: {message}"
                    ));
                }
                let us = t0.elapsed().as_micros().max(1) as u64;
                let mut l = sh.latencies.lock().unwrap_or_else(|e| e.into_inner());
                l.total.saturating_record(us);
                l.interval.saturating_record(us);
                return;
            }
            Outcome::Permanent(m) => {
                c.failed.fetch_add(spans, Ordering::Relaxed);
                sh.error(m);
                return;
            }
            Outcome::Refused {
                retry_after,
                message,
            } => {
                c.refused.fetch_add(spans, Ordering::Relaxed);
                if first.elapsed() >= sh.retry_timeout {
                    c.failed.fetch_add(spans, Ordering::Relaxed);
                    sh.error(format!("still refused after --retry-timeout: {message}"));
                    return;
                }
                retry_after.unwrap_or(backoff)
            }
            Outcome::Transport(m) => {
                c.transport_errors.fetch_add(1, Ordering::Relaxed);
                if first.elapsed() >= sh.retry_timeout {
                    c.failed.fetch_add(spans, Ordering::Relaxed);
                    sh.error(m);
                    return;
                }
                backoff
            }
        };
        c.retries.fetch_add(1, Ordering::Relaxed);
        // Jitter the wait by ±25 %, and double the next back-off up to 5 s.
        let jitter = 0.75 + rand::rng().random::<f64>() * 0.5;
        let wait = wait.mul_f64(jitter);
        backoff = (backoff * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sh.abort.cancelled() => {
                c.failed.fetch_add(spans, Ordering::Relaxed);
                sh.error("requests still unacknowledged when the drain timeout ran out".into());
                return;
            }
        }
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    }
}

fn scenario_name(s: Option<Scenario>) -> Option<String> {
    s.and_then(|s| s.to_possible_value())
        .map(|v| v.get_name().to_string())
}

/// Stop on the first Ctrl-C / SIGTERM, abort on the second.
async fn signals(stop: CancellationToken, abort: CancellationToken) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    for token in [stop, abort] {
        #[cfg(unix)]
        {
            let term_recv = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_recv => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    }
}

/// Run as `args` say; progress lines go to stderr when `args.report_every` > 0.
pub async fn run(args: Args) -> Result<Report, LoadgenError> {
    ragwatch::service::install_crypto_provider();
    let url = send::endpoint_url(args.endpoint.as_deref(), args.protocol)?;
    let generator = Generator::new(&args)?;
    if args.dry_run {
        return Ok(dry_run(args, url, generator).await);
    }
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let transports: Vec<Transport> = match args.protocol {
        Protocol::Grpc => (0..args.connections)
            .map(|_| Transport::grpc(&url, timeout))
            .collect::<Result<_, _>>()?,
        Protocol::Http => {
            let t = Transport::http(&url, timeout, args.connections.into())?;
            vec![t; args.connections.into()]
        }
    };
    let sh = Arc::new(Shared {
        generator,
        budget: Budget {
            remaining: (args.spans > 0).then(|| AtomicU64::new(args.spans)),
        },
        pacer: (args.rate > 0.0).then(|| Pacer {
            rate: args.rate,
            next: Mutex::new(Instant::now()),
        }),
        counters: Counters::default(),
        latencies: Mutex::new(Latencies {
            total: histogram(),
            interval: histogram(),
        }),
        errors: Mutex::new(Vec::new()),
        start: Instant::now(),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        retry_timeout: Duration::from_secs_f64(args.retry_timeout),
    });
    let signal_task = tokio::spawn(signals(sh.stop.clone(), sh.abort.clone()));
    // The duration, then the drain timeout.
    let timer = {
        let (stop, abort) = (sh.stop.clone(), sh.abort.clone());
        let (duration, drain) = (args.duration, args.drain_timeout);
        tokio::spawn(async move {
            if duration > 0.0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(duration)) => stop.cancel(),
                    _ = stop.cancelled() => {}
                }
            } else {
                stop.cancelled().await;
            }
            tokio::time::sleep(Duration::from_secs_f64(drain)).await;
            abort.cancel();
        })
    };
    let progress = (args.report_every > 0.0).then(|| {
        let sh = sh.clone();
        let every = Duration::from_secs_f64(args.report_every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let mut last = (0u64, Instant::now());
            loop {
                tick.tick().await;
                let c = &sh.counters;
                let acked = c.acked.load(Ordering::Relaxed);
                let l = {
                    let mut l = sh.latencies.lock().unwrap_or_else(|e| e.into_inner());
                    let x = latency(&l.interval);
                    l.interval.reset();
                    x
                };
                let rate = (acked - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-9);
                last = (acked, Instant::now());
                eprintln!(
                    "[{:>6.1}s] sent {} acked {} refused {} failed {} | {:.0} spans/s | p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
                    sh.start.elapsed().as_secs_f64(),
                    c.sent.load(Ordering::Relaxed),
                    acked,
                    c.refused.load(Ordering::Relaxed),
                    c.failed.load(Ordering::Relaxed),
                    rate,
                    l.p50,
                    l.p99,
                    l.max
                );
            }
        })
    });
    let pick_seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let workers: Vec<_> = transports
        .into_iter()
        .enumerate()
        .map(|(i, t)| tokio::spawn(worker(sh.clone(), t, i as u16, pick_seed)))
        .collect();
    for w in workers {
        if let Err(e) = w.await {
            sh.error(format!("worker ended abnormally: {e}"));
        }
    }
    let elapsed = sh.start.elapsed().as_secs_f64();
    timer.abort();
    signal_task.abort();
    if let Some(p) = progress {
        p.abort();
    }
    let c = &sh.counters;
    let acknowledged = c.acked.load(Ordering::Relaxed);
    let latency_ms = latency(&sh.latencies.lock().unwrap_or_else(|e| e.into_inner()).total);
    let errors = sh.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report {
        protocol: protocol_name(args.protocol).into(),
        endpoint: url,
        scenario: scenario_name(args.scenario),
        dry_run: false,
        elapsed_secs: elapsed,
        generated: c.generated.load(Ordering::Relaxed),
        bytes: c.bytes.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        acknowledged,
        refused: c.refused.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        transport_errors: c.transport_errors.load(Ordering::Relaxed),
        spans_per_sec: acknowledged as f64 / elapsed.max(1e-9),
        latency_ms,
        errors,
    })
}

/// Generate and encode only, on one thread, as fast as possible.
async fn dry_run(args: Args, url: String, generator: Generator) -> Report {
    let stopped = Arc::new(AtomicBool::new(false));
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let signal_task = tokio::spawn(signals(stop.clone(), abort));
    let flag = stopped.clone();
    let watcher = tokio::spawn(async move {
        stop.cancelled().await;
        flag.store(true, Ordering::Relaxed);
    });
    let duration = if args.duration == 0.0 && args.spans == 0 {
        5.0
    } else {
        args.duration
    };
    let spans_limit = args.spans;
    let seed = args.seed.unwrap_or_default();
    let work = tokio::task::spawn_blocking(move || {
        let budget = Budget {
            remaining: (spans_limit > 0).then(|| AtomicU64::new(spans_limit)),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut stamper = Stamper::new(0, rand::rng().random());
        let (mut generated, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        let mut now = now_ns();
        let mut i = 0u64;
        const IN_FLIGHT: usize = 16;
        let mut in_flight = std::collections::VecDeque::with_capacity(IN_FLIGHT);
        loop {
            // Reading the clock every request is part of the real path; checking the duration
            // is not, so it is done every 16 requests.
            let elapsed = start.elapsed().as_secs_f64();
            if i.is_multiple_of(16)
                && ((duration > 0.0 && elapsed >= duration) || stopped.load(Ordering::Relaxed))
            {
                break;
            }
            i += 1;
            let t = generator.pick(elapsed, &mut rng);
            let Some((t, entries, n)) = budget.claim(t, generator.pool(elapsed)) else {
                break;
            };
            now = now.max(now_ns());
            let body = stamper.stamp(t, entries, now);
            bytes += body.len() as u64;
            generated += n;
            // Keep the last requests alive, as requests in flight would be, so the measure is
            // not of one buffer reused hot in the cache.
            if in_flight.len() == IN_FLIGHT {
                in_flight.pop_front();
            }
            in_flight.push_back(Bytes::from(body));
        }
        (generated, bytes, start.elapsed().as_secs_f64())
    });
    let (generated, bytes, elapsed) = work.await.unwrap_or((0, 0, 0.0));
    watcher.abort();
    signal_task.abort();
    Report {
        protocol: protocol_name(args.protocol).into(),
        endpoint: url,
        scenario: scenario_name(args.scenario),
        dry_run: true,
        elapsed_secs: elapsed,
        generated,
        bytes,
        sent: 0,
        acknowledged: 0,
        refused: 0,
        failed: 0,
        requests: 0,
        retries: 0,
        transport_errors: 0,
        spans_per_sec: generated as f64 / elapsed.max(1e-9),
        latency_ms: Latency::default(),
        errors: Vec::new(),
    }
}
