#!/usr/bin/env bash
# Installs the system libraries syncd builds against (Debian/Ubuntu), only when missing, and
# iptables, which the liveness test uses (as root) to blackhole a loopback session.
set -euo pipefail
need=()
for pkg in libssl-dev zlib1g-dev libsqlite3-dev pkg-config iptables; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
