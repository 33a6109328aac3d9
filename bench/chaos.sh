#!/usr/bin/env bash
# Chaos: ragwatch (release) with the full analysis between ragwatch-loadgen and a counting sink
# (examples/chaos_sink.rs: counts spans received and distinct spans), all on 127.0.0.1, through
# faults. Per scenario it prints spans sent and acknowledged (by ragwatch, to the generator),
# received by the sink, distinct received, lost (acknowledged but never received) and
# duplicated (received more than once), ragwatch's peak RSS, and the generator's retried
# refusals. Exits 1 if any acknowledged span was lost.
#
#   sudo bash bench/chaos.sh              # every scenario (root: the full-disk one mounts a tmpfs)
#   RATE=2000 LOAD_SECS=10 bash bench/chaos.sh
#   CHAOS_KEEP=1 bash bench/chaos.sh       # keep the scratch directory (logs, reports)
#   bash bench/chaos.sh kill9 full-disk    # only these scenarios
#
# Scenarios (the generator sends RATE spans/s for LOAD_SECS seconds, retrying whatever fails):
#   backend-down   the sink stops 4 s in and comes back 10 s later
#   refuse-third   the sink refuses every third request (UNAVAILABLE)
#   kill9          ragwatch with a pipeline log (storage) is killed (SIGKILL) 6 s in and started again
#   sigterm        ragwatch gets SIGTERM 6 s in (drains and exits) and is started again
#   flood          as fast as ragwatch acknowledges (8 connections, batches of 2,000), default
#                  settings; then the same with memory_limiter at 200 MiB (flood-limit-200, with
#                  _RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 as README advises)
#   full-disk      the pipeline log on a 3 MiB tmpfs (it fills: about 2 s of traffic is held) while
#                  the sink is down for 20 s
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-5000}
LOAD_SECS=${LOAD_SECS:-20}
export RAGWATCH_PORT=${RAGWATCH_PORT:-26317} ADMIN_PORT=${ADMIN_PORT:-30888}
export SINK_PORT=${SINK_PORT:-16317}
OUT=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  mountpoint -q "$OUT/tmpfs" 2>/dev/null && umount "$OUT/tmpfs"
  [ -n "${CHAOS_KEEP:-}" ] || rm -rf "$OUT"
}
trap cleanup EXIT
echo "scratch: $OUT" >&2
. bench/common.sh
echo "building (release)..." >&2
cargo build --release --bin ragwatch --bin ragwatch-loadgen --example chaos_sink >/dev/null 2>&1

SCENARIOS=${*:-backend-down refuse-third kill9 sigterm flood flood-limit-200 full-disk}

# The full analysis on default settings (as bench/full.yaml), with a pipeline log in $STORAGE.
config() { # <file> <storage dir or ""> [extra service yaml]
  local storage=""
  [ -n "$2" ] && storage="      storage: $2"
  cat >"$1" <<EOF
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$RAGWATCH_PORT
processors:
  batch:
  genai:
  trace_assembly:
  quality:
  anomaly:
  slo:
    slos:
      - { name: latency, kind: latency, objective: 0.95, threshold: 2s }
      - { name: availability, kind: availability, objective: 0.99 }
    budgets:
      - { name: daily, limit_usd: 1000 }
exporters:
  otlp:
    endpoint: 127.0.0.1:$SINK_PORT
    tls: { insecure: true }
    retry_on_failure: { initial_interval: 500ms, max_interval: 5s }
service:
  telemetry:
    metrics:
      address: 127.0.0.1:$ADMIN_PORT
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo, batch]
      exporters: [otlp]
$storage
${3:-}
EOF
  $BIN/ragwatch --config "$1" validate >/dev/null
}

