//! Any bytes as an OTLP/JSON request body of each signal: the HTTP receiver's decode and span-id
//! validation, then the analysis processors and the exporters' encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ragwatch_loadgen::fuzzing::otlp_json(data));
