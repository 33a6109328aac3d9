//! The full labelled evaluation of the anomaly processor (README, "Anomaly detection").
//! `cargo run --release --example anomaly_eval [seeds]`

use ragwatch_loadgen::anomaly_eval as eval;

fn main() -> Result<(), String> {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Each stream: 2,000 clean traces, then 20 with the fault (recall over those 20; for the
    // error burst, over its failed requests).
    for (pname, profile) in eval::profiles() {
        println!("\n{pname} profile\n");
        println!(
            "| fault | detected | delay median / max (traces) | recall (marked / faulty) | false verdicts / clean traces |"
        );
        println!("|---|---|---|---|---|");
        for (name, fault, signal) in eval::scenarios() {
            let (mut delays, mut missed, mut falses, mut clean) = (Vec::new(), 0, 0, 0);
            let (mut marked, mut faulty) = (0, 0);
            for seed in 0..seeds {
                let o = eval::run(seed, &profile, fault, signal, 2000, 20)?;
                falses += o.false_verdicts;
                clean += o.clean_traces;
                marked += o.marked;
                faulty += o.faulty;
                match o.delay {
                    Some(d) => delays.push(d),
                    None => missed += 1,
                }
            }
            delays.sort_unstable();
            let median = delays.get(delays.len() / 2).copied().unwrap_or(0);
            let max = delays.last().copied().unwrap_or(0);
            println!(
                "| {name} | {}/{seeds} | {median} / {max} | {:.0}% ({marked} / {faulty}) | {falses} / {clean} |",
                seeds - missed,
                100.0 * marked as f64 / faulty.max(1) as f64
            );
        }
        let n = 100_000;
        let f = eval::false_verdicts(1000, &profile, n)?;
        println!(
            "\n{pname}: clean stream: {f} false verdicts in {n} traces ({:.2} per 10,000)",
            f as f64 * 1e4 / n as f64
        );
    }
    Ok(())
}
