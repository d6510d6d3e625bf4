// annals/aggregate.hpp — aggregates in user code, and loading them by a streamed fold.
//
// An aggregate is a plain, default-constructible struct that lists the Protobuf event types
// of its streams and has one apply(const E&) per listed type:
//
//   struct account {
//     using events = annals::event_list<bank::v1::AccountOpened, bank::v1::MoneyDeposited>;
//     void apply(const bank::v1::AccountOpened&);
//     void apply(const bank::v1::MoneyDeposited&);
//     std::int64_t balance = 0;
//   };
//
// A listed type without its apply() fails to compile, naming the type. A stored event whose
// type the aggregate does not list is an error (errc::corruption), never skipped.
#pragma once

#include <annals/event_store.hpp>

#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <google/protobuf/message.h>

#include <concepts>
#include <memory>
#include <string>
#include <tuple>
#include <typeinfo>
#include <type_traits>
#include <utility>
#include <vector>

namespace annals {

// The event types of an aggregate or projection. `types` is a Hana tuple of types, so
// hana::for_each / hana::transform work on it directly.
template <class... E>
struct event_list {
  static constexpr auto types = boost::hana::tuple_t<E...>;
  static constexpr std::size_t size = sizeof...(E);
  template <class T>
  static constexpr bool contains = (std::is_same_v<T, E> || ...);
  template <class T>
  static constexpr std::size_t count = (std::size_t{0} + ... + std::is_same_v<T, E>);
  static_assert(((count<E> == 1) && ...), "annals: an event type is listed twice in an event_list");
};

template <class A, class E>
concept applies_event = requires(A& a, const E& e) { a.apply(e); };

namespace detail {
template <class T>
struct is_event_list : std::false_type {};
template <class... E>
struct is_event_list<event_list<E...>> : std::true_type {};

template <class A, class List>
struct applies_all : std::false_type {};
// Same conditions as check_aggregate(): Protobuf messages, each with its apply().
template <class A, class... E>
struct applies_all<A, event_list<E...>>
    : std::bool_constant<((std::is_base_of_v<google::protobuf::Message, E> &&
                           applies_event<A, E>) && ...)> {};
}  // namespace detail

// Satisfied by a well-formed aggregate. Templates of this library static_assert the parts
// one by one instead, so the compile error names the problem and the event type.
template <class A>
concept aggregate = std::default_initializable<A> && requires { typename A::events; } &&
                    detail::is_event_list<typename A::events>::value &&
                    detail::applies_all<A, typename A::events>::value;

// Diagnostics. Instantiated by check_aggregate<A>(); the compiler prints the template
// arguments <Aggregate, Event> of the failing one.
template <class A, class E>
struct aggregate_has_no_apply_for_event {
  static_assert(applies_event<A, E>,
                "annals: this aggregate lists an event type in its event_list but has no "
                "apply(const Event&) for it; the aggregate and the missing event type are the "
                "template arguments of aggregate_has_no_apply_for_event<Aggregate, Event>");
  static constexpr bool value = true;
};
template <class E>
struct event_type_is_not_a_protobuf_message {
  static_assert(std::is_base_of_v<google::protobuf::Message, E>,
                "annals: every type in an event_list must be a generated Protobuf message");
  static constexpr bool value = true;
};

namespace detail {
template <class A, class... E>
constexpr bool check_events(event_list<E...>*) {
  return ((event_type_is_not_a_protobuf_message<E>::value &&
           aggregate_has_no_apply_for_event<A, E>::value) &&
          ...);
}
}  // namespace detail

template <class A>
constexpr bool check_aggregate() {
  static_assert(std::default_initializable<A>,
                "annals: an aggregate must be default-constructible (its initial state)");
  static_assert(requires { typename A::events; },
                "annals: an aggregate must declare `using events = annals::event_list<...>;`");
  static_assert(detail::is_event_list<typename A::events>::value,
                "annals: `events` of an aggregate must be an annals::event_list<...>");
  return detail::check_events<A>(static_cast<typename A::events*>(nullptr));
}

namespace detail {
// Compiled helpers (src/aggregate.cpp) that keep the templates below thin.
using fold_step = std::function<result<void>(const recorded_event&)>;
result<std::int64_t> fold_stream(event_store& store, std::string_view stream_id,
                                 std::int64_t from_version, const fold_step& step);
error unknown_event_type(const recorded_event& e, std::string_view aggregate);
error undecodable_event(const recorded_event& e);

// Decodes a recorded event into the listed type whose full name matches, and applies it.
template <class A, class... E>
class dispatcher_impl {
 public:
  result<void> apply(A& state, const recorded_event& e) {
    bool matched = false;
    bool decoded = true;
    (try_one<E>(state, e, matched, decoded), ...);
    if (!matched) return unknown_event_type(e, typeid(A).name());
    if (!decoded) return undecodable_event(e);
    return {};
  }

 private:
  template <class T>
  void try_one(A& state, const recorded_event& e, bool& matched, bool& decoded) {
    if (matched || e.type != T::descriptor()->full_name()) return;
    matched = true;
    T& message = std::get<T>(scratch_);
    message.Clear();
    if (!message.ParseFromString(e.payload)) {
      decoded = false;
      return;
    }
    state.apply(std::as_const(message));
  }
  std::tuple<E...> scratch_;  // reused across events: one decode buffer per type
};
template <class A, class List>
struct dispatcher_of;
template <class A, class... E>
struct dispatcher_of<A, event_list<E...>> {
  using type = dispatcher_impl<A, E...>;
};
}  // namespace detail

// Applies stored events to an aggregate by their stored type name.
template <class A>
class dispatcher {
  static_assert(check_aggregate<A>());

 public:
  result<void> apply(A& state, const recorded_event& e) { return impl_.apply(state, e); }

 private:
  typename detail::dispatcher_of<A, typename A::events>::type impl_;
};

template <class A>
struct loaded {
  A state;
  std::int64_t version = -1;  // last version folded; -1: the stream has no events
};

// Loads an aggregate by folding its stream, one event at a time.
template <class A>
result<loaded<A>> load(event_store& store, std::string_view stream_id) {
  loaded<A> out;
  dispatcher<A> d;
  auto r = detail::fold_stream(store, stream_id, 0,
                               [&](const recorded_event& e) { return d.apply(out.state, e); });
  if (!r) return std::move(r).error();
  out.version = r.value();
  return out;
}

}  // namespace annals
