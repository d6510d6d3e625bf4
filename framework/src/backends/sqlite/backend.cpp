// The SQLite backend's table (store/backend_ops.hpp): what the core reaches SQLite through.
#include "admin/checks.hpp"
#include "backends/sqlite/sql_connection.hpp"
#include "backends/sqlite/sqlite_coordination.hpp"
#include "store/backend_ops.hpp"
#include "store/openers.hpp"

namespace annals::sqlite {
namespace {

result<std::unique_ptr<detail::sql_connection>> connect(const std::string& path,
                                                        const store::connect_options& o) {
  const bool writes = o.writer && !o.read_only;
  auto c = connection::open(path, writes ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY,
                            static_cast<int>(o.busy_timeout_ms));
  if (!c) return std::move(c).error();
  if (o.writer) {
    // Read models are derived data: a projection commit lost to a power cut rolls the model
    // and its checkpoint back together (WAL keeps them consistent), and the events are
    // replayed. So the consumers' commits need not each wait for fsync; the events' own
    // commits stay FULL. A larger page cache keeps a rebuild's random-order inserts
    // (statements) off the disk.
    if (auto r = c->exec("PRAGMA synchronous=NORMAL", "cannot set durability"); !r) return r.error();
    if (auto r = c->exec("PRAGMA cache_size=-32768", "cannot size the cache"); !r) return r.error();
  }
  return std::unique_ptr<detail::sql_connection>(
      std::make_unique<detail::sqlite_sql_connection>(std::move(c).value()));
}

result<std::unique_ptr<detail::runner_coordination>> coordination(const std::string& path) {
  return open_coordination(path);
}

constexpr store::backend_ops ops{
    store::open_sqlite, nullptr, admin_detail::open_sqlite_admin, connect, coordination,
};

}  // namespace
}  // namespace annals::sqlite

extern "C" const annals::store::backend_ops* annals_backend_sqlite() {
  return &annals::sqlite::ops;
}
