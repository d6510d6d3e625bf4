// The shared consumer parts. Contract: consumer/core.hpp.
#include "consumer/core.hpp"

namespace annals::detail {

result<std::int64_t> read_page(event_store& store, std::int64_t after, std::int64_t head,
                               std::int64_t limit, const page_filter& filter,
                               const std::function<result<void>(const recorded_event&)>& visit) {
  read_all_options ro;
  ro.from_position = after + 1;
  ro.max_count = limit;
  ro.event_types = filter.event_types;
  // One stream is read by its name as a prefix, then the longer names are left out.
  ro.stream_prefix = filter.stream.empty() ? filter.stream_prefix : filter.stream;
  std::int64_t read = 0, last = after;
  std::optional<error> failed;
  auto r = store.read_all(ro, [&](const recorded_event& e) {
    if (e.position > head) return false;
    ++read;
    last = e.position;
    if (!filter.stream.empty() && e.stream_id != filter.stream) return true;
    if (auto v = visit(e); !v) {
      failed = v.error();
      return false;
    }
    return true;
  });
  if (!r) return std::move(r).error();
  if (failed) return std::move(*failed);
  return read < limit ? head : last;
}

result<consumed> consume_page(consumer_policy& p, stop_signal& stop, backoff pauses,
                              const std::vector<recorded_event>& page, std::int64_t checkpoint,
                              std::int64_t end) {
  auto r = p.handle(page, checkpoint, end);
  if (!r) return std::move(r).error();
  consumed out{static_cast<std::int64_t>(r->done), r->lost};
  if (out.ended || !r->failure) return out;
  const recorded_event& bad = page[r->done];
  const std::int64_t before = r->done > 0 ? bad.position - 1 : checkpoint;
  const std::vector<recorded_event> one{bad};
  error failure = std::move(*r->failure);
  for (int attempts = 1;; ++attempts) {
    switch (p.failed(bad, attempts, failure)) {
      case on_failure::give_up: return failure;
      case on_failure::park: {
        auto kept = p.park(bad, failure, attempts, before);
        if (!kept) return std::move(kept).error();
        out.ended = !kept.value();
        return out;
      }
      case on_failure::retry: break;
    }
    // stop() ends the pause: the event stays unhandled and unparked; the next pass starts
    // its attempts again.
    if (!stop.pause(pauses.next())) return out.ended = true, out;
    auto ready = p.before_retry(failure);
    if (!ready) return std::move(ready).error();
    if (!ready.value()) return out.ended = true, out;
    auto again = p.handle(one, before, bad.position);
    if (!again) return std::move(again).error();
    if (again->lost) return out.ended = true, out;
    if (!again->failure) return ++out.handled, out;
    failure = std::move(*again->failure);
  }
}

void live_loop::start(std::function<void()> pass,
                      std::function<std::chrono::milliseconds()> interval) {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_.reset();
  running_ = true;
  thread_ = std::thread([this, pass = std::move(pass), interval = std::move(interval)] {
    while (!stop_.stopped()) {
      auto seen = commits_->sequence();
      pass();
      if (stop_.stopped()) break;
      commits_->wait(seen, interval());
    }
  });
}

void live_loop::stop(const std::function<void()>& stopped) {
  std::lock_guard lock(mu_);
  if (!thread_.joinable()) return;
  stop_.stop();
  running_ = false;
  commits_->notify();  // wake the loop
  thread_.join();
  if (stopped) stopped();
  stop_.reset();
}

}  // namespace annals::detail
