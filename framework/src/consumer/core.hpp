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
#include <optional>
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

// What handling a page (or one event) came to.
struct page_result {
  std::size_t done = 0;           // the events handled: a prefix of the page (recorded unless
                                  // `lost`)
  std::optional<error> failure;   // page[done] failed; nothing of it is recorded
  bool lost = false;              // the consumer's position moved elsewhere (another runner, a
                                  // lost lease): nothing of this call stays, this pass ends
};

// What to do about an event that failed `attempts` times.
enum class on_failure { retry, park, give_up };

// What a kind of consumer does with the pages the core reads (projection: apply them in the
// checkpoint's transaction; subscription: deliver them, then move its fenced checkpoint).
class consumer_policy {
 public:
  // Handles `page`, the events after `checkpoint` read up to `end`, and records the outcome:
  // the checkpoint at `end` when all were handled; when one failed, the handled prefix with the
  // checkpoint just before the failed event (nothing when the prefix is empty). Also called
  // with the failed event alone (`end` its position) to retry it. What "record" means is the
  // policy's (a subscription's redelivery marks the parked row instead).
  virtual result<page_result> handle(const std::vector<recorded_event>& page,
                                     std::int64_t checkpoint, std::int64_t end) = 0;
  // Called after each failure, before the pause that precedes a retry.
  virtual on_failure failed(const recorded_event& e, int attempts, const error& failure) = 0;
  // Called after the pause, before the retry. false: the position was lost.
  virtual result<bool> before_retry(const error&) { return true; }
  // Parks `e`, which failed `attempts` times; `checkpoint` is the consumer's checkpoint now
  // (before `e`, possibly trailing it by events it does not take). false: the position was lost
  // (nothing recorded).
  virtual result<bool> park(const recorded_event& e, const error& failure, int attempts,
                            std::int64_t checkpoint) = 0;

 protected:
  ~consumer_policy() = default;
};

struct consumed {
  std::int64_t handled = 0;  // events handled (a parked one is not)
  bool ended = false;        // the pass must end: the position was lost, or stop was signalled
};

// The core's page step: `p` handles `page` (events after `checkpoint`, covering up to `end`);
// an event that fails is retried alone after pauses from `pauses` (cut short by `stop`) until
// it is handled, or the policy parks it or gives up (its error is returned, the checkpoint left
// before it). It returns after that one event either way: the caller reads on from the
// checkpoint as it now stands (a subscription past a parked event; a projection is stuck).
result<consumed> consume_page(consumer_policy& p, stop_signal& stop, backoff pauses,
                              const std::vector<recorded_event>& page, std::int64_t checkpoint,
                              std::int64_t end);

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
  // Ends the thread and waits for it, then runs `stopped` (when given and a thread ran) before
  // another start() may begin: what the loop held is given up in between. The stop signal is
  // then cleared: a later catch-up by the caller retries failing events again.
  void stop(const std::function<void()>& stopped = {});
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
