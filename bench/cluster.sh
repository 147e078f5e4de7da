#!/usr/bin/env bash
# tally 3 nodes (replication factor 3, QUORUM) vs Redis 1 primary + 2
# replicas (INCRBY + WAIT 1, i.e. W=2 of 3) on this machine, in the same
# run: 50 concurrent clients sending single increments, then batches of 16.
# All servers are pinned to CPU 1 and the load generators to CPU 0, both in
# the real-time class when allowed (the method of
# ../shared/bench/peers/README.md). Loopback only; every server is stopped
# by pid. Prints throughput, p50/p99 and server CPU per increment, and the
# tally/Redis ratios.
#
#   bash bench/cluster.sh               # DURATION=6 RUNS=1
#   RUNS=3 DURATION=8 bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-6}"
RUNS="${RUNS:-1}"
PEERS="${PEERS:-../shared/bench/peers}"
TALLY_DURABILITY="${TALLY_DURABILITY:-periodic}"
WORK="$(mktemp -d /tmp/tally-bench.XXXXXX)"
TALLY_PIDS=()
REDIS_PIDS=()
cleanup() {
  for p in "${TALLY_PIDS[@]:-}" "${REDIS_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${TALLY_PIDS[@]:-}" "${REDIS_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PRIO="chrt -r 10"; $PRIO true 2>/dev/null || PRIO=""
cli() { $PRIO taskset -c 0 "$@"; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }
# CPU seconds used so far by the given pids (utime + stime).
cpu_s() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "scale=3; $t / $(getconf CLK_TCK)" | bc; }

command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null
export PEERS_TARGET="${PEERS_TARGET:-/tmp/peers-target}"
PEERLOAD="$PEERS_TARGET/release/peerload"
if [ ! -x "$PEERLOAD" ]; then
  command -v protoc >/dev/null || apt-get install -y -qq protobuf-compiler >/dev/null
  CARGO_TARGET_DIR="$PEERS_TARGET" cargo build --release -q --manifest-path "$PEERS/loadgen/Cargo.toml"
fi
cargo build --release -p tally-node -p tally-client -q
TARGET="${CARGO_TARGET_DIR:-target}/release"

# Redis: 1 primary + 2 replicas, no persistence (the anchor of DESIGN.md §15).
R0=6481; R1=6482; R2=6483
for p in $R0 $R1 $R2; do
  mkdir -p "$WORK/redis-$p"
  extra=(); [ "$p" != "$R0" ] && extra=(--replicaof 127.0.0.1 "$R0")
  $PRIO taskset -c 1 redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      --dir "$WORK/redis-$p" --logfile "$WORK/redis-$p/redis.log" --repl-diskless-sync yes \
      --repl-diskless-sync-delay 0 "${extra[@]}" &
  REDIS_PIDS+=("$!"); wait_port "$p"
done
for _ in $(seq 1 100); do [ "$(redis-cli -p $R0 info replication | grep -c 'state=online')" = 2 ] && break; sleep 0.1; done

# tally: 3 nodes, replication factor 3.
T=(7481 7482 7483)
MEMBERS="1=127.0.0.1:${T[0]},2=127.0.0.1:${T[1]},3=127.0.0.1:${T[2]}"
for i in 0 1 2; do
  RUST_LOG=warn $PRIO taskset -c 1 "$TARGET/tally-node" --listen "127.0.0.1:${T[$i]}" --data-dir "$WORK/tally-$i" \
      --host-id $((i + 1)) --members "$MEMBERS" --durability "$TALLY_DURABILITY" 2>"$WORK/tally-$i.log" &
  TALLY_PIDS+=("$!")
done
for p in "${T[@]}"; do wait_port "$p"; done
SEEDS="127.0.0.1:${T[0]},127.0.0.1:${T[1]},127.0.0.1:${T[2]}"
for _ in $(seq 1 100); do
  up=$("$TARGET/tally" --addr "127.0.0.1:${T[0]}" status --json | python3 -c 'import json,sys; print(sum(p["up"] for p in json.load(sys.stdin)["peers"]))')
  [ "$up" = 2 ] && break; sleep 0.1
