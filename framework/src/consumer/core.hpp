// What every checkpointed consumer shares, projection runner and subscription alike (the relay
// is a subscription): the live loop, the head-bounded page read and the retry pacing. Each kind
// keeps only its policy: a projection applies a page in its checkpoint's transaction (exactly
// once) and gets stuck on a parked event; a subscription delivers, then moves its checkpoint
// under a lease (at least once) and passes over a parked event.
#pragma once

#include "consumer/pacing.hpp"
#include "store/prepared.hpp"

#include <annals/event_store.hpp>
#include <annals/result.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace annals::detail {

// The events a consumer takes: of `event_types` (empty: every type), in the streams starting
// with `stream_prefix` (empty: every stream), or only in `stream` (non-empty: exactly that one).
struct page_filter {
  std::vector<std::string> event_types;
  std::string stream_prefix;
  std::string stream;
};

// Reads up to `limit` events after position `after` and at or before `head`, passing those that
// fit `filter` to `visit` in order; an error from `visit` ends the read with that error.
// `head` must have been read before: positions are assigned under the write lock, so every
// position up to it is committed and immutable. Returns the position up to which (after, head]
// is covered: `head` when the read came back short, else the last position read.
result<std::int64_t> read_page(event_store& store, std::int64_t after, std::int64_t head,
                               std::int64_t limit, const page_filter& filter,
                               const std::function<result<void>(const recorded_event&)>& visit);

// A consumer's live loop: one thread running `pass` at once, then again after every commit to
// the store (its commit signal: appends in this process at once; other processes through the
// backend) or after `interval()` at the latest, until stop(). Its stop signal, stopping(),
// cuts the consumer's retry pauses short. Thread-safe; the owner stops it before it destroys
// what `pass` uses.
class live_loop {
 public:
  explicit live_loop(std::shared_ptr<store::commit_signal> commits)
      : commits_(std::move(commits)) {}
  live_loop(const live_loop&) = delete;
  live_loop& operator=(const live_loop&) = delete;
  ~live_loop() { stop(); }

  // Starts the thread; nothing when it runs already.
  void start(std::function<void()> pass, std::function<std::chrono::milliseconds()> interval);
  // Ends the thread and waits for it. false when none ran. The stop signal is then cleared: a
  // later catch-up by the caller retries failing events again.
  bool stop();
  // Between start() and stop(). Lock-free: the loop's own pass may ask.
  bool running() const noexcept { return running_; }
  stop_signal& stopping() noexcept { return stop_; }
  store::commit_signal& commits() noexcept { return *commits_; }

 private:
  const std::shared_ptr<store::commit_signal> commits_;
  std::mutex mu_;  // guards thread_
  std::thread thread_;
  std::atomic<bool> running_{false};
  stop_signal stop_;
};

}  // namespace annals::detail
