// SQL for read-model rows, generated from their shape. Identifiers come from the row types
// (code, not input) and are quoted; values are always bound.
#include "projection/internal.hpp"

#include "db/row_cache.hpp"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>

namespace annals::detail {

namespace {
const char* sql_type(column_type t, sql_dialect d) {
  const bool pg = d == sql_dialect::postgres;
  switch (t) {
    case column_type::integer: return pg ? "BIGINT" : "INTEGER";
    case column_type::real: return pg ? "DOUBLE PRECISION" : "REAL";
    case column_type::text: return pg ? "TEXT COLLATE \"C\"" : "TEXT";  // bytewise, as SQLite
    case column_type::blob: return pg ? "BYTEA" : "BLOB";
  }
  return "BLOB";
}

// PostgreSQL names a primary key "<table>_pkey" by default, and a renamed table keeps its
// constraint's name: name it ourselves so that a rebuild's rename can carry it over.
std::string pk_name(std::string_view table_unquoted) {
  return std::string(table_unquoted) + "__pk";
}

std::string column_list(const table_shape& s) {
  std::string out;
  for (std::size_t i = 0; i < s.columns.size(); ++i) {
    if (i) out += ", ";
    out += quote_identifier(s.columns[i].name);
  }
  return out;
}

std::string key_condition(const table_shape& s) {
  std::string out;
  for (std::size_t k = 0; k < s.key.size(); ++k) {
    if (k) out += " AND ";
    out += fmt::format("{} = ?{}", quote_identifier(s.columns[s.key[k]].name), k + 1);
  }
  return out;
}

result<void> check_key_arity(const table_shape& s, std::size_t given) {
  if (given != s.key.size()) {
    return error(errc::invalid_argument,
                 fmt::format("read model '{}' has a key of {} column(s), {} value(s) given",
                             s.table, s.key.size(), given));
  }
  return {};
}
enum class op { upsert, erase, find };

// Generated SQL, per row shape, physical table and operation. Shapes live for the program
// (function-local statics), so their addresses are stable keys.
class sql_cache {
 public:
  template <class Make>
  const std::string& get(const table_shape& s, const std::string& physical, op o, Make make) {
    std::lock_guard lock(mu_);
    auto& slot = map_[key{&s, physical, o}];
    if (slot.empty()) slot = make();
    return slot;
  }

