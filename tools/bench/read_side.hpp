// Read-side scenarios written once for every backend: they take their stores from a
// store_source, open them with annals::open_store and bank::open_read_models (so with
// projection_runner::open), and never touch the backend's own API.
#pragma once

#include "bench_common.hpp"

#include <functional>
#include <string>
#include <string_view>

namespace annals_bench {

// Where a scenario gets its stores: create(label) returns the URI of a new, empty store
// (a SQLite path, or a postgresql:// URI of a fresh database); remove(uri) discards it.
struct store_source {
  std::function<std::string(std::string_view label)> create;
  std::function<void(const std::string& uri)> remove;
};

// live_lag: bank deposit commands at a steady rate with a projection_runner following; the
// lag from acknowledgement to visibility in all three read models, and what the running
// runner costs the writers (paired blocks, with vs without). `describe` adds backend fields
// to the figure before it is printed.
void run_live_lag(const config& c, const store_source& stores,
                  const std::function<void(figure&)>& describe);

}  // namespace annals_bench
