# Sourced by test.sh (and usable by any script): starts a throwaway NATS server with JetStream
# (Debian's nats-server) listening on 127.0.0.1 only, on a free port, its store in a temporary
# directory. The server is stopped and its directory removed when the sourcing script exits,
# whatever the outcome; an EXIT trap set before (e.g. pg_server.sh's) still runs after it.
#
#   nats_server_start WHO [server options ...]
#
# WHO prefixes the messages on stderr. Sets and exports NATS_BIN, NATS_BASE (the directory:
# store in $NATS_BASE/js, log in $NATS_BASE/log), NATS_PORT, NATS_PID and
# ANNALS_TEST_NATS=nats://127.0.0.1:PORT; ANNALS_NATS_SERVER=NATS_BIN, so tests that need a
# broker of their own (to restart it, or with other limits) start the same binary.

nats_server_start() {
  local who="$1"
  shift
  NATS_BIN="${NATS_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
  if [ ! -x "$NATS_BIN" ]; then
    echo "$who: nats-server not found (apt-get install nats-server)" >&2
    exit 1
  fi
  NATS_BASE="$(mktemp -d "${TMPDIR:-/tmp}/annals-nats.XXXXXX")"
  # Run our stop first, then whatever EXIT trap was there (pg_server_stop keeps the status).
  local previous
  previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
  nats_previous_exit_trap="$previous"
  # The script's exit status is kept for the previous trap (pg_server_stop reads $?) and as the
  # status the script ends with.
  trap 'nats_exit_status=$?; set +e; nats_server_stop
        if [ -n "$nats_previous_exit_trap" ]; then (exit "$nats_exit_status"); eval "$nats_previous_exit_trap"; fi
        exit "$nats_exit_status"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local attempt
  NATS_PID=""
  for attempt in 1 2 3 4 5 6 7 8; do
    NATS_PORT=$((20000 + RANDOM % 20000))
    nats_port_in_use "$NATS_PORT" && continue
    "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$NATS_BASE/js" "$@" \
      >"$NATS_BASE/log" 2>&1 &
    NATS_PID=$!
    local waited
    for waited in $(seq 1 50); do
      nats_port_in_use "$NATS_PORT" && break
      kill -0 "$NATS_PID" 2>/dev/null || break
      sleep 0.1
    done
    if nats_port_in_use "$NATS_PORT" && kill -0 "$NATS_PID" 2>/dev/null; then
      break
    fi
    kill "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=""
  done
  if [ -z "$NATS_PID" ]; then
    echo "$who: cannot start a throwaway NATS server; its log:" >&2
    cat "$NATS_BASE/log" >&2 || true
    exit 1
  fi
  export NATS_BIN NATS_BASE NATS_PORT NATS_PID
  export ANNALS_TEST_NATS="nats://127.0.0.1:$NATS_PORT"
  export ANNALS_NATS_SERVER="$NATS_BIN"
}

nats_port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Part of the EXIT trap: stops the server (it is ours: $NATS_PID), removes its directory.
nats_server_stop() {
  if [ -n "${NATS_PID:-}" ]; then
    kill "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=""
  fi
  if [ -n "${NATS_BASE:-}" ]; then rm -rf "$NATS_BASE"; fi
}
