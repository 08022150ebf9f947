#!/usr/bin/env bash
# Git push soak: the Gerrit use case — a bare git repository inside a synced folder, pushed to
# over and over, must be a valid repository on the other replica every time `syncd wait` says so.
#
#   bash scripts/git_push_soak.sh [PUSHES]      (default 300; SYNCD_BIN=... for another binary)
#
# A and B on loopback share a folder; A's folder holds repo.git (bare). A clone outside the folder
# commits (edits, new files, a deletion now and then) and pushes; every 30 pushes the bare repo runs
# `git gc --auto` and `git repack -d` (loose objects packed and deleted, packs replaced). After every
# push: `syncd wait` on A, then `git fsck --full` on B's copy (and its branch head is compared with
# A's). Daemons are checked alive and their logs grepped for fatal errors after every push.
# Prints `pushes N, fsck failures F, crashes C` (plus head mismatches and wait timeouts).
# Exit: 0 no failure, 1 any fsck failure, head mismatch, wait timeout or crash, 2 setup error.
source "$(dirname "$0")/scenario_lib.sh"
need_pkgs git:git
resolve_bin
PUSHES=${1:-300}
work=$(mktemp -d /tmp/syncd-gitsoak.XXXXXX)
port=$(pick_port)
new_peer a "127.0.0.1:$port"; new_peer b "127.0.0.1:$((port + 1))"
start_peer a; start_peer b "$addr_a"
share a b

export GIT_AUTHOR_NAME=soak GIT_AUTHOR_EMAIL=soak@example.invalid GIT_COMMITTER_NAME=soak GIT_COMMITTER_EMAIL=soak@example.invalid
git init -q --bare -b main "$dir_a/repo.git"
git init -q -b main "$work/clone"
cd "$work/clone"
git remote add origin "$dir_a/repo.git"
echo seed >seed.txt; git add -A; git commit -qm seed; git push -q origin main
wait_peer a 60 || { log "initial sync did not finish"; exit 2; }

fsck_fail=0 head_miss=0 wait_fail=0 crashes=0 t0=$(date +%s)
for i in $(seq "$PUSHES"); do
    # A commit the way people make them: a few edited files, a new one, sometimes a deletion.
    for k in $(seq $((1 + RANDOM % 3))); do head -c $((200 + RANDOM % 4000)) /dev/urandom | base64 >"f$((RANDOM % 40)).txt"; done
    echo "push $i" >"new-$i.txt"
    [ $((i % 7)) -eq 0 ] && ls new-*.txt | head -1 | xargs git rm -q
    git add -A; git commit -qm "commit $i"
    git push -q origin main 2>>"$work/push.err" || { log "push $i failed"; exit 2; }
    if [ $((i % 30)) -eq 0 ]; then
        git -C "$dir_a/repo.git" gc --auto -q
        git -C "$dir_a/repo.git" repack -d -q
    fi
    if ! wait_peer a 60; then
        wait_fail=$((wait_fail + 1)); log "push $i: wait on A timed out: $(cat "$work/wait-a.err")"
    fi
    if ! git -C "$dir_b/repo.git" fsck --full --no-progress >"$work/fsck-$i.log" 2>&1; then
        fsck_fail=$((fsck_fail + 1)); log "push $i: fsck on B failed: $(head -3 "$work/fsck-$i.log" | tr '\n' ' ')"
    else
        rm -f "$work/fsck-$i.log"
    fi
    ha=$(git -C "$dir_a/repo.git" rev-parse main 2>/dev/null || echo none)
    hb=$(git -C "$dir_b/repo.git" rev-parse main 2>/dev/null || echo none)
    [ "$ha" = "$hb" ] || { head_miss=$((head_miss + 1)); log "push $i: B's main is $hb, A's is $ha"; }
    for n in a b; do
        if ! peer_alive "$n"; then
            crashes=$((crashes + 1)); log "push $i: daemon $n is gone; restarting it"
            stop_peer "$n" KILL || true; if [ "$n" = a ]; then start_peer a; else start_peer b "$addr_a"; fi
        fi
    done
    [ $((i % 50)) -eq 0 ] && log "$i pushes: fsck failures $fsck_fail, head mismatches $head_miss, wait timeouts $wait_fail"
done
secs=$(($(date +%s) - t0))
# The end state, with time to settle: tells "wait passed too early" from "B stays broken".
wait_peer a 60 || true; wait_peer b 60 || true; sleep 5
final_fsck=ok; git -C "$dir_b/repo.git" fsck --full --no-progress >"$work/fsck-final.log" 2>&1 || final_fsck=FAILED
final_tree=identical; same_trees "$dir_a" "$dir_b" "$work/final-tree.diff" || final_tree="differs ($(grep -c '^[<>]' "$work/final-tree.diff") lines, $work/final-tree.diff)"
finish_peers a b; crashes=$((crashes + peer_crashes))
echo "after settling (wait on both, 5 s): fsck on B $final_fsck, trees $final_tree"
echo "pushes $PUSHES, fsck failures $fsck_fail, crashes $crashes (head mismatches $head_miss, wait timeouts $wait_fail, ${secs} s)"
[ $((fsck_fail + crashes + head_miss + wait_fail)) -eq 0 ] && [ "$final_fsck" = ok ] && [ "$final_tree" = identical ] || exit 1
