#!/usr/bin/env bash
# Checks deploy/systemd/syncd.service with `systemd-analyze verify` (no systemd needs to run):
# no warning at all, against the built binary in place of /usr/local/bin/syncd. A unit with a
# typo must be reported, or this check proves nothing. Usage: SYNCD_BIN=… scripts/systemd_unit_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${SYNCD_BIN:-$(swift build --show-bin-path)/syncd}"
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze missing (apt-get install systemd)"; exit 0; }
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/syncd|$bin|" deploy/systemd/syncd.service > "$dir/syncd.service"
fail=0
verify() { systemd-analyze verify "$1" 2>&1 | grep -v "^$" || true; }

out="$(verify "$dir/syncd.service")"
if [ -n "$out" ]; then echo "FAIL: systemd-analyze verify reports:"; echo "$out"; fail=1; fi
for line in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=' 'ExecReload=/bin/kill -HUP $MAINPID' 'StateDirectory=syncd' \
            'Environment=SYNCD_HOME=/var/lib/syncd' 'ProtectSystem=strict' 'NoNewPrivileges=yes' '--log-format json'; do
    grep -qF -- "$line" "$dir/syncd.service" || { echo "FAIL: the unit lacks $line"; fail=1; }
done
# The check itself: a typo in a key and in a value are both reported.
sed 's/^Type=notify/Type=notifyy/; s/^NoNewPrivileges=yes/NoNewPrivilegez=yes/' "$dir/syncd.service" > "$dir/broken.service"
broken="$(verify "$dir/broken.service")"
grep -q "notifyy" <<<"$broken" && grep -q "NoNewPrivilegez" <<<"$broken" \
    || { echo "FAIL: systemd-analyze did not report a broken unit: $broken"; fail=1; }
[ "$fail" -eq 0 ] && echo "ok: deploy/systemd/syncd.service verifies cleanly"
exit "$fail"
