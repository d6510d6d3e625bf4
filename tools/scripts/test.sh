#!/usr/bin/env bash
# Set up, build, and run every test suite with ctest.
#
# The PostgreSQL cases need a server: this script starts a throwaway PostgreSQL 15 cluster
# (Debian's packages) in a temporary directory, as the postgres user when run as root, listening
# on 127.0.0.1 only, on a free port, and exports ANNALS_TEST_PG for ctest. The cluster is
# stopped and its directory removed on exit, whatever the outcome. fsync is off in this cluster:
# the tests check behaviour, not the disk (nothing here survives the run anyway).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
PGBASE="$(mktemp -d "${TMPDIR:-/tmp}/annals-pg.XXXXXX")"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root.
  chown postgres:postgres "$PGBASE"
  as_pg=(runuser -u postgres --)
fi
stop_pg() {
  local rc=$?
  if [ -f "$PGBASE/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGBASE/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PGBASE"
  exit "$rc"
}
trap stop_pg EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${as_pg[@]}" "$PGBIN/initdb" -D "$PGBASE/data" -A trust -U postgres -E UTF8 --no-sync \
  >"$PGBASE/initdb.log" 2>&1 || { cat "$PGBASE/initdb.log" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
started=""
for attempt in 1 2 3 4 5 6 7 8; do
  PGPORT=$((20000 + RANDOM % 20000))
  port_in_use "$PGPORT" && continue
  if "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGBASE/data" -l "$PGBASE/log" -w -t 30 \
       -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGBASE -c fsync=off -c max_connections=200" \
       start >/dev/null; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  echo "test: cannot start a throwaway PostgreSQL server; its log:" >&2
  cat "$PGBASE/log" >&2 || true
  exit 1
fi
export ANNALS_TEST_PG="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
echo "test: PostgreSQL 15 at $ANNALS_TEST_PG (data in $PGBASE)" >&2

cd "$BUILD_DIR"
ctest -j"$(nproc)" --timeout 600 --output-on-failure "$@"
