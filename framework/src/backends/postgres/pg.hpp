// A thin RAII layer over libpq for the PostgreSQL store. Internal: libpq-fe.h stays out of the
// public headers.
//
// Every value is sent as a bound parameter in binary format (int8 big-endian, bytea and text
// as raw bytes) with its type given explicitly; results are asked for in binary format too.
#pragma once

#include <annals/event_store.hpp>
#include <annals/result.hpp>

#include <libpq-fe.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

// The channel every append NOTIFYs at commit (no payload): `LISTEN annals_appends` wakes a
// follower in any process.
#define ANNALS_PG_APPEND_CHANNEL "annals_appends"

namespace annals::pg {

struct result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, result_deleter>;

// A one-dimensional array parameter in PostgreSQL's binary array format, filled element by
// element (all of `element_oid`'s type: int8, float8, bytea or text). Lets one prepared statement take
// any number of rows: INSERT ... SELECT * FROM unnest($1::int8[], ...).
class array_param {
 public:
  static constexpr unsigned int int8 = 20, bytea = 17, text = 25, float8 = 701;  // element OIDs
  explicit array_param(unsigned int element_oid) : element_(element_oid) {}
  void add_int8(std::int64_t v);
  void add_float8(double v);
  void add_bytes(std::string_view v);  // bytea or text
  void add_null();
  std::size_t size() const noexcept { return count_; }
  unsigned int element() const noexcept { return element_; }

 private:
  friend class params;
  std::string body_;  // the elements: a length, then the bytes (-1 and none for NULL)
  unsigned int element_;
  std::size_t count_ = 0;
  bool has_null_ = false;
};

// Parameter values of one statement. The views passed to add_bytes/add_text must outlive the
// statement's execution.
class params {
 public:
  params& add_int8(std::int64_t v);
  params& add_int4(std::int32_t v);
  params& add_bytea(std::string_view v) { return add_raw(v, 17); }
  params& add_text(std::string_view v) { return add_raw(v, 25); }
  params& add_null_bytea();
  params& add_float8(double v);
  params& add_null();  // a NULL whose type the server infers
  params& add_array(const array_param& a);  // copies it

  int size() const noexcept { return static_cast<int>(types_.size()); }
  void reserve(std::size_t n);

  const unsigned int* types() const noexcept { return types_.data(); }
  const char* const* values() const noexcept { return values_.data(); }
  const int* lengths() const noexcept { return lengths_.data(); }
  const int* formats() const noexcept { return formats_.data(); }

 private:
  params& add_raw(std::string_view v, unsigned int type);
  params& add_be64(std::uint64_t v, unsigned int type);  // 8 bytes, big-endian, binary
  std::vector<unsigned int> types_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  // Big-endian integers live here; a deque-like list keeps their addresses stable.
  std::vector<std::unique_ptr<char[]>> ints_;
};

// What a failed statement said: the SQLSTATE ("" when the connection failed) and, for a
// constraint violation, the constraint's name.
struct failure {
  std::string sqlstate;
  std::string constraint;
  std::string message;
};

class connection {
 public:
  connection() = default;
  explicit connection(PGconn* c) : conn_(c) {}
  connection(connection&&) noexcept = default;
  connection& operator=(connection&&) noexcept = default;
  ~connection() = default;

  // Connects with a libpq URI or key=value string. A failure is errc::io with libpq's reason.
  // A positive connect_timeout_s bounds the connection attempt (libpq's connect_timeout,
  // overriding the URI's); 0 keeps the URI's (libpq default: wait indefinitely).
  static result<connection> open(const std::string& conninfo, int connect_timeout_s = 0);

  PGconn* get() const noexcept { return conn_.get(); }
  bool healthy() const noexcept;
  bool idle() const noexcept;  // connected and outside any transaction

  // Runs `sql` (one statement, parameters bound, binary results unless `text_results`). When
  // `cache` is true the statement is prepared once on this connection and reused. On an error
  // returns an error (kind from the SQLSTATE, message prefixed by `what`) and fills `*why`
  // when given.
  result<pg_result> exec(std::string_view what, const std::string& sql, const params& p,
                         bool cache = true, failure* why = nullptr, bool text_results = false);
  // Forgets the prepared statements (they stay on the server until the connection closes,
  // under names never reused): the next exec prepares again, e.g. after a table was replaced.
  void forget_prepared() noexcept { prepared_.clear(); }
  // Runs a query and hands its rows to `row` one at a time as they arrive (libpq's single-row
  // mode: one row in memory, however large the page). `row` gets a result and a row index in
  // it, and returns false to skip the rest, which is then drained and dropped, or an error
  // that ends the read with it. Returns the number of rows received. If `row` throws, the
  // connection is left mid-query: the pool closes it instead of reusing it.
  using row_fn = std::function<result<bool>(const PGresult*, int)>;
  result<std::int64_t> for_each_row(std::string_view what, const std::string& sql,
                                    const params& p, bool cache, const row_fn& row);
  // Runs parameterless SQL text (possibly several statements) by the simple protocol.
  result<void> exec_simple(std::string_view what, const char* sql);

  // Pipelining (libpq's pipeline mode): `send` queues a prepared statement whose result is
  // not needed and returns without waiting for the server; `sync` waits for every queued one
  // and returns the first failure (the server skips the rest of a pipeline after one fails,
  // and the transaction is then aborted). While statements are queued, call nothing on the
  // connection but send and sync. `send` syncs by itself every `max_queued` statements, so
  // the server's replies never fill the socket while the client is still writing.
  result<void> send(std::string_view what, const std::string& sql, const params& p);
  result<void> sync(failure* why = nullptr);
  std::size_t queued() const noexcept { return queued_; }
  static constexpr std::size_t max_queued = 256;

 private:
  struct closer {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
  };
  // The name of `sql` prepared on this connection (prepared now if needed).
  result<const std::string*> prepare(std::string_view what, const std::string& sql,
                                     const params& p, failure* why);
  std::unique_ptr<PGconn, closer> conn_;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
  std::uint64_t statements_ = 0;                            // names prepared so far
  std::size_t queued_ = 0;  // statements sent in the current pipeline
  std::string queued_what_;  // names the pipeline's first statement in errors
};

// Maps a failed statement (or connection) to an annals error: connection trouble is io,
// lock and serialization timeouts are busy.
error make_error(PGconn* conn, const PGresult* res, std::string_view what, failure* why = nullptr);

// Binary column accessors.
std::int64_t get_int8(const PGresult* r, int row, int col);
double get_float8(const PGresult* r, int row, int col);
std::string_view get_bytes(const PGresult* r, int row, int col);
inline bool is_null(const PGresult* r, int row, int col) { return PQgetisnull(r, row, col) != 0; }

// The store's write lock (pg_advisory_xact_lock key, one per database): appends, schema
// registrations and imports hold it. "ANNL" then 1.
inline constexpr std::int64_t write_lock_key = 0x414E4E4C00000001LL;

// Store tables shared by the store and its admin (layout: docs/storage-format.md).
// Whether `table` exists (in the connection's search path).
// Names the database `c` is connected to: "postgres:<host>:<port>/<database>". Keys the
// store's commit signal.
std::string identity(PGconn* c);

result<bool> has_table(connection& c, const char* table);

}  // namespace annals::pg
