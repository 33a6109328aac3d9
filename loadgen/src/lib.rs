//! Test tooling for ragwatch, kept out of the product library: the load generator behind the
//! `ragwatch-loadgen` binary, synthetic RAG and agent traffic with injected faults, the fuzz
//! entry points (`fuzz/`), and the labelled evaluation of the anomaly processor.
#![forbid(unsafe_code)]

pub mod anomaly_eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod loadgen;
pub mod synth;
