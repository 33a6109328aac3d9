#!/usr/bin/env bash
# Throughput and cost of ragwatch: ragwatch-loadgen → ragwatch → a counting OTLP sink, all on
# 127.0.0.1. For the pass-through and the full-analysis configs, at 100 and 1000 spans per
# request, with ragwatch pinned to one core (taskset -c 0; loadgen and sink on the other) and
# unpinned, it reports spans/s acknowledged, ragwatch's CPU seconds per million spans, its peak
# RSS, and loss (sent - received by the sink; must be 0). Then, at a fixed 10,000 spans/s for 30 s,
# ragwatch's share of one core, its RSS and the export latency it adds (loadgen's p99).
#
#   bash bench/throughput.sh            # SPANS=2000000 by default per run
#   SPANS=500000 bash bench/throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${SPANS:-2000000}
FIXED_SECS=${FIXED_SECS:-30}
cargo build --release --bin ragwatch --bin ragwatch-loadgen --example otlp_sink >/dev/null 2>&1
BIN=target/release
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
export RAGWATCH_PORT=24317 ADMIN_PORT=28888 SINK_ENDPOINT=127.0.0.1:14317
TICK=$(getconf CLK_TCK)
CORES=$(nproc)

cpu_secs() { awk -v t="$TICK" '{print ($14+$15)/t}' "/proc/$1/stat"; }
hwm_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
json() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

# start <config> <pin>: sink and ragwatch; sets SINK_PID RW_PID
start() {
  local cfg=$1 pin=$2 other=""
  if [ "$pin" = pinned ] && [ "$CORES" -ge 2 ]; then other="taskset -c 1"; fi
  rm -f "$OUT/sink.count"
  $other $BIN/examples/otlp_sink 127.0.0.1:14317 "$OUT/sink.count" & SINK_PID=$!
  wait_port 14317
  if [ "$pin" = pinned ]; then
    taskset -c 0 $BIN/ragwatch --config "$cfg" >"$OUT/ragwatch.log" 2>&1 & RW_PID=$!
  else
    $BIN/ragwatch --config "$cfg" >"$OUT/ragwatch.log" 2>&1 & RW_PID=$!
  fi
  wait_port $RAGWATCH_PORT
  sleep 0.5
}

stop() {
  kill -TERM "$RW_PID"; wait "$RW_PID" || true
  kill -TERM "$SINK_PID"; wait "$SINK_PID" || true
}

received() { awk '{print $1}' "$OUT/sink.count" 2>/dev/null || echo 0; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $CORES cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo
echo "| config | batch | ragwatch | spans/s | CPU s per 1M spans | spans per CPU-second | peak RSS MiB | loss |"
echo "|---|---|---|---|---|---|---|---|"
for cfg in passthrough full; do
  for batch in 100 1000; do
    for pin in pinned unpinned; do
      start "bench/$cfg.yaml" "$pin"
      lg=""; if [ "$pin" = pinned ] && [ "$CORES" -ge 2 ]; then lg="taskset -c 1"; fi
      c0=$(cpu_secs "$RW_PID")
      $lg $BIN/ragwatch-loadgen --endpoint http://127.0.0.1:$RAGWATCH_PORT --spans "$SPANS" \
        --batch "$batch" --connections 8 --json --report-every 0 --seed 7 >"$OUT/lg.json" || true
      # Wait for the pipeline to drain into the sink (trace assembly holds 1 s).
      sent=$(json "$OUT/lg.json" "d['acknowledged']")
      for _ in $(seq 100); do [ "$(received)" -ge "$sent" ] && break; sleep 0.1; done
      c1=$(cpu_secs "$RW_PID")
      hwm=$(hwm_mib "$RW_PID")
      stop
      got=$(received)
      rate=$(json "$OUT/lg.json" "round(d['spans_per_sec'])")
      awk -v c0="$c0" -v c1="$c1" -v n="$sent" -v rate="$rate" -v hwm="$hwm" -v got="$got" \
        -v cfg="$cfg" -v b="$batch" -v pin="$pin" 'BEGIN {
          cpu = c1 - c0; per = cpu / (n / 1e6); sps = (cpu > 0) ? n / cpu : 0;
          printf "| %s | %s | %s | %d | %.2f | %d | %s | %d |\n", cfg, b, pin, rate, per, sps, hwm, n - got }'
    done
  done
done

echo
echo "| config | at 10,000 spans/s for ${FIXED_SECS}s | share of one core | RSS MiB (end) | peak RSS MiB | export latency p50 / p99 ms | loss |"
echo "|---|---|---|---|---|---|---|"
for cfg in passthrough full; do
  start "bench/$cfg.yaml" unpinned
  c0=$(cpu_secs "$RW_PID")
  $BIN/ragwatch-loadgen --endpoint http://127.0.0.1:$RAGWATCH_PORT --rate 10000 --duration "$FIXED_SECS" \
    --batch 100 --connections 4 --json --report-every 0 --seed 7 >"$OUT/lg.json" || true
  c1=$(cpu_secs "$RW_PID")
  rss=$(rss_mib "$RW_PID"); hwm=$(hwm_mib "$RW_PID")
  sent=$(json "$OUT/lg.json" "d['acknowledged']")
  for _ in $(seq 100); do [ "$(received)" -ge "$sent" ] && break; sleep 0.1; done
  stop
  got=$(received)
  lat=$(json "$OUT/lg.json" "'%.2f / %.2f' % (d['latency_ms']['p50'], d['latency_ms']['p99'])")
  awk -v c0="$c0" -v c1="$c1" -v s="$FIXED_SECS" -v cfg="$cfg" -v rss="$rss" -v hwm="$hwm" \
    -v lat="$lat" -v n="$sent" -v got="$got" 'BEGIN {
      printf "| %s | %d spans | %.1f%% | %s | %s | %s | %d |\n", cfg, n, 100 * (c1 - c0) / s, rss, hwm, lat, n - got }'
done
