#!/usr/bin/env bash
# A long campaign of the deterministic replication simulator (Docs/Testing.md, "The replication
# simulator"): seeds FIRST… in chunks of CHUNK, until COUNT seeds ran or one fails.
#   bash scripts/simulate.sh [COUNT=10000] [FIRST=1]
# A failing seed is printed with its fault knobs; replay it with its log:
#   SYNCD_SIM_SEED=<seed> swift test --filter FolderSimulationTests/test_replay
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}
FIRST=${2:-1}
CHUNK=${CHUNK:-1000}
flock /tmp/syncd-build.lock swift build --build-tests >/dev/null
start=$(date +%s)
ran=0
while [ "$ran" -lt "$COUNT" ]; do
    n=$(( COUNT - ran < CHUNK ? COUNT - ran : CHUNK ))
    from=$(( FIRST + ran ))
    if ! out=$(SYNCD_SIM_FIRST=$from SYNCD_SIM_SEEDS=$n swift test --skip-build \
            --filter 'FolderSimulationTests/test_everySeed' 2>&1); then
        echo "$out" | grep -E '^seed=|simulated seeds' || echo "$out" | tail -30
        echo "FAIL after $(( $(date +%s) - start )) s"
        exit 1
    fi
    echo "$out" | grep -E 'simulated seeds' | sed 's/^/  /'
    ran=$(( ran + n ))
done
echo "PASS: $COUNT seeds from $FIRST in $(( $(date +%s) - start )) s"
