// Internal: the process-wide metrics registry. Both stores record their appends here; the HTTP
// server records its requests and SSE clients; annals::prometheus_metrics reads a snapshot.
// Lock-free (relaxed atomics): recording costs a few atomic adds, never a lock.
#pragma once

#include <annals/result.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>

namespace annals::metrics {

// Upper bounds (seconds) of the append latency histogram; +Inf is implicit.
inline constexpr std::array<double, 14> append_buckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

// One append call: its outcome (`conflict` when it failed with concurrency_conflict) and how
// long it took. Failures other than conflicts count in neither counter but in the histogram.
void record_append(bool ok, bool conflict, std::chrono::nanoseconds took) noexcept;

// Runs an append (a callable returning its result) and records it: the stores' append().
template <class Append>
auto timed_append(Append&& append) {
  const auto started = std::chrono::steady_clock::now();
  auto r = append();
  record_append(static_cast<bool>(r), !r && r.error().kind() == errc::concurrency_conflict,
                std::chrono::steady_clock::now() - started);
  return r;
}

void record_http_request(int status) noexcept;
void add_sse_clients(std::int64_t delta) noexcept;

struct snapshot {
  std::uint64_t appends = 0;
  std::uint64_t conflicts = 0;
  std::array<std::uint64_t, append_buckets.size() + 1> buckets{};  // cumulative; last: +Inf
  double append_seconds_sum = 0;
  std::uint64_t append_count = 0;  // == buckets.back()
  std::map<int, std::uint64_t> http_requests;  // by status code
  std::int64_t sse_clients = 0;
};
snapshot read() noexcept;

}  // namespace annals::metrics
