// Internals of the projection subsystem: the connection behind sql_tx, and SQL generation.
#pragma once

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
  explicit sql_connection(sqlite::connection c) : c_(std::move(c)) {}
  sqlite3* db() const noexcept { return c_.get(); }
  sqlite::connection& conn() noexcept { return c_; }

  // A prepared statement for `sql`, from the cache when it is not in use. `temp` holds one
  // prepared for this call only when the cached one is busy (a query inside a query).
  result<sqlite::statement*> prepare(std::string_view sql, std::unique_ptr<sqlite::statement>& temp);
  void clear_cache() { cache_.clear(); }  // after DROP/RENAME of tables

 private:
  sqlite::connection c_;
  std::unordered_map<std::string, sqlite::statement> cache_;
};

std::string quote_identifier(std::string_view name);
std::string create_table_sql(const table_shape& s, std::string_view physical_quoted);

}  // namespace annals::detail
