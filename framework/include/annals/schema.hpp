// annals/schema.hpp — the schema registry kept inside the store, and compatibility checks.
//
// An application registers the Protobuf descriptors of the event types it knows when it opens
// a store (register_event_types). The store keeps every distinct version of each type's
// descriptor (as a FileDescriptorSet with the type's file and its dependencies) and numbers
// them 1, 2, 3... per type. Registering the same descriptor again is a no-op. A changed
// descriptor is checked against the stored versions with the type's compatibility mode and,
// if it breaks a rule, refused before anything is written (errc::invalid_argument whose message
// is the report, one violation per line).
//
// Every event appended afterwards by this process is stamped with the version of its type that
// this process registered (event_metadata::schema_version), so upcasters and generic tools know
// which descriptor wrote it.
//
// Thread safety: the free functions are thread-safe; the store serializes registrations
// across processes.
#pragma once

#include <annals/aggregate.hpp>
#include <annals/event_store.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace google::protobuf {
class Descriptor;
class FileDescriptorSet;
}  // namespace google::protobuf

namespace annals {

std::string_view to_string(compatibility c) noexcept;
result<compatibility> parse_compatibility(std::string_view text);  // "backward", ... "none"

// One broken rule, naming the field (full name with number, or empty for the type itself).
struct schema_violation {
  std::string type;    // full name of the checked message type, e.g. "bank.v1.MoneyDeposited"
  std::string field;   // e.g. "amount_cents (2)"; nested: "Inner.value (1)"; empty: the type
  std::string rule;    // short rule id, e.g. "field-type-changed", "field-removed-unreserved"
  std::string detail;  // a sentence for a human
};

struct schema_check_report {
  std::vector<schema_violation> violations;
  bool compatible() const noexcept { return violations.empty(); }
  std::string to_string() const;  // one line per violation; "compatible" when none
};

// Checks `candidate` (in `candidate_set`) against `stored` (in `stored_set`) under `mode`.
// Both sets must contain the type's file and its dependencies. Pure; no store needed.
schema_check_report check_compatibility(const google::protobuf::FileDescriptorSet& stored_set,
                                        std::string_view stored_type,
                                        const google::protobuf::FileDescriptorSet& candidate_set,
                                        std::string_view candidate_type, compatibility mode);

// The FileDescriptorSet of a compiled message type: its file and every file it depends on,
// dependencies first, serialized deterministically.
std::string descriptor_set_of(const google::protobuf::Descriptor& type);

struct schema_registration {
  const google::protobuf::Descriptor* type = nullptr;
  compatibility mode = compatibility::backward;
};

// Registers the types all or nothing. Errors: invalid_argument with the compatibility report
// when any type breaks its mode (nothing is stored), busy, io.
result<std::vector<registered_type>> register_event_types(
    event_store& store, const std::vector<schema_registration>& types);

// Registers every type of an event_list (an aggregate's or projection's `events`).
template <class... E>
result<std::vector<registered_type>> register_event_types(
    event_store& store, event_list<E...>, compatibility mode = compatibility::backward) {
  return register_event_types(store, {schema_registration{E::descriptor(), mode}...});
}

// Checks every message type of `candidates` that the store already holds against its stored
// versions, each with the mode it was registered with, without writing (`annals schema check`).
// Types the store has never seen are compatible by definition.
result<schema_check_report> check_against_store(
    event_store& store, const google::protobuf::FileDescriptorSet& candidates);

}  // namespace annals
