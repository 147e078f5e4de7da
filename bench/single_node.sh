#!/usr/bin/env bash
# One tally node vs one Redis (appendonly yes, appendfsync everysec) on this
# machine, in the same run: 50 connections of single increments, and the
# same with batching (tally batches of 16 / Redis pipeline 16). Servers are
# pinned to CPU 1, load generators to CPU 0, both in the real-time class
# when allowed (see ../shared/bench/peers/README.md). Loopback only; every
# server is stopped by pid.
#
#   bash bench/single_node.sh          # DURATION=8 RUNS=1 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-8}"
RUNS="${RUNS:-1}"
WORK="$(mktemp -d /tmp/tally-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

PRIO="chrt -r 10"; $PRIO true 2>/dev/null || PRIO=""
srv() { $PRIO taskset -c 1 "$@" & PIDS+=("$!"); }
cli() { $PRIO taskset -c 0 "$@"; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
cargo build --release -p tally-node -p tally-client -q

REDIS_PORT=6471; TALLY_PORT=7471
srv redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir "$WORK" --daemonize no --logfile "$WORK/redis.log"
srv target/release/tally-node --listen 127.0.0.1:$TALLY_PORT --data-dir "$WORK/tally" --durability periodic
wait_port $REDIS_PORT; wait_port $TALLY_PORT

redis_row() {  # redis_row PIPELINE -> "ops_per_s p50_ms p99_ms"
  local n=$((DURATION * 60000 * $1))
  cli redis-benchmark -p $REDIS_PORT -t incr -c 50 -n "$n" -r 100000 -P "$1" --csv 2>/dev/null \
    | awk -F, '/INCR/ {gsub(/"/,""); print $2, $5, $7}'
}
tally_row() {  # tally_row BATCH -> "increments_per_s p50_ms p99_ms"
  cli target/release/tally --addr 127.0.0.1:$TALLY_PORT bench --concurrency 50 --batch "$1" --keys 100000 \
      --zipf 0 --duration "$DURATION" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["increments_per_s"], r["p50_us"]/1000, r["p99_us"]/1000)'
}

printf '%-34s %14s %10s %10s\n' "workload (50 connections)" "increments/s" "p50 ms" "p99 ms"
for run in $(seq 1 "$RUNS"); do
  for b in 1 16; do
    read -r t_ops t_p50 t_p99 <<<"$(tally_row $b)"
    read -r r_ops r_p50 r_p99 <<<"$(redis_row $b)"
    printf '%-34s %14.0f %10.3f %10.3f\n' "tally batch $b" "$t_ops" "$t_p50" "$t_p99"
    printf '%-34s %14.0f %10.3f %10.3f\n' "redis INCR pipeline $b (AOF everysec)" "$r_ops" "$r_p50" "$r_p99"
    python3 -c "print(f'{\"ratio tally/redis\":<34} {$t_ops/$r_ops:>13.2f}x {$t_p50/$r_p50:>9.2f}x {$t_p99/$r_p99:>9.2f}x')"
  done
done
