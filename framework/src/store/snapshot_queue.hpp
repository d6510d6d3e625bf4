// Background snapshot saves, the same on every backend: a bounded queue served by one thread,
// started on the first save. A save never waits for the store's write lock on the caller's
// thread and never fails a caller: a full queue drops it, and a failed write is reported on
// stderr and dropped. The destructor flushes the queue for at most `flush_timeout`, then drops
// what is left, and joins the thread.
//
// `write` runs on that thread only, one snapshot at a time; whatever it uses (the backend's own
// connection) must outlive the queue: declare the queue after it. Thread safety: save() may be
// called from any thread.
#pragma once

#include <annals/event_store.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace annals::store {

class snapshot_queue {
 public:
  using write_fn = std::function<result<void>(const snapshot_record&)>;
  static constexpr std::size_t default_max_queued = 256;
  static constexpr std::chrono::milliseconds default_flush_timeout{2000};

  // `read_only`: saves are dropped silently.
  snapshot_queue(write_fn write, bool read_only, std::size_t max_queued = default_max_queued,
                 std::chrono::milliseconds flush_timeout = default_flush_timeout);
  ~snapshot_queue();
  snapshot_queue(const snapshot_queue&) = delete;
  snapshot_queue& operator=(const snapshot_queue&) = delete;

  void save(snapshot_record snapshot) noexcept;

 private:
  void run() noexcept;

  const write_fn write_;
  const bool read_only_;
  const std::size_t max_queued_;
  const std::chrono::milliseconds flush_timeout_;

  std::mutex mu_;
  std::condition_variable cv_;  // work queued, or stopping
  std::deque<snapshot_record> queue_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point flush_deadline_;
  std::thread thread_;  // started on the first save
};

}  // namespace annals::store
