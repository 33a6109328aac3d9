#!/usr/bin/env bash
# Soak: ragwatch (release) with the full analysis (bench/full.yaml plus alerting) between
# ragwatch-loadgen and a counting OTLP sink, all on 127.0.0.1, at a fixed rate for a long time,
# with the loadgen's fault scenarios switching on and off. Every 10 s it samples ragwatch's RSS,
# CPU time and firing alerts; at the end it prints spans sent / acknowledged / received by the
# sink, RSS at start / max / end, the RSS slope over the second half (MiB per minute: a leak
# shows as a steady climb), ragwatch's CPU as a share of one core, and the alerts that fired.
# Exits 1 if any span was lost. Not run in CI (it takes the whole duration).
#
#   bash bench/soak.sh            # 600 s at 5,000 spans/s
#   bash bench/soak.sh 120        # a shorter run
#   RATE=2000 SEGMENT=30 bash bench/soak.sh 300
#   SOAK_KEEP=1 bash bench/soak.sh 60   # keep the scratch directory (logs, samples, reports)
#
# The load runs in segments of SEGMENT seconds (default 60), one ragwatch-loadgen each; segment 0
# is fault-free (the anomaly detector's warm-up), each later one injects the next scenario in
# its middle third: slow-retrieval, error-burst, cost-spike, quality-drop, slow-first-token,
# sequential-calls, then round again.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
RATE=${RATE:-5000}
SEGMENT=${SEGMENT:-60}
SAMPLE_EVERY=10
# Ports of their own, so that a bench/throughput.sh running at the same time cannot mix in.
export RAGWATCH_PORT=${RAGWATCH_PORT:-25317} ADMIN_PORT=${ADMIN_PORT:-29888}
export SINK_PORT=${SINK_PORT:-15317}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${SOAK_KEEP:-}" ] || rm -rf "$OUT"' EXIT
echo "scratch: $OUT" >&2
. bench/common.sh
echo "building (release)..." >&2
build_release

# bench/full.yaml with alerting on: alerts are only kept (no notification receivers) and listed
# by the admin API; they resolve a minute after their condition clears.
cfg=$OUT/soak.yaml
cat bench/full.yaml - >"$cfg" <<EOF
alerts:
  storage_dir: $OUT/alerts
  group_wait: 1s
  resolve_after: 60s
EOF
$BIN/ragwatch --config "$cfg" validate >/dev/null

start_sink
start_ragwatch "$cfg"
T0=$(date +%s.%N)

# One sample: seconds since start, RSS KiB, CPU seconds, firing alerts (alertname list).
sample() {
  local t rss cpu alerts
  t=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  rss=$(rss_kib "$RW_PID") cpu=$(cpu_secs "$RW_PID")
  alerts=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/api/v1/alerts" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(",".join(sorted({a["labels"].get("alertname", "?") for a in d["data"]["alerts"] if a.get("state") == "firing"})) or "-")
' 2>/dev/null || echo "?")
  echo "$t $rss $cpu $alerts" >>"$OUT/samples"
}
sample
(while sleep "$SAMPLE_EVERY"; do kill -0 "$RW_PID" 2>/dev/null || break; sample; done) &
SAMPLER=$!

