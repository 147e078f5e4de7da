#!/usr/bin/env bash
# tally side by side with the peers a user would otherwise pick, in one run
# on this machine (DESIGN.md §15, bench/RESULTS.md):
#   1. single increments, 50 clients: tally 3 nodes RF=3 QUORUM vs Redis
#      1 primary + 2 replicas, INCRBY + WAIT 1 (W=2 of 3);
#   2. batched increments: tally client batches of 16 and the aggregating
#      producer vs Redis Cluster, 3 primaries, redis-benchmark INCR -P 16;
#   2b. the HTTP/JSON API: batches of 100 as JSON to one node's
#      /v1/increments vs the binary protocol's batches of 100;
#   2c. security: single and batched increments and QUORUM reads with
#      TLS, tokens and the cluster secret on, against plaintext;
#   2d. the same job: an event's four rollups with retention, replicated,
#      W=2, on Redis (MULTI/EXEC + WAIT 1) and on tally, batches of 1, 16
#      and 256 and the producer, with and without fsync;
#   3. durable increments: tally `--durability sync` (group commit) vs
#      Redis 1+2 with appendfsync always + WAIT 1;
#   4. reads at QUORUM: total and 30-day stats, p50/p99, 1 and 50 clients,
#      with Redis GET from the primary for context;
#   5. the storage engine alone vs RocksDB's merge operator (the engine
#      bench in its own target dir ROCKS_TARGET; the first run compiles
#      RocksDB, 25-60 min on 2 cores; ENGINE=0 skips it; ENGINE_FEATURES=
#      bench-rocksdb,bench-fjall adds fjall).
# Method (../shared/bench/peers/README.md): every server on CPU 1, the load
# generators on CPU 0, both in the real-time class when allowed; loopback
# only; every process started here is stopped by pid. Each row prints
# throughput, p50/p99 and the servers' CPU per operation; ratio rows are
# tally / peer from the same run. Rows ending `_1cell` use the namespace
# `totals` (one all-time counter per increment, as Redis's INCR keeps)
# instead of the default's four rollups.
#
#   bash bench/run.sh                 # DURATION=6, ~4 min plus the engine
#   DURATION=10 ENGINE=0 bash bench/run.sh
#   ONLY='single|durable' bash bench/run.sh    # a subset of the workloads
#   TALLY_BIN=/tmp/old-bin ONLY=durable ENGINE=0 bash bench/run.sh  # another build
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-6}"
ENGINE="${ENGINE:-1}"
ONLY="${ONLY:-}"
PEERS="${PEERS:-../shared/bench/peers}"
OUT="${OUT:-/tmp/tally-bench-$(date -u +%Y%m%dT%H%M%S).txt}"
WORK="$(mktemp -d /tmp/tally-bench.XXXXXX)"
SERVERS=()

