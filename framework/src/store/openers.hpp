// The backends' own openers. annals::open_sqlite_store / open_postgres_store / open_store
// (open.cpp) validate the public options and hand them the commit hook they run in each
// append's transaction (the inline projections), so no backend depends on projections.
#pragma once

#include <annals/store.hpp>

#include "store/commit_hook.hpp"

#include <memory>
#include <string>

namespace annals::store {

// `hook` may be null (no inline projections). options.inline_projections is not read.
result<std::unique_ptr<event_store>> open_sqlite(const std::string& path, sqlite_options options,
                                                 std::shared_ptr<commit_hook> hook);
result<std::unique_ptr<event_store>> open_postgres(const std::string& uri,
                                                   postgres_options options,
                                                   std::shared_ptr<commit_hook> hook);

}  // namespace annals::store
