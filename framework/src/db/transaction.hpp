// The database layer's transaction: begun explicitly, committed explicitly, rolled back by its
// destructor on every other path (an early return, an error, an exception). Code above this
// layer writes no BEGIN, COMMIT or ROLLBACK of its own.
//
// Works over any connection with `result<void> exec(const char* sql, std::string_view what)`
// (sqlite::connection, detail::sql_connection) or, for libpq, `exec_simple(what, sql)`.
// Not thread-safe: a transaction belongs to the thread that runs on its connection.
#pragma once

#include <annals/result.hpp>

#include <string_view>
#include <utility>

namespace annals::db {

namespace detail {
template <class C>
result<void> run(C& c, const char* sql, std::string_view what) {
  if constexpr (requires { c.exec_simple(what, sql); }) {
    return c.exec_simple(what, sql);
  } else {
    return c.exec(sql, what);
  }
}
}  // namespace detail

// The usual openings.
inline constexpr const char* begin_sqlite_write = "BEGIN IMMEDIATE";  // takes the write lock
inline constexpr const char* begin_default = "BEGIN";  // SQLite: deferred; PostgreSQL: its default isolation
inline constexpr const char* begin_pg_write = "BEGIN ISOLATION LEVEL READ COMMITTED";
inline constexpr const char* begin_pg_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

// Ends whatever transaction `c` is in, if any (a connection given back in one). Never fails.
template <class Connection>
void abandon(Connection& c) noexcept {
  (void)detail::run(c, "ROLLBACK", "rollback");
}

template <class Connection>
class transaction {
 public:
  // Runs `begin_sql` (a BEGIN, possibly followed by statements that belong to the transaction,
  // such as taking an advisory lock). `what` names the transaction in errors.
  static result<transaction> begin(Connection& c, const char* begin_sql, std::string_view what) {
    if (auto r = detail::run(c, begin_sql, what); !r) {
      // A BEGIN followed by more statements may have opened the transaction before failing.
      abandon(c);
      return r.error();
    }
    return transaction(c);
  }

  transaction(transaction&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  transaction& operator=(transaction&&) = delete;
  transaction(const transaction&) = delete;
  ~transaction() { rollback(); }

  Connection& connection() const noexcept { return *c_; }

  // Commits. A failed COMMIT leaves the transaction to the destructor's rollback. `sql` may
  // send statements with the COMMIT in one round trip ("NOTIFY ch; COMMIT").
  result<void> commit(std::string_view what, const char* sql = "COMMIT") {
    auto r = detail::run(*c_, sql, what);
    if (r) c_ = nullptr;
    return r;
  }
  // Ends it without writing anything (also what the destructor does). Never fails.
  void rollback() noexcept {
    if (!c_) return;
    abandon(*c_);
    c_ = nullptr;
  }

 private:
  explicit transaction(Connection& c) noexcept : c_(&c) {}
  Connection* c_;
};

// A savepoint in the caller's transaction: what ran since it is undone by its destructor
// unless release() kept it. Savepoints nest (each refers to the latest of its name).
template <class Connection>
class savepoint {
 public:
  static result<savepoint> begin(Connection& c, std::string_view what) {
    if (auto r = detail::run(c, "SAVEPOINT annals_savepoint", what); !r) return r.error();
    return savepoint(c);
  }
  savepoint(savepoint&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  savepoint& operator=(savepoint&&) = delete;
  savepoint(const savepoint&) = delete;
  ~savepoint() { (void)undo("rollback to a savepoint"); }

  // Keeps what ran since the savepoint (in the transaction, which may still roll back).
  result<void> release(std::string_view what) {
    if (!c_) return {};
    return detail::run(*std::exchange(c_, nullptr), "RELEASE SAVEPOINT annals_savepoint", what);
  }
  // Undoes what ran since the savepoint; the transaction goes on.
  result<void> undo(std::string_view what) {
    if (!c_) return {};
    return detail::run(*std::exchange(c_, nullptr),
                       "ROLLBACK TO SAVEPOINT annals_savepoint; RELEASE SAVEPOINT annals_savepoint",
                       what);
  }

 private:
  explicit savepoint(Connection& c) noexcept : c_(&c) {}
  Connection* c_;
};

// Runs fn() in a transaction: commits when fn succeeds, otherwise (an error or an exception,
// which propagates) rolls back.
template <class Connection, class Fn>
result<void> in_transaction(Connection& c, const char* begin_sql, std::string_view what, Fn&& fn) {
  auto tx = transaction<Connection>::begin(c, begin_sql, what);
  if (!tx) return tx.error();
  if (auto r = std::forward<Fn>(fn)(); !r) return r;
  return tx->commit(what);
}

}  // namespace annals::db
