#!/usr/bin/env bash
# Partition test: three replicas, one cut off for ~30 s while both sides edit; after the heal they
# must converge quickly, keep every edit, and make exactly one conflict copy per conflict.
#
#   bash scripts/partition_test.sh        (root; PARTITION=30 seconds; SYNCD_BIN=...)
#
# Three network namespaces (A, B, C) on a bridge of their own, 10.213.N.1-3/24; the daemons listen
# on those addresses (B and C join A). The folder is shared by all three. Then {A} is cut from
# {B, C} with iptables DROP rules inside A's namespace (both directions). During the partition, in
# two rounds: A, B and C each create new files; A and B both edit the same five files; A deletes two
# files that B edits. Heal, then time heal -> converged (all three trees identical and still
# identical 3 s later). Checks: converged within 60 s (target 10 s); every side's last version of
# every file it wrote is on A (live or as a `.sync-conflict-` copy); no conflict copy of a conflict
# copy; no duplicate copies (`name 2.sync-conflict…`, `….sync-conflict-… 2.ext`, or two copies of
# one conflict); `syncd wait` exits 0 on all three; no daemon crashed.
# Prints `heal->converged S s` and one line per check.
# Exit: 0 all checks pass, 1 a check failed or not converged within TARGET s (default 10) of the
# heal, 2 setup error.
source "$(dirname "$0")/scenario_lib.sh"
need_pkgs ip:iproute2 iptables:iptables
resolve_bin
[ "$(id -u)" -eq 0 ] || { echo "needs root (namespaces, iptables)" >&2; exit 2; }
PARTITION=${PARTITION:-30}
work=$(mktemp -d /tmp/syncd-partition.XXXXXX)

# ---- the network: a bridge in the root namespace (no address), one veth per namespace.
tag="sp$$"; net="10.213.$((20 + $$ % 200))"; br="${tag}br"
ip link add "$br" type bridge; scen_links+=("$br"); ip link set "$br" up
i=0
for n in a b c; do
    i=$((i + 1)); ns="${tag}$n"
    ip netns add "$ns"; scen_netns+=("$ns")
    ip link add "${tag}$n" type veth peer name "${tag}${n}p"
    ip link set "${tag}${n}p" netns "$ns"
    ip link set "${tag}$n" master "$br" up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip link set "${tag}${n}p" name eth0
    ip netns exec "$ns" ip addr add "$net.$i/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    new_peer "$n" "$net.$i:7700" "$ns"
done

start_peer a; start_peer b "$addr_a"; start_peer c "$addr_a"
share a b c

all_same() { local x; x=$(tree_digest "$dir_a"); [ "$x" = "$(tree_digest "$dir_b")" ] && [ "$x" = "$(tree_digest "$dir_c")" ]; }
until_same() { local t=$1; for _ in $(seq $((t * 4))); do all_same && return 0; sleep 0.25; done; return 1; }

# ---- the starting state: five shared files both sides will edit, two that A deletes and B edits.
mkdir -p "$dir_a/shared"
for k in 0 1 2 3 4; do echo "base s$k" >"$dir_a/shared/s$k.txt"; done
for k in 0 1; do echo "base d$k" >"$dir_a/shared/d$k.txt"; done
until_same 60 || { log "initial sync did not converge"; exit 2; }
log "three replicas in sync; cutting {A} from {B, C} for $PARTITION s"

ipa() { ip netns exec "${tag}a" iptables "$@"; }
for peer in "$net.2" "$net.3"; do
    ipa -I INPUT -s "$peer" -j DROP; ipa -I OUTPUT -d "$peer" -j DROP
    scen_undo+=("ip netns exec ${tag}a iptables -D INPUT -s $peer -j DROP" "ip netns exec ${tag}a iptables -D OUTPUT -d $peer -j DROP")
done

# ---- edits on both sides. expect: contents that must survive (the last version each side wrote).
declare -A expect
write() {   # write PEER RELPATH CONTENT — records CONTENT under the key PEER:RELPATH (last one wins)
    local d="dir_$1"; mkdir -p "$(dirname "${!d}/$2")"; printf '%s\n' "$3" >"${!d}/$2"; expect["$1:$2"]="$3"
}
t_cut=$(date +%s)
for round in 1 2; do
    sleep $((PARTITION / 3))
    nonce=$RANDOM
    for k in 0 1 2 3 4; do
        write a "shared/s$k.txt" "A edits s$k round $round $nonce"
        write b "shared/s$k.txt" "B edits s$k round $round $nonce"
        write a "new/a-$round-$k.txt" "A new $round $k $nonce"
        write b "new/b-$round-$k.txt" "B new $round $k $nonce"
        write c "new/c-$round-$k.txt" "C new $round $k $nonce"
    done
    if [ "$round" = 1 ]; then
        rm -f "$dir_a/shared/d0.txt" "$dir_a/shared/d1.txt"
        write b shared/d0.txt "B edits d0 $nonce"; write b shared/d1.txt "B edits d1 $nonce"
    fi
