// annals/consumers.hpp — one admin for a store's checkpointed consumers: its projections and
// its subscriptions (relays included), by name, without their handlers or definitions.
//
//   auto admin = annals::consumer_admin::open_read_only(store).value_or_throw();
//   for (const auto& c : admin->list().value_or_throw())
//     std::printf("%s %s lag %lld\n", annals::to_string(c.kind).data(), c.name.c_str(),
//                 static_cast<long long>(c.lag_events));
//
// Both kinds are checkpointed consumers that park the events their handler keeps failing on:
// list() shows their checkpoints, lag and parked counts side by side; parked(), retry() and
// skip() work on either, found by name. A projection parks one event and waits on it (stuck)
// until it is retried (applied again on its runner's next catch-up) or skipped (the checkpoint
// moves past it, recorded). A subscription parks and goes on; a retry asks the running
// subscription to redeliver. A name held by both a projection and a subscription is
// ambiguous: write it "projection:NAME" or "subscription:NAME".
//
// `annals consumers ...` is this admin on the command line (`annals subscriptions ...` and the
// applications' projection commands remain). Not thread-safe: one object per thread. The
// object owns its connections (closed on destruction).
#pragma once

#include <annals/parked.hpp>
#include <annals/status.hpp>
#include <annals/store_ref.hpp>

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace annals {

class consumer_admin {
 public:
  // Opens an existing store (a handle, or a path, sqlite:PATH or postgresql://...; missing:
  // not_found) writable, as open_store() does (a store of an older storage format is
  // upgraded): retry() and skip() write. Creates no consumer table.
  static result<std::unique_ptr<consumer_admin>> open(store_ref store);
  // Read-only: writes nothing and upgrades no older format (works on a read-only file);
  // retry() and skip() fail with errc::read_only.
  static result<std::unique_ptr<consumer_admin>> open_read_only(store_ref store);
  virtual ~consumer_admin() = default;

  // Projections, then subscriptions, each by name. Empty on a store without either.
  virtual result<std::vector<consumer_status>> list() = 0;
  // The consumer's parked events by position, resolved ones included (their state says which:
  // "parked", "retry" (asked, not yet redelivered), "retried" or "skipped"). not_found for an
  // unknown name.
  virtual result<std::vector<parked_event>> parked(std::string_view name) = 0;
  // Retries the parked event at `position` (0: all of them); returns how many. not_found when
  // no such event waits.
  virtual result<std::int64_t> retry(std::string_view name, std::int64_t position) = 0;
  // Skips the parked event at `position`, recording it; returns how many. A subscription also
  // takes 0 (all of them); a projection needs the position it is stuck at (0:
  // invalid_argument; another: not_found).
  virtual result<std::int64_t> skip(std::string_view name, std::int64_t position) = 0;
};

}  // namespace annals
