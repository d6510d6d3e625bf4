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
// Appends through any handle on the store in this process wake wait() at once. Appends by
// other processes wake it through the backend where the backend can tell: on PostgreSQL the
// watch LISTENs for the NOTIFY each commit sends (a connection and a thread of its own, for the
// watch's lifetime); wait() still returns after 1 s at most, and polls in effect while that
// connection is lost and being opened again. SQLite cannot tell another process's commit, so
// there wait() returns within 50 ms for the caller to read again.
//
// Ownership: a watch opened from a handle keeps the handle alive. One opened from a URI, or
// from a store_ref::adopt (whose double raises nothing), opens the store at that URI read-only
// (never creating it: not_found), on PostgreSQL with one pooled connection besides the
// listening one. Thread safety: mark() and wait() may be called from any thread; the watch
// must outlive every call.
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
  // A test double handle has nothing to watch: invalid_argument. A store that cannot be
  // opened: its error (not_found, io, ...).
  static result<std::unique_ptr<append_watch>> open(store_ref store);

  virtual ~append_watch() = default;

  // An opaque mark that moves on when commits are noticed (one commit may hold many appends;
  // it may also move with none, e.g. when the watch starts listening). Take it before reading.
  virtual std::uint64_t mark() const noexcept = 0;
  // Returns once the mark moved past `mark`, or after `timeout`, or after the backend's
  // longest wait (SQLite 50 ms, PostgreSQL 1 s), whichever comes first. A timeout <= 0
  // returns at once. It says nothing of why it returned: read, and compare marks.
  virtual void wait(std::uint64_t mark, std::chrono::milliseconds timeout) const = 0;
};

}  // namespace annals
