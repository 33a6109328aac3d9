#!/usr/bin/env bash
# The fuzz smoke CI runs (.ci/run): every target for a short while, from the committed seeds.
#   bash fuzz/smoke.sh [seconds per target, default 20]
# Installs cargo-fuzz if missing, builds all targets once, runs each, and deletes fuzz/target
# and fuzz/corpus afterwards (CI's disk is tight: a run once failed with No space left on device,
# and this build is about 2 GB). A failing input stays in fuzz/artifacts/<target>/.
#
# One unoptimised build (--dev: debug assertions and AddressSanitizer still on) serves all five
# runs: a release fuzz build compiles every dependency with codegen-units=1 and took 14 minutes
# here. Measured on 2026-11-23 in a fresh clone on the 2-core machine, with two other builds
# running (load average 3-4): the build 283 s, each target 21 s, the whole step 393 s; fuzz/target
# peaked at 2.1 GB and the build at 1.4 GB of memory. On an idle machine the build is the shorter.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export FUZZ_BUILD_FLAGS="--dev"
start=$SECONDS
RUSTC_BOOTSTRAP=1 cargo fuzz build $FUZZ_BUILD_FLAGS
echo "fuzz build: $((SECONDS - start)) s"
log=$(mktemp)
trap 'rm -f "$log"; rm -rf fuzz/target fuzz/corpus' EXIT
for t in otlp_protobuf otlp_json body_decompress config genai_view; do
  if ! fuzz/run.sh "$t" "$secs" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/ (README: Fuzzing)" >&2
    exit 1
  fi
  echo "$t: $(grep -E '^Done' "$log" || tail -n 1 "$log")"
done
echo "fuzz smoke: $((SECONDS - start)) s"
