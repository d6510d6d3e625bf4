#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root), then configures and builds into build/.
# Sourced by demo.sh and test.sh; safe to run again (incremental).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

PACKAGES=(build-essential cmake pkg-config ccache libsqlite3-dev sqlite3 libprotobuf-dev
          protobuf-compiler libboost-dev libfmt-dev doctest-dev libcli11-dev libpq-dev postgresql
          libnats-dev nats-server libcpp-httplib-dev pgbouncer)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The dashboard's browser test (tests/browser): Debian's chromium, node, and playwright-core
# pinned by tests/browser/package-lock.json.
browser_missing=()
command -v chromium >/dev/null || browser_missing+=(chromium)
command -v npm >/dev/null || browser_missing+=(nodejs npm)  # a node from elsewhere is kept
if ((${#browser_missing[@]})); then
  echo "setup: installing ${browser_missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${browser_missing[@]}" >/dev/null
fi
if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
  (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund >/dev/null)
fi

# ccache: paths relative to the checkout, so that every clone (and every build tree: build,
# build-asan, build-tsan) shares one cache.
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANNALS_TEST_POSTGRES=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
