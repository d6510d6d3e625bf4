// How far a checkpointed consumer is behind the store's head: the one computation behind the
// lag in projection, subscription and consumer status.
#pragma once

#include <annals/event_store.hpp>
#include <annals/status.hpp>

#include <cstdint>
#include <vector>

namespace annals::detail {

struct consumer_lag {
  std::int64_t events = 0;  // head - checkpoint, never negative
  double seconds = 0;       // age of the oldest event not yet handled; 0 when caught up
};

// Reads at most one event (the first after `checkpoint`). `now_us` is the caller's clock, so a
// list of consumers is measured against one instant.
result<consumer_lag> measure_lag(event_store& store, std::int64_t checkpoint, std::int64_t head,
                                 std::int64_t now_us);

// Projection statuses read from the bookkeeping alone (the admins', which run no projection):
// sets each one's head, lag and state (stuck, catching_up while behind, else running). The
// event after a checkpoint that cannot be read (a damaged row: verify reports it) leaves that
// lag_seconds at 0 rather than failing the whole list, stats or metrics scrape.
void measure_projections(event_store& store, std::int64_t head,
                         std::vector<consumer_status>& statuses);

}  // namespace annals::detail
