#!/usr/bin/env bash
# Throughput and cost of ragwatch: ragwatch-loadgen → ragwatch → a counting OTLP sink, all on
# 127.0.0.1. For the pass-through and the full-analysis configs, at 100 and 1000 spans per
# request, with ragwatch pinned to one core (taskset -c 0; loadgen and sink on the other) and
# unpinned, with gzip export, and pinned with uncompressed export, it reports spans/s
# acknowledged, ragwatch's CPU seconds per million spans, its peak RSS, and loss (sent -
# received by the sink; must be 0). Then, at a fixed 10,000 spans/s for 30 s,
# ragwatch's share of one core, its RSS and the export latency it adds (loadgen's p99).
#
#   bash bench/throughput.sh            # SPANS=2000000 by default per run
#   SPANS=500000 bash bench/throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${SPANS:-2000000}
FIXED_SECS=${FIXED_SECS:-30}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
. bench/common.sh
build_release

# start <config> <pin>: sink and ragwatch; sets SINK_PID RW_PID
start() {
  local cfg=$1 pin=$2
  if [ "$pin" = pinned ] && [ "$CORES" -ge 2 ]; then start_sink taskset -c 1; else start_sink; fi
  if [ "$pin" = pinned ]; then start_ragwatch "$cfg" taskset -c 0; else start_ragwatch "$cfg"; fi
}

echo "machine: $(machine)"
echo
echo "| config | export | batch | ragwatch | spans/s | CPU s per 1M spans | spans per CPU-second | peak RSS MiB | loss |"
echo "|---|---|---|---|---|---|---|---|---|"
for cfg in passthrough full; do
  for batch in 100 1000; do
    # gzip export pinned and unpinned; uncompressed export pinned.
    for run in pinned/gzip unpinned/gzip pinned/none; do
      pin=${run%/*}
      export EXPORT_COMPRESSION=${run#*/}
      start "bench/$cfg.yaml" "$pin"
      lg=""; if [ "$pin" = pinned ] && [ "$CORES" -ge 2 ]; then lg="taskset -c 1"; fi
      c0=$(cpu_secs "$RW_PID")
      $lg $BIN/ragwatch-loadgen --endpoint http://127.0.0.1:$RAGWATCH_PORT --spans "$SPANS" \
        --batch "$batch" --connections 8 --json --report-every 0 --seed 7 >"$OUT/lg.json" || true
      # Wait for the pipeline to drain into the sink (trace assembly holds 1 s).
      sent=$(json "$OUT/lg.json" "d['acknowledged']")
      wait_received "$sent" || true
      c1=$(cpu_secs "$RW_PID")
      hwm=$(hwm_mib "$RW_PID")
      stop
      got=$(received)
      rate=$(json "$OUT/lg.json" "round(d['spans_per_sec'])")
      awk -v c0="$c0" -v c1="$c1" -v n="$sent" -v rate="$rate" -v hwm="$hwm" -v got="$got" \
        -v cfg="$cfg" -v b="$batch" -v pin="$pin" -v comp="$EXPORT_COMPRESSION" 'BEGIN {
          cpu = c1 - c0; per = cpu / (n / 1e6); sps = (cpu > 0) ? n / cpu : 0;
          printf "| %s | %s | %s | %s | %d | %.2f | %d | %s | %d |\n", cfg, comp, b, pin, rate, per, sps, hwm, n - got }'
    done
  done
done

echo
echo "| config | at 10,000 spans/s for ${FIXED_SECS}s | share of one core | RSS MiB (end) | peak RSS MiB | export latency p50 / p99 ms | loss |"
echo "|---|---|---|---|---|---|---|"
export EXPORT_COMPRESSION=gzip
for cfg in passthrough full; do
  start "bench/$cfg.yaml" unpinned
  c0=$(cpu_secs "$RW_PID")
  $BIN/ragwatch-loadgen --endpoint http://127.0.0.1:$RAGWATCH_PORT --rate 10000 --duration "$FIXED_SECS" \
    --batch 100 --connections 4 --json --report-every 0 --seed 7 >"$OUT/lg.json" || true
  c1=$(cpu_secs "$RW_PID")
  rss=$(rss_mib "$RW_PID"); hwm=$(hwm_mib "$RW_PID")
  sent=$(json "$OUT/lg.json" "d['acknowledged']")
  wait_received "$sent" || true
  stop
  got=$(received)
  lat=$(json "$OUT/lg.json" "'%.2f / %.2f' % (d['latency_ms']['p50'], d['latency_ms']['p99'])")
  awk -v c0="$c0" -v c1="$c1" -v s="$FIXED_SECS" -v cfg="$cfg" -v rss="$rss" -v hwm="$hwm" \
    -v lat="$lat" -v n="$sent" -v got="$got" 'BEGIN {
      printf "| %s | %d spans | %.1f%% | %s | %s | %s | %d |\n", cfg, n, 100 * (c1 - c0) / s, rss, hwm, lat, n - got }'
done
