#!/usr/bin/env bash
# The test command (README quick start; .ci/run calls exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
swift build                      # the integration tests run the real syncd binary
# Three replicas in network namespaces, one cut off while both sides edit: converged soon after
# the heal, every edit kept, one copy per conflict (Docs/Testing.md). Needs root (namespaces,
# iptables), as CI has; the other scenarios are longer and run by hand (scripts/scenarios.sh).
if [ "$(id -u)" -eq 0 ]; then
    SYNCD_BIN="$(swift build --show-bin-path)/syncd" PARTITION=9 bash scripts/partition_test.sh
fi
# The service files (Docs/Operations.md): the systemd unit verified, the container entrypoint run
# with a stub and with the real daemon. Seconds.
SYNCD_BIN="$(swift build --show-bin-path)/syncd" bash scripts/systemd_unit_test.sh
SYNCD_BIN="$(swift build --show-bin-path)/syncd" bash scripts/entrypoint_test.sh
swift test 2>&1 | tee /tmp/syncd-test.log
