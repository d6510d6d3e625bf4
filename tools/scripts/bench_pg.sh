#!/usr/bin/env bash
# Set up, build, and run annals-bench's PostgreSQL figures against a throwaway PostgreSQL 15
# (tools/scripts/pg_server.sh: temporary directory, postgres user, 127.0.0.1, free port,
# removed on exit). Unlike the test cluster, this one keeps fsync on: durability is what the
# append figures pay for. synchronous_commit=on is PostgreSQL's default; it is passed anyway so
# the figures cannot silently measure a weaker setting. Everything else is initdb's defaults
# (shared_buffers 128 MB, max_wal_size 1 GB, ...) unless ANNALS_BENCH_PG_SETTINGS says
# otherwise. Extra arguments go to annals-bench:
#   bash tools/scripts/bench_pg.sh --quick
#   bash tools/scripts/bench_pg.sh --scenario append_batch
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

source "$(dirname "${BASH_SOURCE[0]}")/pg_server.sh"
# ANNALS_BENCH_PG_SETTINGS adds server settings, e.g. "-c shared_buffers=8GB" (word-split).
# shellcheck disable=SC2086
pg_server_start bench_pg -c fsync=on -c synchronous_commit=on -c max_connections=200 \
  ${ANNALS_BENCH_PG_SETTINGS:-}
echo "bench_pg: PostgreSQL 15 at $PG_URI (data in $PGBASE, fsync on)" >&2

# Not exec: the EXIT trap must run to stop the server.
"$BUILD_DIR/bin/annals-bench" --backend "$PG_URI" "$@"
