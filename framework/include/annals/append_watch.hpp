// annals/append_watch.hpp — waking up when events are appended to a store, by any process.
//
//   auto watch = annals::append_watch::open("postgresql://...").value_or_throw();
//   std::int64_t last = 0;
//   for (;;) {
//     const auto mark = watch->mark();  // before reading: an append after it wakes wait()
//     ... read_all from last + 1, printing and moving `last` ...
//     if (nothing_new) watch->wait(mark, std::chrono::seconds(1));
//   }
//
// Appends through this process's handles on the store wake wait() at once. Appends by other
// processes wake it through the backend where the backend can tell: on PostgreSQL the watch
// LISTENs for the NOTIFY each append sends with its COMMIT (a listening connection and a
// thread, for the watch's lifetime). SQLite cannot tell another process's commit, so there
// wait() returns within 50 ms for the caller to read again.
//
// Ownership: a watch opened from a handle keeps the handle alive; one opened from a URI opens
// the store read-only (never creating it: not_found). Thread safety: mark() and wait() may be
// called from any thread.
#pragma once

#include <annals/result.hpp>
#include <annals/store_ref.hpp>

#include <chrono>
#include <cstdint>
#include <memory>

namespace annals {

class append_watch {
 public:
  // Watches the store `store` names (a handle, or a path, sqlite:PATH or postgresql://...).
  // A test double has nothing to watch: invalid_argument.
  static result<std::unique_ptr<append_watch>> open(store_ref store);

  virtual ~append_watch() = default;

  // A count of the appends noticed so far; take it before reading.
  virtual std::uint64_t mark() const noexcept = 0;
  // Returns once an append was noticed after `mark`, or after `timeout` at the latest (on
  // SQLite, after 50 ms at the latest).
  virtual void wait(std::uint64_t mark, std::chrono::milliseconds timeout) const = 0;
};

}  // namespace annals
