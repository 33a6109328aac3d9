//! The labelled evaluation of the anomaly processor on a small stream (the full one is
//! `cargo run --release --example anomaly_eval`; its table is in the README).

use ragwatch_loadgen::anomaly_eval as eval;
use ragwatch_loadgen::synth::Fault;

/// The labelled evaluation on a small stream, on both profiles: each fault found within 40
/// traces of its key and no false verdict on the clean stretches; on the synthetic profile
/// (spread 0.2) at least 90% of the faulty traces of the level shifts the issue names
/// (retrieval, model call, quality, cost) marked with their signal. (On the capture-shaped
/// profile, spread 0.3, a 3x retrieval is a 3.7-sigma shift, found after a few traces: the
/// README gives its recall, measured.)
#[test]
fn labelled_evaluation_small() {
    for (pi, (pname, profile)) in eval::profiles().into_iter().enumerate() {
        for (i, (name, fault, signal)) in eval::scenarios().into_iter().enumerate() {
            let seed = 100 + (pi * 10 + i) as u64;
            let o = eval::run(seed, &profile, fault, signal, 500, 40).unwrap();
            assert_eq!(o.false_verdicts, 0, "{pname} {name}: false verdicts");
            let d = o
                .delay
                .unwrap_or_else(|| panic!("{pname} {name}: not detected in 40 traces"));
            assert!(d <= 40, "{pname} {name}: delay {d}");
            let sustained_target = pname == "synthetic"
                && matches!(
                    fault,
                    Fault::SlowRetrieval(_)
                        | Fault::SlowLlm(_)
                        | Fault::QualityDrop
                        | Fault::CostSpike(_)
                );
            if sustained_target {
                assert!(
                    o.marked * 10 >= o.faulty * 9,
                    "{pname} {name}: {} of {} marked",
                    o.marked,
                    o.faulty
                );
            }
        }
        assert_eq!(
            eval::false_verdicts(5, &profile, 3000).unwrap(),
            0,
            "{pname}"
        );
    }
}
