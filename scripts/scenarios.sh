#!/usr/bin/env bash
# Runs every divergence scenario one after the other and prints a Markdown table of the results
# (script, command, exit status, time, summary line). Docs/Testing.md describes each scenario.
#
#   bash scripts/scenarios.sh            full sizes (~11 min): 300 pushes, 25 kills of B and 25 of
#                                        A and B alternately, 30 s partition, 10 s block
#   bash scripts/scenarios.sh --quick    CI-sized (~3 min): 20 pushes, 6 kills (A and B), 9 s
#                                        partition, 5 s block
#
# SYNCD_BIN selects the binary (default: this checkout's release build). Logs of each run go to
# $OUT (default /tmp/syncd-scenarios), with the work directory of any failing run kept beside them.
# Exit: 0 when every scenario passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0; [ "${1:-}" = --quick ] && quick=1
OUT=${OUT:-/tmp/syncd-scenarios}; mkdir -p "$OUT"
if [ $quick = 1 ]; then
    runs=("git_push_soak.sh 20" "KILL_SIDE=both kill_soak.sh 6" "wiped_replica.sh" "HOLD=5 failed_apply.sh" "PARTITION=9 partition_test.sh")
else
    runs=("git_push_soak.sh 300" "kill_soak.sh 25" "KILL_SIDE=both kill_soak.sh 25" "wiped_replica.sh" "WIPE=stopped wiped_replica.sh" "failed_apply.sh" "partition_test.sh")
fi
# The syncd sources under test: the last commit that touched them (scripts do not count).
commit=$(git log -1 --format=%h -- Sources Package.swift Package.resolved 2>/dev/null || echo "?")
echo "| script | command | exit | time | result |"
echo "|---|---|---|---|---|"
all=0
for r in "${runs[@]}"; do
    read -r -a words <<<"$r"
    envs=(); while [[ "${words[0]}" == *=* ]]; do envs+=("${words[0]}"); words=("${words[@]:1}"); done
    name=${words[0]}; args=("${words[@]:1}")
    t0=$(date +%s)
    env "${envs[@]}" bash "scripts/$name" "${args[@]}" >"$OUT/${name%.sh}.log" 2>&1; rc=$?
    secs=$(($(date +%s) - t0))
    # The summary: the script's last stdout lines that are not log lines ([hh:mm:ss] ...).
    summary=$(grep -v -e '^\[' -e '^[[:space:]]' -e '^(work directory' "$OUT/${name%.sh}.log" | tail -8 \
        | awk 'NR > 1 {printf "; "} {printf "%s", $0}' | sed 's/|/\\|/g')
    echo "| $name | \`${envs[*]:+${envs[*]} }bash scripts/$name${args[*]:+ ${args[*]}}\` | $rc | ${secs} s | $summary |"
    [ $rc -eq 0 ] || all=1
done
echo
echo "(syncd sources at commit $commit, $(date -u +%Y-%m-%d), binary ${SYNCD_BIN:-release build of this checkout}; logs in $OUT)"
exit $all
