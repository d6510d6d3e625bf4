// Internals of the projection subsystem: the connection behind sql_tx, and SQL generation.
#pragma once

#include <annals/projection.hpp>
#include <annals/read_model.hpp>
#include <annals/sql.hpp>
#include <annals/store_ref.hpp>

#include "store/sqlite/sqlite.hpp"
#include "store/uri.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>

namespace annals::detail {

enum class sql_dialect { sqlite, postgres };

// One result row, as the backend holds it (sql_row forwards to it).
class row_source {
 public:
  virtual ~row_source() = default;
  virtual int columns() const noexcept = 0;
  virtual bool is_null(int column) const noexcept = 0;
  virtual std::int64_t int64(int column) const noexcept = 0;
  virtual double real(int column) const noexcept = 0;
  virtual std::string_view text_view(int column) const noexcept = 0;
  virtual blob bytes(int column) const = 0;
};

// The connection behind an sql_tx: read-model SQL with ?N parameters, on one backend.
// Used by one thread at a time.
class sql_connection {
 public:
  virtual ~sql_connection() = default;
  virtual sql_dialect dialect() const noexcept = 0;
  // Parameterless SQL text, possibly several statements (DDL, BEGIN, COMMIT...).
  virtual result<void> exec(const char* sql, std::string_view what) = 0;
  // One statement with bound parameters; returns the number of rows changed.
  virtual result<std::int64_t> run(std::string_view sql, const sql_value* params,
                                   std::size_t count) = 0;
  // One query; visit each row until it returns false. Returns the rows visited.
  virtual result<std::int64_t> query(std::string_view sql, const sql_value* params,
                                     std::size_t count, const row_visitor& visit) = 0;
  // Forget prepared statements (after DROP/RENAME of tables).
  virtual void clear_cache() = 0;
};

// A SQLite connection (owned, or borrowed from the event store's writer for inline
// projections) with a cache of prepared statements keyed by their SQL text.
class sqlite_sql_connection final : public sql_connection {
 public:
  explicit sqlite_sql_connection(sqlite::connection c) : owned_(std::move(c)), db_(owned_.get()) {}
  explicit sqlite_sql_connection(sqlite3* borrowed) : db_(borrowed) {}
  sqlite3* db() const noexcept { return db_; }
  sql_dialect dialect() const noexcept override { return sql_dialect::sqlite; }
  result<void> exec(const char* sql, std::string_view what) override {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return sqlite::make_error(rc, what, db_);
    return {};
  }
  result<std::int64_t> run(std::string_view sql, const sql_value* params,
                           std::size_t count) override;
  result<std::int64_t> query(std::string_view sql, const sql_value* params, std::size_t count,
                             const row_visitor& visit) override;
  void clear_cache() override { cache_.clear(); }

 private:
  // A prepared statement for `sql`, from the cache when it is not in use. `temp` holds one
  // prepared for this call only when the cached one is busy (a query inside a query).
  result<sqlite::statement*> prepare(std::string_view sql, std::unique_ptr<sqlite::statement>& temp);
  struct text_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  sqlite::connection owned_;
  sqlite3* db_;
  // Looked up by string_view: no copy of the SQL text per call.
  std::unordered_map<std::string, sqlite::statement, text_hash, std::equal_to<>> cache_;
};

// What runners of one store agree on across processes, per backend.
class runner_coordination {
 public:
  virtual ~runner_coordination() = default;
  // An exclusive lock for rebuilding `name`, released when the returned handle is destroyed or
  // the process dies. busy when another rebuild holds it.
  virtual result<std::shared_ptr<void>> lock_rebuild(std::string_view name) = 0;
  // Whether a rebuild of `name` holds that lock now (any process).
  virtual bool rebuild_running(std::string_view name) = 0;
  // Whether this runner may apply `name` now. Where the backend keeps one active runner per
  // projection (PostgreSQL), this takes the lead when nobody holds it; `keep` holds it until
  // release_all() (a live runner), else until release(name). false: another runner leads.
  virtual bool lead(std::string_view name, bool keep) = 0;
  virtual void release(std::string_view name) = 0;
  virtual void release_all() = 0;
  // How long the live loop may sleep when nothing wakes it: appends by other processes are
  // seen within this (a wake-up from the backend may make it much shorter).
  virtual std::chrono::milliseconds follow_interval(std::chrono::milliseconds poll) const = 0;
};

// Makes the sql_tx handed to user code: over `c`, with logical -> physical table names (null:
// the names as they are).
struct sql_tx_access {
  static sql_tx make(sql_connection& c,
                     const std::map<std::string, std::string, std::less<>>* names = nullptr) {
    return sql_tx(c, names);
  }
};

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
  // Opening from a URI: the store's upcasters. On a handle: null or the store's own.
  std::shared_ptr<const upcasters> upcast;
  bool reader = false;
  bool sql_only = false;  // only the writer connection: no store, no coordination (URI only)
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

// Reads the events of inline projection number `index` in (after, last], in position order,
// in the caller's write transaction, upcast and filtered to its types, and visits each.
using inline_reader = std::function<result<void>(
    std::size_t index, std::int64_t after, std::int64_t last,
    const std::function<result<void>(const recorded_event&)>& visit)>;

// Brings each inline projection up to `last` inside the caller's write transaction on `c`
// (see sqlite_options::inline_projections): one that is stuck, of another version or more than
// max_lag behind is left to a projection_runner. A handler error is returned, saying that the
// append was not written.
result<void> apply_inline(sql_connection& c, const std::vector<std::shared_ptr<const projection_def>>& defs,
                          std::int64_t last, std::int64_t max_lag, const inline_reader& read);

std::string quote_identifier(std::string_view name);
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
