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
# The status page in headless Chromium (Docs/Operations.md): two daemons sync a file, the rendered
# DOM is checked, a screenshot taken. Installs Debian's chromium when missing (root; ~40 s), so it
# runs where it can install or chromium is there already.
if [ "$(id -u)" -eq 0 ] || command -v chromium >/dev/null; then
    SYNCD_BIN="$(swift build --show-bin-path)/syncd" bash scripts/status_page_test.sh
fi
swift test 2>&1 | tee /tmp/syncd-test.log
