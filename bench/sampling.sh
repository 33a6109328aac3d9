#!/usr/bin/env bash
# What tail sampling saves in bytes sent: ragwatch-loadgen (the same seeded traffic each time) →
# ragwatch with the full analysis → the counting sink, which counts the OTLP protobuf bytes of
# the requests it receives (as decoded, before gzip). Three configs: bench/full.yaml (no
# sampling), bench/sampling-10.yaml (10 % of traces at random) and bench/sampling-rules.yaml
# (every failed, slow, costly, poorly answered, anomalous... trace, and 10 % of the rest).
# It also checks that nothing is lost: spans received + spans dropped by sampling = sent.
#
#   bash bench/sampling.sh                    # SPANS=100000, release binaries
#   PROFILE=debug SPANS=50000 bash bench/sampling.sh   # bytes do not depend on the build
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${SPANS:-100000}
PROFILE=${PROFILE:-release}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
. bench/common.sh
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
if [ "$PROFILE" = release ]; then
  build_release
else
  cargo build --bin ragwatch --bin ragwatch-loadgen --example otlp_sink >/dev/null 2>&1
fi

bytes() { awk '{print $3}' "$OUT/sink.count" 2>/dev/null || echo 0; }
# A sample of ragwatch's own metrics (0 when absent).
own() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
want = sys.argv[1]
text = urllib.request.urlopen(f"http://127.0.0.1:{__import__('os').environ['ADMIN_PORT']}/metrics").read().decode()
print(int(sum(float(l.rsplit(' ', 1)[1]) for l in text.splitlines() if l.startswith(want))))
EOF
}

echo "machine: $(machine); ragwatch $PROFILE build; $SPANS spans of ragwatch-loadgen --seed 7"
echo
echo "| config | spans sent | spans exported | traces kept / decided | bytes exported (protobuf) | share of bytes |"
echo "|---|---|---|---|---|---|"
base=0
for cfg in full sampling-10 sampling-rules; do
  start_sink
  start_ragwatch "bench/$cfg.yaml"
  $BIN/ragwatch-loadgen --endpoint http://127.0.0.1:$RAGWATCH_PORT --spans "$SPANS" \
    --batch 512 --connections 4 --json --report-every 0 --seed 7 >"$OUT/lg.json"
  sent=$(json "$OUT/lg.json" "d['acknowledged']")
  # Drained when every span is either at the sink or counted as dropped by sampling.
  for _ in $(seq 600); do
    dropped=$(own ragwatch_sampling_spans_dropped_total)
    [ $(( $(received) + dropped )) -ge "$sent" ] && break
    sleep 0.1
  done
  kept=$(own 'ragwatch_sampling_traces_total{policy="')
  kept_only=$(python3 - "$cfg" "$OUT/by_policy" <<'EOF'
import os, sys, urllib.request
t = urllib.request.urlopen(f"http://127.0.0.1:{os.environ['ADMIN_PORT']}/metrics").read().decode()
kept = [(l.split('"')[1], int(float(l.rsplit(' ', 1)[1]))) for l in t.splitlines()
        if l.startswith('ragwatch_sampling_traces_total{') and 'decision="kept"' in l]
print(sum(n for _, n in kept))
by = ", ".join(f"{p} {n}" for p, n in sorted(kept, key=lambda x: -x[1]) if n)
if by:
    with open(sys.argv[2], "a") as f:
        f.write(f"{sys.argv[1]}: kept by {by}\n")
EOF
)
  stop
  got=$(received); b=$(bytes)
  [ "$base" = 0 ] && base=$b
  if [ "$(( got + dropped ))" -ne "$sent" ]; then
    echo "LOSS in $cfg: sent $sent, received $got, dropped by sampling $dropped" >&2
  fi
  awk -v cfg="$cfg" -v sent="$sent" -v got="$got" -v k="$kept_only" -v d="$kept" -v b="$b" -v base="$base" 'BEGIN {
    printf "| %s | %d | %d | %s | %d | %.1f%% |\n", cfg, sent, got, (d > 0 ? k " / " d : "all"), b, 100 * b / base }'
done
echo
cat "$OUT/by_policy" 2>/dev/null || true
