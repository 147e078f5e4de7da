#!/usr/bin/env bash
# The console in a real browser: a live local 3-node cluster (Raft
# metadata, replication factor 3) under a workload, its page at `/` opened
# by headless Chromium, and the rendered page checked: 3 nodes up, the
# throughput chart drawn with data, a counter's series drawn, the trending
# panel listing the workload's hottest keys. Installs
# Debian's chromium when missing. Keeps a screenshot (console.png) in
# $ARTIFACT_DIR (default: artifacts/). Exit 0 when all holds.
#
#   bash tests/browser/console.sh               # debug build (built if missing)
#   TALLY_BIN=target/release bash tests/browser/console.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -q && apt-get install -y -q chromium
fi
BIN="${TALLY_BIN:-${CARGO_TARGET_DIR:-target}/debug}"
if [ ! -x "$BIN/tally-node" ] || [ ! -x "$BIN/tally" ]; then
  cargo build --workspace --bins
fi
ARTIFACTS="${ARTIFACT_DIR:-$PWD/artifacts}"
mkdir -p "$ARTIFACTS"

source tests/lib.sh
start_work tally-console
read -r -a P < <(free_ports 8)
NODES=("127.0.0.1:${P[0]}" "127.0.0.1:${P[1]}" "127.0.0.1:${P[2]}")
HTTP=("127.0.0.1:${P[3]}" "127.0.0.1:${P[4]}" "127.0.0.1:${P[5]}")
for i in 0 1 2; do
  if [ "$i" = 0 ]; then entry=(--init --replication-factor 3); else entry=(--seed "${NODES[0]}"); fi
  RUST_LOG=warn "$BIN/tally-node" "${entry[@]}" --listen "${NODES[$i]}" --http-listen "${HTTP[$i]}" \
    --data-dir "$WORK/node$i" --worker-threads 1 2>"$WORK/node$i.log" &
  PIDS+=("$!")
  for _ in $(seq 1 300); do curl -sf "http://${HTTP[$i]}/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://${HTTP[$i]}/readyz" >/dev/null || {
    echo "node $i never became ready" >&2; tail -5 "$WORK/node$i.log" >&2; exit 1; }
done
echo "== 3 nodes ready: ${NODES[*]}"

echo "== a workload: increments and reads for 30 s, and one counter to look up"
"$BIN/tally" --addr "${NODES[0]},${NODES[1]},${NODES[2]}" bench --duration 30 --rate 3000 \
  --concurrency 8 --batch 4 --read-ratio 0.3 >"$WORK/bench.log" 2>&1 &
PIDS+=("$!")
KEY="video:console/view"
for minutes in 40 25 10 3 0; do
  "$BIN/tally" --addr "${NODES[1]}" incr "$KEY" --delta $((minutes + 5)) --at "-${minutes}m" >/dev/null
done
sleep 3

URL="http://${HTTP[0]}/#ns=events&key=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$KEY")&res=minute&span=-1h"
CHROME=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage
  --window-size=1280,1150 --virtual-time-budget=12000)
echo "== headless Chromium renders $URL"
"${CHROME[@]}" --dump-dom "$URL" >"$WORK/dom.html" 2>"$WORK/chromium.log" || {
  tail -20 "$WORK/chromium.log" >&2; exit 1; }
"${CHROME[@]}" --screenshot="$ARTIFACTS/console.png" "$URL" >/dev/null 2>>"$WORK/chromium.log" || {
  tail -20 "$WORK/chromium.log" >&2; exit 1; }

python3 - "$WORK/dom.html" <<'PY'
import html.parser, sys

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.by_id, self.rows, self.trending = {}, [], []
        self.text, self.current = {}, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.by_id[a["id"]] = a
            self.current = a["id"]
        if tag == "tr" and "data-host" in a:
            self.rows.append(a)
        if tag == "tr" and "data-key" in a:
            self.trending.append(a["data-key"])
    def handle_data(self, data):
        if self.current:
            self.text[self.current] = self.text.get(self.current, "") + data
    def handle_endtag(self, tag):
        self.current = None

page = Page()
page.feed(open(sys.argv[1]).read())
failures = []
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)

up = page.by_id.get("nodes-up", {})
check(up.get("data-up") == "3" and up.get("data-total") == "3",
      f"the page shows 3 of 3 nodes up ({page.text.get('nodes-up', '').strip()!r})")
check(len(page.rows) == 3 and all(r.get("data-up") == "true" for r in page.rows),
      f"the node table has 3 rows, all up ({len(page.rows)} rows)")
rate = page.by_id.get("rate-chart", {})
check(int(rate.get("data-points", "0")) > 0 and float(rate.get("data-max", "0")) > 0,
      f"the throughput chart has data (points {rate.get('data-points')}, max {rate.get('data-max')}/s)")
series = page.by_id.get("series-chart", {})
check(int(series.get("data-points", "0")) >= 5,
      f"the counter's per-minute chart has its 5 buckets (points {series.get('data-points')})")
check("total 103 (5 events)" in page.text.get("lookup-total", ""),
      f"the lookup shows the counter's total ({page.text.get('lookup-total', '').strip()!r})")
trending = page.by_id.get("trending-rows", {})
check(int(trending.get("data-keys", "0")) == 10 and page.trending[:1] == ["video:0/view"],
      f"the trending panel lists 10 keys, the workload's hottest first ({trending.get('data-keys')} keys: {page.trending[:3]}...)")
check(not page.text.get("cluster-error", "").strip(), "no error on the page")
check(not page.text.get("trending-error", "").strip(),
      f"no trending error ({page.text.get('trending-error', '').strip()!r})")
sys.exit(1 if failures else 0)
PY
echo "== a node that checks tokens: the page asks for one and shows no data without it"
"$BIN/tally" --json token create --role read | python3 -c 'import json,sys; print(json.load(sys.stdin)["line"])' >"$WORK/tokens"
RUST_LOG=warn "$BIN/tally-node" --listen "127.0.0.1:${P[6]}" --http-listen "127.0.0.1:${P[7]}" \
  --tokens-file "$WORK/tokens" --data-dir "$WORK/guarded" --worker-threads 1 2>"$WORK/guarded.log" &
PIDS+=("$!")
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${P[7]}/readyz" >/dev/null && break; sleep 0.1; done
"${CHROME[@]}" --dump-dom "http://127.0.0.1:${P[7]}/" >"$WORK/guarded.html" 2>>"$WORK/chromium.log"
python3 - "$WORK/guarded.html" <<'PY'
import re, sys
page = open(sys.argv[1]).read()
form = re.search(r'<form id="token-form"[^>]*>', page)
shown = form is not None and "hidden" not in form.group(0)
error = re.search(r'id="cluster-error"[^>]*>([^<]*)<', page)
refused = error is not None and "API token" in error.group(1)
print(("ok   " if shown else "FAIL ") + "the page asks for a token")
print(("ok   " if refused else "FAIL ") + f"it says why it shows nothing ({error.group(1) if error else ''!r})")
sys.exit(0 if shown and refused else 1)
PY

echo "ok: the console shows the live cluster; screenshot: $ARTIFACTS/console.png"
