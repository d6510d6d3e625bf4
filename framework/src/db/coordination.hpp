// What the checkpointed consumers of one store agree on across processes, per backend: the
// rebuild lock, who leads a projection, and how long a live loop may sleep.
#pragma once

#include <annals/result.hpp>

#include <chrono>
#include <memory>
#include <string_view>

namespace annals::detail {

// What runners of one store agree on across processes, per backend.
class runner_coordination {
 public:
  virtual ~runner_coordination() = default;
  // An exclusive lock for rebuilding `name`, released when the returned handle is destroyed or
  // the process dies. busy when another rebuild holds it.
  virtual result<std::shared_ptr<void>> lock_rebuild(std::string_view name) = 0;
  // Whether a rebuild of `name` holds that lock now (any process).
  virtual bool rebuild_running(std::string_view name) = 0;
  // Whether this runner may apply `name` now. Where the backend keeps one active runner per
  // projection (PostgreSQL), this takes the lead when nobody holds it; `keep` holds it until
  // release_all() (a live runner), else until release(name). false: another runner leads.
  virtual bool lead(std::string_view name, bool keep) = 0;
  virtual void release(std::string_view name) = 0;
  virtual void release_all() = 0;
  // How long the live loop may sleep when nothing wakes it: appends by other processes are
  // seen within this (a wake-up from the backend may make it much shorter).
  virtual std::chrono::milliseconds follow_interval(std::chrono::milliseconds poll) const = 0;
};

}  // namespace annals::detail
