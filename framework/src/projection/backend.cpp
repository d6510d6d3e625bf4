// Opening a store and the SQL connections beside it, for projection runners and subscriptions.
#include "db/transaction.hpp"
#include "projection/internal.hpp"
#include "store/backend_ops.hpp"
#include "store/prepared.hpp"
#include "store/uri.hpp"

#include <fmt/format.h>

namespace annals::detail {

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

result<bool> table_exists(sql_connection& c, std::string_view table) {
  auto tx = detail::sql_tx_access::make(c);
  bool found = false;
  auto r = tx.query(c.dialect() == sql_dialect::postgres
                        ? "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
                          "AND tablename = ?1"
                        : "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    {table}, [&](const sql_row&) {
                      found = true;
                      return false;
                    });
  if (!r) return std::move(r).error();
  return found;
}

namespace {

// The component's own connections on the database at `where` (no store, no coordination).
result<void> open_connections(backend& b, const store::backend_ops& ops,
                              const backend_options& o) {
  store::connect_options co;
  co.read_only = o.read_only;
  co.busy_timeout_ms = o.busy_timeout_ms;
  auto w = ops.connect(b.where.target, co);
  if (!w) return std::move(w).error();
  b.writer = std::move(w).value();
  if (o.sql_only || !o.reader) return {};
  co.writer = false;
  auto r = ops.connect(b.where.target, co);
  if (!r) return std::move(r).error();
  b.reader = std::move(r).value();
  return {};
}

// `where` opened for a component: a pool of 2, never created (not_found).
result<std::shared_ptr<event_store>> open_for_component(const store::location& where,
                                                        const backend_options& o) {
  sqlite_options so;
  so.busy_timeout_ms = o.busy_timeout_ms;
  so.create_if_missing = false;
  so.read_only = o.read_only;
  auto s = store::open_at(where, std::move(so), 2);
  if (!s) return std::move(s).error();
  return std::shared_ptr<event_store>(std::move(s).value());
}

}  // namespace

result<backend> open_backend(const store_ref& ref, const backend_options& o,
                             std::string_view what) {
  backend b;
  auto resolved = store::resolve(ref, !o.read_only, what);
  if (!resolved) return std::move(resolved).error();
  b.where = std::move(resolved->where);
  if (!o.sql_only) {
    b.store = std::move(resolved->handle);
    if (!b.store) {
      auto s = open_for_component(b.where, o);
      if (!s) return std::move(s).error();
      b.store = std::move(s).value();
    }
  }
  auto ops = store::backend_for(b.where.kind);
  if (!ops) return std::move(ops).error();
  if (auto r = open_connections(b, **ops, o); !r) return r.error();
  if (o.sql_only || o.read_only || !o.coordination) return b;
  auto c = (*ops)->open_coordination(b.where.target);
  if (!c) return std::move(c).error();
  b.coordination = std::move(c).value();
  return b;
}

}  // namespace annals::detail
