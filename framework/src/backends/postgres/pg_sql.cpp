#include "backends/postgres/pg_sql.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace annals::pg {

std::string translate_placeholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 8);
  int next = 0;  // for bare ?: one more than the highest number seen
  std::size_t i = 0;
  auto copy_until = [&](std::string_view end) {  // copies through the closing `end`
    auto stop = sql.find(end, i);
    stop = stop == std::string_view::npos ? sql.size() : stop + end.size();
    out.append(sql.substr(i, stop - i));
    i = stop;
  };
  while (i < sql.size()) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      // Quoted: a doubled quote is an escaped one; copy through the closing quote.
      out += c;
      ++i;
      while (i < sql.size()) {
        out += sql[i];
        if (sql[i++] == c) {
          if (i < sql.size() && sql[i] == c) {
            out += sql[i++];
            continue;
          }
          break;
        }
      }
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      copy_until("\n");
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      copy_until("*/");
    } else if (c == '?') {
      ++i;
      std::size_t digits = i;
      while (digits < sql.size() && sql[digits] >= '0' && sql[digits] <= '9') ++digits;
      int n;
      if (digits > i) {
        n = std::atoi(std::string(sql.substr(i, digits - i)).c_str());
        i = digits;
      } else {
        n = next + 1;
      }
      next = std::max(next, n);
      out += '$';
      out += std::to_string(n);
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

namespace {

// One row of a text-format result.
class text_row final : public detail::row_source {
 public:
  text_row(const PGresult* r, int row) : r_(r), row_(row) {}
  int columns() const noexcept override { return PQnfields(r_); }
  bool is_null(int c) const noexcept override { return PQgetisnull(r_, row_, c) != 0; }
  std::int64_t int64(int c) const noexcept override {
    const char* v = PQgetvalue(r_, row_, c);
    if (v[0] == 't' && v[1] == 0) return 1;  // boolean
    if (v[0] == 'f' && v[1] == 0) return 0;
    return std::strtoll(v, nullptr, 10);
  }
  double real(int c) const noexcept override { return std::strtod(PQgetvalue(r_, row_, c), nullptr); }
  std::string_view text_view(int c) const noexcept override {
    return {PQgetvalue(r_, row_, c), static_cast<std::size_t>(PQgetlength(r_, row_, c))};
  }
  blob bytes(int c) const override {
    auto v = text_view(c);
    constexpr unsigned int bytea_oid = 17;
    if (PQftype(r_, c) != bytea_oid) return blob{std::string(v)};
    if (v.size() < 2 || v[0] != '\\' || v[1] != 'x') {
      // The escape format (a server or role with bytea_output = escape): libpq decodes it.
      std::size_t n = 0;
      unsigned char* raw = PQunescapeBytea(
          reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row_, c)), &n);
      if (!raw) throw std::bad_alloc();
      blob out{std::string(reinterpret_cast<const char*>(raw), n)};
      PQfreemem(raw);
      return out;
    }
    auto nibble = [](char h) {
      return h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10;
    };
    blob out;
    out.bytes.reserve((v.size() - 2) / 2);
    for (std::size_t i = 2; i + 1 < v.size(); i += 2) {
      out.bytes += static_cast<char>(nibble(v[i]) << 4 | nibble(v[i + 1]));
    }
    return out;
  }

 private:
  const PGresult* r_;
  int row_;
};

}  // namespace

result<pg_result> sql_conn::execute(std::string_view sql, const sql_value* values,
                                    std::size_t count, std::string_view what) {
  params p;
  p.reserve(count);
  // The statement is prepared with its parameters' types, which a NULL leaves to the server:
  // the key (the text sent) names the types, so each combination is prepared once.
  std::string types;
  for (std::size_t i = 0; i < count; ++i) {
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, sql_value::null_t>) {
            p.add_null();
            types += 'n';
          } else if constexpr (std::is_same_v<T, std::int64_t>) {
            p.add_int8(v);
            types += 'i';
          } else if constexpr (std::is_same_v<T, double>) {
            p.add_float8(v);
            types += 'd';
          } else if constexpr (std::is_same_v<T, std::string_view>) {
            p.add_text(v);
            types += 't';
          } else {
            p.add_bytea(v.bytes);
            types += 'b';
          }
        },
        values[i].get());
  }
  auto text = translate_placeholders(sql);
  if (types.find('n') != std::string::npos) text += " /* " + types + " */";
  failure why;
  auto r = conn_->exec(what, text, p, true, &why, true);
  // 0A000: a cached statement whose result columns changed (a table replaced by a rebuild in
  // another process): the transaction is lost, but the next attempt prepares afresh.
  if (!r && why.sqlstate == "0A000") clear_cache();
  return r;
}

result<std::int64_t> sql_conn::run(std::string_view sql, const sql_value* params,
                                   std::size_t count) {
  auto r = execute(sql, params, count, "read-model statement failed");
  if (!r) return std::move(r).error();
  const char* n = PQcmdTuples(r->get());
  return static_cast<std::int64_t>(n && *n ? std::strtoll(n, nullptr, 10) : 0);
}

result<std::int64_t> sql_conn::query(std::string_view sql, const sql_value* params,
                                     std::size_t count, const row_visitor& visit) {
  auto r = execute(sql, params, count, "read-model query failed");
  if (!r) return std::move(r).error();
  // The whole result is in memory before the first visit, so a visitor may run queries on the
  // same transaction (a query inside a query), as on SQLite.
  const PGresult* res = r->get();
  int n = PQntuples(res);
  std::int64_t rows = 0;
  for (int i = 0; i < n; ++i) {
    ++rows;
    text_row row(res, i);
    if (!visit(sql_row(row))) break;
  }
  return rows;
}

}  // namespace annals::pg
