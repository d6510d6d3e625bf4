// Group commit, the same on every backend: appenders queue their requests, and one of them at
// a time (the leader) takes everything queued so far and writes it as one batch, typically in
// one transaction, so that concurrent appends share one commit (one WAL flush). Appenders that
// arrive meanwhile form the next batch.
//
// Results are published to their appenders only after the batch's `commit` returned, under the
// queue's lock: an appender never sees the result of an append whose transaction is still open.
// If `commit` throws, every request of the batch fails with io (the backend's transaction must
// roll back as the exception leaves it). Thread-safe.
#pragma once

#include <annals/event_store.hpp>

#include "store/prepared.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

namespace annals::store {

class group_commit {
 public:
  // One queued append: what it appends (prepared), and its result.
  struct request {
    request(std::string_view s, expected_version e, std::vector<prepared_event> ev)
        : stream_id(s), expected(e), events(std::move(ev)) {}
    std::string_view stream_id;  // the appender's, alive while it waits
    expected_version expected;
    std::vector<prepared_event> events;
    // Set by the leader while it writes the batch; only the leader touches it. Left empty, the
    // appender gets an io error.
    std::optional<result<append_result>> staged;
    // The acknowledgement: published under the queue's lock once the batch has ended.
    std::optional<result<append_result>> out;
  };
  using commit_fn = std::function<void(const std::vector<request*>& batch)>;

  // Queues `r` and returns its result once the batch holding it has ended: either this thread
  // leads and runs `commit` on the batch, or another leader's batch held it.
  result<append_result> submit(request& r, const commit_fn& commit);

  // Holds the leadership for its lifetime: no batch runs meanwhile, and appenders queue behind
  // it (e.g. a schema registration on the writer connection).
  class leadership {
   public:
    explicit leadership(group_commit& g);
    ~leadership();
    leadership(const leadership&) = delete;
    leadership& operator=(const leadership&) = delete;

   private:
    group_commit& g_;
  };

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<request*> queue_;
  bool leader_active_ = false;
};

}  // namespace annals::store
