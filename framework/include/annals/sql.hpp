// annals/sql.hpp — a transaction handle on the store's database, for read models.
//
// Projection handlers receive an sql_tx inside the transaction that also moves their
// checkpoint; queries receive one inside a read transaction. Values are always bound as
// parameters (?1, ?2, ...), never pasted into SQL text.
//
// The database is the store's: SQLite (the same file as the events) or PostgreSQL (the same
// database). The same ?N placeholders work on both (on PostgreSQL they are sent as $N; a ?
// inside a quoted string or identifier is left alone). On PostgreSQL: integers are bound as
// bigint, doubles as double precision, strings as text (valid UTF-8 without NUL bytes),
// blobs as bytea, and a statement that fails aborts the whole transaction (so a handler cannot
// catch an error and go on: the batch is retried, as with any handler error). Text compares
// bytewise on both (read-model text columns use the "C" collation on PostgreSQL).
//
// Thread safety: an sql_tx belongs to the thread that received it and is valid only during the
// call that received it. Ownership: it does not own the connection.
#pragma once

#include <annals/result.hpp>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace annals {

// A BLOB column value.
struct blob {
  std::string bytes;
  friend bool operator==(const blob&, const blob&) = default;
};

// A parameter value. Strings and blobs are referenced, not copied: keep them alive for the call.
class sql_value {
 public:
  struct null_t {};
  struct blob_ref {
    std::string_view bytes;
  };
  sql_value() : v_(null_t{}) {}
  sql_value(std::nullptr_t) : v_(null_t{}) {}
  sql_value(bool b) : v_(std::int64_t{b}) {}
  sql_value(int i) : v_(std::int64_t{i}) {}
  sql_value(long i) : v_(std::int64_t{i}) {}
  sql_value(long long i) : v_(static_cast<std::int64_t>(i)) {}
  sql_value(unsigned u) : v_(std::int64_t{u}) {}
  sql_value(double d) : v_(d) {}
  sql_value(std::string_view s) : v_(s) {}
  sql_value(const std::string& s) : v_(std::string_view(s)) {}
  sql_value(const char* s) : v_(std::string_view(s)) {}
  sql_value(const blob& b) : v_(blob_ref{b.bytes}) {}
  sql_value(blob_ref b) : v_(b) {}

  using variant = std::variant<null_t, std::int64_t, double, std::string_view, blob_ref>;
  const variant& get() const noexcept { return v_; }

 private:
  variant v_;
};

namespace detail {
class sql_connection;  // src/projection/internal.hpp
struct sql_tx_access;  // the library's only way to make an sql_tx
class row_source;      // src/projection/internal.hpp
}

// One result row of a query. Valid only inside the visitor call. Integers, reals and text
// convert as the database does (on PostgreSQL, int64 and real parse the column's text).
class sql_row {
 public:
  int columns() const noexcept;
  bool is_null(int column) const noexcept;
  std::int64_t int64(int column) const noexcept;
  double real(int column) const noexcept;
  std::string text(int column) const;
  std::string_view text_view(int column) const noexcept;  // valid during the visitor call
  blob bytes(int column) const;

  explicit sql_row(const detail::row_source& source) noexcept : s_(&source) {}

 private:
  const detail::row_source* s_;
};

using sql_params = std::initializer_list<sql_value>;
using row_visitor = std::function<bool(const sql_row&)>;

class sql_tx {
 public:
  // Runs a statement with bound parameters; returns the number of rows changed.
  result<std::int64_t> exec(std::string_view sql, sql_params params = {});
  // Runs a query; calls visit for each row until it returns false. Returns rows visited.
  result<std::int64_t> query(std::string_view sql, sql_params params, const row_visitor& visit);
  // Runs a statement whose row count you do not need (an INSERT, UPDATE or DELETE; upsert
  // uses it). In a projection runner's batch on PostgreSQL it is pipelined: sent without
  // waiting for the server, so many writes share one round trip. An error in it then fails
  // the batch at the handler's next exec or query, or at commit; the runner applies the batch
  // again without pipelining to learn which event failed, and handles that one as usual
  // (retry, then park). Elsewhere (SQLite, inline projections, queries) it is exec.
  result<void> write(std::string_view sql, sql_params params = {});
  // The same with a parameter array (used by the read-model templates).
  result<std::int64_t> exec(std::string_view sql, const sql_value* params, std::size_t count);
  result<std::int64_t> query(std::string_view sql, const sql_value* params, std::size_t count,
                             const row_visitor& visit);
  result<void> write(std::string_view sql, const sql_value* params, std::size_t count);

  // The physical name of a read-model table in this transaction: during a rebuild, handlers
  // write to a shadow table. Custom SQL on a projection's own tables must use this name
  // (already quoted for SQL, e.g. "account_statement" or "account_statement__rebuild").
  std::string table(std::string_view logical_name) const;

  // Read-model rows (see annals/read_model.hpp): defined there as templates.
  //
  // In a projection runner's batch on PostgreSQL these go through the batch's row cache:
  // find answers from the rows the batch has already found, upserted or erased, without a
  // round trip; upserts and erases are held and written once per row, as one multi-row
  // statement per table, before your own exec, write or query runs (which then sees them) or
  // the batch commits. Your own SQL makes the batch forget the rows (it may have changed any of
  // them), so find stays exact; the batch is the projection's only writer. Errors of held rows
  // surface as write's do. Do not change a projection's tables from triggers: find would not
  // see it. Elsewhere each call is one statement.
  template <class Row>
  result<void> upsert(const Row& row);
  template <class Row, class... Key>
  result<bool> erase(const Key&... key);  // true if a row was deleted
  template <class Row, class... Key>
  result<std::optional<Row>> find(const Key&... key);
  // Rows matching `where` (SQL after WHERE, with ?1.. parameters; empty: all rows), in the
  // order given by `order_by` (SQL after ORDER BY; empty: by key). visit returns false to stop.
  template <class Row>
  result<std::int64_t> select(std::string_view where, sql_params params,
                              const std::function<bool(const Row&)>& visit,
                              std::string_view order_by = {});

  // Which database this is: "sqlite" or "postgresql" (for the rare handler needing
  // dialect-specific SQL).
  std::string_view dialect() const noexcept;

  // An sql_tx is handed to your code by the library, by reference, for one transaction.
  sql_tx(const sql_tx&) = delete;
  sql_tx& operator=(const sql_tx&) = delete;

 private:
  friend struct detail::sql_tx_access;
  sql_tx(detail::sql_connection& c, const std::map<std::string, std::string, std::less<>>* names)
      : conn_(c), names_(names) {}

  detail::sql_connection& conn_;
  const std::map<std::string, std::string, std::less<>>* names_;
};

}  // namespace annals
