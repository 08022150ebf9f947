#!/usr/bin/env bash
# Sparse files keep their holes: A holds a SIZE_GIB (default 4) GiB sparse file with three 1 MiB
# islands of data; A and B (loopback) sync it; prints the time it took and how much disk the file
# takes on each side (st_blocks), as recorded in Benchmarks/RESULTS.md.
#
#   bash scripts/sparse_measure.sh            (SYNCD_BIN=... to test another binary)
# Exit: 0 B's copy is identical and takes at most 16 MiB of disk, 1 otherwise, 2 setup error.
source "$(dirname "$0")/scenario_lib.sh"
resolve_bin
SIZE_GIB=${SIZE_GIB:-4}
work=$(mktemp -d /tmp/syncd-sparse.XXXXXX)
port=$(pick_port)
new_peer a "127.0.0.1:$port"; new_peer b "127.0.0.1:$((port + 1))"
start_peer a; start_peer b "$addr_a"
share a b
wait_peer a 60 || { log "peers did not connect"; exit 2; }

f="$work/sparse.img"
truncate -s "${SIZE_GIB}G" "$f"
for at in 1 1500 3000; do
    head -c 1048576 /dev/urandom | dd of="$f" bs=1M seek=$(( at * SIZE_GIB / 4 )) conv=notrunc status=none
done
start=$(date +%s.%N)
mv "$f" "$dir_a/sparse.img"
wait_peer a 600 || { log "wait on A timed out"; exit 1; }
end=$(date +%s.%N)
blocks_a=$(stat -c %b "$dir_a/sparse.img"); blocks_b=$(stat -c %b "$dir_b/sparse.img")
size_b=$(stat -c %s "$dir_b/sparse.img")
same=no; cmp -s "$dir_a/sparse.img" "$dir_b/sparse.img" && same=yes
printf 'sparse %s GiB: synced in %.1f s; disk use A %d KiB, B %d KiB; size on B %s; identical %s\n' \
    "$SIZE_GIB" "$(echo "$end - $start" | bc)" $((blocks_a / 2)) $((blocks_b / 2)) "$size_b" "$same"
finish_peers a b
[ "$same" = yes ] && [ $((blocks_b / 2)) -le 16384 ] && exit 0
exit 1