 private:
  struct key {
    const table_shape* shape;
    std::string physical;
    op operation;
    bool operator<(const key& k) const {
      return std::tie(shape, physical, operation) < std::tie(k.shape, k.physical, k.operation);
    }
  };
  std::mutex mu_;
  std::map<key, std::string> map_;
};
sql_cache& cache() {
  static sql_cache* c = new sql_cache;
  return *c;
}

}  // namespace

table_shape make_shape(std::string_view table, std::vector<column_info> columns,
                       const std::string_view* key_begin, const std::string_view* key_end) {
  table_shape s;
  s.table = std::string(table);
  s.columns = std::move(columns);
  if (s.table.empty()) throw std::logic_error("annals: a read-model row has an empty table name");
  for (auto k = key_begin; k != key_end; ++k) {
    bool found = false;
    for (std::size_t i = 0; i < s.columns.size(); ++i) {
      if (s.columns[i].name == *k) {
        s.key.push_back(i);
        found = true;
      }
    }
    if (!found) {
      throw std::logic_error(fmt::format("annals: read model '{}' names key column '{}', which "
                                         "is not a member of its row",
                                         s.table, *k));
    }
  }
  if (s.key.empty()) {
    throw std::logic_error(fmt::format("annals: read model '{}' has an empty key", s.table));
  }
  return s;
}

std::string create_table_sql(const table_shape& s, std::string_view physical,
                             sql_dialect dialect) {
  std::string cols;
  for (const auto& c : s.columns) {
    cols += fmt::format("{} {}{}, ", quote_identifier(c.name), sql_type(c.type, dialect),
                        c.nullable ? "" : " NOT NULL");
  }
  std::string key;
  for (std::size_t k = 0; k < s.key.size(); ++k) {
    if (k) key += ", ";
    key += quote_identifier(s.columns[s.key[k]].name);
  }
  if (dialect == sql_dialect::postgres) {
    // physical is quoted: "name" (with "" for a quote inside). Unquote to name the key.
    std::string bare;
    for (std::size_t i = 1; i + 1 < physical.size(); ++i) {
      bare += physical[i];
      if (physical[i] == '"') ++i;
    }
    return fmt::format("CREATE TABLE IF NOT EXISTS {} ({}CONSTRAINT {} PRIMARY KEY ({}))",
                       physical, cols, quote_identifier(pk_name(bare)), key);
  }
  return fmt::format("CREATE TABLE IF NOT EXISTS {} ({}PRIMARY KEY ({})) WITHOUT ROWID", physical,
                     cols, key);
}

std::string rename_key_sql(std::string_view shadow, std::string_view live, sql_dialect dialect) {
  if (dialect != sql_dialect::postgres) return {};
  return fmt::format("ALTER TABLE {} RENAME CONSTRAINT {} TO {}", quote_identifier(live),
                     quote_identifier(pk_name(shadow)), quote_identifier(pk_name(live)));
}

namespace {

// A full row cache sends the rows it holds and starts again empty (row_cache::max_rows).
result<void> make_room(sql_connection& c, row_cache& rows) {
  if (!rows.full()) return {};
  if (auto w = c.write_rows(); !w) return w;
  rows.clear();
  return {};
}

}  // namespace

result<void> upsert_row(sql_tx& tx, const table_shape& s, const std::vector<sql_value>& values) {
  const auto& sql = cache().get(s, tx.table(s.table), op::upsert, [&] {
  std::string placeholders, updates;
  for (std::size_t i = 0; i < s.columns.size(); ++i) {
    placeholders += fmt::format("{}?{}", i ? ", " : "", i + 1);
    bool is_key = false;
    for (auto k : s.key) is_key = is_key || k == i;
    if (!is_key) {
      if (!updates.empty()) updates += ", ";
      auto q = quote_identifier(s.columns[i].name);
      updates += fmt::format("{} = excluded.{}", q, q);
    }
  }
  std::string key;
  for (std::size_t k = 0; k < s.key.size(); ++k) {
    if (k) key += ", ";
    key += quote_identifier(s.columns[s.key[k]].name);
  }
  return fmt::format("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {}", tx.table(s.table),
                     column_list(s), placeholders, key,
                     updates.empty() ? "NOTHING" : "UPDATE SET " + updates);
  });
  // The typed calls go to the connection directly: sql_tx's own calls drop the row cache.
  auto& c = sql_tx_access::connection(tx);
  if (auto* rows = c.rows()) {
    const auto physical = tx.table(s.table);
    auto k = row_cache::key_of_row(s, physical, values);
    if (!k.empty()) {
      if (auto room = make_room(c, *rows); !room) return room;
      rows->put_written(k, s, physical, row_cache::owned(values.data(), values.size()));
      return {};
    }
    // A key that is not cached: the rows held go first, then this one on its own.
    if (auto w = c.write_rows(); !w) return w;
    rows->clear();
  }
  return c.send(sql, values.data(), values.size());
}

result<bool> erase_row(sql_tx& tx, const table_shape& s, const std::vector<sql_value>& key) {
  if (auto r = check_key_arity(s, key.size()); !r) return r.error();
  const auto& sql = cache().get(s, tx.table(s.table), op::erase, [&] {
    return fmt::format("DELETE FROM {} WHERE {}", tx.table(s.table), key_condition(s));
  });
  auto& c = sql_tx_access::connection(tx);
  auto* rows = c.rows();
  const auto physical = tx.table(s.table);
  const auto k = rows ? row_cache::key_of(s, physical, key.data(), key.size()) : std::string();
  if (!k.empty()) {
    if (const auto* hit = rows->find(k)) {  // known: the delete waits with the other writes
      const bool existed = hit->has_value();
      rows->put_written(k, s, physical, std::nullopt, row_cache::owned(key.data(), key.size()));
      return existed;
    }
  } else if (rows) {  // not cacheable: the rows held go first, and nothing stays cached
    if (auto w = c.write_rows(); !w) return w.error();
    rows->clear();
  }
  // The row is not held (so not written by this batch): the database knows it.
  auto r = c.run(sql, key.data(), key.size());
  if (!r) return std::move(r).error();
  if (!k.empty()) rows->put_read(k, std::nullopt);
  return r.value() > 0;
}

result<std::int64_t> find_row(sql_tx& tx, const table_shape& s, const std::vector<sql_value>& key,
                              const row_visitor& visit) {
  if (auto r = check_key_arity(s, key.size()); !r) return r.error();
  const auto& sql = cache().get(s, tx.table(s.table), op::find, [&] {
    return fmt::format("SELECT {} FROM {} WHERE {}", column_list(s), tx.table(s.table),
                       key_condition(s));
  });
  auto& c = sql_tx_access::connection(tx);
  auto* rows = c.rows();
  const auto k = rows ? row_cache::key_of(s, tx.table(s.table), key.data(), key.size())
                      : std::string();
  if (k.empty()) {
    // Not cacheable (a key value not of its column's type): the database answers, so it must
    // hold the rows the batch wrote.
    if (rows) {
      if (auto w = c.write_rows(); !w) return w.error();
    }
    return c.query(sql, key.data(), key.size(), visit);
  }
  if (const auto* hit = rows->find(k)) {
    if (!*hit) return 0;
    cached_row source(**hit);
    (void)visit(sql_row(source));
    return 1;
  }
  if (auto room = make_room(c, *rows); !room) return room.error();
  std::optional<row_cache::row> found;
  auto r = c.query(sql, key.data(), key.size(), [&](const sql_row& row) {
    found = row_cache::copy(s, row);
    return visit(row);
  });
  if (r) rows->put_read(k, std::move(found));
  return r;
}

result<std::int64_t> select_rows(sql_tx& tx, const table_shape& s, std::string_view where,
                                 const sql_value* params, std::size_t count,
                                 std::string_view order_by, const row_visitor& visit) {
  std::string order;
  if (order_by.empty()) {
    for (std::size_t k = 0; k < s.key.size(); ++k) {
      if (k) order += ", ";
      order += quote_identifier(s.columns[s.key[k]].name);
    }
  } else {
    order = std::string(order_by);
  }
  auto sql = fmt::format("SELECT {} FROM {}{}{} ORDER BY {}", column_list(s), tx.table(s.table),
                         where.empty() ? "" : " WHERE ", where, order);
  auto& c = sql_tx_access::connection(tx);
  if (auto w = c.write_rows(); !w) return w.error();  // the rows held must be there to select
  return c.query(sql, params, count, visit);
}

}  // namespace annals::detail
