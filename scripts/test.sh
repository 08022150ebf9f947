#!/usr/bin/env bash
# The test command (README quick start; .ci/run calls exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
swift build                      # the integration tests run the real syncd binary
swift test 2>&1 | tee /tmp/syncd-test.log
