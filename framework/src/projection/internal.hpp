// Internals of the projection subsystem: the connection behind sql_tx, and SQL generation.
#pragma once

#include <annals/projection.hpp>
#include <annals/read_model.hpp>
#include <annals/sql.hpp>

#include "store/sqlite/sqlite.hpp"

#include <memory>
#include <string>
#include <unordered_map>

namespace annals::detail {

// A SQLite connection with a cache of prepared statements keyed by their SQL text.
// Used by one thread at a time.
class sql_connection {
 public:
  explicit sql_connection(sqlite::connection c) : owned_(std::move(c)), db_(owned_.get()) {}
  // Borrows a connection owned elsewhere (the event store's writer, for inline projections).
  explicit sql_connection(sqlite3* borrowed) : db_(borrowed) {}
  sql_connection(sql_connection&& o) noexcept
      : owned_(std::move(o.owned_)), db_(std::exchange(o.db_, nullptr)), cache_(std::move(o.cache_)) {}
  sqlite3* db() const noexcept { return db_; }
  result<void> exec(const char* sql, std::string_view what) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return sqlite::make_error(rc, what, db_);
    return {};
  }

  // A prepared statement for `sql`, from the cache when it is not in use. `temp` holds one
  // prepared for this call only when the cached one is busy (a query inside a query).
  result<sqlite::statement*> prepare(std::string_view sql, std::unique_ptr<sqlite::statement>& temp);
  void clear_cache() { cache_.clear(); }  // after DROP/RENAME of tables

 private:
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

// Runs a projection's handler for one event; a returned error or an exception becomes an error
// naming the projection, the position and the type.
result<void> apply_projection(const projection_def& d, const recorded_event& e, sql_tx& tx);

// Creates the bookkeeping tables, and for each projection its tables and checkpoint row when
// missing (a projection whose stored version differs is left for a rebuild). Runs inside the
// caller's write transaction.
result<void> init_projections(sql_connection& c, const std::vector<std::shared_ptr<const projection_def>>& defs);

std::string quote_identifier(std::string_view name);
std::string create_table_sql(const table_shape& s, std::string_view physical_quoted);

}  // namespace annals::detail
