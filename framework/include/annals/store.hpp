// annals/store.hpp — opening an event store: SQLite, PostgreSQL, or either from a URI.
//
// The contract every store implements is annals/event_store.hpp. Open a store once and build
// the other components on the handle (annals/store_ref.hpp):
//
//   std::shared_ptr<annals::event_store> store = annals::open_store("bank.db").value_or_throw();
#pragma once

#include <annals/event_store.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

class upcasters;        // annals/upcaster.hpp
struct projection_def;  // annals/projection.hpp

// How hard an acknowledged append is protected.
enum class durability {
  full,    // default: survives process crash and power loss (WAL, synchronous=FULL)
  normal,  // survives process crash; the last commits may be lost on power loss (synchronous=NORMAL)
};

struct sqlite_options {
  durability sync = durability::full;
  // How long to wait for another process's write lock before errc::busy. Default 10 s.
  std::int64_t busy_timeout_ms = 10000;
  // Create the file and schema when missing. Default true; false gives not_found.
  bool create_if_missing = true;
  // Open without writing. Appends fail with errc::read_only. Default false.
  bool read_only = false;
  // Clock for recorded_at, UTC microseconds; called once per shared commit, so events committed
  // together share a time. If it throws, the appends of that commit fail with io.
  // Default: the system clock.
  std::function<std::int64_t()> clock;
  // Source of event ids for events appended without one; called concurrently from appending
  // threads, so it must be thread-safe. Default: UUIDv7.
  std::function<std::string()> id_source;
  // Inline projections (make_projection<P>()): updated in the same transaction as each append,
  // so a read right after the append sees it. A handler failure fails the append (nothing is
  // written). A projection that is stuck, being rebuilt to another version, or more than
  // max_inline_lag events behind is left to a projection_runner. A handler runs inside the
  // store's commit: it must not append to or register schemas in the same store (it would wait
  // for itself). Default: none.
  std::vector<std::shared_ptr<const projection_def>> inline_projections;
  std::int64_t max_inline_lag = 10000;
  // Upcasters applied to every event read from this store (reads of streams and $all, hence
  // aggregates and projections) before anyone sees it. The stored bytes never change.
  // Default: none.
  std::shared_ptr<const upcasters> upcast;
};

// Opens (or creates) a SQLite event store at `path`. A file that is not SQLite, or a SQLite
// database that is not an Annals store, or one of a newer storage format, is errc::corruption;
// an unreadable path is errc::io. A store of storage format 1 opened writable is upgraded to
// format 2 in place (new tables only, one transaction); read-only it stays as it is.
result<std::unique_ptr<event_store>> open_sqlite_store(const std::string& path,
                                                       sqlite_options options = {});

struct postgres_options {
  // Connections kept open between calls. A call that finds none idle opens one more for its
  // own duration (so a visitor may call the store without waiting on itself). Default 4.
  std::size_t pool_size = 4;
  // How long an append waits for the store's write lock (lock_timeout) before errc::busy.
  // Default 10 s.
  std::int64_t lock_timeout_ms = 10000;
  // Create the tables when missing. Default true; false gives not_found.
  bool create_if_missing = true;
  // Appends fail with errc::read_only. Default false.
  bool read_only = false;
  // As in sqlite_options: clock for recorded_at (called once per append), event id source,
  // upcasters applied to every read. Defaults: system clock, UUIDv7, none.
  std::function<std::int64_t()> clock;
  std::function<std::string()> id_source;
  std::shared_ptr<const upcasters> upcast;
  // As in sqlite_options: read models updated in each append's transaction, in this database
  // (with the advisory write lock held, so handlers see every earlier event). Default: none.
  std::vector<std::shared_ptr<const projection_def>> inline_projections;
  std::int64_t max_inline_lag = 10000;
};

// Opens (or creates) a PostgreSQL event store. `uri` is a libpq connection URI
// ("postgresql://user@host:port/dbname?..."). An unreachable server is errc::io; tables of a
// newer storage format are errc::corruption. Layout: docs/storage-format.md.
result<std::unique_ptr<event_store>> open_postgres_store(const std::string& uri,
                                                         postgres_options options = {});

// Opens a store from a URI: a plain path or "sqlite:PATH" (SQLite), or "postgresql://..." /
// "postgres://..." (PostgreSQL). Other schemes are invalid_argument. For PostgreSQL, the
// clock, id_source, upcast, read_only, create_if_missing, inline projections and
// busy_timeout_ms (as the lock timeout) of `options` apply (sync does not: that is the
// server's synchronous_commit); use open_postgres_store() for the pool size.
result<std::unique_ptr<event_store>> open_store(std::string_view uri, sqlite_options options = {});

}  // namespace annals
