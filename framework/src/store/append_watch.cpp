// append_watch (annals/append_watch.hpp): the store's commit signal, raised by its appends in
// this process and, through the backend's coordination (db/coordination.hpp), by the NOTIFYs
// of other processes' appends on PostgreSQL.
#include <annals/append_watch.hpp>

#include "store/backend_ops.hpp"
#include "store/prepared.hpp"
#include "store/uri.hpp"

#include <algorithm>

namespace annals {

namespace {

constexpr std::chrono::milliseconds sqlite_poll{50};

class watch_impl final : public append_watch {
 public:
  watch_impl(std::shared_ptr<event_store> store,
             std::unique_ptr<detail::runner_coordination> coordination)
      : store_(std::move(store)),
        commits_(store::commits_of(*store_)),
        coordination_(std::move(coordination)),
        longest_(coordination_->follow_interval(sqlite_poll)) {}

  std::uint64_t mark() const noexcept override { return commits_->sequence(); }
  void wait(std::uint64_t mark, std::chrono::milliseconds timeout) const override {
    commits_->wait(mark, std::min(timeout, longest_));
  }

 private:
  const std::shared_ptr<event_store> store_;  // holds the signal's identity alive
  const std::shared_ptr<store::commit_signal> commits_;
  const std::unique_ptr<detail::runner_coordination> coordination_;  // PostgreSQL: LISTENs
  const std::chrono::milliseconds longest_;  // what wait() may sleep with nothing to wake it
};

}  // namespace

result<std::unique_ptr<append_watch>> append_watch::open(store_ref ref) {
  auto resolved = store::resolve(ref, false, "append watches");
  if (!resolved) return std::move(resolved).error();
  // An adopted double raises no signal: the watch opens the database it was adopted with.
  auto handle = ref.adopted() ? nullptr : std::move(resolved->handle);
  if (!handle) {
    sqlite_options so;
    so.create_if_missing = false;
    so.read_only = true;
    auto s = store::open_at(resolved->where, std::move(so), 1);
    if (!s) return std::move(s).error();
    handle = std::move(s).value();
  }
  auto ops = store::backend_for(resolved->where.kind);
  if (!ops) return std::move(ops).error();
  auto c = (*ops)->open_coordination(resolved->where.target);
  if (!c) return std::move(c).error();
  return std::unique_ptr<append_watch>(
      std::make_unique<watch_impl>(std::move(handle), std::move(c).value()));
}

}  // namespace annals
