// annals/sql_database.hpp — the store's database, for an application's own small tables.
//
// Beside its events and read models an application may keep tables of its own in the store's
// database (idempotency keys, a dedupe table, an outbox): in the store's SQLite file, or in its
// PostgreSQL database. An sql_database is a connection there, running transactions through the
// same sql_tx that projection handlers receive: ?N parameters always bound, the same text on
// both backends (see annals/sql.hpp for types and what differs; sql_tx::dialect() tells which
// one it is, for the rare statement that must differ, such as BLOB versus BYTEA in DDL).
//
//   auto db = annals::sql_database::open(store).value_or_throw();  // or a path / URI
//   auto ok = db->write([&](annals::sql_tx& tx) -> annals::result<void> {
//     auto n = tx.exec("INSERT INTO seen (id) VALUES (?1) ON CONFLICT (id) DO NOTHING", {id});
//     if (!n) return n.error();
//     fresh = *n == 1;
//     return {};
//   });
//
// Thread safety: an sql_database may be used from several threads; it holds one connection, so
// its transactions run one at a time. Ownership: the sql_tx is valid only inside the call.
#pragma once

#include <annals/sql.hpp>
#include <annals/store_ref.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace annals {

struct sql_database_options {
  // How long a transaction waits for a lock held by another connection (SQLite: the write
  // lock; PostgreSQL: lock_timeout) before failing with errc::busy. Default 10 s.
  std::int64_t busy_timeout_ms = 10000;
  // Commits reach the disk before write() returns (SQLite synchronous=FULL, PostgreSQL
  // synchronous_commit on), as appends do. false: a power cut may lose the last commits (they
  // stay atomic); only for data that can be derived again. Default true.
  bool durable = true;
};

class sql_database {
 public:
  // Opens the database of a store (annals/store_ref.hpp: a handle, or a path, sqlite:PATH or
  // postgresql://...) on a connection of its own. The store must exist: this never creates
  // one. Errors: not_found or io (no SQLite file there, a PostgreSQL server that cannot be
  // reached), invalid_argument (an unsupported URI, a store double), read_only (a handle
  // opened read-only).
  static result<std::unique_ptr<sql_database>> open(store_ref store,
                                                    sql_database_options options = {});
  virtual ~sql_database() = default;

  // Runs fn in a write transaction and commits when it succeeds; an error it returns, a failed
  // commit or an exception it throws rolls the transaction back (the exception becomes
  // errc::handler_failed). SQLite: BEGIN IMMEDIATE, the write lock the store's appends also take, so keep
  // it short. PostgreSQL: READ COMMITTED; make read-modify-write safe with conditional
  // statements (INSERT ... ON CONFLICT DO NOTHING, UPDATE ... WHERE <expected old value>) and
  // look at the rows they changed. A statement that fails aborts the transaction on
  // PostgreSQL: return its error.
  virtual result<void> write(const std::function<result<void>(sql_tx&)>& fn) = 0;

  // "sqlite" or "postgresql".
  virtual std::string_view dialect() const noexcept = 0;
};

}  // namespace annals