stop_servers() {
  local p
  for p in "${SERVERS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${SERVERS[@]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  SERVERS=()
}
cleanup() { stop_servers; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

PRIO="chrt -r 10"; $PRIO true 2>/dev/null || PRIO=""
srv() { $PRIO taskset -c 1 "$@" & SERVERS+=("$!"); }
cli() { $PRIO taskset -c 0 "$@"; }
wanted() { [ -z "$ONLY" ] || [[ "$1" =~ $ONLY ]]; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }
# CPU seconds used so far by the running servers (utime + stime).
server_cpu() {
  local t=0 p
  for p in "${SERVERS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  python3 -c "print($t / $(getconf CLK_TCK))"
}
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# row NAME OPS_PER_S P50_MS P99_MS CPU_S OPS_TOTAL [NOTE]: one result line.
row() {
  python3 -c 'import sys; n,o,p50,p99,cpu,tot,note=sys.argv[1:8]; o=float(o); tot=float(tot)
print(f"{n}|{o:.0f}|{float(p50):.3f}|{float(p99):.3f}|{(float(cpu)*1e6/tot if tot>0 else 0):.1f}|{note}")' \
    "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" | tee -a "$OUT" >&2
}

# --- tools -------------------------------------------------------------------
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
export PEERS_TARGET="${PEERS_TARGET:-/tmp/peers-target}"
PEERLOAD="$PEERS_TARGET/release/peerload"
if [ ! -x "$PEERLOAD" ]; then
  command -v protoc >/dev/null || apt-get install -y -qq protobuf-compiler >/dev/null
  log "building peerload"
  CARGO_TARGET_DIR="$PEERS_TARGET" cargo build --release -q --manifest-path "$PEERS/loadgen/Cargo.toml"
fi
# TALLY_BIN=DIR runs the tally and tally-node binaries in DIR instead
# (A/B of two builds in one session). TALLY_SET="k=v k=v" passes each as
# `--set k=v` to every node (A/B of one setting, e.g. http.metrics=false).
NODE_SET=()
for kv in ${TALLY_SET:-}; do NODE_SET+=(--set "$kv"); done
# Extra flags for the nodes and for the CLI (section 2c sets them).
NODE_EXTRA=()
CLI_EXTRA=()
if [ -n "${TALLY_BIN:-}" ]; then
  BIN="$TALLY_BIN"
else
  log "building tally (release)"
  cargo build --release -q -p tally-node -p tally-cli
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi
: > "$OUT"
echo "# $(date -u +%FT%TZ) $(nproc) cores $(uname -r) duration=${DURATION}s set=${TALLY_SET:-none} commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)" | tee -a "$OUT" >&2

# --- peers -------------------------------------------------------------------
# redis_repl AOF_ARGS...: 1 primary + 2 replicas on 6481-6483.
redis_repl() {
  local p extra
  for p in 6481 6482 6483; do
    mkdir -p "$WORK/redis-$p"; rm -rf "${WORK:?}/redis-$p/"*
    extra=(); [ "$p" != 6481 ] && extra=(--replicaof 127.0.0.1 6481)
    srv redis-server --port "$p" --bind 127.0.0.1 --save '' --daemonize no --dir "$WORK/redis-$p" \
      --logfile "$WORK/redis-$p/redis.log" --repl-diskless-sync yes --repl-diskless-sync-delay 0 \
      "$@" "${extra[@]}"
    wait_port "$p"
  done
  for _ in $(seq 1 100); do [ "$(redis-cli -p 6481 info replication | grep -c 'state=online')" = 2 ] && break; sleep 0.1; done
}
# peer_incr NAME [peerload args]: INCRBY + WAIT 1 from 50 clients.
peer_incr() {
  local name=$1; shift
  peer_wait1 "$name" redis-incr "$@"
}
# peer_wait1 NAME MODE [peerload args]: MODE then WAIT 1 from 50 clients
# (redis-rollup: the same job as a tally increment, --batch events per
# round trip).
peer_wait1() {
  local name=$1 mode=$2 c0 c1 out; shift 2
  c0=$(server_cpu)
  out=$(cli "$PEERLOAD" "$mode" --addrs 127.0.0.1:6481 --clients 50 --wait 1 --wait-timeout 100 \
        --duration "$DURATION" --warmup 1 --keys 100000 "$@")
  c1=$(server_cpu)
  python3 - "$name" "$out" "$c0" "$c1" "$DURATION" <<'EOF' | tee -a "$OUT" >&2
import sys
name, out, c0, c1, d = sys.argv[1:6]
kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
ops = float(kv["ops_s"])
cpu = (float(c1) - float(c0)) * 1e6 / (ops * (float(d) + 1))  # +1: the warm-up second
print(f"{name}|{ops:.0f}|{float(kv['p50_us'])/1000:.3f}|{float(kv['p99_us'])/1000:.3f}|{cpu:.1f}|")
EOF
}
# peer_get NAME CLIENTS: GET from the primary.
peer_get() {
  local out
  out=$(cli "$PEERLOAD" redis-get --addrs 127.0.0.1:6481 --clients "$2" --duration "$DURATION" --warmup 1 --keys 10000)
  python3 - "$1" "$out" <<'EOF' | tee -a "$OUT" >&2
import sys
kv = dict(x.split("=", 1) for x in sys.argv[2].split() if "=" in x)
print(f"{sys.argv[1]}|{float(kv['ops_s']):.0f}|{float(kv['p50_us'])/1000:.3f}|{float(kv['p99_us'])/1000:.3f}|0|")
EOF
}

# --- tally -------------------------------------------------------------------
T=(7481 7482 7483)
SEEDS="127.0.0.1:${T[0]},127.0.0.1:${T[1]},127.0.0.1:${T[2]}"
# tally_cluster DURABILITY: 3 fresh nodes, RF=3, with the default namespace
# `events` (minute, hour, day, total: 4 cells per increment) and `totals`
# (one all-time cell per increment: the work of Redis's INCR, replicated).
tally_cluster() {
  local i members="1=127.0.0.1:${T[0]},2=127.0.0.1:${T[1]},3=127.0.0.1:${T[2]}"
  rm -rf "$WORK"/tally-*
  printf '[namespaces]\ntotals = "total"\n' >"$WORK/tally.toml"
  for i in 0 1 2; do
    RUST_LOG=warn srv "$BIN/tally-node" --config "$WORK/tally.toml" --listen "127.0.0.1:${T[$i]}" \
      --data-dir "$WORK/tally-$i" --host-id $((i + 1)) --members "$members" --durability "$1" \
      "${NODE_SET[@]}" "${NODE_EXTRA[@]}" 2>"$WORK/tally-$i.log"
  done
  for i in 0 1 2; do wait_port "${T[$i]}"; done
  for _ in $(seq 1 100); do
    up=$("$BIN/tally" "${CLI_EXTRA[@]}" --addr "127.0.0.1:${T[0]}" status --json | python3 -c 'import json,sys; print(sum(p["up"] for p in json.load(sys.stdin)["peers"]))')
    [ "$up" = 2 ] && break; sleep 0.1
  done
}
# tally_bench NAME [tally bench args]: one bench run against the cluster.
tally_bench() {
  local name=$1 c0 c1 out; shift
  c0=$(server_cpu)
  out=$(cli "$BIN/tally" "${CLI_EXTRA[@]}" --addr "$SEEDS" bench --duration "$DURATION" --json "$@")
  c1=$(server_cpu)
  python3 - "$name" "$out" "$c0" "$c1" "$DURATION" <<'EOF' | tee -a "$OUT" >&2
import json, sys
name, out, c0, c1, d = sys.argv[1:6]
r = json.loads(out)
reads = r.get("read") is not None
ops = r["requests_per_s"] if reads else r["increments_per_s"]
cpu = (float(c1) - float(c0)) * 1e6 / max(ops * float(d), 1)
bad = r["failed"] + r["indeterminate"]
note = f"{bad} not acknowledged" if bad else ""
if r.get("producer"):
    p = r["producer"]
    note += f" {p['events_added'] / max(p['sums_sent'], 1):.1f} events per sum"
p50, p99 = (r["p50_us"] / 1000, r["p99_us"] / 1000) if r["requests"] else (0, 0)
print(f"{name}|{ops:.0f}|{p50:.3f}|{p99:.3f}|{cpu:.1f}|{note.strip()}")
EOF
}

# --- 1. single increments ------------------------------------------------------
if wanted single; then
  log "1. single increments: Redis 1+2 INCRBY + WAIT 1, then tally RF=3 QUORUM"
  redis_repl --appendonly no
  peer_incr "single.redis"
  stop_servers
  tally_cluster periodic
  tally_bench "single.tally" --concurrency 50 --batch 1 --keys 100000 --zipf 0
  tally_bench "single.tally_1cell" --concurrency 50 --batch 1 --keys 100000 --zipf 0 --ns totals
  stop_servers
fi

# --- 2. batched increments -----------------------------------------------------
if wanted batched; then
  log "2. batched increments: Redis Cluster 3 primaries -P 16, then tally batches and the producer"
  CP=(6420 6421 6422)
  for p in "${CP[@]}"; do
    mkdir -p "$WORK/cluster-$p"
    srv redis-server --port "$p" --bind 127.0.0.1 --save '' --daemonize no --appendonly no \
      --cluster-enabled yes --cluster-config-file "$WORK/cluster-$p/nodes.conf" --dir "$WORK/cluster-$p" \
      --logfile "$WORK/cluster-$p/redis.log"
    wait_port "$p"
  done
  redis-cli --cluster create "${CP[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$WORK/cluster-create.log" 2>&1
  for _ in $(seq 1 100); do
    ok=0; for p in "${CP[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1)); done
    [ "$ok" = 3 ] && break; sleep 0.2
  done
  c0=$(server_cpu); t0=$(date +%s.%N)
  csv=$(cli timeout 120 redis-benchmark -h 127.0.0.1 -p 6420 --cluster -t incr -c 50 -n 3000000 -r 100000 -P 16 --csv 2>/dev/null | tail -1)
  t1=$(date +%s.%N); c1=$(server_cpu)
  python3 - "$csv" "$c0" "$c1" "$t0" "$t1" <<'EOF' | tee -a "$OUT" >&2
import sys
csv, c0, c1, t0, t1 = sys.argv[1:6]
f = [x.strip('"') for x in csv.split('","')]
ops = float(f[1])
n = ops * (float(t1) - float(t0))
print(f"batched.redis_cluster|{ops:.0f}|{float(f[4]):.3f}|{float(f[6]):.3f}|{(float(c1)-float(c0))*1e6/max(n,1):.1f}|")
EOF
  stop_servers
  tally_cluster periodic
  tally_bench "batched.tally_batch16" --concurrency 50 --batch 16 --keys 100000 --zipf 0
  tally_bench "batched.tally_batch16_1cell" --concurrency 50 --batch 16 --keys 100000 --zipf 0 --ns totals
  tally_bench "batched.tally_batch256" --concurrency 50 --batch 256 --keys 100000 --zipf 0
  tally_bench "batched.tally_producer_uniform" --concurrency 50 --producer --keys 100000 --zipf 0
  tally_bench "batched.tally_producer_zipf" --concurrency 50 --producer --keys 100000 --zipf 0.99
  stop_servers
fi

# --- 2d. the same job ---------------------------------------------------------------
# An event raises its minute, hour, day and total counters atomically, with
# retention on minute (7 d) and hour (90 d), replicated to 3 copies,
# acknowledged once 2 hold it (../shared/bench/peers/06_same_job.sh):
# Redis 1 primary + 2 replicas, MULTI (4 INCRBY, 2 EXPIRE) EXEC + WAIT 1,
# B events per round trip; tally 3 nodes RF 3 QUORUM, the default
# namespace, batches of B, and the aggregating producer. Without fsync
# (Redis AOF off, tally periodic) and with fsync before the ack (Redis
# appendfsync always, tally sync). Rows `same_<mode>_b<B>.<system>`.
if wanted same; then
  log "2d. the same job: Redis MULTI rollups + WAIT 1 against tally, batches of 1, 16, 256, the producer, with and without fsync"
  for mode in fast sync; do
    if [ "$mode" = fast ]; then aof=(--appendonly no); dur=periodic; else aof=(--appendonly yes --appendfsync always); dur=sync; fi
    for b in 1 16 256; do
      redis_repl "${aof[@]}"
      peer_wait1 "same_${mode}_b$b.redis" redis-rollup --batch "$b"
      stop_servers
    done
    tally_cluster "$dur"
    for b in 1 16 256; do
      tally_bench "same_${mode}_b$b.tally" --concurrency 50 --batch "$b" --keys 100000 --zipf 0
    done
    tally_bench "same_${mode}_b16.tally_producer_uniform" --concurrency 50 --producer --keys 100000 --zipf 0
    tally_bench "same_${mode}_b16.tally_producer_zipf" --concurrency 50 --producer --keys 100000 --zipf 0.99
    stop_servers
  done
fi

# --- 2b. the HTTP/JSON front ------------------------------------------------------
if wanted http; then
  log "2b. batches of 100 over HTTP/JSON to one node's API (as behind a load balancer) vs the binary protocol"
  tally_cluster periodic
  tally_bench "http.tally_binary_batch100" --concurrency 50 --batch 100 --keys 100000 --zipf 0
  tally_bench "http.tally_http_batch100" --concurrency 50 --batch 100 --keys 100000 --zipf 0 \
    --http "127.0.0.1:$((T[0] + 1000))"
  stop_servers
fi

# --- 2c. security: TLS, tokens and the cluster secret ----------------------------
if wanted secure; then
  log "2c. TLS on both ports and between nodes, tokens and the cluster secret, against plaintext (plain, secure, secure, plain)"
  SEC="$WORK/security"
  rm -rf "$SEC" && mkdir -p "$SEC"
  "$BIN/tally" secret >"$SEC/cluster.secret"
  "$BIN/tally" certs --dir "$SEC/certs" >/dev/null
  token_json=$("$BIN/tally" --json token create --role admin --name bench)
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["line"])' "$token_json" >"$SEC/tokens"
  token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$token_json")
  for pass in plain1 secure1 secure2 plain2; do
    if [[ $pass == secure* ]]; then
      NODE_EXTRA=(--cluster-secret-file "$SEC/cluster.secret" --tokens-file "$SEC/tokens"
        --tls-cert "$SEC/certs/node.pem" --tls-key "$SEC/certs/node-key.pem" --tls-ca "$SEC/certs/ca.pem")
      CLI_EXTRA=(--tls-ca "$SEC/certs/ca.pem" --token "$token")
    else
      NODE_EXTRA=()
      CLI_EXTRA=()
    fi
    name=${pass%[0-9]}
    tally_cluster periodic
    tally_bench "secure.${name}_single" --concurrency 50 --batch 1 --keys 100000 --zipf 0
    tally_bench "secure.${name}_batch16" --concurrency 50 --batch 16 --keys 100000 --zipf 0
    tally_bench "secure.${name}_total_50" --concurrency 50 --read-ratio 1 --read total --keys 100000 --zipf 0
    stop_servers
  done
  NODE_EXTRA=()
  CLI_EXTRA=()
