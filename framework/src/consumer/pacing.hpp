// How a checkpointed consumer (projection runner or subscription) paces its retries: the one
// backoff and the one stop signal both engines use, so a failing handler is retried at the
// same rhythm and stop() cuts any pause short in either.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace annals::detail {

// The pauses between retries of one failing event: `first`, doubled after each, up to `cap`
// (a cap below `first` keeps every pause at `first`).
class backoff {
 public:
  backoff(std::chrono::milliseconds first, std::chrono::milliseconds cap)
      : next_(first), cap_(std::max(first, cap)) {}
  std::chrono::milliseconds next() {
    auto pause = next_;
    next_ = std::min(next_ * 2, cap_);
    return pause;
  }

 private:
  std::chrono::milliseconds next_;
  std::chrono::milliseconds cap_;
};

// Set by stop(), cleared by reset(); pause() sleeps until it is set. Thread-safe.
class stop_signal {
 public:
  bool stopped() const noexcept { return stopped_.load(); }
  // Sleeps up to `d`. false when stopped (before or during the pause).
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, d, [&] { return stopped_.load(); });
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }
  void reset() { stopped_ = false; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopped_{false};
};

}  // namespace annals::detail
