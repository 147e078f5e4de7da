#!/usr/bin/env bash
# Distinct-count figures on a fresh 3-node cluster (RF 3, QUORUM), each
# beside its counter peer in the same run:
#   1. a 7-day unique-viewers read (per day, and the union), unloaded, one
#      client, against a 7-day stats read of a counter;
#   2. the bytes of a cold key's total cell: a sketch of one member
#      against a counter of one shard.
# (Adds per second against increments: bench/ab.sh with BENCH_ARGS.)
#
#   bench/distinct.sh BIN_DIR
set -euo pipefail
BIN=$1
NODE_ARGS='--set namespaces.viewers=distinct,minute:7d,hour:90d,day:forever,total'
. "$(dirname "$0")/cluster.sh"
start_cluster
A=127.0.0.1:7481,127.0.0.1:7482,127.0.0.1:7483
KEYS=1000
echo "== 7 days of viewers and views of $KEYS videos (Zipf 0.99), 10 s each"
"$BIN/tally" --addr $A bench --json --duration 10 --concurrency 32 --batch 100 --keys $KEYS \
  --zipf 0.99 --spread-days 7 --distinct --ns viewers --members 200000 >/dev/null
"$BIN/tally" --addr $A bench --json --duration 10 --concurrency 32 --batch 100 --keys $KEYS \
  --zipf 0.99 --spread-days 7 >/dev/null
read_row() {
  taskset -c 0 "$BIN/tally" --addr $A bench --json --duration 8 --concurrency 1 --keys $KEYS \
    --zipf 0 --read-ratio 1 --stats-days 7 "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("reads/s %.0f  p50 %.2f ms  p99 %.2f ms  failed %d" % (r["requests_per_s"], r["p50_us"]/1000, r["p99_us"]/1000, r["failed"]))'
}
echo "== one client, QUORUM, A,B,B,A"
for kind in distinct stats stats distinct; do
  if [ $kind = distinct ]; then
    echo -n "7-day distinct (per day + union): "; read_row --read distinct --ns viewers
  else
    echo -n "7-day counter stats:              "; read_row --read stats --ns events
  fi
done
echo "== a cold key: one member, one increment"
"$BIN/tally" --addr $A add cold:1 someone --ns viewers >/dev/null
"$BIN/tally" --addr $A incr cold:1 >/dev/null
for ns in viewers events; do
  "$BIN/tally" --addr $A --json get cold:1 --ns $ns --replicas |
    python3 -c 'import json,sys; v=json.load(sys.stdin); print(sys.argv[1], "total cell bytes per replica:", [r["bytes"] for r in v])' "$ns"
done
