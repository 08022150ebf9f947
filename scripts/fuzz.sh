#!/usr/bin/env bash
# A libFuzzer campaign on one decoder: bash scripts/fuzz.sh TARGET [SECONDS]   (Docs/Fuzzing.md)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET [SECONDS]; targets: see swift run syncd-fuzz}"
seconds="${2:-3600}"
bash scripts/deps.sh
# Debian's gold linker crashes on the sanitizer objects; lld (shipped with Swift) links them.
swift build -c release --product syncd-fuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DSYNCD_LIBFUZZER \
    -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld
mkdir -p "corpus/$target"
SYNCD_FUZZ_TARGET="$target" .build-fuzz/release/syncd-fuzz "corpus/$target" -max_len=65536 -max_total_time="$seconds"
