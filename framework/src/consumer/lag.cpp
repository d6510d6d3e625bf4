#include "consumer/lag.hpp"

#include <algorithm>

namespace annals::detail {

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

}  // namespace annals::detail
