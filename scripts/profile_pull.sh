#!/usr/bin/env bash
# Profiles one initial pull between two daemons on tmpfs (issue 13, "measure before changing"):
# A indexes SIZE MiB of random data first; then perf records both daemons (call graphs) while B
# adds the folder and pulls it all. Prints the transfer's seconds and MB/s, then perf's top
# symbols per thread kind. usage: scripts/profile_pull.sh SYNCD_BIN [SIZE_MIB=1024] [OUT=/tmp/pull.perf]
set -euo pipefail
BIN=$(realpath "$1"); SIZE=${2:-1024}; OUT=${3:-/tmp/pull.perf}
W=/dev/shm/profile-pull; rm -rf "$W"; mkdir -p "$W"/{ha,hb,a,b}
P=$((20000 + RANDOM % 5000))
for k in 0 1 2 3; do head -c $((SIZE / 4))M /dev/urandom > "$W/a/big$k.bin"; done
"$BIN" daemon --home "$W/ha" --listen 127.0.0.1:$P >"$W/a.log" 2>&1 & PA=$!
"$BIN" daemon --home "$W/hb" --listen 127.0.0.1:$((P + 1)) --join 127.0.0.1:$P >"$W/b.log" 2>&1 & PB=$!
trap 'kill $PA $PB 2>/dev/null || true' EXIT
for h in ha hb; do for _ in $(seq 100); do "$BIN" status --home "$W/$h" >/dev/null 2>&1 && break; sleep 0.1; done; done
SECRET=$("$BIN" add --home "$W/ha" "$W/a" --secret | awk '{print $NF}' | tail -1)
for _ in $(seq 600); do "$BIN" status --home "$W/ha" --json | grep -q '"localFiles":4' && break; sleep 0.1; done
perf record -F 1999 -g -p "$PA,$PB" -o "$OUT" >/dev/null 2>&1 & PERF=$!
sleep 0.5
T0=$(date +%s.%N)
"$BIN" add --home "$W/hb" "$W/b" --secret "$SECRET" >/dev/null
for _ in $(seq 6000); do
    [ "$(du -sb "$W/b" --exclude=.syncd | cut -f1)" -ge $((SIZE << 20)) ] && cmp -s "$W/a/big3.bin" "$W/b/big3.bin" && break
    sleep 0.02
done
T1=$(date +%s.%N)
kill -INT $PERF; wait $PERF || true
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print('pull: %d MiB in %.2f s = %.1f MB/s' % (int(sys.argv[3]), s, int(sys.argv[3])*1.048576/s))" "$T0" "$T1" "$SIZE"
perf report -i "$OUT" --sort comm,dso --no-children --stdio -g none 2>/dev/null | grep '%' | head -25
perf report -i "$OUT" --sort dso,sym --no-children --stdio -g none 2>/dev/null | grep '%' | head -40 | swift demangle --simplified | cut -c1-140
