// Group commit. Contract: store/group_commit.hpp.
#include "store/group_commit.hpp"

#include <exception>
#include <string>

namespace annals::store {

result<append_result> group_commit::submit(request& r, const commit_fn& commit) {
  std::unique_lock lock(mu_);
  queue_.push_back(&r);
  while (!r.out) {
    if (leader_active_) {
      cv_.wait(lock);
      continue;
    }
    leader_active_ = true;
    std::vector<request*> batch(queue_.begin(), queue_.end());
    queue_.clear();
    lock.unlock();
    // The leader must always hand results back and give up leadership, or every later append
    // would wait forever: an exception (an injected clock, bad_alloc) fails the whole batch,
    // whose transaction rolled back as the exception left `commit`.
    std::string failure = "append failed";
    try {
      commit(batch);
    } catch (const std::exception& e) {
      failure = std::string("append failed: ") + e.what();
      for (auto* p : batch) p->staged.reset();
    } catch (...) {
      failure = "append failed: unknown exception";
      for (auto* p : batch) p->staged.reset();
    }
    lock.lock();
    for (auto* p : batch) {
      if (p->staged) {
        p->out = std::move(p->staged);
      } else {
        p->out.emplace(error(errc::io, failure));
      }
    }
    leader_active_ = false;
    cv_.notify_all();
  }
  return std::move(*r.out);
}

group_commit::leadership::leadership(group_commit& g) : g_(g) {
  std::unique_lock lock(g_.mu_);
  g_.cv_.wait(lock, [&] { return !g_.leader_active_; });
  g_.leader_active_ = true;
}

group_commit::leadership::~leadership() {
  std::lock_guard lock(g_.mu_);
  g_.leader_active_ = false;
  g_.cv_.notify_all();  // appenders queued meanwhile elect a new leader
}

}  // namespace annals::store