done
sleep $((PARTITION - ($(date +%s) - t_cut) > 0 ? PARTITION - ($(date +%s) - t_cut) : 0))
log "healing"

for ((j = ${#scen_undo[@]} - 1; j >= 0; j--)); do eval "${scen_undo[$j]}"; done; scen_undo=()
t_heal=$(date +%s.%N); converged=""
while python3 -c "import sys; sys.exit(0 if $(date +%s.%N) - $t_heal < 60 else 1)"; do
    if all_same; then
        t_same=$(date +%s.%N); sleep 3
        if all_same; then converged=$(python3 -c "print(round($t_same - $t_heal, 1))"); break; fi
    fi
    sleep 0.25
done

# ---- checks
rc=0
TARGET=${TARGET:-10}
if [ -n "$converged" ]; then
    echo "heal->converged $converged s (target $TARGET s)"
    python3 -c "import sys; sys.exit(0 if $converged <= $TARGET else 1)" || { echo "FAIL: converged later than $TARGET s after the heal"; rc=1; }
else
    echo "heal->converged never (60 s)"; rc=1
    for n in b c; do
        d="dir_$n"; same_trees "$dir_a" "${!d}" "$work/diff-a-$n.txt" \
            || echo "    A vs ${n^^}: $(grep -c '^[<>]' "$work/diff-a-$n.txt") entries differ: $(grep '^[<>]' "$work/diff-a-$n.txt" | head -4 | tr '\n' ' ')"
    done
fi

final=$(tree_digest "$dir_a")
missing=0
for key in "${!expect[@]}"; do
    h=$(printf '%s\n' "${expect[$key]}" | sha256sum | cut -c1-16)
    # A here-string, not `echo | grep -q`: under pipefail, grep -q leaving early makes echo die of
    # SIGPIPE and the pipeline fail — a kept edit reported lost now and then.
    grep -q "^F .* $h\$" <<<"$final" || { missing=$((missing + 1)); log "lost: ${key}'s last version (\"${expect[$key]}\")"; }
done
echo "edits kept: $((${#expect[@]} - missing)) of ${#expect[@]}"
[ "$missing" -eq 0 ] || { echo "FAIL: edits lost"; rc=1; }

copies=$(echo "$final" | sed -nE 's/^F (.*) [0-9a-f]{16}$/\1/p' | grep -F '.sync-conflict-' || true)   # names may hold spaces
n_copies=$(echo -n "$copies" | grep -c . || true)
nested=$(echo -n "$copies" | grep -c '\.sync-conflict-.*\.sync-conflict-' || true)
dupname=$(echo -n "$copies" | grep -cE ' [0-9]+\.sync-conflict-|\.sync-conflict-[0-9]{8}-[0-9]{6}-[A-Z2-7]{7} [0-9]+(\.|$)' || true)
# Two copies made for one original: one conflict (two sides) should leave exactly one.
per_orig=$(echo -n "$copies" | sed -E 's/\.sync-conflict-[0-9]{8}-[0-9]{6}-[A-Z2-7]{7}( [0-9]+)?//' | sort | uniq -d | wc -l)
echo "conflict copies $n_copies (5 conflicting files), copies of copies $nested, duplicate names $dupname, originals with >1 copy $per_orig"
[ $((nested + dupname + per_orig)) -eq 0 ] || { echo "FAIL: conflict copies of copies, duplicate names or several copies of one original"; rc=1; }
[ -n "$copies" ] && echo "$copies" | sed 's/^/    /'

waits=""
for n in a b c; do w=0; wait_peer "$n" 30 || w=$?; waits+="$n:$w "; [ "$w" -eq 0 ] || { echo "FAIL: wait on $n exited $w"; rc=1; }; done
echo "wait exit status after the heal: $waits"
finish_peers a b c
echo "crashes (incl. at shutdown): $peer_crashes"
[ "$peer_crashes" -eq 0 ] || { echo "FAIL: a daemon crashed"; rc=1; }
[ $rc -eq 0 ] && echo PASS || echo FAIL
exit $rc
