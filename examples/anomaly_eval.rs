//! The full labelled evaluation of the anomaly processor (README, "Anomaly detection").
//! `cargo run --release --example anomaly_eval [seeds]`

use ragwatch::anomaly::eval;

fn main() -> Result<(), String> {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("| fault | detected | delay (traces) median / max | false verdicts / clean traces |");
    println!("|---|---|---|---|");
    for (name, fault) in eval::scenarios() {
        let (mut delays, mut missed, mut falses, mut clean) = (Vec::new(), 0, 0, 0);
        for seed in 0..seeds {
            let o = eval::run(seed, fault, 2000, 1000)?;
            falses += o.false_verdicts;
            clean += o.clean_traces;
            match o.delay {
                Some(d) => delays.push(d),
                None => missed += 1,
            }
        }
        delays.sort_unstable();
        let median = delays.get(delays.len() / 2).copied().unwrap_or(0);
        let max = delays.last().copied().unwrap_or(0);
        println!(
            "| {name} | {}/{seeds} | {median} / {max} | {falses} / {clean} |",
            seeds - missed
        );
    }
    let n = 100_000;
    let f = eval::false_verdicts(1000, n)?;
    println!(
        "\nclean stream: {f} false verdicts in {n} traces ({:.2} per 10,000)",
        f as f64 * 1e4 / n as f64
    );
    Ok(())
}