done

tally_row() {  # tally_row BATCH -> "increments_per_s p50_ms p99_ms cpu_us_per_increment"
  local c0 c1 out
  c0=$(cpu_s "${TALLY_PIDS[@]}")
  out=$(cli "$TARGET/tally" --addr "$SEEDS" bench --concurrency 50 --batch "$1" --keys 100000 \
      --zipf 0 --duration "$DURATION" --json)
  c1=$(cpu_s "${TALLY_PIDS[@]}")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); cpu=float(sys.argv[2]); n=r["increments_per_s"]*float(sys.argv[3]);
print(r["increments_per_s"], r["p50_us"]/1000, r["p99_us"]/1000, cpu*1e6/max(n,1), r["failed"]+r["indeterminate"])' "$out" "$(echo "$c1 - $c0" | bc)" "$DURATION"
}
redis_row() {  # redis_row -> "ops_per_s p50_ms p99_ms cpu_us_per_increment"
  local c0 c1 out
  c0=$(cpu_s "${REDIS_PIDS[@]}")
  out=$(cli "$PEERLOAD" redis-incr --addrs "127.0.0.1:$R0" --clients 50 --wait 1 --wait-timeout 100 \
      --duration "$DURATION" --warmup 1 --keys 100000)
  c1=$(cpu_s "${REDIS_PIDS[@]}")
  python3 -c 'import sys; kv=dict(x.split("=",1) for x in sys.argv[1].split() if "=" in x); cpu=float(sys.argv[2]);
ops=float(kv["ops_s"]); n=ops*(float(sys.argv[3])+1); print(ops, float(kv["p50_us"])/1000, float(kv["p99_us"])/1000, cpu*1e6/max(n,1))' \
      "$out" "$(echo "$c1 - $c0" | bc)" "$DURATION"
}

echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F); tally durability $TALLY_DURABILITY; ${DURATION}s per row"
printf '%-44s %12s %8s %8s %14s\n' "workload (50 clients, 100k keys)" "incr/s" "p50 ms" "p99 ms" "CPU us/incr"
for run in $(seq 1 "$RUNS"); do
  read -r r_ops r_p50 r_p99 r_cpu <<<"$(redis_row)"
  read -r s_ops s_p50 s_p99 s_cpu s_bad <<<"$(tally_row 1)"
  read -r b_ops b_p50 b_p99 b_cpu b_bad <<<"$(tally_row 16)"
  printf '%-44s %12.0f %8.3f %8.3f %14.1f\n' "redis 1+2 replicas, INCRBY + WAIT 1" "$r_ops" "$r_p50" "$r_p99" "$r_cpu"
  printf '%-44s %12.0f %8.3f %8.3f %14.1f\n' "tally 3 nodes RF=3 QUORUM, single" "$s_ops" "$s_p50" "$s_p99" "$s_cpu"
  printf '%-44s %12.0f %8.3f %8.3f %14.1f\n' "tally 3 nodes RF=3 QUORUM, batch 16" "$b_ops" "$b_p50" "$b_p99" "$b_cpu"
  python3 -c "
r=($r_ops,$r_p50,$r_p99,$r_cpu)
for name,t in (('single',($s_ops,$s_p50,$s_p99,$s_cpu)),('batch 16',($b_ops,$b_p50,$b_p99,$b_cpu))):
    print(f'{\"ratio tally \"+name+\" / redis\":<44} {t[0]/r[0]:>11.2f}x {t[1]/r[1]:>7.2f}x {t[2]/r[2]:>7.2f}x {t[3]/r[3]:>13.2f}x')
"
  [ "$s_bad$b_bad" = 00 ] || echo "  tally: $s_bad (single) and $b_bad (batch) increments not acknowledged"
done
