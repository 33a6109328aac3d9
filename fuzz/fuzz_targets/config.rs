//! Any UTF-8 text as a config file: the loader, `${env:...}` expansion and validation; a config
//! that loads is rendered back (print-config) and its processors built.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        ragwatch_loadgen::fuzzing::config(text);
    }
});
