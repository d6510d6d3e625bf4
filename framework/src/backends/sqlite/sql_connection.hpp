// The database layer's connection (db/sql_connection.hpp) on SQLite.
#pragma once

#include "db/sql_connection.hpp"
#include "backends/sqlite/sqlite.hpp"

#include <memory>
#include <string>
#include <unordered_map>

namespace annals::detail {

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

}  // namespace annals::detail
