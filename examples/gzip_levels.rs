//! Compression levels on the load generator's traffic: OTLP trace requests of about 1000 spans
//! as `ragwatch-loadgen` makes them (its default services and models, fresh ids and times), each
//! compressed whole as an exporter does, at gzip levels 1 to 9 (flate2 on zlib-rs, as the
//! exporters use it) and zstd 1 and 3 for comparison. Prints a Markdown table: the compressed
//! size, and the CPU time per MiB of protobuf (this thread's time on a CPU, from
//! /proc/thread-self/schedstat; wall-clock time where that is missing).
//!
//! `cargo run --release --example gzip_levels [-- <requests> <spans per request>]` (64 and 1000)

use std::io::Write;
use std::time::{Duration, Instant};

use ragwatch_loadgen::loadgen::template::Stamper;
use ragwatch_loadgen::loadgen::traffic::{PoolSpec, pool};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// This thread's CPU time so far, or None where the kernel does not say.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

struct Clock {
    cpu: Option<Duration>,
    wall: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            cpu: thread_cpu(),
            wall: Instant::now(),
        }
    }
    fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => self.wall.elapsed(),
        }
    }
}

#[derive(Clone, Copy)]
enum Codec {
    Gzip(u32),
    Zstd(i32),
}

fn compress(codec: Codec, data: &[u8]) -> usize {
    match codec {
        Codec::Gzip(level) => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::new(level),
            );
            let _ = enc.write_all(data);
            enc.finish().map_or(0, |v| v.len())
        }
        Codec::Zstd(level) => zstd::bulk::compress(data, level).map_or(0, |v| v.len()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let spans: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let spec = PoolSpec {
        services: 3,
        models: ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4"]
            .map(String::from)
            .to_vec(),
        batch: spans,
        retry_share: 0.03,
        agent_share: 0.0,
    };
    let mut rng = StdRng::seed_from_u64(17);
    let templates = match pool(&spec, None, &mut rng) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot build the traffic: {e}");
            std::process::exit(1);
        }
    };
    let mut stamper = Stamper::new(0, [rng.random(), rng.random(), rng.random()]);
    let now_ns = 1_780_000_000_000_000_000u64;
    let bodies: Vec<Vec<u8>> = (0..requests.max(1))
        .map(|i| {
            let t = &templates[i % templates.len()];
            stamper.stamp(t, t.entries(), now_ns + i as u64 * 1_000_000_000)
        })
        .collect();
    let input: usize = bodies.iter().map(Vec::len).sum();
    let mib = input as f64 / f64::from(1 << 20);
    let how = if thread_cpu().is_some() {
        "thread CPU time"
    } else {
        "wall-clock time"
    };
    println!(
        "{} requests of {} spans, {:.1} MiB of OTLP protobuf ({} bytes per request); {how}, best of 3 passes",
        bodies.len(),
        spans,
        mib,
        input / bodies.len()
    );
    println!();
    println!(
        "| codec | level | compressed size | ratio | CPU ms per MiB | MiB/s per core | CPU µs per KiB saved beyond gzip 1 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let codecs = (1..=9)
        .map(Codec::Gzip)
        .chain([Codec::Zstd(1), Codec::Zstd(3)]);
    let mut gzip1: Option<(f64, usize)> = None;
    for codec in codecs {
        let mut best = Duration::MAX;
        let mut out = 0;
        for _ in 0..3 {
            let clock = Clock::start();
            out = bodies.iter().map(|b| compress(codec, b)).sum::<usize>();
            best = best.min(clock.elapsed());
        }
        let ms_per_mib = best.as_secs_f64() * 1000.0 / mib;
        let (name, level) = match codec {
            Codec::Gzip(l) => ("gzip", i64::from(l)),
            Codec::Zstd(l) => ("zstd", i64::from(l)),
        };
        let marginal = match gzip1 {
            None => {
                gzip1 = Some((ms_per_mib, out));
                "—".to_string()
            }
            Some((ms1, out1)) if out < out1 && ms_per_mib <= ms1 => {
                "none: smaller and cheaper".to_string()
            }
            Some((ms1, out1)) if out < out1 => {
                let saved_kib_per_mib = (out1 - out) as f64 / 1024.0 / mib;
                format!("{:.1}", (ms_per_mib - ms1) * 1000.0 / saved_kib_per_mib)
            }
            Some(_) => "saves nothing".to_string(),
        };
        println!(
            "| {name} | {level} | {:.1} % | {:.2} | {:.2} | {:.0} | {marginal} |",
            100.0 * out as f64 / input as f64,
            input as f64 / out.max(1) as f64,
            ms_per_mib,
            1000.0 / ms_per_mib,
        );
    }
}
