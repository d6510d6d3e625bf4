// annals/upcaster.hpp — typed upcasters: old stored events read as newer messages.
//
// An upcaster step turns an event stored as (From, schema version <= from_version) into a To
// at to_version; To may be another type (a rename) or the same type (a new field filled from
// older data). Steps chain: the result is matched again until no step applies. Give a store the
// set (sqlite_options::upcast) and every read from it (streams, $all, hence aggregates and
// projections) sees upcast events; the stored bytes never change.
//
//   auto up = std::make_shared<annals::upcasters>();
//   up->add<bank::v1::AccountOpened, bank::v2::AccountOpened>(INT32_MAX, 1,   // a rename
//       [](const bank::v1::AccountOpened& old) { bank::v2::AccountOpened n; ...; return n; });
//
// Schema versions are those of the store's registry (annals/schema.hpp; declare them with
// schema_registration::version when a step keeps the type); an event stored
// without one (schema_version 0) counts as older than every version.
// Thread safety: build the set first, then share it read-only between threads and stores.
// Steps are called concurrently by reading threads, so a step must be a pure function (or
// thread-safe), and must not call the store it is reading from.
#pragma once

#include <annals/event_store.hpp>

#include <google/protobuf/message.h>

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace annals {

namespace detail {
// Parses without libprotobuf's stderr lines (src/aggregate.cpp; also declared in aggregate.hpp).
bool parse_payload(google::protobuf::MessageLite& message, std::string_view bytes);
}  // namespace detail

class upcasters {
 public:
  // Adds a step. `step` is called as To step(const From&). Events of type From stored at a
  // schema version <= from_version are read as To at to_version; where several steps of From
  // match, the one with the smallest from_version runs. Adding a second step for the same
  // (From, from_version) throws std::logic_error (a setup mistake).
  template <class From, class To, class Step>
  upcasters& add(std::int32_t from_version, std::int32_t to_version, Step step) {
    static_assert(std::is_base_of_v<google::protobuf::Message, From> &&
                      std::is_base_of_v<google::protobuf::Message, To>,
                  "annals: an upcaster converts one generated Protobuf message into another");
    static_assert(std::is_invocable_r_v<To, Step&, const From&>,
                  "annals: an upcaster step must be callable as To step(const From&)");
    add_step(std::string(From::descriptor()->full_name()), from_version,
             std::string(To::descriptor()->full_name()), to_version,
             [step = std::move(step)](const std::string& in, std::string& out) mutable {
               From from;
               if (!detail::parse_payload(from, in)) return false;
               To to = step(std::as_const(from));
               return to.SerializeToString(&out);
             });
    return *this;
  }

  // True when no step was added (reads then skip upcasting altogether).
  bool empty() const noexcept { return steps_.empty(); }

  // Runs the chain on `e` in place: type, payload and metadata.schema_version. An event no
  // step matches is left as it is. Errors: corruption when a step's input does not decode, its
  // output does not serialize, or the chain does not end (more than 64 steps). An exception
  // thrown by a step propagates to the reader, as a visitor's does.
  result<void> apply(recorded_event& e) const;

  // The stored type names read as one of `types` (the types themselves included), for
  // filtering stored events by type before upcasting.
  std::vector<std::string> stored_types_for(const std::vector<std::string>& types) const;

 private:
  using convert_fn = std::function<bool(const std::string& in, std::string& out)>;
  struct step_entry {
    std::string from_type;
    std::int32_t from_version;
    std::string to_type;
    std::int32_t to_version;
    convert_fn convert;
  };
  void add_step(std::string from_type, std::int32_t from_version, std::string to_type,
                std::int32_t to_version, convert_fn convert);
  std::vector<step_entry> steps_;
};

}  // namespace annals
