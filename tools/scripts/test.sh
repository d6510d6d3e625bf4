#!/usr/bin/env bash
# Set up, build, and run every test suite with ctest.
#
# The PostgreSQL cases need a server: this script starts a throwaway PostgreSQL 15 cluster
# (Debian's packages) in a temporary directory, as the postgres user when run as root, listening
# on 127.0.0.1 only, on a free port, and exports ANNALS_TEST_PG for ctest. The cluster is
# stopped and its directory removed on exit, whatever the outcome. fsync is off in this cluster:
# the tests check behaviour, not the disk (nothing here survives the run anyway). Likewise a
# throwaway NATS server with JetStream (nats_server.sh) for the relay suite, and a PgBouncer in
# session mode in front of the PostgreSQL server (pgbouncer_server.sh).
set -euo pipefail
# Each phase's end, in seconds since the start (where CI's time goes).
phase() { echo "test: [${SECONDS}s] $*" >&2; }
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
phase "installed and built"

source "$(dirname "${BASH_SOURCE[0]}")/pg_server.sh"
pg_server_start test -c fsync=off -c max_connections=300
export ANNALS_TEST_PG="$PG_URI"
echo "test: PostgreSQL 15 at $ANNALS_TEST_PG (data in $PGBASE)" >&2
# PgBouncer in session mode in front of it (ANNALS_TEST_PGBOUNCER), for the pooler cases.
source "$(dirname "${BASH_SOURCE[0]}")/pgbouncer_server.sh"
pgbouncer_start test
echo "test: PgBouncer (session pooling) at $ANNALS_TEST_PGBOUNCER" >&2

# The relay suite needs nats-server: this one (ANNALS_TEST_NATS), and the same binary
# (ANNALS_NATS_SERVER) for the brokers its cases start, stop and restart themselves.
source "$(dirname "${BASH_SOURCE[0]}")/nats_server.sh"
nats_server_start test
echo "test: NATS JetStream at $ANNALS_TEST_NATS (data in $NATS_BASE)" >&2

# The dashboard's browser test must run here (setup.sh installed chromium and playwright-core).
export ANNALS_REQUIRE_BROWSER=1
# The hostile-input cases that mount a small tmpfs, bind-mount read-only or chattr need root:
# as root (CI) they must run; otherwise they say "skipped".
if [ "$(id -u)" -eq 0 ]; then export ANNALS_REQUIRE_ROOT_TESTS=1; fi

(cd "$BUILD_DIR" && ctest -j"$(nproc)" --timeout 600 --output-on-failure "$@")
phase "main suite passed"

# Then the sanitizer and fuzzing runs (tools/scripts/sanitize.sh); ANNALS_SANITIZERS=0 skips
# them for a quick local run.
if [ "${ANNALS_SANITIZERS:-1}" != 0 ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/sanitize.sh"
  phase "sanitizer suites passed"
fi
