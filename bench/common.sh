# Pieces shared by bench/throughput.sh and bench/soak.sh (sourced from the repository root, with
# OUT set to a scratch directory): the release binaries, the ports bench/*.yaml read from the
# environment, starting and stopping the counting sink and ragwatch, and a process's CPU time
# and memory read from /proc.

BIN=${CARGO_TARGET_DIR:-target}/release
export RAGWATCH_PORT=${RAGWATCH_PORT:-24317} ADMIN_PORT=${ADMIN_PORT:-28888}
SINK_PORT=${SINK_PORT:-14317}
export SINK_ENDPOINT=127.0.0.1:$SINK_PORT
TICK=$(getconf CLK_TCK)
CORES=$(nproc)

build_release() {
  cargo build --release --bin ragwatch --bin ragwatch-loadgen --example otlp_sink >/dev/null 2>&1
}

machine() {
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $CORES cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
}

cpu_secs() { awk -v t="$TICK" '{print ($14+$15)/t}' "/proc/$1/stat"; }
hwm_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# A port something else already listens on (another benchmark?) would mix its traffic into ours.
port_free() {
  if (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null; then
    echo "port $1 is already in use; set RAGWATCH_PORT, ADMIN_PORT and SINK_PORT to free ones" >&2
    return 1
  fi
}
json() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

# start_sink [prefix...]: the counting sink on SINK_PORT (e.g. prefix `taskset -c 1`); sets SINK_PID.
start_sink() {
  rm -f "$OUT/sink.count"
  port_free "$SINK_PORT"
  "$@" $BIN/examples/otlp_sink "$SINK_ENDPOINT" "$OUT/sink.count" & SINK_PID=$!
  wait_port "$SINK_PORT"
}

# start_ragwatch <config> [prefix...]: ragwatch, logging to $OUT/ragwatch.log; sets RW_PID.
start_ragwatch() {
  local cfg=$1; shift
  port_free "$RAGWATCH_PORT" && port_free "$ADMIN_PORT"
  "$@" $BIN/ragwatch --config "$cfg" >"$OUT/ragwatch.log" 2>&1 & RW_PID=$!
  wait_port "$RAGWATCH_PORT"
  sleep 0.5
}

# Spans the sink has received (it writes its count every 200 ms and on exit).
received() { awk '{print $1}' "$OUT/sink.count" 2>/dev/null || echo 0; }

# wait_received <n> [tenths of a second]: until the sink has n spans, or the time is up.
wait_received() {
  for _ in $(seq "${2:-100}"); do [ "$(received)" -ge "$1" ] && return 0; sleep 0.1; done
  return 1
}

stop() {
  kill -TERM "$RW_PID"; wait "$RW_PID" || true
  kill -TERM "$SINK_PID"; wait "$SINK_PID" || true
}
