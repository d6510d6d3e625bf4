# Sourced by test.sh after pg_server.sh: starts a throwaway PgBouncer (Debian's pgbouncer) in
# front of that PostgreSQL server, listening on 127.0.0.1 only, on a free port, in SESSION
# pooling mode: what Annals requires of a pooler (README, "Behind a connection pooler"). Its
# configuration, log and pid file go in a temporary directory, removed with the server when the
# sourcing script exits; an EXIT trap set before (pg_server.sh's, nats_server.sh's) still runs.
#
#   pgbouncer_start WHO [MODE]
#
# MODE is PgBouncer's pool_mode, session by default (transaction shows what breaks: see the
# README).
# Needs PGPORT (pg_server_start sets it). Sets PGBOUNCER_BASE and PGBOUNCER_PORT, and exports
# ANNALS_TEST_PGBOUNCER=postgresql://postgres@127.0.0.1:PORT/postgres: every database of the
# server is reachable through it by name (the "*" entry), so a test creates its database on
# the server and connects to it through PgBouncer.

pgbouncer_start() {
  local who="$1" mode="${2:-session}"
  local bin="${PGBOUNCER_BIN:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}"
  if [ ! -x "$bin" ]; then
    echo "$who: pgbouncer not found (apt-get install pgbouncer)" >&2
    exit 1
  fi
  PGBOUNCER_BASE="$(mktemp -d "${TMPDIR:-/tmp}/annals-pgbouncer.XXXXXX")"
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    # PgBouncer refuses to run as root.
    chown postgres:postgres "$PGBOUNCER_BASE"
    as=(runuser -u postgres --)
  fi
  local previous
  previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
  pgbouncer_previous_exit_trap="$previous"
  trap 'pgbouncer_exit_status=$?; set +e; pgbouncer_stop
        if [ -n "$pgbouncer_previous_exit_trap" ]; then (exit "$pgbouncer_exit_status"); eval "$pgbouncer_previous_exit_trap"; fi
        exit "$pgbouncer_exit_status"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  echo '"postgres" ""' >"$PGBOUNCER_BASE/users.txt"
  local attempt started=""
  for attempt in 1 2 3 4 5 6 7 8; do
    PGBOUNCER_PORT=$((20000 + RANDOM % 20000))
    pgbouncer_port_in_use "$PGBOUNCER_PORT" && continue
    cat >"$PGBOUNCER_BASE/pgbouncer.ini" <<CONF
[databases]
* = host=127.0.0.1 port=$PGPORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGBOUNCER_BASE/users.txt
admin_users = postgres
pool_mode = $mode
server_reset_query = DISCARD ALL
max_client_conn = 1000
default_pool_size = 250
logfile = $PGBOUNCER_BASE/log
pidfile = $PGBOUNCER_BASE/pid
CONF
    # Its log file is opened by PgBouncer itself (as postgres when run as root): create it
    # first with that owner; what it prints before the log is open goes to start.log.
    touch "$PGBOUNCER_BASE/log"
    if [ -n "${as[*]}" ]; then chown -R postgres:postgres "$PGBOUNCER_BASE"; fi
    if "${as[@]}" "$bin" -d "$PGBOUNCER_BASE/pgbouncer.ini" >>"$PGBOUNCER_BASE/start.log" 2>&1; then
      local waited
      for waited in $(seq 1 50); do
        pgbouncer_port_in_use "$PGBOUNCER_PORT" && break
        sleep 0.1
      done
      if pgbouncer_port_in_use "$PGBOUNCER_PORT"; then
        started=1
        break
      fi
    fi
    pgbouncer_stop_process
  done
  if [ -z "$started" ]; then
    echo "$who: cannot start a throwaway PgBouncer; its log:" >&2
    cat "$PGBOUNCER_BASE/start.log" "$PGBOUNCER_BASE/log" >&2 || true
    exit 1
  fi
  export ANNALS_TEST_PGBOUNCER="postgresql://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres"
}

pgbouncer_port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pgbouncer_stop_process() {
  local pid
  pid="$(cat "$PGBOUNCER_BASE/pid" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  local waited
  for waited in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PGBOUNCER_BASE/pid"
}

# Part of the EXIT trap: stops PgBouncer, removes its directory.
pgbouncer_stop() {
  if [ -n "${PGBOUNCER_BASE:-}" ]; then
    pgbouncer_stop_process
    rm -rf "$PGBOUNCER_BASE"
  fi
}
