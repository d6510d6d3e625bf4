#!/usr/bin/env bash
# Annals behind PgBouncer in TRANSACTION mode: not supported (prepared statements, session
# settings, the runner's session lock and LISTEN live on a server connection, and such a pooler
# hands that connection to another client after each transaction). What must hold is that it
# fails clearly: exit 4, a message naming the pooler mode, and nothing half-written.
#
#   pgbouncer_transaction_test.sh BANK ROOT
#
# Needs ANNALS_TEST_PG (tools/scripts/test.sh sets it) and Debian's pgbouncer; starts its own
# PgBouncer (tools/scripts/pgbouncer_server.sh) and removes it, and its database, on exit.
set -euo pipefail
bank="$1"
root="$2"
: "${ANNALS_TEST_PG:?ANNALS_TEST_PG is not set: run tools/scripts/test.sh}"
PGPORT="$(sed -E 's|^[a-z]+://[^/]*:([0-9]+)/.*$|\1|' <<<"$ANNALS_TEST_PG")"
db="annals_pgb_tx_$$_$RANDOM"
psql -qX "$ANNALS_TEST_PG" -c "CREATE DATABASE $db"
trap 'psql -qX "$ANNALS_TEST_PG" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
source "$root/tools/scripts/pgbouncer_server.sh"
pgbouncer_start pgbouncer-transaction-test transaction
uri="postgresql://postgres@127.0.0.1:$PGBOUNCER_PORT/$db"

# The first client prepares its statements on the one server connection and leaves them there.
"$bank" --db "$uri" open acc-1 --owner "Ann Lee" >/dev/null
# The next client is given that connection, with the first one's statement names on it.
set +e
out="$("$bank" --db "$uri" open acc-2 --owner "Bo Chan" 2>&1)"
rc=$?
set -e
echo "$out"
if [ "$rc" -ne 4 ]; then
  echo "FAIL: the second command through a transaction-mode pooler exited $rc, not 4" >&2
  exit 1
fi
if ! grep -q "pool_mode = session" <<<"$out"; then
  echo "FAIL: the error does not name the pooler mode" >&2
  exit 1
fi
# Nothing half-written: the store (read directly) holds acc-1's one event and no acc-2.
streams="$(psql -qXtA "${ANNALS_TEST_PG%/*}/$db" -c "SELECT count(*) FROM annals_streams")"
events="$(psql -qXtA "${ANNALS_TEST_PG%/*}/$db" -c "SELECT count(*) FROM annals_events")"
if [ "$streams" != 1 ] || [ "$events" != 1 ]; then
  echo "FAIL: the store holds $streams streams and $events events, not 1 and 1" >&2
  exit 1
fi
echo "ok: refused with exit 4 and the pooler named; nothing written"
