#!/bin/sh
# The container's entrypoint (Docs/Operations.md, "Containers"): turns the environment into a
# config file and secret files, then runs `syncd daemon --config FILE` as PID 1's only child
# (exec: signals reach syncd directly; SIGTERM stops it gracefully, SIGHUP reloads).
#
# A mounted config file ($SYNCD_CONFIG, default /etc/syncd/syncd.yaml) is used as it is.
# Otherwise one is written to $SYNCD_RUN_DIR/syncd.yaml from:
#   FOLDER_<n>_PATH          absolute path of folder n (n = 1, 2, … without gaps)
#   FOLDER_<n>_SECRET        its secret, or FOLDER_<n>_SECRET_FILE: a file holding it (a container secret)
#   FOLDER_<n>_OWNER, _GROUP, _FILE_MODE, _DIR_MODE   optional owner and modes of replicated files
#   GOSSIP_KEY or GOSSIP_KEY_FILE                     optional cluster key
# Secrets given as variables are written to files (0600) under $SYNCD_RUN_DIR and removed from the
# environment before syncd starts, so neither `ps` nor /proc/1/environ shows them. Every other
# SYNCD_* variable (SYNCD_JOIN, SYNCD_ADVERTISE, SYNCD_LOG_FORMAT, …) is read by syncd itself.
set -eu
umask 077
run_dir="${SYNCD_RUN_DIR:-/run/syncd}"
syncd_bin="${SYNCD_EXEC:-syncd}"
export SYNCD_HOME="${SYNCD_HOME:-/var/lib/syncd}"
mounted="${SYNCD_CONFIG:-/etc/syncd/syncd.yaml}"

fail() { echo "entrypoint: $*" >&2; exit 64; }

# YAML double-quoted scalar: backslashes and quotes escaped.
quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# Writes a secret to a 0600 file and prints the file's path.
secret_file() { # name value
    printf '%s\n' "$2" > "$run_dir/$1"
    chmod 600 "$run_dir/$1"
    printf '%s' "$run_dir/$1"
}

if [ -f "$mounted" ]; then
    config="$mounted"
    [ -z "${FOLDER_1_PATH:-}" ] || echo "entrypoint: $mounted is mounted; FOLDER_* variables are ignored" >&2
else
    mkdir -p "$run_dir"
    config="$run_dir/syncd.yaml"
    {
        if [ -n "${GOSSIP_KEY:-}" ] && [ -n "${GOSSIP_KEY_FILE:-}" ]; then fail "give GOSSIP_KEY or GOSSIP_KEY_FILE, not both"; fi
        if [ -n "${GOSSIP_KEY:-}" ]; then
            echo "gossip_key_file: $(quote "$(secret_file cluster.key "$GOSSIP_KEY")")"
        elif [ -n "${GOSSIP_KEY_FILE:-}" ]; then
            [ -r "$GOSSIP_KEY_FILE" ] || fail "GOSSIP_KEY_FILE $GOSSIP_KEY_FILE cannot be read"
            echo "gossip_key_file: $(quote "$GOSSIP_KEY_FILE")"
        fi
        echo "folders:"
        n=1
        while :; do
            eval "path=\${FOLDER_${n}_PATH:-}"
            [ -n "$path" ] || break
            case "$path" in /*) ;; *) fail "FOLDER_${n}_PATH must be absolute, not $path" ;; esac
            eval "secret=\${FOLDER_${n}_SECRET:-}; secret_from=\${FOLDER_${n}_SECRET_FILE:-}"
            if [ -n "$secret" ] && [ -n "$secret_from" ]; then fail "folder $n: give FOLDER_${n}_SECRET or FOLDER_${n}_SECRET_FILE, not both"; fi
            if [ -n "$secret" ]; then
                secret_from="$(secret_file "folder-$n.secret" "$secret")"
            elif [ -z "$secret_from" ]; then
                fail "folder $n ($path): FOLDER_${n}_SECRET or FOLDER_${n}_SECRET_FILE is missing"
            fi
            echo "  - path: $(quote "$path")"
            echo "    secret_file: $(quote "$secret_from")"
            for key in OWNER GROUP FILE_MODE DIR_MODE; do
                eval "value=\${FOLDER_${n}_${key}:-}"
                [ -z "$value" ] || echo "    $(echo "$key" | tr 'A-Z' 'a-z'): $(quote "$value")"
            done
            n=$((n + 1))
        done
        [ "$n" -gt 1 ] || echo "entrypoint: no FOLDER_1_PATH: the daemon starts with no folder (add some with syncd add)" >&2
    } > "$config.new"
    mv "$config.new" "$config"
fi

# Secrets never reach syncd's environment: they are in files now.
n=1
while eval "[ -n \"\${FOLDER_${n}_PATH:-}\" ]"; do unset "FOLDER_${n}_SECRET"; n=$((n + 1)); done
unset GOSSIP_KEY SYNCD_GOSSIP_KEY
unset SYNCD_CONFIG
exec "$syncd_bin" daemon --config "$config" "$@"