echo "soak: ${DURATION}s at $RATE spans/s, segments of ${SEGMENT}s, sampling every ${SAMPLE_EVERY}s" >&2
SCENARIOS=(slow-retrieval error-burst cost-spike quality-drop slow-first-token sequential-calls)
left=$DURATION i=0
while [ "$(awk -v l="$left" 'BEGIN {print (l > 0)}')" = 1 ]; do
  seg=$(awk -v l="$left" -v s="$SEGMENT" 'BEGIN {print (l < s) ? l : s}')
  fault=()
  label=none
  if [ "$i" -gt 0 ]; then
    label=${SCENARIOS[$(((i - 1) % ${#SCENARIOS[@]}))]}
    third=$(awk -v s="$seg" 'BEGIN {print s / 3}')
    fault=(--scenario "$label" --fault-start "$third" --fault-duration "$third")
  fi
  echo "  segment $i: ${seg}s, fault: $label" >&2
  $BIN/ragwatch-loadgen --endpoint "http://127.0.0.1:$RAGWATCH_PORT" --rate "$RATE" \
    --duration "$seg" --batch 100 --connections 4 --json --report-every 0 --seed "$i" \
    "${fault[@]}" >"$OUT/lg-$i.json" 2>>"$OUT/loadgen.err" || true
  left=$(awk -v l="$left" -v s="$seg" 'BEGIN {print l - s}')
  i=$((i + 1))
done
LOAD_END=$(date +%s.%N)

totals=$(python3 - "$OUT" <<'PY'
import glob, json, sys
t = {"sent": 0, "acknowledged": 0, "failed": 0, "refused": 0}
for f in glob.glob(sys.argv[1] + "/lg-*.json"):
    try:
        d = json.load(open(f))
    except ValueError:
        t["failed"] += 1  # a loadgen run with no report: count it as lost
        continue
    for k in t:
        t[k] += d[k]
print(t["sent"], t["acknowledged"], t["failed"], t["refused"])
PY
)
read -r sent acked failed refused <<<"$totals"
# Trace assembly holds a trace 1 s after its root; the batch processor 200 ms.
wait_received "$acked" 300 || true
sample
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
hwm=$(hwm_mib "$RW_PID")
stop
got=$(received)

python3 - "$OUT/samples" "$T0" "$LOAD_END" "$DURATION" "$RATE" "$sent" "$acked" "$failed" \
  "$refused" "$got" "$hwm" <<'PY'
import sys
path, t0, load_end, duration, rate, sent, acked, failed, refused, got, hwm = sys.argv[1:]
rows = []
for line in open(path):
    t, rss, cpu, alerts = line.split()
    rows.append((float(t), int(rss) / 1024, float(cpu), alerts))
loaded = float(load_end) - float(t0)
# CPU over the loaded period: the last sample taken before the load stopped.
during = [r for r in rows if r[0] <= loaded] or rows
cpu_pct = 100 * (during[-1][2] - rows[0][2]) / max(during[-1][0] - rows[0][0], 1e-9)
half = [r for r in during if r[0] >= loaded / 2]
slope = 0.0
if len(half) >= 2:
    n = len(half)
    mt = sum(r[0] for r in half) / n
    mr = sum(r[1] for r in half) / n
    var = sum((r[0] - mt) ** 2 for r in half)
    slope = 60 * sum((r[0] - mt) * (r[1] - mr) for r in half) / var if var else 0.0
fired = sorted({a for r in rows for a in r[3].split(",") if a not in ("-", "?")})
loss = int(acked) - int(got)
print()
print(f"| soak: {duration} s at {rate} spans/s | |")
print("|---|---|")
print(f"| spans sent / acknowledged / received by the sink | {int(sent):,} / {int(acked):,} / {int(got):,} |")
print(f"| lost (acknowledged - received; failed at the client) | {loss} ({int(failed)} failed, {int(refused)} refused and retried) |")
print(f"| RSS start / max / end MiB | {rows[0][1]:.0f} / {max(r[1] for r in rows):.0f} (peak {hwm}) / {rows[-1][1]:.0f} |")
print(f"| RSS slope, second half | {slope:+.2f} MiB/min ({len(half)} samples) |")
print(f"| ragwatch CPU | {cpu_pct:.0f}% of one core |")
print(f"| alerts fired | {', '.join(fired) if fired else 'none'} |")
PY
if [ "$failed" -ne 0 ] || [ "$sent" -ne "$acked" ] || [ "$got" -ne "$acked" ]; then
  echo "soak: LOSS: sent $sent, acknowledged $acked, failed $failed, received $got" >&2
  exit 1
fi
