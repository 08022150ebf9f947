#!/usr/bin/env bash
# Failed apply: a path the receiver cannot write must hold `syncd wait` back (on both sides) until
# it is applied, must not block other files, and must arrive once it can be written.
#
#   bash scripts/failed_apply.sh        (root; HOLD=10 seconds blocked; SYNCD_BIN=...)
#
# A and B on loopback share a folder with docs/seed.txt. On B, `chattr +i docs` (no one, not even
# root, can create in it). A writes docs/x.txt, then later.txt. For HOLD seconds `syncd wait
# --timeout 1` is run over and over on A and on B: an exit 0 while B has no docs/x.txt is a false
# "in sync". Then `chattr -i docs` and x.txt must arrive on B (within 60 s) and the trees converge.
# Where `chattr +i` does not work on the work directory's file system (FAILED_APPLY_MODE=owner to
# force it), both daemons run as nobody (setpriv) and B's docs is owned by root, mode 0755, instead.
# Exit: 0 pass, 1 a false "in sync", x.txt or later.txt never arrived, or trees differ; 2 setup.
source "$(dirname "$0")/scenario_lib.sh"
need_pkgs chattr:e2fsprogs setpriv:util-linux
resolve_bin
[ "$(id -u)" -eq 0 ] || { echo "needs root (chattr / setpriv)" >&2; exit 2; }
HOLD=${HOLD:-10}
work=$(mktemp -d /tmp/syncd-failedapply.XXXXXX)

mode=${FAILED_APPLY_MODE:-}
if [ -z "$mode" ]; then
    mkdir "$work/probe"; mode=owner
    chattr +i "$work/probe" 2>/dev/null && ! touch "$work/probe/x" 2>/dev/null && mode=chattr
    chattr -i "$work/probe" 2>/dev/null; rm -rf "$work/probe"
fi
if [ "$mode" = owner ]; then
    # The daemons and their clients run as nobody; the work directory must be reachable for them.
    chmod 0755 "$work"; SYNCD_RUN_AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    [ -x "$SYNCD_BIN" ] && setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$SYNCD_BIN" \
        || { echo "nobody cannot run $SYNCD_BIN (copy it somewhere world-readable, SYNCD_BIN=...)" >&2; exit 2; }
    block() { chown root:root "$dir_b/docs"; chmod 0755 "$dir_b/docs"; }
    unblock() { chown 65534:65534 "$dir_b/docs"; }
else
    block() { chattr +i "$dir_b/docs"; }
    unblock() { chattr -i "$dir_b/docs"; }
fi
port=$(pick_port)
new_peer a "127.0.0.1:$port"; new_peer b "127.0.0.1:$((port + 1))"
mkdir -p "$dir_a" "$dir_b"
[ "$mode" = owner ] && chown -R 65534:65534 "$work"/*
start_peer a; start_peer b "$addr_a"
share a b
mkdir -p "$dir_a/docs"; echo seed >"$dir_a/docs/seed.txt"
[ "$mode" = owner ] && chown -R 65534:65534 "$dir_a/docs"
wait_peer a 60 && wait_peer b 60 && [ -f "$dir_b/docs/seed.txt" ] || { log "initial sync did not finish"; exit 2; }
log "mode $mode: blocking B's docs for $HOLD s"

block
echo "x from A" >"$dir_a/docs/x.txt"; sleep 1; echo "later from A" >"$dir_a/later.txt"
[ "$mode" = owner ] && chown 65534:65534 "$dir_a/docs/x.txt" "$dir_a/later.txt"
false_a=0 false_b=0 polls=0 later_at="" err_seen=""
end=$(($(date +%s) + HOLD)); t0=$(date +%s.%N)
while [ "$(date +%s)" -lt "$end" ]; do
    for n in a b; do
        if ctl "$n" wait "$(eval echo "\$dir_$n")" --timeout 1 >/dev/null 2>&1 && [ ! -e "$dir_b/docs/x.txt" ]; then
            if [ "$n" = a ]; then false_a=$((false_a + 1)); else false_b=$((false_b + 1)); fi
        fi
    done
    polls=$((polls + 1))
    [ -z "$later_at" ] && [ -e "$dir_b/later.txt" ] && later_at=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    [ -z "$err_seen" ] && err_seen=$(ctl b status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["folders"][0].get("pullError") or "")' 2>/dev/null || true)
done
[ -e "$dir_b/docs/x.txt" ] && log "x.txt is on B although docs was blocked (the block did not hold)"

unblock; t1=$(date +%s.%N); arrived=""
for _ in $(seq 600); do
    if [ "$(cat "$dir_b/docs/x.txt" 2>/dev/null)" = "x from A" ]; then arrived=$(python3 -c "print(round($(date +%s.%N) - $t1, 1))"); break; fi
    sleep 0.1
done
wait_peer a 30 || true; wait_peer b 30 || true
final=identical; same_trees "$dir_a" "$dir_b" "$work/final.diff" || final="differ ($work/final.diff)"
sessions=$(grep -c "session established" "$log_b" || true)
finish_peers a b; crashes=$peer_crashes

echo "polls $polls while blocked: wait exited 0 with x.txt missing on B — on A $false_a, on B $false_b"
echo "later.txt on B: $([ -n "$later_at" ] && echo "after $later_at s" || echo "never during the block"); B's pullError while blocked: ${err_seen:-none}"
echo "x.txt on B after unblocking: $([ -n "$arrived" ] && echo "after $arrived s" || echo "never (60 s)"); trees $final"
echo "sessions B opened: $sessions; crashes (incl. at shutdown): $crashes"
rc=0
[ $((false_a + false_b)) -eq 0 ] || { echo "FAIL: wait said in sync while x.txt was missing on B"; rc=1; }
[ -n "$later_at" ] || { echo "FAIL: later.txt did not arrive while docs/ was blocked"; rc=1; }
[ -n "$arrived" ] || { echo "FAIL: x.txt never arrived after unblocking"; rc=1; }
[ "$final" = identical ] || { echo "FAIL: trees differ at the end"; rc=1; }
[ "$crashes" -eq 0 ] || { echo "FAIL: a daemon crashed"; rc=1; }
[ $rc -eq 0 ] && echo PASS
exit $rc
