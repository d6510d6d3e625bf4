// annals/status.hpp: where a checkpointed consumer (a projection or a subscription, relays
// included) stands. The one status type: projection_runner::status(), subscription::status(),
// subscription_admin::list(), relay::status(), consumer_admin::list(),
// store_admin::projections() and store_stats::projections all return it. A plain value; copy
// freely.
//
// Every consumer has the common part (checkpoint, head, lag, parked events, state, error,
// detail). The fields marked "projections" or "subscriptions" are left at their defaults for
// the other kind.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace annals {

enum class consumer_kind { projection, subscription };
std::string_view to_string(consumer_kind kind) noexcept;  // "projection", "subscription"

// Progress, not whether an instance runs (see `active` for a subscription). The admins
// (consumer_admin, store_admin), which run no projection, see only stuck, catching_up and
// running: a rebuild in progress and a changed version are what projection_runner::status()
// adds.
enum class consumer_state {
  running,      // caught up with the head (a live consumer follows new events)
  catching_up,  // events after its checkpoint wait; or a projection's version changed
  rebuilding,   // projections: a rebuild into shadow tables runs
  stuck,        // projections: held at a parked event until it is retried or skipped
};
// "running", "catching up", "rebuilding", "stuck".
std::string_view to_string(consumer_state s) noexcept;

struct consumer_status {
  consumer_kind kind = consumer_kind::projection;
  std::string name;
  std::int64_t checkpoint = 0;  // last position applied or delivered (or passed over)
  std::int64_t head = 0;        // the store's head position
  std::int64_t lag_events = 0;  // head - checkpoint (every event, of its types or not)
  double lag_seconds = 0;       // age of the oldest event after the checkpoint; 0 if none
  std::int64_t parked = 0;      // parked events not yet resolved (retried or skipped)
  consumer_state state = consumer_state::running;
  std::optional<std::int64_t> stuck_position;  // a stuck projection's parked event
  // A stuck projection's handler error, or the error of an automatic rebuild to a new version
  // that failed in this runner (retried after 30 s; the live model keeps its old version). A
  // subscription's last delivery error (empty once one succeeds).
  std::string error;
  // Projections: "version N", the stored version ("version 0": never built). Subscriptions: the
  // filter (subscription_filter::describe()).
  std::string detail;

  // Projections. version: the code's version (from the admins, which have no code: the stored
  // one); stored_version: the version the live model was built with (0: never built);
  // events_per_s: the rate of the last batch written by any runner, as stored (the runner's
  // status and the admins report the same figure).
  int version = 0;
  int stored_version = 0;
  double events_per_s = 0;

  // Subscriptions. delivered: events handled since it was created; updated_at_us: when its
  // checkpoint was last written; active: an instance holds the lease now.
  std::int64_t delivered = 0;
  std::int64_t updated_at_us = 0;
  bool active = false;
};

// The names each kind had for it before there was one type. What moved: a subscription's
// `filter` is `detail` and its `last_error` is `error`; a projection's `stuck_position` is an
// optional (set only while stuck).
using projection_state = consumer_state;
using projection_status = consumer_status;
using subscription_status = consumer_status;

}  // namespace annals
