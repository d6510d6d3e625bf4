// Internals of the projection subsystem: opening a backend for a consumer, inline projections,
// and read-model SQL generation.
#pragma once

#include <annals/projection.hpp>
#include <annals/projection_runner.hpp>
#include <annals/read_model.hpp>
#include <annals/sql.hpp>
#include <annals/store_ref.hpp>

#include "db/coordination.hpp"
#include "db/sql_connection.hpp"
#include "store/commit_hook.hpp"
#include "store/uri.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>

namespace annals::detail {

// A store opened for a runner or a subscription, with SQL connections on its database.
struct backend {
  std::shared_ptr<event_store> store;      // shared with the application when given a handle
  std::unique_ptr<sql_connection> writer;  // bookkeeping and read-model writes
  std::unique_ptr<sql_connection> reader;  // read-only queries; only when asked
  std::unique_ptr<runner_coordination> coordination;
  store::location where;  // the database, to open more connections on it
};
struct backend_options {
  std::int64_t busy_timeout_ms = 10000;
  bool reader = false;
  bool sql_only = false;  // only the writer connection: no store, no coordination (URI only)
  bool coordination = true;  // false: no coordination (admins, which run no consumer)
  // Nothing written: the store opened read_only (an older format is not upgraded), the
  // "writer" connection read-only too (SQLite SQLITE_OPEN_READONLY, PostgreSQL
  // default_transaction_read_only), no coordination. For readers of the bookkeeping.
  bool read_only = false;
};
// The store and the connections a component needs on its database (store_ref: a handle
// Annals opened, or a URI opened here with a pool of 2 and never created: not_found). A double
// is invalid_argument; a read-only handle is read_only unless o.read_only. The writer commits
// without waiting for the disk (synchronous NORMAL / synchronous_commit off): what it writes
// is derived or redone after a crash. `what` names the user in errors ("projections").
result<backend> open_backend(const store_ref& store, const backend_options& o,
                             std::string_view what);

// Whether `table` exists in the connection's database (its current schema on PostgreSQL).
result<bool> table_exists(sql_connection& c, std::string_view table);

// Runs fn in a write transaction on c (SQLite: BEGIN IMMEDIATE, the write lock; PostgreSQL:
// READ COMMITTED); commits if it succeeds, else (error or exception) rolls back.
result<void> in_write_tx(sql_connection& c, const std::function<result<void>(sql_tx&)>& fn);

// Runs a projection's handler for one event; a returned error or an exception becomes an error
// naming the projection, the position and the type.
result<void> apply_projection(const projection_def& d, const recorded_event& e, sql_tx& tx);

// Creates the bookkeeping tables, and for each projection its tables and checkpoint row when
// missing (a projection whose stored version differs is left for a rebuild). Runs inside the
// caller's write transaction.
result<void> init_projections(sql_connection& c, const std::vector<std::shared_ptr<const projection_def>>& defs);

// The commit hook a store runs in each append's transaction to bring `defs` up to its head
// (see sqlite_options::inline_projections): one that is stuck, of another version or more than
// max_lag behind is left to a projection_runner. A handler error fails the append, saying that
// it was not written. Null when defs is empty.
std::shared_ptr<store::commit_hook> inline_projections_hook(
    std::vector<std::shared_ptr<const projection_def>> defs, std::int64_t max_lag);

// Marks the projection's parked events retried and unsticks it: the next catch-up applies the
// event again. `position` 0, or the position it is stuck at (else not_found). Returns how many
// parked events it marked. In a write transaction.
result<std::int64_t> retry_parked(sql_tx& tx, std::string_view projection,
                                  std::int64_t position);
// Moves a projection stuck at `position` past it, recording the skip (else invalid_argument).
// In a write transaction.
result<void> skip_parked(sql_tx& tx, std::string_view projection, std::int64_t position);

// CREATE TABLE IF NOT EXISTS for a read-model table under its physical (quoted) name. On
// PostgreSQL the primary key constraint is named after the table (pk_name), so a rebuild's
// shadow table can take the live name with its constraint (rename_key_sql).
std::string create_table_sql(const table_shape& s, std::string_view physical_quoted,
                             sql_dialect dialect);
// After ALTER TABLE shadow RENAME TO live on PostgreSQL: the statement renaming the primary
// key constraint to the live table's name (empty on SQLite, whose indexes follow the table).
std::string rename_key_sql(std::string_view shadow_unquoted, std::string_view live_unquoted,
                           sql_dialect dialect);

}  // namespace annals::detail
