#!/usr/bin/env bash
# Set up, build, and run every test suite with ctest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$BUILD_DIR"
ctest -j"$(nproc)" --timeout 600 --output-on-failure
