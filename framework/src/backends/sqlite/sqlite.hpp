// Internal RAII over the SQLite C API: a connection, a prepared statement, error mapping.
// Not installed; sqlite3.h never reaches the public headers.
#pragma once

#include <annals/result.hpp>

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace annals::sqlite {

// Maps a SQLite result code to an error kind: busy/locked -> busy, corrupt/notadb ->
// corruption, everything else -> io.
errc kind_of(int rc) noexcept;
// An error with a message for people: `what` says what was being done; SQL text never leaks.
error make_error(int rc, std::string_view what, sqlite3* db = nullptr);

// Names the database file `db` has open, the same for every path that reaches it (relative,
// through a symbolic or hard link): "sqlite:<device>:<inode>". Keys the store's commit signal.
std::string identity(sqlite3* db);

class connection {
 public:
  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  connection(connection&& o) noexcept
      : db_(std::exchange(o.db_, nullptr)), busy_(std::move(o.busy_)) {}
  connection& operator=(connection&& o) noexcept {
    std::swap(db_, o.db_);
    std::swap(busy_, o.busy_);
    return *this;
  }
  ~connection() { sqlite3_close_v2(db_); }

  // busy_timeout_ms: how long a locked database is retried (finely, see on_busy) before
  // SQLITE_BUSY.
  static result<connection> open(const std::string& path, int flags, int busy_timeout_ms);

  sqlite3* get() const noexcept { return db_; }
  // Runs SQL without parameters (pragmas, DDL, BEGIN/COMMIT). `what` names it in errors.
  result<void> exec(const char* sql, std::string_view what);

 private:
  struct busy_wait {
    std::chrono::milliseconds timeout{0};
    std::chrono::steady_clock::time_point started;
  };
  static int on_busy(void* arg, int count) noexcept;
  sqlite3* db_ = nullptr;
  std::unique_ptr<busy_wait> busy_;  // stable address for SQLite's callback
};

// A prepared statement; finalized on destruction. One bind() template dispatches on the
// argument type; no implicit narrowing.
class statement {
 public:
  statement() = default;
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  statement(statement&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  statement& operator=(statement&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~statement() { sqlite3_finalize(s_); }

  static result<statement> prepare(sqlite3* db, std::string_view sql);
  // Prepares each statement of a set held together (a connection's own), in order; the first
  // failure is returned.
  struct to_prepare {
    statement* into;
    std::string_view sql;
  };
  static result<void> prepare_all(sqlite3* db, std::initializer_list<to_prepare> items);

  struct blob {
    const void* data;
    std::size_t size;
  };
  struct null {};

  // 1-based parameter index, as in SQLite. Strings and blobs are not copied
  // (SQLITE_STATIC): the caller keeps them alive until the statement is reset.
  template <class T>
  void bind(int index, const T& value) {
    if constexpr (std::is_same_v<T, std::int64_t>) {
      sqlite3_bind_int64(s_, index, value);
    } else if constexpr (std::is_same_v<T, int>) {
      sqlite3_bind_int(s_, index, value);
    } else if constexpr (std::is_same_v<T, double>) {
      sqlite3_bind_double(s_, index, value);
    } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
      std::string_view v = value;
      // A null data pointer would bind NULL: an empty string must stay an empty string.
      sqlite3_bind_text(s_, index, v.data() ? v.data() : "", static_cast<int>(v.size()),
                        SQLITE_STATIC);
    } else if constexpr (std::is_same_v<T, blob>) {
      sqlite3_bind_blob(s_, index, value.data ? value.data : "", static_cast<int>(value.size),
                        SQLITE_STATIC);
    } else if constexpr (std::is_same_v<T, null>) {
      sqlite3_bind_null(s_, index);
    } else {
      static_assert(sizeof(T) == 0, "statement::bind: unsupported parameter type");
    }
  }

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() noexcept { return sqlite3_step(s_); }
  void reset() noexcept {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  std::int64_t column_int64(int i) const noexcept { return sqlite3_column_int64(s_, i); }
  double column_double(int i) const noexcept { return sqlite3_column_double(s_, i); }
  bool column_is_null(int i) const noexcept { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
  std::string_view column_text(int i) const noexcept {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i)))
             : std::string_view();
  }
  std::string_view column_blob(int i) const noexcept {
    auto p = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i)))
             : std::string_view();
  }
  sqlite3_stmt* get() const noexcept { return s_; }

 private:
  explicit statement(sqlite3_stmt* s) : s_(s) {}
  sqlite3_stmt* s_ = nullptr;
};

// Resets a statement when leaving scope, so an early return never leaves it mid-step
// (which would hold a read transaction open).
class reset_guard {
 public:
  explicit reset_guard(statement& s) : s_(s) {}
  ~reset_guard() { s_.reset(); }
  reset_guard(const reset_guard&) = delete;
  reset_guard& operator=(const reset_guard&) = delete;

 private:
  statement& s_;
};

}  // namespace annals::sqlite
