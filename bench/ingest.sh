#!/usr/bin/env bash
# Exactly-once ingestion against the plain path, on the same file and a
# fresh cluster each run (bench/RESULTS.md, "Ingestion"):
#
#   bench/ingest.sh BIN_DIR [EVENTS]
#
# Writes EVENTS (default 2,000,000) video-view events as JSON lines, as a
# log holds them: keys Zipf 0.99 over 100,000 videos, timestamps rising
# over the last 10 minutes.
# Then, in the order ingest, replay, replay, ingest, each on a fresh
# 3-node cluster (RF 3, QUORUM, the default namespace; nodes on CPU 1,
# the client on CPU 0):
#   ingest: `tally ingest FILE` (sums per range of 500,000 events, op ids,
#           spool and checkpoint fsynced per range);
#   replay: `tally bench --replay FILE --batch 500` (one increment per
#           event, batches of 500, no op ids, nothing on the client's disk).
# Prints events/s end to end and CPU per event (the servers', the
# client's). INGEST_ARGS adds flags to `tally ingest` (--chunk-events N).
set -euo pipefail
BIN=$1
EVENTS=${2:-2000000}
. "$(dirname "$0")/cluster.sh"
FILE="$WORK/views.jsonl"
python3 - "$FILE" "$EVENTS" <<'PY'
import bisect, itertools, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
keys = 100_000
cdf = list(itertools.accumulate(k ** -0.99 for k in range(1, keys + 1)))
now = int(time.time() * 1000)
span = 10 * 60_000
with open(path, "w") as f:
    for i in range(n):
        rank = bisect.bisect_left(cdf, rng.random() * cdf[-1])
        f.write('{"key":"video:%d/view","ts":%d}\n' % (rank, now - span + i * span // n))
PY
row() {
  local what=$1 out t0 t1 started ended
  start_cluster
  t0=$(ticks)
  started=$(date +%s.%N)
  if [ "$what" = ingest ]; then
    # shellcheck disable=SC2086
    out=$(/usr/bin/time -f %U,%S -o "$WORK/client-cpu" taskset -c 0 "$BIN/tally" --addr "$ADDRS" \
      --json ingest "$FILE" --state-dir "$WORK/state" ${INGEST_ARGS:-})
    rm -rf "$WORK/state"
  else
    out=$(/usr/bin/time -f %U,%S -o "$WORK/client-cpu" taskset -c 0 "$BIN/tally" --addr "$ADDRS" \
      --json bench --replay "$FILE" --batch 500 --concurrency 8)
  fi
  ended=$(date +%s.%N)
  t1=$(ticks)
  stop_cluster
  python3 - "$what" "$out" "$started" "$ended" "$t0" "$t1" "$(getconf CLK_TCK)" "$(tail -1 "$WORK/client-cpu")" <<'PY'
import json, sys
what, out = sys.argv[1], json.loads(sys.argv[2])
started, ended, t0, t1, hz = (float(x) for x in sys.argv[3:8])
client_cpu = sum(float(x) for x in sys.argv[8].split(","))
secs = ended - started
if what == "ingest":
    d = out["report"]["delivered"]
    events, sums, bad = out["events_read"], out["report"]["sums_committed"], d["events_failed"] + d["events_expired"]
else:
    events, sums, bad = out["acknowledged"], out["acknowledged"], out["failed"] + out["indeterminate"]
cpu = (t1 - t0) / hz * 1e6 / max(events, 1)
ccpu = client_cpu * 1e6 / max(events, 1)
print(f"{what:<7} events/s {events / secs:>9.0f}  increments sent {sums:>9}  CPU/event: servers {cpu:4.1f} us, client {ccpu:4.1f} us  not acknowledged {bad}")
PY
}
for what in ingest replay replay ingest; do row "$what"; done
