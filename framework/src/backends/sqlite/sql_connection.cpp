#include "backends/sqlite/sql_connection.hpp"

#include <variant>

namespace annals {
namespace detail {

result<sqlite::statement*> sqlite_sql_connection::prepare(std::string_view sql,
                                                   std::unique_ptr<sqlite::statement>& temp) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) {
    if (!sqlite3_stmt_busy(it->second.get())) return &it->second;
  } else {
    auto st = sqlite::statement::prepare(db(), sql);
    if (!st) return std::move(st).error();
    if (cache_.size() > 512) cache_.clear();
    auto [pos, _] = cache_.emplace(std::string(sql), std::move(st).value());
    return &pos->second;
  }
  auto st = sqlite::statement::prepare(db(), sql);
  if (!st) return std::move(st).error();
  temp = std::make_unique<sqlite::statement>(std::move(st).value());
  return temp.get();
}

}  // namespace detail

namespace {
void bind_all(sqlite::statement& st, const sql_value* params, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    int index = static_cast<int>(i) + 1;
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, sql_value::null_t>) {
            st.bind(index, sqlite::statement::null{});
          } else if constexpr (std::is_same_v<T, sql_value::blob_ref>) {
            st.bind(index, sqlite::statement::blob{v.bytes.data(), v.bytes.size()});
          } else {
            st.bind(index, v);
          }
        },
        params[i].get());
  }
}

// The current row of a stepping SQLite statement.
class sqlite_row final : public detail::row_source {
 public:
  explicit sqlite_row(sqlite3_stmt* s) : s_(s) {}
  int columns() const noexcept override { return sqlite3_column_count(s_); }
  bool is_null(int c) const noexcept override {
    return sqlite3_column_type(s_, c) == SQLITE_NULL;
  }
  std::int64_t int64(int c) const noexcept override { return sqlite3_column_int64(s_, c); }
  double real(int c) const noexcept override { return sqlite3_column_double(s_, c); }
  std::string_view text_view(int c) const noexcept override {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, c)))
             : std::string_view();
  }
  blob bytes(int c) const override {
    auto p = static_cast<const char*>(sqlite3_column_blob(s_, c));
    return blob{p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, c)))
                  : std::string()};
  }

 private:
  sqlite3_stmt* s_;
};
}  // namespace

namespace detail {
result<std::int64_t> sqlite_sql_connection::run(std::string_view sql, const sql_value* params,
                                                std::size_t count) {
  std::unique_ptr<sqlite::statement> temp;
  auto st = prepare(sql, temp);
  if (!st) return std::move(st).error();
  sqlite::reset_guard g(**st);
  bind_all(**st, params, count);
  int rc;
  while ((rc = (*st)->step()) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) return sqlite::make_error(rc, "read-model statement failed", db_);
  return static_cast<std::int64_t>(sqlite3_changes(db_));
}

result<std::int64_t> sqlite_sql_connection::query(std::string_view sql, const sql_value* params,
                                                  std::size_t count, const row_visitor& visit) {
  std::unique_ptr<sqlite::statement> temp;
  auto st = prepare(sql, temp);
  if (!st) return std::move(st).error();
  sqlite::reset_guard g(**st);
  bind_all(**st, params, count);
  std::int64_t rows = 0;
  int rc;
  while ((rc = (*st)->step()) == SQLITE_ROW) {
    ++rows;
    sqlite_row row((*st)->get());
    if (!visit(sql_row(row))) return rows;
  }
  if (rc != SQLITE_DONE) return sqlite::make_error(rc, "read-model query failed", db_);
  return rows;
}
}  // namespace detail

}  // namespace annals
