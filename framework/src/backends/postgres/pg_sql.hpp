// Read-model SQL on PostgreSQL: the sql_connection behind an sql_tx (see annals/sql.hpp for
// what users see). ?N placeholders become $N; values are bound in binary with their types
// (bigint, double precision, text, bytea; NULL inferred); results come back as text so that
// any column type reads as the SQLite accessors promise.
#pragma once

#include "db/sql_connection.hpp"
#include "backends/postgres/pg.hpp"

#include <string>
#include <string_view>

namespace annals::pg {

// `sql` with each ? or ?N outside quotes, identifiers and comments turned into $N.
std::string translate_placeholders(std::string_view sql);

class sql_conn final : public detail::sql_connection {
 public:
  explicit sql_conn(connection c) : owned_(std::move(c)), conn_(&owned_) {}
  // Borrows a connection owned elsewhere (the store's, for inline projections).
  explicit sql_conn(connection* borrowed) : conn_(borrowed) {}

  detail::sql_dialect dialect() const noexcept override { return detail::sql_dialect::postgres; }
  result<void> exec(const char* sql, std::string_view what) override {
    return conn_->exec_simple(what, sql);
  }
  result<std::int64_t> run(std::string_view sql, const sql_value* params,
                           std::size_t count) override;
  result<std::int64_t> query(std::string_view sql, const sql_value* params, std::size_t count,
                             const row_visitor& visit) override;
  void clear_cache() override { conn_->forget_prepared(); }

 private:
  result<pg_result> execute(std::string_view sql, const sql_value* params, std::size_t count,
                            std::string_view what);
  connection owned_;
  connection* conn_;
};

}  // namespace annals::pg
