// Opening a store: the one place that knows both the backends (through their tables,
// store/backend_ops.hpp) and the inline projections they run (through a commit hook), so
// neither depends on the other.
#include "projection/internal.hpp"
#include "store/backend_ops.hpp"
#include "store/uri.hpp"

#include <annals/store.hpp>

#include <fmt/format.h>

// Weak: the backend libraries define them (see store/backend_ops.hpp).
extern "C" [[gnu::weak]] const annals::store::backend_ops* annals_backend_sqlite();
extern "C" [[gnu::weak]] const annals::store::backend_ops* annals_backend_postgres();

namespace annals {

result<const store::backend_ops*> store::backend_for(location::backend kind) {
  const bool pg = kind == location::backend::postgres;
  auto table = pg ? annals_backend_postgres : annals_backend_sqlite;
  if (table == nullptr) {
    return error(errc::invalid_argument,
                 fmt::format("this program was linked without {0} support: link the CMake "
                             "target annals::{1} (or annals::annals for both backends)",
                             pg ? "PostgreSQL" : "SQLite", pg ? "postgres" : "sqlite"));
  }
  return table();
}

namespace {
// Opens through the backend's `open` with the options' inline projections as the store's
// commit hook.
template <class Options, class Open>
result<std::unique_ptr<event_store>> with_inline_hook(const std::string& where, Options options,
                                                      Open open) {
  auto hook = detail::inline_projections_hook(std::move(options.inline_projections),
                                              options.max_inline_lag);
  options.inline_projections.clear();
  return open(where, std::move(options), std::move(hook));
}
}  // namespace

result<std::unique_ptr<event_store>> open_sqlite_store(const std::string& path,
                                                       sqlite_options options) {
  auto b = store::backend_for(store::location::backend::sqlite);
  if (!b) return std::move(b).error();
  return with_inline_hook(path, std::move(options), (*b)->open_sqlite);
}

result<std::unique_ptr<event_store>> open_postgres_store(const std::string& uri,
                                                         postgres_options options) {
  auto b = store::backend_for(store::location::backend::postgres);
  if (!b) return std::move(b).error();
  return with_inline_hook(uri, std::move(options), (*b)->open_postgres);
}

result<std::unique_ptr<event_store>> store::open_at(const location& where, sqlite_options options,
                                                    std::size_t pg_pool_size) {
  if (!where.postgres()) return open_sqlite_store(where.target, std::move(options));
  postgres_options po;
  po.inline_projections = std::move(options.inline_projections);
  po.max_inline_lag = options.max_inline_lag;
  po.lock_timeout_ms = options.busy_timeout_ms;
  po.create_if_missing = options.create_if_missing;
  po.read_only = options.read_only;
  po.clock = std::move(options.clock);
  po.id_source = std::move(options.id_source);
  po.upcast = std::move(options.upcast);
  if (pg_pool_size > 0) po.pool_size = pg_pool_size;
  return open_postgres_store(where.target, std::move(po));
}

result<std::unique_ptr<event_store>> open_store(std::string_view uri, sqlite_options options) {
  auto where = store::parse_uri(uri);
  if (!where) return std::move(where).error();
  return store::open_at(*where, std::move(options));
}

}  // namespace annals
