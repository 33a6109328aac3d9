//! An OTLP/HTTP body with `Content-Encoding: gzip` or `zstd`, inflated as the HTTP receiver does
//! with its size limit. The first byte picks the encoding (low bit: 0 gzip, 1 zstd) and the limit
//! (1 << (byte >> 1) % 17: 1 byte to 64 KiB); the rest is the body. Run with -malloc_limit_mb
//! to catch an allocation far past the limit (a decompression bomb's).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let encoding = if head & 1 == 0 { "gzip" } else { "zstd" };
    let limit = 1usize << ((head >> 1) % 17);
    ragwatch_loadgen::fuzzing::body_decompress(encoding, body, limit);
});
