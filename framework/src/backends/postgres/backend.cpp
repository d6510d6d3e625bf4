// The PostgreSQL backend's table (store/backend_ops.hpp): what the core reaches PostgreSQL
// through. Only a program linked with annals::postgres has it, and so libpq.
#include "admin/checks.hpp"
#include "backends/postgres/pg_coordination.hpp"
#include "backends/postgres/pg_sql.hpp"
#include "store/backend_ops.hpp"
#include "store/openers.hpp"

#include <fmt/format.h>

namespace annals::pg {
namespace {

result<std::unique_ptr<detail::sql_connection>> connect(const std::string& uri,
                                                        const store::connect_options& o) {
  auto c = connection::open(uri, 10);
  if (!c) return std::move(c).error();
  auto conn = std::make_unique<sql_conn>(std::move(c).value());
  if (o.writer) {
    // Read models are derived data (see the SQLite backend): a commit lost to a crash of the
    // server rolls back the model and its checkpoint together, and the events are replayed.
    // The lock timeout bounds waits for another runner's batch or a swap.
    auto settings = fmt::format("SET synchronous_commit = off; SET lock_timeout = {}{}",
                                o.busy_timeout_ms,
                                o.read_only ? "; SET default_transaction_read_only = on" : "");
    if (auto r = conn->exec(settings.c_str(), "cannot configure the projection connection"); !r) {
      return r.error();
    }
  }
  return std::unique_ptr<detail::sql_connection>(std::move(conn));
}

constexpr store::backend_ops ops{
    nullptr, store::open_postgres, admin_detail::open_postgres_admin, connect, open_coordination,
};

}  // namespace
}  // namespace annals::pg

extern "C" const annals::store::backend_ops* annals_backend_postgres() {
  return &annals::pg::ops;
}
