# Shared helpers for the divergence scenarios (scripts/*_soak.sh, partition_test.sh,
# wiped_replica.sh, failed_apply.sh). Sourced, not run. Docs/Testing.md describes the scenarios.
#
# Provides: SYNCD_BIN resolution, idempotent apt-get of the tools a scenario needs, daemon start/stop
# (optionally inside a network namespace), a tree digest that compares folders by kind and content,
# crash detection, and one cleanup trap that ends exactly the processes, namespaces and iptables
# rules this run created.

set -euo pipefail

scen_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The binary: $SYNCD_BIN, else the release build of this checkout.
resolve_bin() {
    if [ -z "${SYNCD_BIN:-}" ]; then
        SYNCD_BIN="$(cd "$scen_root" && swift build -c release --show-bin-path)/syncd"
    fi
    [ -x "$SYNCD_BIN" ] || { echo "no syncd binary at $SYNCD_BIN (build: flock /tmp/syncd-build.lock swift build -c release --product syncd)" >&2; exit 2; }
    export SYNCD_BIN
}

# need_pkgs CMD:PACKAGE ... — installs PACKAGE when CMD is missing (like scripts/deps.sh).
need_pkgs() {
    local missing=() pair
    for pair in "$@"; do command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${missing[*]}" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup
scen_pids=()        # daemons and helpers this run started
scen_netns=()       # namespaces this run created
scen_links=()       # links in the root namespace this run created
scen_undo=()        # commands that undo iptables rules etc. (run in reverse order)
scen_keep="${KEEP_WORK:-0}"
SYNCD_RUN_AS=()     # a prefix that runs daemons and clients as another user (setpriv ...)

scen_cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#scen_undo[@]} - 1; i >= 0; i--)); do eval "${scen_undo[$i]}" >/dev/null 2>&1; done
    for pid in "${scen_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${scen_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    done
    for ns in "${scen_netns[@]}"; do ip netns del "$ns" 2>/dev/null; done
    for l in "${scen_links[@]}"; do ip link del "$l" 2>/dev/null; done
    # chattr'ed directories would make the work directory undeletable.
    [ -n "${work:-}" ] && [ -d "$work" ] && chattr -R -i "$work" 2>/dev/null
    if [ -n "${work:-}" ] && [ "$scen_keep" = 0 ] && [ "$rc" -eq 0 ]; then rm -rf "$work"
    elif [ -n "${work:-}" ]; then echo "(work directory and logs left in $work)" >&2; fi
    exit "$rc"
}
trap scen_cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { local p keep=(); for p in "${scen_pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; scen_pids=("${keep[@]}"); }

# ---------------------------------------------------------------- daemons
# Peers are described by variables: home_X, dir_X, addr_X (IP:PORT), ns_X (namespace or empty),
# pid_X, log_X. new_peer NAME ADDR [NS] sets them under $work.
new_peer() {
    local n=$1
    printf -v "home_$n" '%s' "$work/home-$n"; printf -v "dir_$n" '%s' "$work/$n"
    printf -v "addr_$n" '%s' "$2"; printf -v "ns_$n" '%s' "${3:-}"
    printf -v "log_$n" '%s' "$work/$n.log"
    mkdir -p "$work/home-$n"
}

# in_ns NAME CMD... — runs CMD in the peer's namespace (or directly).
in_ns() {
    local ns; ns="ns_$1"; ns="${!ns}"; shift
    if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

# ctl NAME ARGS... — a syncd client command against the peer's daemon.
ctl() { local h="home_$1"; shift; SYNCD_HOME="${!h}" "${SYNCD_RUN_AS[@]}" "$SYNCD_BIN" "$@"; }

# start_peer NAME [JOIN_ADDR] — starts the daemon, appends to its log, waits for its control socket.
start_peer() {
    local n=$1 join=() h a l
    h="home_$n"; a="addr_$n"; l="log_$n"
    [ -n "${2:-}" ] && join=(--join "$2")
    echo "=== start $(date +%T.%N)" >>"${!l}"
    local ns="ns_$n" pre=()
    [ -n "${!ns}" ] && pre=(ip netns exec "${!ns}")   # ip netns exec execs: $! is the daemon itself
    # shellcheck disable=SC2086
    "${pre[@]}" env SYNCD_HOME="${!h}" "${SYNCD_RUN_AS[@]}" "$SYNCD_BIN" daemon --home "${!h}" --listen "${!a}" "${join[@]}" \
        --no-lan-beacon ${SYNCD_DAEMON_ARGS:-} >>"${!l}" 2>&1 &
    printf -v "pid_$n" '%s' "$!"; scen_pids+=("$!")
    local i; for i in $(seq 300); do
        ctl "$n" status >/dev/null 2>&1 && return 0
        kill -0 "$!" 2>/dev/null || { echo "daemon $n exited at start (log: ${!l})" >&2; tail -20 "${!l}" >&2; return 1; }
        sleep 0.1
    done
    echo "daemon $n did not open its control socket" >&2; return 1
}

# stop_peer NAME [SIGNAL] — TERM (graceful, waits) or KILL. Returns the daemon's exit status.
stop_peer() {
    local n=$1 sig=${2:-TERM} p rc=0
    p="pid_$n"; p="${!p}"
    kill -"$sig" "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || rc=$?
    forget_pid "$p"
    return $rc
}

# share NAME_FIRST NAME... — the first peer creates the folder secret; the others join with it.
share() {
    local first=$1 d secret; shift
    d="dir_$first"; secret=$(ctl "$first" add "${!d}" --secret | tail -1 | awk '{print $NF}')
    for n in "$@"; do d="dir_$n"; ctl "$n" add "${!d}" --secret "$secret" >/dev/null; done
    SECRET=$secret
}

# wait_peer NAME TIMEOUT — `syncd wait` on the peer's folder; returns its exit status.
wait_peer() { local d="dir_$1"; ctl "$1" wait "${!d}" --timeout "$2" >/dev/null 2>"$work/wait-$1.err"; }

# Crash evidence: a daemon that should be running is gone, or its log shows a fatal error.
crash_pattern='Fatal error|Program crashed|Segmentation fault|Illegal instruction|Trace/breakpoint trap|SIGSEGV|SIGILL|SIGTRAP|SIGABRT|SIGBUS|Aborted|Current stack trace|precondition failed|assertion failed'
# finish_peers NAME... — stops each daemon gracefully (SIGTERM) and sets peer_crashes to how many
# crashed: a daemon already gone, one ended by a signal other than TERM, or fatal lines in its log
# (a crash during shutdown counts: it is what a user's `systemctl stop` would see).
finish_peers() {
    local n rc l; peer_crashes=0
    for n in "$@"; do
        l="log_$n"
        peer_alive "$n" || { peer_crashes=$((peer_crashes + 1)); log "daemon $n was not running"; }
        rc=0; stop_peer "$n" TERM || rc=$?
        if [ "$rc" -gt 128 ] && [ "$rc" -ne 143 ]; then peer_crashes=$((peer_crashes + 1)); log "daemon $n exited with status $rc"
        elif [ "$(log_crashes "$n")" -gt 0 ]; then peer_crashes=$((peer_crashes + 1)); log "daemon $n log: $(grep -Eam1 "$crash_pattern" "${!l}")"; fi
    done
}
peer_alive() { local p="pid_$1"; kill -0 "${!p}" 2>/dev/null; }
log_crashes() { local l="log_$1"; grep -Eac "$crash_pattern" "${!l}" 2>/dev/null || true; }

# ---------------------------------------------------------------- trees
# tree_digest DIR — one line per entry below DIR (not .syncd): KIND PATH HASH, sorted.
# Files by sha256 of content, symlinks by target, directories by name only.
tree_digest() {
    python3 - "$1" <<'EOF'
import hashlib, os, stat, sys
root = sys.argv[1]; out = []
for d, ds, fs in os.walk(root):
    if d == root and '.syncd' in ds: ds.remove('.syncd')
    for name in ds + fs:
        p = os.path.join(d, name); rel = os.path.relpath(p, root)
        try: st = os.lstat(p)
        except FileNotFoundError: continue
        if stat.S_ISLNK(st.st_mode): out.append('L %s %s' % (rel, os.readlink(p)))
        elif stat.S_ISDIR(st.st_mode): out.append('D %s -' % rel)
        elif stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            try:
                with open(p, 'rb') as f:
                    for b in iter(lambda: f.read(1 << 20), b''): h.update(b)
            except OSError: h.update(b'<unreadable>')
            out.append('F %s %s' % (rel, h.hexdigest()[:16]))
        else: out.append('O %s -' % rel)
for line in sorted(out): print(line)
EOF
}

# same_trees DIR1 DIR2 [DIFF_OUT] — 0 when identical; the diff goes to DIFF_OUT when given.
same_trees() {
    local a b; a=$(tree_digest "$1"); b=$(tree_digest "$2")
    [ "$a" = "$b" ] && return 0
    [ -n "${3:-}" ] && diff <(echo "$a") <(echo "$b") >"$3" || true
    return 1
}

# A free TCP/UDP port base on loopback (two consecutive ports), below the ephemeral range.
pick_port() { echo $((20000 + RANDOM % 7000)); }
