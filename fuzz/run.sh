#!/usr/bin/env bash
# Fuzz one target for a while: fuzz/run.sh <target> [seconds, default 60] [more libFuzzer flags].
# Starts from the committed seeds (fuzz/seeds/<target>) and keeps what it finds in
# fuzz/corpus/<target> (not committed); a crash is written to fuzz/artifacts/<target>/ and makes
# this exit non-zero. Needs cargo-fuzz (cargo install cargo-fuzz --locked); RUSTC_BOOTSTRAP=1 lets
# the stable toolchain take the sanitizer flags cargo-fuzz passes. FUZZ_BUILD_FLAGS go to
# `cargo fuzz run` (e.g. --codegen-units 16 --sanitizer none; see .ci/run) and must match those
# of a prior `cargo fuzz build` for that build to be reused.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh <target> [seconds] [libFuzzer flags]}
secs=${2:-60}
shift $(($# < 2 ? $# : 2))
# body_decompress: an allocation of 16 MiB or more is a failure (the target's limits are at most
# 64 KiB; the zstd window floor is 8 MiB). Everything: 1 GiB of RSS is.
extra=(-rss_limit_mb=1024)
if [ "$target" = body_decompress ]; then extra+=(-malloc_limit_mb=16); fi
mkdir -p "fuzz/corpus/$target"
# shellcheck disable=SC2086
RUSTC_BOOTSTRAP=1 exec cargo fuzz run ${FUZZ_BUILD_FLAGS:-} "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
  -- -max_total_time="$secs" "${extra[@]}" "$@"
