#!/usr/bin/env bash
# Tests deploy/container/entrypoint.sh without docker (Docs/Operations.md, "Containers"): with a
# stub syncd, what it writes (config, secret files) and runs (arguments, environment); then, with
# the real binary (SYNCD_BIN, default the debug build), that the daemon starts with the folders
# the environment declares and stops cleanly on SIGTERM. A few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
entry="$PWD/deploy/container/entrypoint.sh"
daemon_pid=""
cleanup() {
    # Only the daemon this script started, by its pid (never `kill 0`: that is the whole process group).
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
tmp="$(mktemp -d)"; trap cleanup EXIT
fail=0
check() { # description, then a command that must succeed
    local what="$1"; shift
    if "$@"; then :; else echo "FAIL: $what"; fail=1; fi
}

# The stub: records its arguments, its environment and the config it was given.
cat > "$tmp/syncd-stub" <<'STUB'
#!/bin/sh
printf '%s\n' "$@" > "$OUT/args"
env > "$OUT/env"
cp "$3" "$OUT/config"
STUB
chmod +x "$tmp/syncd-stub"
export OUT="$tmp/out"; mkdir -p "$OUT"
printf 'secret-from-a-file\n' > "$tmp/b.secret"

# 1. Folders, owners, modes and the cluster key from the environment.
env -i PATH="$PATH" OUT="$OUT" SYNCD_EXEC="$tmp/syncd-stub" SYNCD_RUN_DIR="$tmp/run" SYNCD_CONFIG="$tmp/none.yaml" \
    FOLDER_1_PATH=/data/pg FOLDER_1_SECRET='s3cret "one"' FOLDER_1_OWNER=999 FOLDER_1_GROUP=postgres \
    FOLDER_1_FILE_MODE=0640 FOLDER_1_DIR_MODE=0750 \
    FOLDER_2_PATH=/data/git FOLDER_2_SECRET_FILE="$tmp/b.secret" GOSSIP_KEY=clusterkey SYNCD_JOIN=zone-a:7700 \
    sh "$entry" --log-level debug
expected_config="gossip_key_file: \"$tmp/run/cluster.key\"
folders:
  - path: \"/data/pg\"
    secret_file: \"$tmp/run/folder-1.secret\"
    owner: \"999\"
    group: \"postgres\"
    file_mode: \"0640\"
    dir_mode: \"0750\"
  - path: \"/data/git\"
    secret_file: \"$tmp/b.secret\""
check "the config written from the environment" [ "$(cat "$OUT/config")" = "$expected_config" ]
[ "$(cat "$OUT/config")" = "$expected_config" ] || diff <(echo "$expected_config") "$OUT/config" || true
check "syncd daemon --config FILE and the entrypoint's arguments" \
    [ "$(cat "$OUT/args")" = "$(printf 'daemon\n--config\n%s\n--log-level\ndebug' "$tmp/run/syncd.yaml")" ]
check "a secret variable becomes a file with the secret" [ "$(cat "$tmp/run/folder-1.secret")" = 's3cret "one"' ]
check "the key variable becomes a file" [ "$(cat "$tmp/run/cluster.key")" = clusterkey ]
check "secret files are 0600" [ "$(stat -c %a "$tmp/run/folder-1.secret") $(stat -c %a "$tmp/run/cluster.key")" = "600 600" ]
check "no secret reaches syncd's environment" bash -c "! grep -qE '^(FOLDER_1_SECRET|GOSSIP_KEY)=' '$OUT/env'"
check "SYNCD_* variables reach syncd" grep -qx 'SYNCD_JOIN=zone-a:7700' "$OUT/env"
check "the home defaults to /var/lib/syncd" grep -qx 'SYNCD_HOME=/var/lib/syncd' "$OUT/env"

# 2. A mounted config file is used as it is.
printf 'trash_days: 3\n' > "$tmp/mounted.yaml"
env -i PATH="$PATH" OUT="$OUT" SYNCD_EXEC="$tmp/syncd-stub" SYNCD_RUN_DIR="$tmp/run2" SYNCD_CONFIG="$tmp/mounted.yaml" \
    sh "$entry" 2>/dev/null
check "a mounted config is passed as it is" [ "$(sed -n 3p "$OUT/args")" = "$tmp/mounted.yaml" ]
check "nothing is generated beside a mounted config" [ ! -e "$tmp/run2/syncd.yaml" ]

# 3. Mistakes stop the container with a message naming the variable.
refuse() { # expected message, then variables
    local message="$1"; shift
    local out rc=0
    out="$(env -i PATH="$PATH" OUT="$OUT" SYNCD_EXEC="$tmp/syncd-stub" SYNCD_RUN_DIR="$tmp/run3" SYNCD_CONFIG="$tmp/none.yaml" "$@" \
        sh "$entry" 2>&1)" || rc=$?
    check "refused ($message): exit 64, got $rc: $out" [ "$rc" -eq 64 ]
    check "the message names it ($message): $out" grep -qF "$message" <<<"$out"
}
refuse "FOLDER_1_PATH must be absolute" FOLDER_1_PATH=data FOLDER_1_SECRET=x
refuse "FOLDER_1_SECRET or FOLDER_1_SECRET_FILE is missing" FOLDER_1_PATH=/data
refuse "not both" FOLDER_1_PATH=/data FOLDER_1_SECRET=x FOLDER_1_SECRET_FILE=/y
refuse "GOSSIP_KEY_FILE /nope cannot be read" GOSSIP_KEY_FILE=/nope

# 4. The real daemon, started by the entrypoint from the environment alone.
bin="${SYNCD_BIN:-$PWD/.build/debug/syncd}"
if [ -x "$bin" ]; then
    secret="$("$bin" secret)"
    mkdir -p "$tmp/bin"; ln -s "$bin" "$tmp/bin/syncd"
    env -i PATH="$tmp/bin:$PATH" SYNCD_RUN_DIR="$tmp/real-run" SYNCD_HOME="$tmp/home" SYNCD_CONFIG="$tmp/none.yaml" \
        SYNCD_LISTEN=127.0.0.1:0 SYNCD_NO_LAN_BEACON=true SYNCD_LOG_FORMAT=json \
        FOLDER_1_PATH="$tmp/data" FOLDER_1_SECRET="$secret" FOLDER_1_FILE_MODE=0640 \
        sh "$entry" 2> "$tmp/daemon.log" &
    daemon_pid=$!
    up=0
    for _ in $(seq 1 100); do
        if SYNCD_HOME="$tmp/home" "$bin" status --json 2>/dev/null | grep -qF "\"path\":\"$tmp/data\""; then up=1; break; fi
        sleep 0.1
    done
    check "the real daemon runs the declared folder: $(tail -c 2000 "$tmp/daemon.log")" [ "$up" -eq 1 ]
    check "the entrypoint exec'd syncd (same pid)" grep -q "syncd" "/proc/$daemon_pid/cmdline"
    check "its log is JSON" bash -c "head -1 '$tmp/daemon.log' | grep -q '^{\"time\":'"
    kill -TERM "$daemon_pid"
    rc=0; wait "$daemon_pid" || rc=$?
    daemon_pid=""
    check "SIGTERM stops it with status 0 (got $rc)" [ "$rc" -eq 0 ]
else
    echo "note: no syncd binary at $bin; the real-daemon part was skipped"
fi

[ "$fail" -eq 0 ] && echo "ok: entrypoint"
exit "$fail"
