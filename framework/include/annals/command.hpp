// annals/command.hpp — deciding and handling commands with optimistic concurrency.
//
// A decider is a pure function of the aggregate's state returning a decision: events to append,
// or a rejection. handle() loads the aggregate (a streamed fold), decides, appends with the
// exact expected version, and on a concurrency conflict reloads and decides again, a bounded
// number of times.
//
//   auto r = annals::handle<account>(store, "account-42", [&](const account& a) {
//     if (a.balance < amount) return annals::decision<account>::reject("insufficient funds");
//     return annals::decision<account>::emit(withdrawn(amount));
//   });
//
// Thread safety: handle() may be called from many threads on one store.
#pragma once

#include <annals/aggregate.hpp>
#include <annals/store.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace annals {

// The outcome of deciding a command: events (possibly none) or a rejection.
// Move-only. The events are owned by the decision.
template <class A>
class decision {
 public:
  decision() = default;  // accepted, no events

  template <class... E>
  static decision emit(E... events) {
    decision d;
    (d.add(std::move(events)), ...);
    return d;
  }
  // A domain rule refused the command. `reason` is shown to the user as is.
  static decision reject(std::string reason) {
    decision d;
    d.rejected_ = true;
    d.reason_ = std::move(reason);
    return d;
  }

  template <class E>
  decision& add(E event) {
    static_assert(A::events::template contains<E>,
                  "annals: a decision may only emit event types listed in the aggregate's "
                  "event_list; add the type to `using events = annals::event_list<...>`");
    events_.push_back(std::make_unique<E>(std::move(event)));
    return *this;
  }

  bool rejected() const noexcept { return rejected_; }
  const std::string& reason() const noexcept { return reason_; }
  const std::vector<std::unique_ptr<google::protobuf::Message>>& events() const noexcept {
    return events_;
  }

 private:
  bool rejected_ = false;
  std::string reason_;
  std::vector<std::unique_ptr<google::protobuf::Message>> events_;
};

struct command_options {
  // Conflicts retried before giving up with errc::concurrency_conflict. Default 10.
  int max_retries = 10;
  // Upper bound of the randomized pause before a retry, doubled each attempt up to 50 ms.
  std::chrono::microseconds retry_backoff{200};
  // Id of this command; empty: a new UUIDv7. Becomes the events' causation id when
  // causation_id is empty.
  std::string command_id;
  // Correlation id for every event; empty: the command id (a new conversation starts here).
  std::string correlation_id;
  // Causation id for every event; empty: the command id.
  std::string causation_id;
  std::string traceparent;      // copied into each event's metadata
  std::vector<header> headers;  // copied into each event's metadata
  // The id of the decision's event number `index` (0, 1, ...); an empty string, or no function
  // (the default), lets the store assign a UUIDv7. Called on every attempt, so it must give the
  // same id for the same index. For process managers: deterministic ids (derived_event_id) make
  // a step that already happened recognisable (event_store::find_event), and a repeated append
  // of the same events at the same versions a no-op (append_result::already_appended).
  std::function<std::string(std::size_t index)> event_ids;
  // How the aggregate is loaded: snapshots used and saved (after the append too) for an
  // aggregate that opts in; see annals/snapshot.hpp. Default: as load_options{}.
  load_options load;
};

// For process managers: options for a command caused by `trigger`. The correlation id is the
// trigger's (its event id when it has none), the causation id is the trigger's event id, and
// the traceparent is copied; so a whole conversation shares one correlation id.
command_options caused_by(const recorded_event& trigger);

struct command_result {
  std::int64_t stream_version = -1;  // the stream's version after the command
  std::int64_t position = 0;         // global position of the last event; 0 if none appended
  std::size_t events_appended = 0;
  int conflicts_retried = 0;  // how many times a conflict forced a reload and a new decision
};

namespace detail {
struct command_hooks {
  std::function<result<std::int64_t>()> load;           // fresh state; returns its version
  std::function<result<std::vector<event_data>>()> decide;  // rejection: errc::rejected
  std::function<void(std::int64_t)> appended;           // the decision is now at this version
};
// The retry loop, compiled once (src/command.cpp).
result<command_result> run_command(event_store& store, std::string_view stream_id,
                                   const command_options& options, const command_hooks& hooks);
// Serializes events; an event that would not parse back (a proto3 string field holding
// invalid UTF-8) is invalid_argument, so the store never keeps an event it cannot read.
result<std::vector<event_data>> serialize_events(
    const std::vector<std::unique_ptr<google::protobuf::Message>>& events);
}  // namespace detail

// Handles one command on one stream. `decide` is called as decide(const A&) and returns a
// decision<A>. It may be called several times (once per attempt) and must be pure.
// Errors: rejected (the decision's reason), concurrency_conflict (after max_retries), any
// error of the store, and corruption for a stream event the aggregate does not list.
template <class A, class Decide>
result<command_result> handle(event_store& store, std::string_view stream_id, Decide&& decide,
                              const command_options& options = {}) {
  static_assert(check_aggregate<A>());
  static_assert(std::is_invocable_r_v<decision<A>, Decide&, const A&>,
                "annals: the decide function must be callable as decision<A>(const A&)");
  A state{};
  dispatcher<A> d;
  const detail::snapshot_hooks snap = detail::snapshot_hooks_for<A>(state, options.load);
  detail::load_outcome loaded;
  std::optional<decision<A>> last;
  detail::command_hooks hooks{
      [&]() -> result<std::int64_t> {
        auto r = detail::load_state(
            store, stream_id, options.load,
            {[&] { state = A{}; }, [&](const recorded_event& e) { return d.apply(state, e); },
             snap});
        if (!r) return std::move(r).error();
        loaded = r.value();
        return loaded.version;
      },
      [&]() -> result<std::vector<event_data>> {
        last.emplace(decide(std::as_const(state)));
        if (last->rejected()) return error(errc::rejected, last->reason());
        return detail::serialize_events(last->events());
      },
      [&](std::int64_t version) {
        if (!detail::snapshot_due(options.load, snap, version, loaded)) return;
        for (const auto& m : last->events()) d.apply_message(state, *m);
        detail::save_snapshot_now(store, stream_id, version, options.load, snap, loaded);
      }};
  return detail::run_command(store, stream_id, options, hooks);
}

}  // namespace annals
