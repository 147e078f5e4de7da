#!/usr/bin/env bash
# A real Prometheus scraping a live local 3-node tally cluster: every
# node's /metrics passes `promtool check metrics`, Prometheus scrapes all
# three (up == 1), and the counters it stores move with a workload.
# Installs Debian's prometheus when missing. Exit 0 when all holds.
#
#   bash tests/prometheus/check.sh            # debug build (built if missing)
#   TALLY_BIN=target/release bash tests/prometheus/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  apt-get update -q && apt-get install -y -q prometheus
fi
BIN="${TALLY_BIN:-${CARGO_TARGET_DIR:-target}/debug}"
if [ ! -x "$BIN/tally-node" ] || [ ! -x "$BIN/tally" ]; then
  cargo build --workspace --bins
fi

source tests/lib.sh
start_work tally-prometheus
read -r -a P < <(free_ports 7)
NODES=("127.0.0.1:${P[0]}" "127.0.0.1:${P[1]}" "127.0.0.1:${P[2]}")
HTTP=("127.0.0.1:${P[3]}" "127.0.0.1:${P[4]}" "127.0.0.1:${P[5]}")
PROM="127.0.0.1:${P[6]}"
MEMBERS="1=${NODES[0]},2=${NODES[1]},3=${NODES[2]}"
for i in 0 1 2; do
  RUST_LOG=warn "$BIN/tally-node" --host-id $((i + 1)) --members "$MEMBERS" --listen "${NODES[$i]}" \
    --http-listen "${HTTP[$i]}" --data-dir "$WORK/node$i" 2>"$WORK/node$i.log" &
  PIDS+=("$!")
done
for h in "${HTTP[@]}"; do
  for _ in $(seq 1 100); do curl -sf "http://$h/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://$h/readyz" >/dev/null || { echo "node at $h never became ready" >&2; exit 1; }
done

echo "== promtool check metrics, each node"
for h in "${HTTP[@]}"; do
  curl -sf "http://$h/metrics" | promtool check metrics
done

cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: tally
    static_configs:
      - targets: ["${HTTP[0]}", "${HTTP[1]}", "${HTTP[2]}"]
YML
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do curl -sf "http://$PROM/-/ready" >/dev/null && break; sleep 0.2; done

query() { curl -sf "http://$PROM/api/v1/query" --data-urlencode "query=$1"; }
value_of() {
  query "$1" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(sum(float(x["value"][1]) for x in r) if r else -1)'
}
echo "== Prometheus scrapes the three nodes"
up=0
for _ in $(seq 1 60); do
  up=$(value_of 'sum(up{job="tally"})')
  [ "${up%.*}" = 3 ] && break
  sleep 0.5
done
[ "${up%.*}" = 3 ] || { echo "Prometheus sees $up of 3 nodes up" >&2; tail -5 "$WORK/prometheus.log" >&2; exit 1; }
before=$(value_of 'sum(tally_increment_items_total{result="ok"})')

echo "== a workload: 3 s of batches"
"$BIN/tally" --addr "${NODES[0]}" bench --duration 3 --batch 16 --concurrency 8 >/dev/null

echo "== the counters Prometheus stores move with it"
ok=0
for _ in $(seq 1 30); do
  items=$(value_of 'sum(tally_increment_items_total{result="ok"})')
  applied=$(value_of 'sum(tally_increments_applied_total)')
  if python3 -c "import sys; sys.exit(0 if float('$items') > max(float('$before'), 0) and float('$applied') > 0 else 1)"; then
    ok=1; break
  fi
  sleep 1
done
echo "up=$up increment items ok: before the workload $before, after $items; applied $applied"
[ "$ok" = 1 ] || { echo "Prometheus did not see the counters move" >&2; tail -5 "$WORK/prometheus.log" >&2; exit 1; }
rate=$(value_of 'sum(rate(tally_requests_total{kind="increment"}[1m]))')
echo "increment requests per second over the last minute, as Prometheus computes them: $rate"
echo "ok: promtool clean on 3 nodes, Prometheus scrapes them, the counters moved"
