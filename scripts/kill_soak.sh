#!/usr/bin/env bash
# Kill soak: a replica that is kill -9'd at random moments while its peer keeps writing must never
# be left different from it once `syncd wait` says the two are in sync.
#
#   bash scripts/kill_soak.sh [KILLS]      (default 25; SYNCD_BIN=... for another binary)
#   KILL_SIDE=b (default) | a (the writer's daemon) | both (alternating)
#
# A and B on loopback share a folder. A writer on A creates, appends to, overwrites, renames
# (within and across directories) and deletes files without pause. B is killed with SIGKILL after
# a random 0.3-4 s, restarted after a random 0-1 s. After each restart the writer is paused, and
# when `syncd wait` on A exits 0 the trees are compared (kind + content, .syncd excluded); a
# mismatch is counted, and re-checked 3 s later to tell "wait passed early" from "stays different".
# At the end the writer stops, both sides wait, and the trees must be identical and hold no
# `.sync-conflict-` copy (only A writes: a conflict copy means a replica took its own stale state
# for an edit). Prints `kills N, mismatches M (lasting L), wait timeouts W, crashes C, conflict
# copies K, final trees identical|differ`.
# Exit: 0 no mismatch/timeout/crash/copy and identical at the end, 1 otherwise, 2 setup error.
source "$(dirname "$0")/scenario_lib.sh"
resolve_bin
KILLS=${1:-25}
KILL_SIDE=${KILL_SIDE:-b}
work=$(mktemp -d /tmp/syncd-killsoak.XXXXXX)
port=$(pick_port)
new_peer a "127.0.0.1:$port"; new_peer b "127.0.0.1:$((port + 1))"
start_peer a; start_peer b "$addr_a"
share a b
wait_peer a 60 || { log "initial sync did not finish"; exit 2; }

# The writer: random operations on ~150 names in 8 directories. It pauses while $work/pause exists
# (and says so by creating $work/paused), and ends when $work/stop exists.
python3 - "$dir_a" "$work" >"$work/writer.log" 2>&1 <<'EOF' &
import os, random, sys, time
root, ctl = sys.argv[1], sys.argv[2]
rnd = random.Random(int(os.environ.get('SEED', time.time())))
def name(): return os.path.join(root, 'd%d' % rnd.randrange(8), 'f%03d.dat' % rnd.randrange(150))
def live():
    out = []
    for d in range(8):
        p = os.path.join(root, 'd%d' % d)
        if os.path.isdir(p): out += [os.path.join(p, f) for f in os.listdir(p)]
    return out
ops = 0
while not os.path.exists(ctl + '/stop'):
    if os.path.exists(ctl + '/pause'):
        open(ctl + '/paused', 'w').close(); time.sleep(0.01); continue
    if os.path.exists(ctl + '/paused'): os.unlink(ctl + '/paused')
    files = live(); op = rnd.random()
    try:
        if op < 0.35 or not files:                          # create or overwrite
            p = name(); os.makedirs(os.path.dirname(p), exist_ok=True)
            n = rnd.choice([0, 10, 1000, 20000, 150000, 150000]) if rnd.random() > 0.03 else 3000000
            with open(p, 'wb') as f: f.write(os.urandom(n))
        elif op < 0.6:                                      # append
            with open(rnd.choice(files), 'ab') as f: f.write(os.urandom(rnd.randrange(1, 5000)))
        elif op < 0.8:                                      # rename, maybe over an existing file
            q = name(); os.makedirs(os.path.dirname(q), exist_ok=True); os.rename(rnd.choice(files), q)
        else:                                               # delete
            os.unlink(rnd.choice(files))
    except FileNotFoundError:
        pass
    ops += 1
    if ops % 500 == 0: print('ops', ops, flush=True)
    time.sleep(rnd.uniform(0.005, 0.05))
print('ops', ops, flush=True)
EOF
writer=$!; scen_pids+=("$writer")

pause_writer() { touch "$work/pause"; while [ ! -e "$work/paused" ]; do sleep 0.01; done; }
resume_writer() { rm -f "$work/pause"; }

mismatch=0 lasting=0 wait_fail=0 crashes=0 restart_fail=0 t0=$(date +%s)
for k in $(seq "$KILLS"); do
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 4), 2))')"
    victim=$KILL_SIDE; [ "$victim" = both ] && victim=$([ $((k % 2)) -eq 0 ] && echo a || echo b)
    stop_peer "$victim" KILL || true
    sleep "$(python3 -c 'import random; print(round(random.uniform(0, 1), 2))')"
    if [ "$victim" = a ]; then started=0; start_peer a && started=1; else started=0; start_peer b "$addr_a" && started=1; fi
    if [ $started = 0 ]; then restart_fail=$((restart_fail + 1)); log "kill $k: ${victim^^} did not restart"; continue; fi
    pause_writer
    if wait_peer a 60; then
        if ! same_trees "$dir_a" "$dir_b" "$work/diff-$k.txt"; then
            mismatch=$((mismatch + 1))
            sleep 3
            if same_trees "$dir_a" "$dir_b"; then
                log "kill $k: trees differed when wait passed ($(grep -c '^[<>]' "$work/diff-$k.txt") lines), identical 3 s later"
            else
                lasting=$((lasting + 1))
                log "kill $k: trees differ when wait passed and 3 s later ($work/diff-$k.txt): $(head -2 "$work/diff-$k.txt" | tr '\n' ' ')"
            fi
        else
            rm -f "$work/diff-$k.txt"
        fi
    else
        wait_fail=$((wait_fail + 1)); log "kill $k: wait on A timed out: $(cat "$work/wait-a.err")"
    fi
    peer_alive a || { crashes=$((crashes + 1)); log "kill $k: A is gone"; start_peer a; }
    resume_writer
    [ $((k % 5)) -eq 0 ] && log "$k kills: mismatches $mismatch (lasting $lasting), wait timeouts $wait_fail"
done

touch "$work/stop"; rm -f "$work/pause"; wait "$writer" || true; forget_pid "$writer"
wait_peer a 60 || wait_fail=$((wait_fail + 1)); wait_peer b 60 || wait_fail=$((wait_fail + 1))
final=identical
if ! same_trees "$dir_a" "$dir_b" "$work/diff-final.txt"; then
    sleep 5; same_trees "$dir_a" "$dir_b" "$work/diff-final.txt" || final="differ ($(grep -c '^[<>]' "$work/diff-final.txt") lines, $work/diff-final.txt)"
fi
copies=$( (tree_digest "$dir_a"; tree_digest "$dir_b") | grep -c '\.sync-conflict-' || true)
finish_peers a b; crashes=$((crashes + peer_crashes))
crashes=$((crashes + restart_fail))
secs=$(($(date +%s) - t0))
echo "writer: $(tail -1 "$work/writer.log"); files on A at the end: $(tree_digest "$dir_a" | grep -c '^F ' || true)"
echo "kills $KILLS of $KILL_SIDE, mismatches $mismatch (lasting $lasting), wait timeouts $wait_fail, crashes $crashes, conflict copies $copies, final trees $final (${secs} s)"
[ $((mismatch + wait_fail + crashes + copies)) -eq 0 ] && [ "$final" = identical ] || exit 1
