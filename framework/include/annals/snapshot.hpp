// annals/snapshot.hpp — opt-in aggregate snapshots: how an aggregate opts in, and the options.
//
// An aggregate opts in by naming a Protobuf message for its state, a fold version, and two
// members that copy the state into and out of that message:
//
//   struct account {
//     using events = annals::event_list<...>;
//     using snapshot = bank::v2::AccountState;          // any generated Protobuf message
//     static constexpr std::uint32_t fold_version = 1;  // bump when apply() changes meaning
//     static constexpr std::int64_t snapshot_every = 200;  // optional; default 100
//     static constexpr std::string_view snapshot_name = "account";  // optional; see below
//     void save(bank::v2::AccountState& out) const;
//     void restore(const bank::v2::AccountState& in);
//     ...
//   };
//
// annals::load and annals::handle then read the newest snapshot saved under the aggregate's
// key and fold only the events after it, and save a new one once `snapshot_every` events were
// folded past the last (annals::save_snapshot<A> saves one on demand). The key is a hash of the
// state message's own descriptor closure (nested and referenced types) and of the aggregate's
// name (snapshot_name<A>(): its qualified C++ name unless it declares `snapshot_name`), plus
// ":" plus fold_version: changing the message, renaming the aggregate, or bumping
// fold_version (do so when apply() or the upcasters change meaning) makes every older
// snapshot ignored, never misapplied; snapshots are derived data. A snapshot that does not
// decode, that restore() throws on, or whose version is beyond the stream is reported through
// load_options::warning and the stream is replayed in full: never an error.
//
// Saving is best effort and off the command's path (event_store::save_snapshot): a failed or
// dropped save never fails or delays a command. A missing half of the opt-in (no fold_version,
// no save or restore) is a compile error that names what is missing.
#pragma once

#include <annals/event_store.hpp>

#include <google/protobuf/message.h>

#include <concepts>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>

namespace annals {

// Events folded past the last snapshot before a new one is saved, when neither the call
// (load_options::snapshot_every) nor the aggregate (A::snapshot_every) says otherwise.
inline constexpr std::int64_t default_snapshot_every = 100;

struct load_options {
  // Read and save snapshots for aggregates that opt in. Default true; false folds the whole
  // stream and saves nothing.
  bool use_snapshots = true;
  // Save a snapshot once at least this many events were folded (or appended) past the last
  // one. 0 (default): the aggregate's snapshot_every if it declares one, else
  // default_snapshot_every (100). Negative: never automatically (save_snapshot<A> still does).
  std::int64_t snapshot_every = 0;
  // Receives a warning when a snapshot is ignored (corrupt, beyond the stream, unreadable).
  // Empty (default): one line "annals: warning: ..." on stderr. Called on the loading thread.
  std::function<void(std::string_view)> warning;
};

// An aggregate that declares `using snapshot = ...;`. The rest of the opt-in is checked by
// check_snapshot<A>() so that the error names the missing part.
template <class A>
concept has_snapshot = requires { typename A::snapshot; };

template <class A>
constexpr bool check_snapshot() {
  using S = typename A::snapshot;
  static_assert(std::is_base_of_v<google::protobuf::Message, S>,
                "annals: `using snapshot = ...;` of an aggregate must name a generated Protobuf "
                "message (the saved state)");
  static_assert(requires { A::fold_version; },
                "annals: an aggregate with `using snapshot = ...;` must declare "
                "`static constexpr std::uint32_t fold_version = N;` (bump it when apply() "
                "changes meaning)");
  static_assert(std::is_convertible_v<decltype(A::fold_version), std::uint32_t>,
                "annals: an aggregate's fold_version must be an unsigned integer "
                "(static constexpr std::uint32_t fold_version = N;)");
  static_assert(requires(const A& a, S& s) { a.save(s); },
                "annals: an aggregate with `using snapshot = S;` must have "
                "`void save(S& out) const;` copying its state into the snapshot message");
  static_assert(requires(A& a, const S& s) { a.restore(s); },
                "annals: an aggregate with `using snapshot = S;` must have "
                "`void restore(const S& in);` setting its state from the snapshot message");
  return true;
}

namespace detail {
// "<hex hash of the state type's closure and the aggregate's name>:<fold_version>"
// (src/snapshot.cpp). Two aggregate types that fold one stream into the same state message
// never read each other's snapshots: their names differ.
std::string snapshot_key(const google::protobuf::Descriptor& state, std::string_view aggregate,
                         std::uint32_t fold_version);

// The qualified name of T as the compiler spells it ("bank::account"), at compile time and
// without RTTI: the same on GCC and Clang for a class in a named namespace.
template <class T>
constexpr std::string_view type_name() {
  std::string_view f = __PRETTY_FUNCTION__;  // "... [with T = bank::account; ...]" or "[T = ...]"
  const auto from = f.find("T = ") + 4;
  const auto to = f.find_first_of(";]", from);
  return f.substr(from, to - from);
}
}  // namespace detail

// The aggregate's name in its snapshot key: A::snapshot_name when it declares one
// (`static constexpr std::string_view snapshot_name = "account";`, to rename or move the C++
// type and keep its snapshots), else its qualified C++ name.
template <class A>
constexpr std::string_view snapshot_name() {
  if constexpr (requires { A::snapshot_name; }) {
    static_assert(std::is_convertible_v<decltype(A::snapshot_name), std::string_view>,
                  "annals: an aggregate's snapshot_name must be a string "
                  "(static constexpr std::string_view snapshot_name = \"...\";)");
    return A::snapshot_name;
  } else {
    return detail::type_name<A>();
  }
}

// The key under which A's snapshots are saved and looked up. Computed once per type.
template <class A>
const std::string& snapshot_key() {
  static_assert(check_snapshot<A>());
  static const std::string key = detail::snapshot_key(
      *A::snapshot::descriptor(), snapshot_name<A>(), static_cast<std::uint32_t>(A::fold_version));
  return key;
}

}  // namespace annals
