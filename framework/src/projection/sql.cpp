#include "projection/internal.hpp"

#include "db/row_cache.hpp"

#include <optional>

#include <fmt/format.h>

namespace annals {
namespace detail {

std::string quote_identifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace detail

namespace {

// SQL written by the caller sees the typed rows the batch holds (they are sent first) and may
// change any row (they are then forgotten). Null when sending them failed.
detail::sql_connection* uncached(detail::sql_connection& c, std::optional<error>& failed) {
  if (auto* rows = c.rows()) {
    if (auto w = c.write_rows(); !w) {
      failed = w.error();
      return nullptr;
    }
    rows->clear();
  }
  return &c;
}

}  // namespace

result<std::int64_t> sql_tx::exec(std::string_view sql, const sql_value* params,
                                  std::size_t count) {
  std::optional<error> failed;
  auto* c = uncached(conn_, failed);
  if (!c) return std::move(*failed);
  return c->run(sql, params, count);
}

result<std::int64_t> sql_tx::exec(std::string_view sql, sql_params params) {
  return exec(sql, params.begin(), params.size());
}

result<std::int64_t> sql_tx::query(std::string_view sql, const sql_value* params,
                                   std::size_t count, const row_visitor& visit) {
  std::optional<error> failed;
  auto* c = uncached(conn_, failed);
  if (!c) return std::move(*failed);
  return c->query(sql, params, count, visit);
}

result<std::int64_t> sql_tx::query(std::string_view sql, sql_params params,
                                   const row_visitor& visit) {
  return query(sql, params.begin(), params.size(), visit);
}

result<void> sql_tx::write(std::string_view sql, const sql_value* params, std::size_t count) {
  std::optional<error> failed;
  auto* c = uncached(conn_, failed);
  if (!c) return std::move(*failed);
  return c->send(sql, params, count);
}

result<void> sql_tx::write(std::string_view sql, sql_params params) {
  return write(sql, params.begin(), params.size());
}

std::string sql_tx::table(std::string_view logical) const {
  if (names_) {
    if (auto it = names_->find(logical); it != names_->end()) return it->second;
  }
  return detail::quote_identifier(logical);
}

std::string_view sql_tx::dialect() const noexcept {
  return conn_.dialect() == detail::sql_dialect::postgres ? "postgresql" : "sqlite";
}

int sql_row::columns() const noexcept { return s_->columns(); }
bool sql_row::is_null(int c) const noexcept { return s_->is_null(c); }
std::int64_t sql_row::int64(int c) const noexcept { return s_->int64(c); }
double sql_row::real(int c) const noexcept { return s_->real(c); }
std::string_view sql_row::text_view(int c) const noexcept { return s_->text_view(c); }
std::string sql_row::text(int c) const { return std::string(s_->text_view(c)); }
blob sql_row::bytes(int c) const { return s_->bytes(c); }

}  // namespace annals
