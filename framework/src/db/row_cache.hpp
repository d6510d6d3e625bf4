// Read-model rows a projection batch has found or written, by table and key (sql_tx::find,
// upsert, erase; src/projection/read_model.cpp). Only a PostgreSQL connection that pipelines
// (a runner's batch) keeps one, because there a round trip and a statement cost more than the
// handler's work:
//   - the handler's next find of a row it has seen needs no round trip;
//   - upserts and erases are held here and sent at the end, one multi-row statement per table
//     and kind (write_rows): an account written by 500 events of a batch is written once.
//
// Correct because, within the batch's transaction, the typed calls are the only writes the
// cache does not see and it sees all of them:
//   - the runner's lease makes it the projection's only writer;
//   - before any other statement on the transaction (sql_tx's exec, write or query, a typed
//     select, COMMIT), the held rows are sent; before the handler's own statements the cache
//     is then dropped, since they could change any row;
//   - a key whose values are not of its columns' types is not cached.
// A failed batch is applied again without pipelining, so without a cache.
//
#pragma once

#include <annals/read_model.hpp>
#include <annals/sql.hpp>

#include "db/sql_connection.hpp"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace annals::detail {

class row_cache {
 public:
  // One column's value, owned.
  using value = std::variant<std::monostate, std::int64_t, double, std::string, blob>;
  using row = std::vector<value>;

  // The cache key of the row of `s` in `physical` whose key columns hold key[0..n): empty when
  // a value is not of its column's type (then nothing is cached for it).
  static std::string key_of(const table_shape& s, std::string_view physical,
                            const sql_value* key, std::size_t n);
  // The same from a whole row's values (an upsert's).
  static std::string key_of_row(const table_shape& s, std::string_view physical,
                                const std::vector<sql_value>& values);

  // Null when `key` is not cached; else the row, or nullopt when the row is known absent.
  const std::optional<row>* find(const std::string& key) const;
  // A row read from the database (nullopt: there is none).
  void put_read(const std::string& key, std::optional<row> r);
  // A row the batch upserted, or erased (nullopt; `key_values` are its key columns'), to be
  // sent by the connection's write_rows.
  void put_written(const std::string& key, const table_shape& s, std::string_view physical,
                   std::optional<row> r, row key_values = {});
  // Owned copies: of a query's row, by `s`'s column types; of bound values.
  static row copy(const table_shape& s, const sql_row& r);
  static row owned(const sql_value* values, std::size_t n);
  // Whether rows wait to be sent; whether the cache holds max_rows (send, then clear).
  bool dirty() const noexcept { return dirty_ > 0; }
  bool full() const noexcept { return rows_.size() >= max_rows; }
  // Forgets every row once they are all sent (write_rows); rows still held would be lost, so
  // that throws std::logic_error.
  void clear();
  // Forgets every row, unsent ones included: the transaction is rolling back or has ended.
  void discard() noexcept {
    rows_.clear();
    dirty_ = 0;
  }

  // The unsent rows of one table, for write_rows.
  struct table_rows {
    const table_shape* shape;
    std::string_view physical;
    std::vector<const row*> upserts;
    std::vector<const row*> erases;  // their key values
  };
  // Groups the unsent rows by table and marks them sent. The views point into the cache:
  // valid until it changes.
  std::vector<table_rows> take_written();

  static constexpr std::size_t max_rows = 20000;

 private:
  struct entry {
    std::optional<row> r;
    const table_shape* shape = nullptr;  // set on written rows
    std::string physical;
    row key_values;  // of an erased row
    bool dirty = false;
  };
  std::unordered_map<std::string, entry> rows_;
  std::size_t dirty_ = 0;
};

// A cached row read as a query result.
class cached_row final : public row_source {
 public:
  explicit cached_row(const row_cache::row& r) : r_(r) {}
  int columns() const noexcept override { return static_cast<int>(r_.size()); }
  bool is_null(int c) const noexcept override {
    return std::holds_alternative<std::monostate>(r_[c]);
  }
  std::int64_t int64(int c) const noexcept override {
    if (auto* v = std::get_if<std::int64_t>(&r_[c])) return *v;
    if (auto* d = std::get_if<double>(&r_[c])) return static_cast<std::int64_t>(*d);
    return 0;
  }
  double real(int c) const noexcept override {
    if (auto* d = std::get_if<double>(&r_[c])) return *d;
    if (auto* v = std::get_if<std::int64_t>(&r_[c])) return static_cast<double>(*v);
    return 0;
  }
  std::string_view text_view(int c) const noexcept override {
    if (auto* s = std::get_if<std::string>(&r_[c])) return *s;
    if (auto* b = std::get_if<blob>(&r_[c])) return b->bytes;
    return {};
  }
  blob bytes(int c) const override { return blob{std::string(text_view(c))}; }

 private:
  const row_cache::row& r_;
};

}  // namespace annals::detail
