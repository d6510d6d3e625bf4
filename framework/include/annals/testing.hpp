// annals/testing.hpp — given/when/then for deciders, with no store involved.
//
//   using annals::testing::given;
//   CHECK(given<account>(opened("a", "Ann"), deposited("a", 100))
//             .when([](const account& a) { return withdraw(a, 30); })
//             .then(withdrawn("a", 30)));
//   CHECK(given<account>(opened("a", "Ann"))
//             .when([](const account& a) { return withdraw(a, 30); })
//             .then_rejected("insufficient funds"));
//
// A verdict converts to bool and prints what differed, so doctest / gtest / Catch show it.
#pragma once

#include <annals/command.hpp>

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace annals::testing {

struct verdict {
  bool passed = false;
  std::string explanation;  // empty when passed
  explicit operator bool() const noexcept { return passed; }
  friend std::ostream& operator<<(std::ostream& os, const verdict& v) {
    return os << (v.passed ? "passed" : v.explanation);
  }
};

namespace detail {
using message_list = std::vector<const google::protobuf::Message*>;
verdict compare_events(const message_list& actual, bool rejected, const std::string& reason,
                       const message_list& expected);
verdict compare_rejection(const message_list& actual, bool rejected, const std::string& reason,
                          std::string_view expected_reason_part);
}  // namespace detail

template <class A>
class outcome {
 public:
  explicit outcome(decision<A> d) : d_(std::move(d)) {}

  // The decision emitted exactly these events, in order (compared field by field).
  template <class... E>
  verdict then(const E&... expected) const {
    return detail::compare_events(actual(), d_.rejected(), d_.reason(), {&expected...});
  }
  // The decision emitted nothing and was not rejected.
  verdict then_nothing() const { return detail::compare_events(actual(), d_.rejected(), d_.reason(), {}); }
  // The decision was a rejection whose reason contains `reason_part` (any reason if empty).
  verdict then_rejected(std::string_view reason_part = {}) const {
    return detail::compare_rejection(actual(), d_.rejected(), d_.reason(), reason_part);
  }
  const decision<A>& result() const noexcept { return d_; }

 private:
  detail::message_list actual() const {
    detail::message_list out;
    for (const auto& e : d_.events()) out.push_back(e.get());
    return out;
  }
  decision<A> d_;
};

template <class A>
class scenario {
  static_assert(check_aggregate<A>());

 public:
  // Applies one more past event to the state.
  template <class E>
  scenario& and_given(const E& event) {
    static_assert(A::events::template contains<E>,
                  "annals: given() events must be listed in the aggregate's event_list");
    state_.apply(event);
    return *this;
  }
  // Runs the decider on the state built so far.
  template <class Decide>
  outcome<A> when(Decide&& decide) const {
    return outcome<A>(decide(state_));
  }
  const A& state() const noexcept { return state_; }

 private:
  A state_{};
};

// Starts a scenario from these past events (none: the initial state).
template <class A, class... E>
scenario<A> given(const E&... events) {
  scenario<A> s;
  (s.and_given(events), ...);
  return s;
}

}  // namespace annals::testing
