// Read-model SQL on PostgreSQL: the sql_connection behind an sql_tx (see annals/sql.hpp for
// what users see). ?N placeholders become $N; values are bound in binary with their types
// (bigint, double precision, text, bytea; NULL inferred); results come back as text so that
// any column type reads as the SQLite accessors promise.
#pragma once

#include "db/row_cache.hpp"
#include "db/sql_connection.hpp"
#include "backends/postgres/pg.hpp"

#include <array>
#include <map>
#include <string>
#include <string_view>
#include <utility>

namespace annals::pg {

// `sql` with each ? or ?N outside quotes, identifiers and comments turned into $N.
std::string translate_placeholders(std::string_view sql);

class sql_conn final : public detail::sql_connection {
 public:
  explicit sql_conn(connection c) : owned_(std::move(c)), conn_(&owned_) {}
  // Borrows a connection owned elsewhere (the store's, for inline projections).
  explicit sql_conn(connection* borrowed) : conn_(borrowed) {}

  detail::sql_dialect dialect() const noexcept override { return detail::sql_dialect::postgres; }
  // Each call but send() first waits for what send() queued, and returns its error if it
  // failed (exec runs its SQL anyway, so that a ROLLBACK is never skipped).
  // BEGIN, COMMIT, a savepoint: the rows held are sent first, then forgotten (the statement
  // may change what the rows are); ROLLBACK drops them. When sending or a queued statement
  // failed, the statement is not run (a COMMIT must not keep part of a batch), but a ROLLBACK
  // always is.
  result<void> exec(const char* sql, std::string_view what) override {
    const bool rollback = std::string_view(sql).starts_with("ROLLBACK");
    auto written = rollback ? result<void>() : write_rows();
    rows_.discard();  // after write_rows, or rolled back
    auto queued = settle();
    if (!written) return written;
    if (!queued && !rollback) return queued;
    auto r = conn_->exec_simple(what, sql);
    return queued ? r : queued;
  }
  result<std::int64_t> run(std::string_view sql, const sql_value* params,
                           std::size_t count) override;
  result<std::int64_t> query(std::string_view sql, const sql_value* params, std::size_t count,
                             const row_visitor& visit) override;
  void clear_cache() override {
    rows_.discard();  // a transaction that failed, or DDL outside a batch
    (void)settle();
    conn_->forget_prepared();
  }
  result<void> send(std::string_view sql, const sql_value* params, std::size_t count) override;
  bool pipelining(bool on) override {
    rows_.discard();  // the batch's transaction has ended
    if (on) {
      failed_ = false;
    } else {
      (void)settle();  // nothing is left queued: the caller's batch has ended
    }
    return std::exchange(pipelining_, on);
  }
  bool pipeline_failed() override {
    (void)settle();
    return failed_;
  }
  detail::row_cache* rows() override { return pipelining_ ? &rows_ : nullptr; }
  // One INSERT ... SELECT FROM unnest(...) ON CONFLICT per table for the upserted rows, one
  // DELETE ... WHERE key IN (SELECT FROM unnest(...)) for the erased ones; pipelined.
  result<void> write_rows() override;

 private:
  // Waits for the queued statements; remembers a failure among them.
  result<void> settle() {
    auto r = conn_->sync();
    if (!r) failed_ = true;
    return r;
  }
  // `sql` with ?N as $N, and `values` as libpq parameters (*text is what is prepared).
  void bind(std::string_view sql, const sql_value* values, std::size_t count, params& p,
            std::string& text);
  result<pg_result> execute(std::string_view sql, const sql_value* params, std::size_t count,
                            std::string_view what);
  // write_rows' statements for a table: [0] the upsert, [1] the delete.
  const std::array<std::string, 2>& bulk_sql(const table_shape& s, std::string_view physical);
  std::map<const table_shape*, std::map<std::string, std::array<std::string, 2>, std::less<>>>
      bulk_sql_;
  connection owned_;
  connection* conn_;
  bool pipelining_ = false;
  bool failed_ = false;  // see pipeline_failed
  detail::row_cache rows_;     // used while pipelining
};

}  // namespace annals::pg
