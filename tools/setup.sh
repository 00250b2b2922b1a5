#!/usr/bin/env bash
# Installs what SparseGate builds and tests with: Debian packages (apt) and
# the npm packages of package-lock.json. Safe to run again: it installs only
# what is missing. Needs root for apt (a fresh Debian 12 machine, as root).
# SG_SETUP_BROWSER=0 leaves out chromium (only the page's test needs it).
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(build-essential pkg-config curl ca-certificates
      libcjson-dev libpcre2-dev libopenblas-dev libsqlite3-dev
      libhiredis-dev libpq-dev libssl-dev libnuma-dev
      nginx nginx-dev redis-server postgresql wrk)
# the page's browser test (headless); an image that serves only goes without
[ "${SG_SETUP_BROWSER:-1}" = 1 ] && debs+=(chromium fonts-dejavu-core)
command -v node >/dev/null && command -v npm >/dev/null || debs+=(nodejs npm)
command -v python3 >/dev/null || debs+=(python3)

missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh container has no init system: keep package scripts from
    # starting the system nginx/redis/postgres services on shared ports.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: npm ci"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
