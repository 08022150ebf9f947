#!/usr/bin/env bash
# The status page in a real browser: two daemons on loopback share a folder, one serves --http;
# a file written on the other syncs; headless Chromium loads the page, dumps the DOM it rendered
# and takes a screenshot, and the DOM is checked for the folder, its state, the peer and the
# change. Installs Debian's chromium when it is missing (needs root then).
#   SYNCD_BIN=.build/debug/syncd bash scripts/status_page_test.sh     # screenshot: $OUT/status.png
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${SYNCD_BIN:-$(swift build --show-bin-path)/syncd}"
OUT="${OUT:-$(mktemp -d /tmp/syncd-page-XXXXXX)}"
started=$(date +%s)

CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$CHROMIUM" ]; then
    echo "installing chromium (Debian)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    CHROMIUM="$(command -v chromium)"
fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- DOM:"; cat "$OUT/dom.html" 2>/dev/null | head -80 || true; echo "--- logs:"; tail -20 "$OUT"/a.log "$OUT"/b.log; exit 1; }

mkdir -p "$OUT/a" "$OUT/b"
"$BIN" daemon --home "$OUT/a/home" --listen 127.0.0.1:0 --no-lan-beacon --http 127.0.0.1:0 >"$OUT/a.log" 2>&1 & pids+=($!)
A=(env SYNCD_HOME="$OUT/a/home" "$BIN")
up() { for _ in $(seq 300); do "$@" status >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
up "${A[@]}" || fail "daemon a did not start"
seed=$("${A[@]}" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])')
http=$("${A[@]}" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["http"])')
"$BIN" daemon --home "$OUT/b/home" --listen 127.0.0.1:0 --no-lan-beacon --join "$seed" >"$OUT/b.log" 2>&1 & pids+=($!)
B=(env SYNCD_HOME="$OUT/b/home" "$BIN")
up "${B[@]}" || fail "daemon b did not start"

secret=$("${A[@]}" add "$OUT/a/data" --secret | tail -1 | awk '{print $NF}')
"${B[@]}" add "$OUT/b/data" --secret "$secret" >/dev/null
echo "page test: synced from b" > "$OUT/b/data/from-b.txt"
"${A[@]}" wait "$OUT/a/data" --timeout 60 || fail "a never got b's file"
[ "$(cat "$OUT/a/data/from-b.txt")" = "page test: synced from b" ] || fail "a holds other bytes"
b_device=$("${B[@]}" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["device"])')

chrome=("$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
        --user-data-dir="$OUT/chromium-profile" --virtual-time-budget=2000)
"${chrome[@]}" --dump-dom "http://$http/" >"$OUT/dom.html" 2>"$OUT/chromium.log" || fail "chromium --dump-dom failed: $(tail -5 "$OUT/chromium.log")"
"${chrome[@]}" --window-size=1280,900 --screenshot="$OUT/status.png" "http://$http/" >>"$OUT/chromium.log" 2>&1 || fail "chromium --screenshot failed"
[ -s "$OUT/status.png" ] || fail "no screenshot"

# The rendered DOM (after the browser parsed it), checked with Python's HTML parser.
python3 - "$OUT/dom.html" "$OUT/a/data" "$b_device" <<'PY' || fail "the DOM does not show the synced folder"
import sys
from html.parser import HTMLParser
dom, folder, device = sys.argv[1], sys.argv[2], sys.argv[3]

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.peers, self.changes, self.stack, self.text = [], [], [], [], {}
        self.scripts = 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script": self.scripts += 1
        if tag == "tr" and "data-folder" in a and "data-state" in a: self.rows.append(a)
        if tag == "tr" and "data-device" in a: self.peers.append(a)
        if tag in ("ul", "table") and "id" in a: self.stack.append(a["id"])
        if tag == "li" and self.stack and self.stack[-1] == "changes": self.changes.append("")
    def handle_endtag(self, tag):
        if tag in ("ul", "table") and self.stack: self.stack.pop()
    def handle_data(self, data):
        if self.stack and self.stack[-1] == "changes" and self.changes: self.changes[-1] += data

p = Page()
p.feed(open(dom, encoding="utf-8").read())
checks = [
    (p.scripts == 0, "no script on the page"),
    (any(r["data-folder"] == folder for r in p.rows), f"a row for {folder}: {p.rows}"),
    (any(r["data-folder"] == folder and r["data-state"] == "in sync" for r in p.rows), f"{folder} is in sync: {p.rows}"),
    (any(r["data-device"] == device and r.get("data-connected") == "true" for r in p.peers), f"peer {device} connected: {p.peers}"),
    (any("from-b.txt" in c and "from " + device[:7] in c for c in p.changes), f"the change from b is listed: {p.changes}"),
]
bad = [what for ok, what in checks if not ok]
for what in bad: print("not found:", what)
sys.exit(1 if bad else 0)
PY
echo "status page test: passed in $(( $(date +%s) - started )) s (DOM $OUT/dom.html, screenshot $OUT/status.png)"
