// The process-wide metrics registry (metrics.hpp).
#include "metrics.hpp"

#include <atomic>

namespace annals::metrics {
namespace {

struct registry {
  std::atomic<std::uint64_t> appends{0};
  std::atomic<std::uint64_t> conflicts{0};
  std::array<std::atomic<std::uint64_t>, append_buckets.size() + 1> buckets{};  // not cumulative
  std::atomic<std::uint64_t> append_ns{0};
  // Status codes 100..599, one slot each: no lock, no allocation.
  std::array<std::atomic<std::uint64_t>, 600> http{};
  std::atomic<std::int64_t> sse_clients{0};
};

registry& reg() noexcept {
  static registry r;
  return r;
}

}  // namespace

void record_append(bool ok, bool conflict, std::chrono::nanoseconds took) noexcept {
  auto& r = reg();
  if (ok) r.appends.fetch_add(1, std::memory_order_relaxed);
  if (conflict) r.conflicts.fetch_add(1, std::memory_order_relaxed);
  const double s = std::chrono::duration<double>(took).count();
  std::size_t i = 0;
  while (i < append_buckets.size() && s > append_buckets[i]) ++i;
  r.buckets[i].fetch_add(1, std::memory_order_relaxed);
  r.append_ns.fetch_add(static_cast<std::uint64_t>(took.count() < 0 ? 0 : took.count()),
                        std::memory_order_relaxed);
}

void record_http_request(int status) noexcept {
  if (status >= 100 && status < 600) {
    reg().http[static_cast<std::size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  }
}

void add_sse_clients(std::int64_t delta) noexcept {
  reg().sse_clients.fetch_add(delta, std::memory_order_relaxed);
}

snapshot read() noexcept {
  auto& r = reg();
  snapshot s;
  s.appends = r.appends.load(std::memory_order_relaxed);
  s.conflicts = r.conflicts.load(std::memory_order_relaxed);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < r.buckets.size(); ++i) {
    total += r.buckets[i].load(std::memory_order_relaxed);
    s.buckets[i] = total;
  }
  s.append_count = total;
  s.append_seconds_sum = static_cast<double>(r.append_ns.load(std::memory_order_relaxed)) / 1e9;
  for (std::size_t c = 100; c < r.http.size(); ++c) {
    if (auto n = r.http[c].load(std::memory_order_relaxed)) s.http_requests[static_cast<int>(c)] = n;
  }
  s.sse_clients = r.sse_clients.load(std::memory_order_relaxed);
  return s;
}

}  // namespace annals::metrics
