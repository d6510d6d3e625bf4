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

// `name` as a quoted SQL identifier ("name", with "" for a quote inside).
std::string quote_identifier(std::string_view name);
class row_cache;  // db/row_cache.hpp

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
  // A statement whose row count is not needed (sql_tx::write). While pipelining is on, a
  // backend that can pipeline (PostgreSQL) queues it without waiting for the server; its error
  // is then returned by the next run, query, exec or clear_cache, so the caller cannot tell
  // which statement failed. Otherwise it runs now.
  virtual result<void> send(std::string_view sql, const sql_value* params, std::size_t count) {
    auto r = run(sql, params, count);
    if (!r) return std::move(r).error();
    return {};
  }
  // Turns pipelining on or off (see send); returns the previous setting. Only PostgreSQL
  // pipelines: elsewhere it stays off.
  virtual bool pipelining(bool) { return false; }
  // Whether a statement queued since pipelining was last turned on failed: the error that the
  // caller saw may then belong to an earlier statement than the one it ran. Waits for the
  // queued statements first.
  virtual bool pipeline_failed() { return false; }
  // The typed rows this batch found and wrote (db/row_cache.hpp), when the connection keeps
  // them (PostgreSQL while pipelining); null otherwise.
  virtual row_cache* rows() { return nullptr; }
  // Sends the rows written into rows() and not yet sent (one statement per table and kind).
  // Every other statement on the connection does this first by itself, but for the typed
  // find and select, which call it when they need the database to hold them.
  virtual result<void> write_rows() { return {}; }
};

// Pipelining on `c` for a scope: a batch whose failure can be retried without it, to learn
// which statement failed.
class pipelined {
 public:
  pipelined(sql_connection& c, bool on) : c_(c), was_(c.pipelining(on)) {}
  ~pipelined() { (void)c_.pipelining(was_); }
  pipelined(const pipelined&) = delete;
  pipelined& operator=(const pipelined&) = delete;

 private:
  sql_connection& c_;
  bool was_;
};

// Makes the sql_tx handed to user code: over `c`, with logical -> physical table names (null:
// the names as they are).
struct sql_tx_access {
  static sql_tx make(sql_connection& c,
                     const std::map<std::string, std::string, std::less<>>* names = nullptr) {
    return sql_tx(c, names);
  }
  static sql_connection& connection(sql_tx& tx) noexcept { return tx.conn_; }
};

}  // namespace annals::detail
