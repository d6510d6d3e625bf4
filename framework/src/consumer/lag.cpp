#include "consumer/lag.hpp"

#include "store/prepared.hpp"

#include <algorithm>

namespace annals {

std::string_view to_string(consumer_kind kind) noexcept {
  return kind == consumer_kind::projection ? "projection" : "subscription";
}

std::string_view to_string(consumer_state s) noexcept {
  switch (s) {
    case consumer_state::running: return "running";
    case consumer_state::catching_up: return "catching up";
    case consumer_state::rebuilding: return "rebuilding";
    case consumer_state::stuck: return "stuck";
  }
  return "unknown";
}

namespace detail {

result<consumer_lag> measure_lag(event_store& store, std::int64_t checkpoint, std::int64_t head,
                                 std::int64_t now_us) {
  consumer_lag lag;
  lag.events = std::max<std::int64_t>(0, head - checkpoint);
  if (lag.events == 0) return lag;
  read_all_options o;
  o.from_position = checkpoint + 1;
  o.max_count = 1;
  auto oldest = store.read_all(o, [&](const recorded_event& e) {
    lag.seconds = std::max(0.0, static_cast<double>(now_us - e.recorded_at_us) / 1e6);
    return false;
  });
  if (!oldest) return std::move(oldest).error();
  return lag;
}

void measure_projections(event_store& store, std::int64_t head,
                         std::vector<consumer_status>& statuses) {
  const auto now = store::system_clock_us();
  for (auto& c : statuses) {
    c.head = head;
    auto lag = measure_lag(store, c.checkpoint, c.head, now);
    c.lag_events = std::max<std::int64_t>(0, c.head - c.checkpoint);
    c.lag_seconds = lag ? lag->seconds : 0;
    c.state = c.stuck_position ? consumer_state::stuck
              : c.lag_events   ? consumer_state::catching_up
                               : consumer_state::running;
  }
}

}  // namespace detail
}  // namespace annals
