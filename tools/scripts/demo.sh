#!/usr/bin/env bash
# The main job: set up, build, and run the bank sample's demo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$BUILD_DIR/bin/bank" demo "$@"
