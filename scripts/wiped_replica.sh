#!/usr/bin/env bash
# Wiped replica: a user empties a replica's folder and follows the user guide to resume it.
#
#   bash scripts/wiped_replica.sh            (SYNCD_BIN=... to test another binary)
#   WIPE=stopped bash scripts/wiped_replica.sh   the same with B stopped during the wipe
#
# A and B (loopback) share a folder holding FILES files in a few directories and are in sync.
# While B runs, `rm -rf` B's folder, recreate `B/.syncd` (Docs/UserGuide.md, "The folder
# marker"), restart B, `syncd wait` on both. The fault this finds: the restarted B takes the empty
# folder for deletions of everything and every peer deletes every file. Passes only when A still
# has every file, unchanged; also reports whether B got the files back.
# Exit: 0 pass, 1 a file was deleted or changed on A (or B not refilled), 2 setup error.
source "$(dirname "$0")/scenario_lib.sh"
resolve_bin
FILES=${FILES:-50}
WIPE=${WIPE:-running}
work=$(mktemp -d /tmp/syncd-wiped.XXXXXX)
port=$(pick_port)
new_peer a "127.0.0.1:$port"; new_peer b "127.0.0.1:$((port + 1))"
start_peer a; start_peer b "$addr_a"
share a b

for i in $(seq "$FILES"); do
    mkdir -p "$dir_a/d$((i % 5))"; head -c $((100 + i * 37)) /dev/urandom >"$dir_a/d$((i % 5))/f$i.bin"
done
echo "readme" >"$dir_a/README"; ln -s README "$dir_a/link"
wait_peer a 60 && wait_peer b 60 || { log "initial sync did not finish"; exit 2; }
same_trees "$dir_a" "$dir_b" || { log "A and B differ after the initial sync"; exit 2; }
before=$(tree_digest "$dir_a"); n_before=$(echo "$before" | grep -c '^[FL] ')
log "in sync: $n_before files and links on both"

if [ "$WIPE" = stopped ]; then
    log "stopping B, wiping its folder, recreating B/.syncd, starting B"
    stop_peer b TERM || true
    rm -rf "$dir_b"; mkdir -p "$dir_b/.syncd"
else
    log "wiping B's folder while B runs, recreating B/.syncd, restarting B"
    rm -rf "$dir_b"; mkdir -p "$dir_b/.syncd"
    sleep 2                               # let B's watcher see the wipe, as it would in life
    stop_peer b TERM || true
fi
start_peer b "$addr_a"
wait_a=0; wait_peer a 60 || wait_a=$?
wait_b=0; wait_peer b 60 || wait_b=$?
sleep 3                                   # a late deletion batch would land in this window
after=$(tree_digest "$dir_a"); n_after=$(echo "$after" | grep -c '^[FL] ' || true)
lost=$(comm -23 <(echo "$before") <(echo "$after") | wc -l)
n_b=$(tree_digest "$dir_b" | grep -c '^[FL] ' || true)
refilled=no; [ "$n_b" -eq "$n_before" ] && [ "$(tree_digest "$dir_b")" = "$before" ] && refilled=yes
trash_a=$( (find "$dir_a/.syncd/trash" -type f 2>/dev/null || true) | wc -l)

echo "wait A exit $wait_a, wait B exit $wait_b; B: $(ctl b status --json 2>/dev/null | python3 -c 'import json,sys; f=json.load(sys.stdin)["folders"][0]; print("state", f["state"], "error", f.get("error"))')"
echo "files on A before $n_before, after $n_after (entries lost or changed: $lost, in A's trash: $trash_a); B refilled: $refilled ($n_b files)"
finish_peers a b
echo "crashes (incl. at shutdown): $peer_crashes"
rc=0
[ "$peer_crashes" -eq 0 ] || { echo "FAIL: a daemon crashed"; rc=1; }
[ "$lost" -eq 0 ] || { echo "FAIL: files were deleted or changed on A"; rc=1; }
[ "$refilled" = yes ] || { echo "FAIL: B did not get the files back"; rc=1; }
[ $rc -eq 0 ] && echo "PASS"
exit $rc
