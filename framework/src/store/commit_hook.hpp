// Work an append does inside its own write transaction, after its events are written: the
// inline projections. A store runs its hook without knowing what it is (the store does not
// depend on projections); the opener (open.cpp) makes it from the options' inline_projections.
#pragma once

#include <annals/event_store.hpp>

#include "db/sql_connection.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace annals::store {

// Visits, in position order, the events in (after, last] that the hook's consumer `index`
// reads, upcast and filtered to its types, through the append's own transaction.
using hook_events = std::function<result<void>(
    std::size_t index, std::int64_t after, std::int64_t last,
    const std::function<result<void>(const recorded_event&)>& visit)>;

// Not thread-safe: a store calls it from its writer (one append transaction at a time).
class commit_hook {
 public:
  virtual ~commit_hook() = default;
  // How many consumers it runs; the event types each one reads (full Protobuf names), by the
  // index hook_events receives. A store prepares their reads once.
  virtual std::size_t consumers() const noexcept = 0;
  virtual const std::vector<std::string>& event_types(std::size_t index) const = 0;
  // Once, when the store is opened writable, inside a write transaction on `c`.
  virtual result<void> init(detail::sql_connection& c) = 0;
  // In each append's write transaction on `c`, once `last` is the head position. An error
  // rolls the append back (its message says so).
  virtual result<void> committing(detail::sql_connection& c, std::int64_t last,
                                  const hook_events& read) = 0;
};

}  // namespace annals::store
