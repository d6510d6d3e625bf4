// The database layer's connection interface: what read-model SQL (sql_tx), consumers'
// bookkeeping and inline projections run on, whichever backend is beneath. Each backend
// implements it over its own connection (backends' sql_connection.hpp, pg_sql.hpp).
#pragma once

#include <annals/sql.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

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

// Makes the sql_tx handed to user code: over `c`, with logical -> physical table names (null:
// the names as they are).
struct sql_tx_access {
  static sql_tx make(sql_connection& c,
                     const std::map<std::string, std::string, std::less<>>* names = nullptr) {
    return sql_tx(c, names);
  }
};

}  // namespace annals::detail
