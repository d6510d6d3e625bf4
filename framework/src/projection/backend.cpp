// Opening a store and the SQL connections beside it, for projection runners and subscriptions.
#include "db/transaction.hpp"
#include "projection/internal.hpp"
#include "store/postgres/pg_coordination.hpp"
#include "store/postgres/pg_sql.hpp"
#include "store/prepared.hpp"
#include "store/uri.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <thread>

namespace annals::detail {

namespace {
// SQLite: the rebuild lock is an exclusive flock() on "<db>-annals-rebuild-<name>.lock",
// released by the kernel when the process dies, so a killed rebuild never blocks the next.
// The holder unlinks the file before it unlocks, so none stays beside the store; an acquirer
// whose lock is on a file no longer at the path (unlinked meanwhile) drops it and tries again.
// Any runner may apply any projection (the checkpoint compare-and-set keeps it exactly once);
// other processes' appends are seen by polling.
class sqlite_coordination final : public runner_coordination {
 public:
  explicit sqlite_coordination(std::string db) : db_(std::move(db)) {}

  result<std::shared_ptr<void>> lock_rebuild(std::string_view name) override {
    auto path = file_for(name);
    // rebuild_running() probes take the lock shared for an instant: retry briefly before
    // calling it busy.
    for (int attempt = 0;; ++attempt) {
      if (attempt == 100) {
        return error(errc::busy,
                     fmt::format("a rebuild of projection '{}' is already running", name));
      }
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return error(errc::io, fmt::format("cannot open lock file '{}'", path));
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      struct stat held, named;  // filled by fstat() and stat()
      if (::fstat(fd, &held) != 0 || ::stat(path.c_str(), &named) != 0 ||
          held.st_dev != named.st_dev || held.st_ino != named.st_ino) {
        ::close(fd);  // its holder removed it: the lock is on the file now at the path
        continue;
      }
      // Unlinked while still locked, then closed (which releases the flock).
      return std::shared_ptr<void>(nullptr, [fd, path](void*) {
        ::unlink(path.c_str());
        ::close(fd);
      });
    }
  }
  // Creates no file.
  bool rebuild_running(std::string_view name) override {
    int fd = ::open(file_for(name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;  // no rebuild holds it (the file goes with the lock)
    bool busy = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
    ::close(fd);
    return busy;
  }
  bool lead(std::string_view, bool) override { return true; }
  void release(std::string_view) override {}
  void release_all() override {}
  std::chrono::milliseconds follow_interval(std::chrono::milliseconds poll) const override {
    return poll;
  }

 private:
  std::string file_for(std::string_view name) const {
    std::string path = db_ + "-annals-rebuild-";
    for (char c : name) path += (std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
    return path + ".lock";
  }
  std::string db_;
};

}  // namespace

result<void> in_write_tx(sql_connection& c, const std::function<result<void>(sql_tx&)>& fn) {
  const bool pg = c.dialect() == sql_dialect::postgres;
  auto tx = db::transaction<sql_connection>::begin(
      c, pg ? db::begin_pg_write : db::begin_sqlite_write, "cannot start a write transaction");
  if (!tx) return tx.error();
  auto stx = detail::sql_tx_access::make(c);
  result<void> r;
  try {
    r = fn(stx);
  } catch (const std::exception& e) {
    r = error(errc::io, e.what());
  }
  if (!r) return r;  // rolled back
  return tx->commit("cannot commit a write transaction");
}

namespace {

// The component's own connections on the database at `where` (no store, no coordination).
result<void> open_connections(backend& b, const store::location& where,
                              const backend_options& o) {
  auto& writer = b.writer;
  auto& reader = b.reader;
  if (where.postgres()) {
    for (auto* slot : {&writer, &reader}) {
      if (slot == &reader && (o.sql_only || !o.reader)) continue;
      auto c = pg::connection::open(where.target, 10);
      if (!c) return std::move(c).error();
      *slot = std::make_unique<pg::sql_conn>(std::move(c).value());
    }
    // Read models are derived data (see the SQLite case below): a commit lost to a crash of
    // the server rolls back the model and its checkpoint together, and the events are
    // replayed. The lock timeout bounds waits for another runner's batch or a swap.
    auto settings = fmt::format("SET synchronous_commit = off; SET lock_timeout = {}{}",
                                o.busy_timeout_ms,
                                o.read_only ? "; SET default_transaction_read_only = on" : "");
    return writer->exec(settings.c_str(), "cannot configure the projection connection");
  }
  int timeout = static_cast<int>(o.busy_timeout_ms);
  auto w = sqlite::connection::open(
      where.target, o.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE, timeout);
  if (!w) return std::move(w).error();
  // Read models are derived data: a projection commit lost to a power cut rolls the model
  // and its checkpoint back together (WAL keeps them consistent), and the events are
  // replayed. So the runner's commits need not each wait for fsync; the events' own commits
  // stay FULL. A larger page cache keeps a rebuild's random-order inserts (statements) off
  // the disk.
  if (auto r = w->exec("PRAGMA synchronous=NORMAL", "cannot set durability"); !r) return r;
  if (auto r = w->exec("PRAGMA cache_size=-32768", "cannot size the cache"); !r) return r;
  writer = std::make_unique<sqlite_sql_connection>(std::move(w).value());
  if (o.sql_only || !o.reader) return {};
  auto rd = sqlite::connection::open(where.target, SQLITE_OPEN_READONLY, timeout);
  if (!rd) return std::move(rd).error();
  reader = std::make_unique<sqlite_sql_connection>(std::move(rd).value());
  return {};
}

}  // namespace

namespace {

// `uri` opened for a component: a pool of 2, never created (not_found).
result<std::shared_ptr<event_store>> open_for_component(const store::location& where,
                                                        const backend_options& o) {
  if (where.postgres()) {
    postgres_options po;
    po.lock_timeout_ms = o.busy_timeout_ms;
    po.create_if_missing = false;
    po.upcast = o.upcast;
    po.pool_size = 2;
    po.read_only = o.read_only;
    auto s = open_postgres_store(where.target, po);
    if (!s) return std::move(s).error();
    return std::shared_ptr<event_store>(std::move(s).value());
  }
  sqlite_options so;
  so.busy_timeout_ms = o.busy_timeout_ms;
  so.create_if_missing = false;
  so.upcast = o.upcast;
  so.read_only = o.read_only;
  auto s = open_sqlite_store(where.target, so);
  if (!s) return std::move(s).error();
  return std::shared_ptr<event_store>(std::move(s).value());
}

}  // namespace

result<backend> open_backend(const store_ref& ref, const backend_options& o,
                             std::string_view what) {
  backend b;
  if (ref.adopted()) {
    if (!ref.handle()) {
      return error(errc::invalid_argument,
                   fmt::format("{}: store_ref::adopt was given no store", what));
    }
    if (o.upcast) {
      return error(errc::invalid_argument,
                   fmt::format("{} on an adopted store read events as the store gives them: "
                               "upcast inside it, not in the component's options",
                               what));
    }
    auto where = store::parse_uri(ref.uri());
    if (!where) return std::move(where).error();
    b.where = std::move(where).value();
    if (!o.sql_only) b.store = ref.handle();
  } else if (ref.handle()) {
    auto opened = store::for_component(*ref.handle(), o.upcast, !o.read_only, what);
    if (!opened) return std::move(opened).error();
    b.where = (*opened)->where();
    if (!o.sql_only) b.store = ref.handle();
  } else {
    auto where = store::parse_uri(ref.uri());
    if (!where) return std::move(where).error();
    b.where = std::move(where).value();
    if (!o.sql_only) {
      auto s = open_for_component(b.where, o);
      if (!s) return std::move(s).error();
      b.store = std::move(s).value();
    }
  }
  if (auto r = open_connections(b, b.where, o); !r) return r.error();
  if (o.sql_only || o.read_only) return b;
  if (b.where.postgres()) {
    auto c = pg::open_coordination(b.where.target);
    if (!c) return std::move(c).error();
    b.coordination = std::move(c).value();
  } else {
    b.coordination = std::make_unique<sqlite_coordination>(b.where.target);
  }
  return b;
}

}  // namespace annals::detail
