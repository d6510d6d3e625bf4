#include "backends/postgres/pg_sql.hpp"

#include <fmt/format.h>

#include <algorithm>

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

void sql_conn::bind(std::string_view sql, const sql_value* values, std::size_t count, params& p,
                    std::string& text) {
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
  text = translate_placeholders(sql);
  if (types.find('n') != std::string::npos) text += " /* " + types + " */";
}

result<pg_result> sql_conn::execute(std::string_view sql, const sql_value* values,
                                    std::size_t count, std::string_view what) {
  if (auto queued = settle(); !queued) return std::move(queued).error();
  params p;
  std::string text;
  bind(sql, values, count, p, text);
  failure why;
  auto r = conn_->exec(what, text, p, true, &why, true);
  // 0A000: a cached statement whose result columns changed (a table replaced by a rebuild in
  // another process): the transaction is lost, but the next attempt prepares afresh.
  if (!r && why.sqlstate == "0A000") clear_cache();
  return r;
}

result<void> sql_conn::send(std::string_view sql, const sql_value* values, std::size_t count) {
  if (!pipelining_) return detail::sql_connection::send(sql, values, count);
  params p;
  std::string text;
  bind(sql, values, count, p, text);
  auto r = conn_->send("read-model statement failed", text, p);
  if (!r) failed_ = true;  // the statement, or one queued before it
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

namespace {

// A read-model column's values as a binary array parameter: the element type, and the array
// type the statement casts the parameter to (one mapping, so the two cannot disagree).
unsigned int element_of(column_type t) {
  switch (t) {
    case column_type::integer: return array_param::int8;
    case column_type::real: return array_param::float8;
    case column_type::text: return array_param::text;
    case column_type::blob: return array_param::bytea;
  }
  return array_param::bytea;
}
const char* array_of(column_type t) {
  switch (element_of(t)) {
    case array_param::int8: return "int8[]";
    case array_param::float8: return "float8[]";
    case array_param::text: return "text[]";
    default: return "bytea[]";
  }
}

}  // namespace

const std::array<std::string, 2>& sql_conn::bulk_sql(const table_shape& s,
                                                     std::string_view physical) {
  auto& of_shape = bulk_sql_[&s];
  if (auto it = of_shape.find(physical); it != of_shape.end()) return it->second;
  std::string cols, arrays, updates, keys, key_arrays;
  for (std::size_t i = 0; i < s.columns.size(); ++i) {
    const auto q = detail::quote_identifier(s.columns[i].name);
    cols += fmt::format("{}{}", i ? ", " : "", q);
    arrays += fmt::format("{}${}::{}", i ? ", " : "", i + 1, array_of(s.columns[i].type));
    if (std::find(s.key.begin(), s.key.end(), i) == s.key.end()) {
      updates += fmt::format("{}{} = excluded.{}", updates.empty() ? "" : ", ", q, q);
    }
  }
  for (std::size_t k = 0; k < s.key.size(); ++k) {
    const auto& c = s.columns[s.key[k]];
    keys += fmt::format("{}{}", k ? ", " : "", detail::quote_identifier(c.name));
    key_arrays += fmt::format("{}${}::{}", k ? ", " : "", k + 1, array_of(c.type));
  }
  std::array<std::string, 2> sql{
      fmt::format("INSERT INTO {} ({}) SELECT * FROM unnest({}) ON CONFLICT ({}) DO {}", physical,
                  cols, arrays, keys, updates.empty() ? "NOTHING" : "UPDATE SET " + updates),
      fmt::format("DELETE FROM {} WHERE ({}) IN (SELECT * FROM unnest({}))", physical, keys,
                  key_arrays)};
  return of_shape.emplace(std::string(physical), std::move(sql)).first->second;
}

result<void> sql_conn::write_rows() {
  if (!rows_.dirty()) return {};
  // Rows per statement, and about the bytes at which a statement is sent early.
  constexpr std::size_t chunk_rows = 1000, chunk_bytes = 16 << 20;
  // Sends rows[from, to) of one table: all columns, or (erase) the key columns.
  auto send_rows = [&](const table_shape& s, const std::string& sql,
                       const std::vector<const detail::row_cache::row*>& rows, std::size_t from,
                       std::size_t to, bool keys_only) -> result<void> {
    const std::size_t n = keys_only ? s.key.size() : s.columns.size();
    std::vector<array_param> arrays;
    arrays.reserve(n);
    for (std::size_t c = 0; c < n; ++c) {
      arrays.emplace_back(element_of(s.columns[keys_only ? s.key[c] : c].type));
    }
    for (std::size_t r = from; r < to; ++r) {
      const auto& row = *rows[r];
      for (std::size_t c = 0; c < n; ++c) {
        auto& a = arrays[c];
        std::visit(
            [&](const auto& v) {
              using T = std::decay_t<decltype(v)>;
              if constexpr (std::is_same_v<T, std::monostate>) {
                a.add_null();
              } else if constexpr (std::is_same_v<T, std::int64_t>) {
                if (a.element() == array_param::float8) {
                  a.add_float8(static_cast<double>(v));
                } else {
                  a.add_int8(v);
                }
              } else if constexpr (std::is_same_v<T, double>) {
                if (a.element() == array_param::int8) {
                  a.add_int8(static_cast<std::int64_t>(v));
                } else {
                  a.add_float8(v);
                }
              } else if constexpr (std::is_same_v<T, std::string>) {
                a.add_bytes(v);
              } else {
                a.add_bytes(v.bytes);
              }
            },
            row[c]);
      }
    }
    params p;
    p.reserve(n);
    for (const auto& a : arrays) p.add_array(a);
    auto sent = conn_->send("read-model rows failed", sql, p);
    if (!sent) failed_ = true;
    return sent;
  };
  auto send_all = [&](const table_shape& s, const std::string& sql,
                      const std::vector<const detail::row_cache::row*>& rows,
                      bool keys_only) -> result<void> {
    std::size_t from = 0, bytes = 0;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      for (const auto& v : *rows[r]) {
        if (auto* t = std::get_if<std::string>(&v)) bytes += t->size();
        if (auto* b = std::get_if<blob>(&v)) bytes += b->bytes.size();
      }
      if (r + 1 - from >= chunk_rows || bytes >= chunk_bytes || r + 1 == rows.size()) {
        if (auto x = send_rows(s, sql, rows, from, r + 1, keys_only); !x) return x;
        from = r + 1;
        bytes = 0;
      }
    }
    return {};
  };
  for (const auto& t : rows_.take_written()) {
    const auto& sql = bulk_sql(*t.shape, t.physical);
    // Erased and upserted keys differ (one entry per key), so the order does not matter.
    if (auto x = send_all(*t.shape, sql[1], t.erases, true); !x) return x;
    if (auto x = send_all(*t.shape, sql[0], t.upserts, false); !x) return x;
  }
  return {};
}

}  // namespace annals::pg
