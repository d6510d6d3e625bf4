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
// type the aggregate does not list is an error (errc::corruption), never skipped. Events are
// seen after the store's upcasters (sqlite_options::upcast), so an aggregate lists only the
// current types. Snapshots are opt-in: see annals/snapshot.hpp.
#pragma once

#include <annals/event_store.hpp>
#include <annals/snapshot.hpp>

#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <google/protobuf/message.h>

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
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
// message.ParseFromArray(bytes), without the lines libprotobuf would log on stderr about bytes
// it refuses (a string field that is not UTF-8): the caller reports the failure itself.
bool parse_payload(google::protobuf::MessageLite& message, std::string_view bytes);
error undecodable_event(const recorded_event& e);

// Snapshot callbacks of one aggregate instance; `key` null: the aggregate takes no snapshots.
struct snapshot_hooks {
  const std::string* key = nullptr;
  std::int64_t every = 0;                            // resolved: > 0, or <= 0 for never
  std::function<bool(const std::string&)> restore;   // false: the bytes do not parse
  std::function<bool(std::string&)> save;            // serializes the current state
};
struct load_hooks {
  std::function<void()> reset;  // back to the initial state
  fold_step apply;
  snapshot_hooks snapshot;
};
struct load_outcome {
  std::int64_t version = -1;           // last version folded
  std::int64_t snapshot_version = -1;  // the snapshot loaded from (or saved since); -1: none
  std::int64_t loaded_from = -1;       // the snapshot the load started from; -1: full replay
};
// Snapshot (when the aggregate opts in) + tail, or a full fold; saves a snapshot when due.
result<load_outcome> load_state(event_store& store, std::string_view stream_id,
                                const load_options& options, const load_hooks& hooks);
// Whether the state at `version` should be saved, given the last snapshot in `loaded`.
bool snapshot_due(const load_options& options, const snapshot_hooks& hooks,
                  std::int64_t version, const load_outcome& loaded);
// Hands the current state at `version` to store.save_snapshot (best effort, never fails).
void save_snapshot_now(event_store& store, std::string_view stream_id, std::int64_t version,
                       const load_options& options, const snapshot_hooks& hooks,
                       load_outcome& loaded);

template <class A>
snapshot_hooks snapshot_hooks_for(A& state, const load_options& options) {
  snapshot_hooks h;
  if constexpr (has_snapshot<A>) {
    static_assert(check_snapshot<A>());
    using S = typename A::snapshot;
    h.key = &::annals::snapshot_key<A>();
    std::int64_t every = default_snapshot_every;
    if constexpr (requires { A::snapshot_every; }) every = A::snapshot_every;
    h.every = options.snapshot_every != 0 ? options.snapshot_every : every;
    h.restore = [&state](const std::string& bytes) {
      S s;
      if (!detail::parse_payload(s, bytes)) return false;
      state.restore(std::as_const(s));
      return true;
    };
    h.save = [&state](std::string& out) {
      S s;
      std::as_const(state).save(s);
      return s.SerializeToString(&out);
    };
  }
  return h;
}

// Decodes a recorded event into the listed type whose full name matches, and applies it.
template <class A, class... E>
class dispatcher_impl {
 public:
  result<void> apply(A& state, const recorded_event& e) {
    bool matched = false;
    bool decoded = true;
    (try_one<E>(state, e, matched, decoded), ...);
    if (!matched) return unknown_event_type(e, detail::type_name<A>());
    if (!decoded) return undecodable_event(e);
    return {};
  }
  // Applies an event given as a message of one of the listed types (its dynamic type).
  bool apply_message(A& state, const google::protobuf::Message& m) {
    bool matched = false;
    auto one = [&]<class T>(T*) {
      if (matched || m.GetDescriptor() != T::descriptor()) return;
      matched = true;
      state.apply(static_cast<const T&>(m));
    };
    (one(static_cast<E*>(nullptr)), ...);
    return matched;
  }

 private:
  template <class T>
  void try_one(A& state, const recorded_event& e, bool& matched, bool& decoded) {
    if (matched || e.type != T::descriptor()->full_name()) return;
    matched = true;
    T& message = std::get<T>(scratch_);
    message.Clear();
    if (!parse_payload(message, e.payload)) {
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
  // Applies a message whose dynamic type is one of A's events (as held by a decision).
  // False, and nothing applied, for any other type.
  bool apply_message(A& state, const google::protobuf::Message& m) {
    return impl_.apply_message(state, m);
  }

 private:
  typename detail::dispatcher_of<A, typename A::events>::type impl_;
};

template <class A>
struct loaded {
  A state;
  std::int64_t version = -1;  // last version folded; -1: the stream has no events
  // The snapshot version the load started from; -1: the whole stream was folded.
  std::int64_t snapshot_version = -1;
};

namespace detail {
// One load of an aggregate: its state, and the hooks that fold into it (which point into this
// object, hence neither copyable nor movable).
template <class A>
struct loader {
  explicit loader(const load_options& options)
      : hooks{[this] { out.state = A{}; },
              [this](const recorded_event& e) { return d.apply(out.state, e); },
              snapshot_hooks_for<A>(out.state, options)} {}
  loader(const loader&) = delete;
  loader& operator=(const loader&) = delete;

  loaded<A> out;
  dispatcher<A> d;
  load_hooks hooks;
};
}  // namespace detail

// Loads an aggregate: for one that opts into snapshots, the newest snapshot under its key plus
// the events after it, else a fold of the whole stream, one event at a time. Saves a snapshot
// when one is due (load_options::snapshot_every).
template <class A>
result<loaded<A>> load(event_store& store, std::string_view stream_id,
                       const load_options& options = {}) {
  detail::loader<A> l(options);
  auto r = detail::load_state(store, stream_id, options, l.hooks);
  if (!r) return std::move(r).error();
  l.out.version = r->version;
  l.out.snapshot_version = r->loaded_from;
  return std::move(l.out);
}

// Saves a snapshot of the stream's current state now (on demand), for an aggregate that opts
// in. Returns the version saved; -1 when the stream has no events (nothing saved). The save
// itself is best effort, as every snapshot save (event_store::save_snapshot).
template <class A>
result<std::int64_t> save_snapshot(event_store& store, std::string_view stream_id,
                                   load_options options = {}) {
  static_assert(has_snapshot<A>,
                "annals: save_snapshot<A> needs an aggregate that opts into snapshots "
                "(`using snapshot = ...;`, see annals/snapshot.hpp)");
  options.snapshot_every = -1;  // saved below, once
  detail::loader<A> l(options);
  auto r = detail::load_state(store, stream_id, options, l.hooks);
  if (!r) return std::move(r).error();
  if (r->version < 0) return std::int64_t{-1};
  detail::save_snapshot_now(store, stream_id, r->version, options, l.hooks.snapshot, *r);
  return r->version;
}

}  // namespace annals
