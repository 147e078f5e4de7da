#!/usr/bin/env bash
# One write row on a fresh 3-node cluster, for A/B runs of two builds
# (A,B,B,A: the machine drifts between runs; bench/RESULTS.md).
#
#   bench/ab.sh BIN_DIR BATCH [SECONDS]
#
# BIN_DIR holds the `tally` and `tally-node` to run (copy a release build
# there). Three nodes, RF 3, QUORUM, the default namespace (four rollups),
# on CPU 1; `tally bench` with 50 clients, uniform keys over 100,000, on
# CPU 0. Prints events/s, p99 and the servers' CPU per event (summed over
# the three nodes). Environment: DURABILITY=sync (default periodic);
# PERF=1 records a profile of the three nodes to /tmp/perf.data
# (PERF_ARGS, default `-F 2000 -g`); BENCH_ARGS adds `tally bench` flags;
# NODE_ARGS adds node flags; ZIPF skews the keys (default 0: uniform).
# Distinct adds against increments:
#
#   NODE_ARGS='--set namespaces.viewers=distinct,minute:7d,hour:90d,day:forever,total' \
#     BENCH_ARGS='--distinct --ns viewers' bench/ab.sh $b 16
#
#   for b in /tmp/a /tmp/b /tmp/b /tmp/a; do bench/ab.sh $b 16; done
set -euo pipefail
BIN=$1
BATCH=$2
SECONDS_RUN=${3:-6}
. "$(dirname "$0")/cluster.sh"
start_cluster
PERF_PID=
if [ "${PERF:-0}" = 1 ]; then
  # shellcheck disable=SC2086
  (sleep 2; perf record ${PERF_ARGS:--F 2000 -g} -o /tmp/perf.data -p "$(IFS=,; echo "${PIDS[*]}")" \
    -- sleep $((SECONDS_RUN - 3)) >/dev/null 2>&1) &
  PERF_PID=$!
fi
t0=$(ticks)
# shellcheck disable=SC2086
out=$(taskset -c 0 "$BIN/tally" --addr 127.0.0.1:7481,127.0.0.1:7482,127.0.0.1:7483 bench \
  --duration "$SECONDS_RUN" --json --concurrency 50 --batch "$BATCH" --keys 100000 --zipf "${ZIPF:-0}" ${BENCH_ARGS:-})
t1=$(ticks)
[ -n "$PERF_PID" ] && wait "$PERF_PID"
python3 - "$out" "$t0" "$t1" "$SECONDS_RUN" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
t0, t1, secs, hz = (float(x) for x in sys.argv[2:6])
ops = r["increments_per_s"]
cpu_us = (t1 - t0) / hz * 1e6 / max(ops * secs, 1)
bad = r["failed"] + r["indeterminate"]
print(f"events/s {ops:.0f}  p99 {r['p99_us'] / 1000:.2f} ms  server CPU/event {cpu_us:.1f} us  not acknowledged {bad}")
PY
