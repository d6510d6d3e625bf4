// annals/catch_up.hpp — what one catch_up() call of a consumer did, and what it left undone.
//
// Projection runners, subscriptions and relays catch up the same way: from their checkpoint to
// the store's head seen at the call. A call that returns without reaching that head for some
// consumer says so here, with the reason, instead of looking like "nothing to do".
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

// Why a consumer was left behind by a catch_up() call.
enum class held_reason {
  stuck,          // held at a parked event: retry or skip it (`annals projections ...`)
  led_elsewhere,  // another instance holds its lease (or leads it, or rebuilds it) and does
                  // the work; wait_for() waits for that instance
  stale,          // a projection's stored version differs from the code's and it was not
                  // rebuilt now (rebuild_on_version_change off, or its last attempt failed)
};
// "stuck", "led_elsewhere", "stale".
std::string_view to_string(held_reason r) noexcept;

struct held_consumer {
  std::string name;    // the projection's or the subscription's name
  held_reason reason = held_reason::stuck;
  std::string detail;  // a sentence for a person (the parked position and error, ...)
};

struct catch_up_report {
  std::int64_t events = 0;  // events applied or delivered by this call (parked ones not counted)
  std::vector<held_consumer> held;  // consumers that did not reach the head, and why
  // Every consumer reached the head seen at the start of the call.
  bool complete() const noexcept { return held.empty(); }
};

}  // namespace annals