fi

# --- 3. durable increments -----------------------------------------------------
if wanted durable; then
  log "3. durable increments: Redis 1+2 appendfsync always + WAIT 1, then tally sync"
  redis_repl --appendonly yes --appendfsync always
  peer_incr "durable.redis"
  stop_servers
  tally_cluster sync
  tally_bench "durable.tally" --concurrency 50 --batch 1 --keys 100000 --zipf 0
  tally_bench "durable.tally_batch16" --concurrency 50 --batch 16 --keys 100000 --zipf 0
  tally_bench "durable.tally_batch16_1cell" --concurrency 50 --batch 16 --keys 100000 --zipf 0 --ns totals
  stop_servers
fi

# --- 4. reads --------------------------------------------------------------------
if wanted reads; then
  log "4. reads: Redis GET, then tally total and 30-day stats at QUORUM"
  redis_repl --appendonly no
  cli "$PEERLOAD" redis-incr --addrs 127.0.0.1:6481 --clients 50 --duration 2 --keys 10000 >/dev/null
  peer_get "reads.redis_get_1" 1
  peer_get "reads.redis_get_50" 50
  stop_servers
  tally_cluster periodic
  # 10,000 keys with increments spread over 30 days: a stats read then
  # covers ~30 day buckets and the partial hours and minutes at its edges.
  # A fixed rate (800 batches of 64 a second, 205k increments), so that
  # two builds read the same stores whatever their write speed.
  cli "$BIN/tally" --addr "$SEEDS" bench --duration 4 --json --concurrency 50 --batch 64 --keys 10000 \
      --zipf 0 --spread-days 30 --rate 800 >/dev/null
  for c in 1 50; do
    tally_bench "reads.tally_total_$c" --concurrency "$c" --read-ratio 1 --read total --keys 10000 --zipf 0
    tally_bench "reads.tally_stats30d_$c" --concurrency "$c" --read-ratio 1 --read stats --stats-days 30 --keys 10000 --zipf 0
  done
  # A reader under load rather than at saturation: 50 clients offering
  # READ_RATE reads/s in all (closed loop at 50 clients saturates the
  # shared core, and then the queue, not a read, sets p99).
  tally_bench "reads.tally_total_at${READ_RATE:-5000}" --concurrency 50 --rate "${READ_RATE:-5000}" \
      --read-ratio 1 --read total --keys 10000 --zipf 0
  tally_bench "reads.tally_stats30d_at${READ_RATE:-5000}" --concurrency 50 --rate "${READ_RATE:-5000}" \
      --read-ratio 1 --read stats --stats-days 30 --keys 10000 --zipf 0
  stop_servers
fi

# --- 5. storage engine -----------------------------------------------------------
if wanted engine && [ "$ENGINE" = 1 ]; then
  log "5. storage engine vs RocksDB (merge operator) and fjall"
  command -v clang >/dev/null || dpkg -s libclang-dev >/dev/null 2>&1 || apt-get install -y -qq libclang-dev >/dev/null
  CARGO_TARGET_DIR="${ROCKS_TARGET:-/tmp/rocks-target}" TALLY_BENCH_SCALE="${ENGINE_SCALE:-0.5}" \
    cli cargo bench -q -p tally-storage --bench engine --features "${ENGINE_FEATURES:-bench-rocksdb}" 2>/dev/null \
    | tee "$WORK/engine.txt" >&2
  sed 's/^/engine: /' "$WORK/engine.txt" >>"$OUT"
fi

python3 bench/summarize.py "$OUT"
echo "results: $OUT" >&2