sink_start() { # [args]
  port_free "$SINK_PORT"
  $BIN/examples/chaos_sink "127.0.0.1:$SINK_PORT" "$OUT/sink" "$@" & SINK_PID=$!
  wait_port "$SINK_PORT"
}
sink_stop() { kill -TERM "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; }
# received distinct requests refused
sink_count() { cat "$OUT/sink.count" 2>/dev/null || echo "0 0 0 0"; }

rw_start() { # <config>
  port_free "$RAGWATCH_PORT" && port_free "$ADMIN_PORT"
  env ${RW_ENV:-} $BIN/ragwatch --config "$1" >>"$OUT/$NAME.ragwatch.log" 2>&1 & RW_PID=$!
  wait_port "$RAGWATCH_PORT"
}
rw_peak() { local p; p=$(hwm_mib "$RW_PID" 2>/dev/null || echo 0); [ "${p:-0}" -gt "$PEAK" ] && PEAK=$p; true; }
rw_term() {
  rw_peak; kill -TERM "$RW_PID"
  local code=0; wait "$RW_PID" || code=$?
  [ "$code" -eq 0 ] || echo "$NAME: ragwatch exited with $code after SIGTERM" >&2
}

load() { # <batch> <connections> [loadgen args]: in the background, report in $OUT/$NAME.json
  local batch=$1 conns=$2; shift 2
  $BIN/ragwatch-loadgen --endpoint "http://127.0.0.1:$RAGWATCH_PORT" --batch "$batch" --connections "$conns" \
    --retry-timeout 600 --drain-timeout 600 --report-every 0 --json --seed 7 "$@" \
    >"$OUT/$NAME.json" 2>"$OUT/$NAME.loadgen.log" & LOAD_PID=$!
}

ROWS=()
LOST_ANY=0
finish() { # the load has been started; wait for it, for delivery, then count
  local lg=0
  wait "$LOAD_PID" || lg=$?
  local sent acked refused
  sent=$(json "$OUT/$NAME.json" "d['sent']") acked=$(json "$OUT/$NAME.json" "d['acknowledged']")
  refused=$(json "$OUT/$NAME.json" "d['refused']")
  # Delivery can trail acknowledgement by trace assembly's wait and the exporter's retries.
  for _ in $(seq 1200); do
    read -r got distinct _ _ < <(sink_count)
    [ "$distinct" -ge "$acked" ] && break
    sleep 0.1
  done
  rw_term
  sink_stop
  read -r got distinct _ sink_refused < <(sink_count)
  local lost=$(( acked > distinct ? acked - distinct : 0 ))
  local dup=$(( got - distinct ))
  [ "$lost" -eq 0 ] || LOST_ANY=1
  [ "$lg" -eq 0 ] || echo "$NAME: the generator reported a failure (exit $lg); see $OUT/$NAME.json" >&2
  ROWS+=("| $NAME | $sent | $acked | $got | $distinct | $lost | $dup | $PEAK | $refused |")
  printf '%-16s sent %8s acked %8s received %8s distinct %8s lost %6s dup %6s peak RSS %5s MiB refused %s\n' \
    "$NAME" "$sent" "$acked" "$got" "$distinct" "$lost" "$dup" "$PEAK" "$refused" >&2
}

begin() { # <name>
  NAME=$1 PEAK=0 RW_ENV=
  rm -f "$OUT/sink.count" "$OUT/sink.keys"
  rm -rf "$OUT/storage"
  echo "== $NAME" >&2
}

for s in $SCENARIOS; do
  case $s in
  backend-down)
    begin "$s"; config "$OUT/c.yaml" "$OUT/storage"
    sink_start; rw_start "$OUT/c.yaml"; load 100 4 --rate "$RATE" --duration "$LOAD_SECS"
    sleep 4; sink_stop; sleep 10; sink_start
    finish ;;
  refuse-third)
    begin "$s"; config "$OUT/c.yaml" "$OUT/storage"
    sink_start --refuse-every 3; rw_start "$OUT/c.yaml"; load 100 4 --rate "$RATE" --duration "$LOAD_SECS"
    finish ;;
  kill9)
    begin "$s"; config "$OUT/c.yaml" "$OUT/storage"
    sink_start; rw_start "$OUT/c.yaml"; load 100 4 --rate "$RATE" --duration "$LOAD_SECS"
    sleep 6; rw_peak; kill -KILL "$RW_PID"; wait "$RW_PID" 2>/dev/null || true
    rw_start "$OUT/c.yaml"
    finish ;;
  sigterm)
    begin "$s"; config "$OUT/c.yaml" "$OUT/storage"
    sink_start; rw_start "$OUT/c.yaml"; load 100 4 --rate "$RATE" --duration "$LOAD_SECS"
    sleep 6; rw_term; rw_start "$OUT/c.yaml"
    finish ;;
  flood)
    begin "$s"; config "$OUT/c.yaml" ""
    sink_start; rw_start "$OUT/c.yaml"
    load 2000 8 --spans 500000
    while kill -0 "$LOAD_PID" 2>/dev/null; do rw_peak; sleep 0.2; done
    finish ;;
  flood-limit-200)
    begin "$s"
    config "$OUT/c.yaml" "" "  memory_limiter: { limit_mib: 200, check_interval: 100ms }"
    # Freed memory back to the system at once, as README: Memory limiter advises with a limit.
    RW_ENV="_RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0"
    sink_start; rw_start "$OUT/c.yaml"
    load 2000 8 --spans 500000
    while kill -0 "$LOAD_PID" 2>/dev/null; do rw_peak; sleep 0.2; done
    finish ;;
  full-disk)
    begin "$s"
    mkdir -p "$OUT/tmpfs"
    if ! mount -t tmpfs -o size=3m tmpfs "$OUT/tmpfs" 2>/dev/null; then
      echo "full-disk: cannot mount a tmpfs (needs root); skipped" >&2
      continue
    fi
    config "$OUT/c.yaml" "$OUT/tmpfs/storage"
    sink_start; rw_start "$OUT/c.yaml"; load 100 4 --rate "$RATE" --duration "$LOAD_SECS"
    sleep 3; sink_stop; sleep 20; sink_start
    finish
    echo "full-disk: $(grep -c "no space left" "$OUT/$NAME.ragwatch.log" || true) refusals for a full disk logged" >&2
    umount "$OUT/tmpfs" ;;
  *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done

echo
echo "machine: $(machine); rate $RATE spans/s for $LOAD_SECS s (floods: 500,000 spans as fast as acknowledged)"
echo
echo "| scenario | sent | acknowledged | received | distinct | lost | duplicated | peak RSS MiB | refused (retried) |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
exit $LOST_ANY
