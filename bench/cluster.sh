# Sourced by the bench scripts: a fresh 3-node cluster (RF 3, the default
# namespace) on CPU 1, with its nodes' CPU ticks, stopped on exit.
#
#   BIN=DIR; . bench/cluster.sh; start_cluster; ...; ticks
#
# DURABILITY=sync|periodic (default periodic); NODE_ARGS adds flags to
# every node (e.g. `--set namespaces.viewers=distinct,minute:7d,total`).
WORK=$(mktemp -d /tmp/tally-bench.XXXXXX)
PIDS=()
ADDRS=127.0.0.1:7481,127.0.0.1:7482,127.0.0.1:7483
stop_cluster() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
  rm -rf "$WORK"/n*
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT INT TERM
start_cluster() {
  local members="1=127.0.0.1:7481,2=127.0.0.1:7482,3=127.0.0.1:7483" i up
  for i in 0 1 2; do
    # shellcheck disable=SC2086
    RUST_LOG=warn taskset -c 1 "$BIN/tally-node" --listen "127.0.0.1:$((7481 + i))" \
      --data-dir "$WORK/n$i" --host-id $((i + 1)) --members "$members" \
      --durability "${DURABILITY:-periodic}" ${NODE_ARGS:-} 2>"$WORK/n$i.log" &
    PIDS+=($!)
  done
  for _ in $(seq 1 100); do
    up=$("$BIN/tally" --addr 127.0.0.1:7481 status --json 2>/dev/null |
      python3 -c 'import json,sys; print(sum(p["up"] for p in json.load(sys.stdin)["peers"]))' 2>/dev/null || true)
    [ "$up" = 2 ] && break
    sleep 0.2
  done
}
# CPU ticks used so far by the three nodes.
ticks() {
  local t=0 p
  for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
