#!/usr/bin/env bash
# The main job (README quick start): builds syncd, starts a daemon on a temporary home, shares
# a folder, changes files in it and shows the index following each change.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
swift build -c release
bin="$(swift build -c release --show-bin-path)/syncd"
work="$(mktemp -d /tmp/syncd-demo.XXXXXX)"
export SYNCD_HOME="$work/home"
"$bin" daemon --listen 127.0.0.1:7700 >"$work/daemon.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; echo "(demo files left in $work)"' EXIT
until "$bin" status >/dev/null 2>&1; do sleep 0.1; done

show() { sleep 0.3; echo "\$ syncd status --json"; "$bin" status --json; echo; }
echo "\$ syncd add $work/data --secret"; "$bin" add "$work/data" --secret; show
echo "# write two files"; echo hello >"$work/data/hello.txt"; head -c 3000000 /dev/urandom >"$work/data/blob.bin"; show
echo "# make a directory tree and a symlink"; mkdir -p "$work/data/docs/notes"; echo todo >"$work/data/docs/notes/todo.md"
ln -s hello.txt "$work/data/link"; show
echo "# rename a directory, delete a file"; mv "$work/data/docs" "$work/data/papers"; rm "$work/data/blob.bin"; show
echo "\$ syncd status"; "$bin" status
echo; echo "daemon log:"; cat "$work/daemon.log"
