#!/usr/bin/env bash
# The one-minute demo: ragwatch on its embedded default, and the load generator sending RAG
# traffic whose retrieval becomes 3x slower after 20 s. Prints, as it happens, what ragwatch made
# of it: bottleneck verdicts, cost per model, anomalies and the alerts that fired.
#
#   bash demo.sh
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bin ragwatch --bin ragwatch-loadgen
DATA=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DATA"' EXIT
(cd "$DATA" && exec "$OLDPWD/target/release/ragwatch") >"$DATA/ragwatch.log" 2>&1 &
for _ in $(seq 100); do curl -fs http://127.0.0.1:8888/readyz >/dev/null && break; sleep 0.1; done
echo "ragwatch is up (embedded default); sending 1,000 spans/s, retrieval 3x slower from 20 s to 60 s"
./target/release/ragwatch-loadgen --rate 1000 --duration 60 --report-every 0 \
  --scenario slow-retrieval --fault-start 20 --fault-duration 40 >"$DATA/loadgen.txt" 2>&1 &
LG=$!

show() {
  echo
  echo "== after ${1}s"
  local m; m=$(curl -fs http://127.0.0.1:9464/metrics || true)
  echo "-- traces with a bottleneck verdict, by stage (rag_bottleneck_traces_total)"
  grep '^rag_bottleneck_traces_total' <<<"$m" | sed 's/^/   /' | head -6 || true
  echo "-- cost so far per model, USD (rag_llm_cost_usd_total)"
  grep '^rag_llm_cost_usd_total' <<<"$m" \
    | sed -E 's/.*model="([^"]*)".* ([0-9.e+-]+)$/\1 \2/' \
    | awk '{c[$1]+=$2} END {for (k in c) printf "   %-20s %.4f\n", k, c[k]}' || true
  echo "-- anomaly verdicts (rag_anomalies_total)"
  grep '^rag_anomalies_total' <<<"$m" | sed 's/^/   /' | head -6 || true
  echo "-- alerts (GET http://127.0.0.1:8888/api/v1/alerts)"
  curl -fs http://127.0.0.1:8888/api/v1/alerts | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    l = a["labels"]
    print("   %-8s %-18s %s" % (a["state"], l.get("alertname"), {k: v for k, v in l.items() if k != "alertname"}))
    print("            " + a["annotations"].get("description", "")[:150])
' || true
}

for t in 15 30 45 60; do
  sleep 15
  show $t
done
wait $LG || true
echo
echo "== load generator report"
tail -n 6 "$DATA/loadgen.txt"
echo
echo "== a few finding log lines from ragwatch"
grep -m 3 '"finding"\|finding' "$DATA/ragwatch.log" | cut -c1-240 || true
