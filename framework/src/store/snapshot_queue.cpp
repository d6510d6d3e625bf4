#include "store/snapshot_queue.hpp"

#include <cstdio>
#include <exception>

namespace annals::store {

snapshot_queue::snapshot_queue(write_fn write, bool read_only, std::size_t max_queued,
                               std::chrono::milliseconds flush_timeout)
    : write_(std::move(write)),
      read_only_(read_only),
      max_queued_(max_queued),
      flush_timeout_(flush_timeout) {}

snapshot_queue::~snapshot_queue() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    flush_deadline_ = std::chrono::steady_clock::now() + flush_timeout_;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void snapshot_queue::save(snapshot_record snapshot) noexcept {
  if (read_only_) return;
  try {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= max_queued_) return;  // dropped: best effort
    queue_.push_back(std::move(snapshot));
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  } catch (...) {
    return;  // no memory or no thread: the snapshot is dropped, the caller goes on
  }
  cv_.notify_one();
}

void snapshot_queue::run() noexcept {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    if (stopping_ && std::chrono::steady_clock::now() >= flush_deadline_) {
      queue_.clear();  // the bounded flush is over: drop the rest
      return;
    }
    snapshot_record s = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    result<void> r;
    try {
      r = write_(s);
    } catch (const std::exception& e) {
      r = error(errc::io, e.what());
    } catch (...) {
      r = error(errc::io, "unknown exception");
    }
    if (!r) {
      std::fprintf(stderr, "annals: warning: snapshot of stream '%s' at version %lld not saved: %s\n",
                   s.stream_id.c_str(), static_cast<long long>(s.version),
                   r.error().message().c_str());
    }
    lock.lock();
  }
}

}  // namespace annals::store
