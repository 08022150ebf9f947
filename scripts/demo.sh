#!/usr/bin/env bash
# The main job (README quick start): builds syncd, starts two daemons on loopback (peer A and
# peer B, each with its own home), shares a folder on A, joins it on B with the secret, and shows
# every change crossing over — files, directories, a symlink, an edit on B, a rename, a deletion.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
swift build -c release --product syncd
bin="$(swift build -c release --show-bin-path)/syncd"
work="$(mktemp -d /tmp/syncd-demo.XXXXXX)"
port=$((20000 + RANDOM % 5000))
A=(env SYNCD_HOME="$work/home-a" "$bin"); B=(env SYNCD_HOME="$work/home-b" "$bin")
"${A[@]}" daemon --listen 127.0.0.1:$port --no-lan-beacon >"$work/a.log" 2>&1 & pa=$!
"${B[@]}" daemon --listen 127.0.0.1:$((port + 1)) --join 127.0.0.1:$port --no-lan-beacon >"$work/b.log" 2>&1 & pb=$!
trap 'kill $pa $pb 2>/dev/null; wait $pa $pb 2>/dev/null; echo "(demo files and logs left in $work)"' EXIT
until "${A[@]}" status >/dev/null 2>&1 && "${B[@]}" status >/dev/null 2>&1; do sleep 0.1; done

tree() { (cd "$1" && find . -path ./.syncd -prune -o -print | sort | sed 's/^/    /'); }
sync_and_show() {
    "${A[@]}" wait "$work/a" --timeout 30 >/dev/null && "${B[@]}" wait "$work/b" --timeout 30 >/dev/null
    echo "  A:"; tree "$work/a"; echo "  B:"; tree "$work/b"
}

echo "\$ syncd add $work/a --secret                 # on A"
secret=$("${A[@]}" add "$work/a" --secret | tail -1); echo "  $secret"
echo "\$ syncd add $work/b --secret <that secret>   # on B"
"${B[@]}" add "$work/b" --secret "$secret"
echo; echo "# A: write files, a directory tree, a symlink"
echo hello >"$work/a/hello.txt"; head -c 3000000 /dev/urandom >"$work/a/blob.bin"
mkdir -p "$work/a/docs/notes"; echo todo >"$work/a/docs/notes/todo.md"; ln -s hello.txt "$work/a/link"
sync_and_show
echo; echo "# B: edit hello.txt"; echo "hello from B" >"$work/b/hello.txt"; sync_and_show
echo "  A's hello.txt now says: $(cat "$work/a/hello.txt")"
echo; echo "# A: rename a directory, delete a file (B keeps it in .syncd/trash)"
mv "$work/a/docs" "$work/a/papers"; rm "$work/a/blob.bin"; sync_and_show
cmp <(cd "$work/a" && find . -path ./.syncd -prune -o -type f -print0 | sort -z | xargs -0 sha256sum) \
    <(cd "$work/b" && find . -path ./.syncd -prune -o -type f -print0 | sort -z | xargs -0 sha256sum) && echo "A and B are identical."
echo; echo "\$ syncd peers   # on A"; "${A[@]}" peers
echo; echo "\$ syncd status  # on B"; "${B[@]}" status
