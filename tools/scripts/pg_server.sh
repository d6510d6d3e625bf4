# Sourced by test.sh and bench_pg.sh: starts a throwaway PostgreSQL 15 cluster (Debian's
# packages) in a temporary directory, as the postgres user when run as root (initdb refuses
# root), listening on 127.0.0.1 only, on a free port. The cluster is stopped and its directory
# removed when the sourcing script exits, whatever the outcome (this installs the EXIT, INT and
# TERM traps).
#
#   pg_server_start WHO [-c name=value ...]
#
# WHO prefixes the messages on stderr; the rest are server options. Sets PGBIN, PGBASE, PGPORT
# and PG_URI=postgresql://postgres@127.0.0.1:PORT/postgres.

pg_server_start() {
  local who="$1"
  shift
  PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
  PGBASE="$(mktemp -d "${TMPDIR:-/tmp}/annals-pg.XXXXXX")"
  pg_as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root.
    chown postgres:postgres "$PGBASE"
    pg_as_pg=(runuser -u postgres --)
  fi
  trap pg_server_stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  "${pg_as_pg[@]}" "$PGBIN/initdb" -D "$PGBASE/data" -A trust -U postgres -E UTF8 --no-sync \
    >"$PGBASE/initdb.log" 2>&1 || { cat "$PGBASE/initdb.log" >&2; exit 1; }

  local started="" attempt
  for attempt in 1 2 3 4 5 6 7 8; do
    PGPORT=$((20000 + RANDOM % 20000))
    pg_port_in_use "$PGPORT" && continue
    if "${pg_as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGBASE/data" -l "$PGBASE/log" -w -t 30 \
         -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGBASE $*" \
         start >/dev/null; then
      started=1
      break
    fi
  done
  if [ -z "$started" ]; then
    echo "$who: cannot start a throwaway PostgreSQL server; its log:" >&2
    cat "$PGBASE/log" >&2 || true
    exit 1
  fi
  PG_URI="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
}

pg_port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The EXIT trap: keeps the script's exit status.
pg_server_stop() {
  local rc=$?
  if [ -f "$PGBASE/data/postmaster.pid" ]; then
    "${pg_as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGBASE/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PGBASE"
  exit "$rc"
}
