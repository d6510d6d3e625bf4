// Opening a store: the one place that knows both the backends and the inline projections they
// run (through a commit hook), so neither depends on the other.
#include "projection/internal.hpp"
#include "store/openers.hpp"
#include "store/uri.hpp"

#include <annals/store.hpp>

namespace annals {

namespace {
// Opens through `open` with the options' inline projections as the store's commit hook.
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
  return with_inline_hook(path, std::move(options), store::open_sqlite);
}

result<std::unique_ptr<event_store>> open_postgres_store(const std::string& uri,
                                                         postgres_options options) {
  return with_inline_hook(uri, std::move(options), store::open_postgres);
}

result<std::unique_ptr<event_store>> open_store(std::string_view uri, sqlite_options options) {
  auto where = store::parse_uri(uri);
  if (!where) return std::move(where).error();
  if (!where->postgres()) return open_sqlite_store(where->target, std::move(options));
  postgres_options po;
  po.inline_projections = std::move(options.inline_projections);
  po.max_inline_lag = options.max_inline_lag;
  po.lock_timeout_ms = options.busy_timeout_ms;
  po.create_if_missing = options.create_if_missing;
  po.read_only = options.read_only;
  po.clock = std::move(options.clock);
  po.id_source = std::move(options.id_source);
  po.upcast = std::move(options.upcast);
  return open_postgres_store(where->target, std::move(po));
}

}  // namespace annals
