// annals/schema.hpp — the schema registry kept inside the store, and compatibility checks.
//
// An application registers the Protobuf descriptors of the event types it knows when it opens
// a store (register_event_types). The store keeps every distinct version of each type's
// descriptor (as a FileDescriptorSet with the type's file and its dependencies) and numbers
// them 1, 2, 3... per type; a type's version changes only when the type itself or a type it
// references changes (type_fingerprint), not when another type of its file does. Registering
// the same descriptor again is a no-op. A changed descriptor is checked against the stored
// versions with the type's compatibility mode and, if it breaks a rule, refused before
// anything is written (errc::invalid_argument whose message is the report, one violation per
// line).
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

// One broken rule, naming the field (name and number, or empty for the type itself).
struct schema_violation {
  std::string type;    // full name of the checked message type, e.g. "bank.v1.MoneyDeposited"
  std::string field;   // e.g. "amount_cents (2)"; nested: "details (3).value (1)"; empty: the type
  std::string rule;    // short rule id, e.g. "field-type-changed", "field-removed-unreserved"
  std::string detail;  // a sentence for a human
};

struct schema_check_report {
  std::vector<schema_violation> violations;
  bool compatible() const noexcept { return violations.empty(); }
  std::string to_string() const;  // one line per violation; "compatible" when none
};

// Checks `candidate` (in `candidate_set`) against `stored` (in `stored_set`) under `mode`.
// Both sets must contain the type's file and its dependencies (a set that does not build, or
// lacks the type, gives a "descriptor-invalid" violation). Pure; no store needed.
//
// BACKWARD: readers with the candidate read events written with the stored descriptor.
// FORWARD: readers with the stored descriptor read events written with the candidate.
// FULL: both. NONE: no rule. Rules (x: breaks the mode), nested messages walked recursively:
//
//   rule                          backward forward  what
//   type-renamed                     x        x     candidate_type != stored_type
//   field-type-changed               x        x     same number, another wire type or meaning
//     (widened: int32->int64, uint32->uint64, sint32->sint64, string->bytes: forward only;
//      narrowed: the reverse: backward only; same-named message/enum types are walked)
//   field-cardinality-changed        x        x     singular <-> repeated, map <-> not map
//   field-removed-unreserved         x        x     number and name not both reserved
//   reserved-field-reused            x        x     a reserved number or name used again
//   enum-value-removed               x              number neither kept nor reserved
//   enum-value-added                          x     old readers meet an unknown value
//   oneof-membership-changed         x        x     into/out of a oneof, or between oneofs
//   oneof-field-added                         x     a new field in an existing oneof
//   required-field-added             x              proto2 required, absent in old events
//   required-field-removed                    x     old readers require it
//   field-became-required            x              optional -> required
//   field-became-optional                     x     required -> optional
//
// Not breaking: packed <-> unpacked (parsers accept both), implicit <-> explicit presence,
// renaming a field while keeping its number (binary-compatible; JSON names change).
schema_check_report check_compatibility(const google::protobuf::FileDescriptorSet& stored_set,
                                        std::string_view stored_type,
                                        const google::protobuf::FileDescriptorSet& candidate_set,
                                        std::string_view candidate_type, compatibility mode);

// The FileDescriptorSet of a compiled message type: its file and every file it depends on,
// dependencies first, serialized deterministically.
std::string descriptor_set_of(const google::protobuf::Descriptor& type);

// A stable fingerprint of bytes: 32 lower-case hex digits (128-bit FNV-1a). Equal bytes give
// equal fingerprints on every platform.
std::string schema_fingerprint(std::string_view descriptor_set);

// The fingerprint of one message type's schema (stored_schema::fingerprint, snapshot keys):
// schema_fingerprint over the type's own closure only, i.e. its DescriptorProto (nested types
// included) and, transitively, every message and enum type its fields (and its nested types'
// fields) reference, each once, in a deterministic order (depth first, fields in declaration
// order), each with its full name and its file's syntax. Sibling types of the file, file
// options, comments and json_name values equal to the default do not count, so a type keeps
// its fingerprint (and its registered version) when only its neighbours change, and a
// compiled descriptor and the same descriptor built from a protoc descriptor set agree.
std::string type_fingerprint(const google::protobuf::Descriptor& type);

struct schema_registration {
  const google::protobuf::Descriptor* type = nullptr;
  compatibility mode = compatibility::backward;
  // The version this descriptor is, declared by the application (like Axon's @Revision), so
  // it is the same number in every store and upcasters keyed on it mean the same everywhere.
  // Declare versions when you write upcasters that keep the type (a new field filled from
  // older data). Refused (invalid_argument): a version already stored with another descriptor,
  // or a descriptor already stored under another version. Default 0: the store numbers a new
  // descriptor after the highest stored version (1, 2, 3... in registration order).
  std::int32_t version = 0;
};

// Registers the types all or nothing. A type is identified by type_fingerprint; a changed one
// is checked against EVERY stored version of its type (transitive: events of every version
// stay in the log), with the mode given here. A stored type registered BACKWARD or FULL whose
// file is the file of one of `types` but which no longer exists there (renamed or removed) is
// "type-renamed": its events stay in the log; keep the old message and add an upcaster.
// Errors: invalid_argument with the compatibility report when any type breaks its mode, or on
// read_only on a read-only store (nothing is stored), busy, io.
result<std::vector<registered_type>> register_event_types(
    event_store& store, const std::vector<schema_registration>& types);

// Registers every type of an event_list (an aggregate's or projection's `events`).
template <class... E>
result<std::vector<registered_type>> register_event_types(
    event_store& store, event_list<E...>, compatibility mode = compatibility::backward) {
  return register_event_types(store, {schema_registration{E::descriptor(), mode}...});
}

// Checks every message type of `candidates` that the store already holds against its stored
// versions, each with the mode its latest version was registered with, without writing
// (`annals schema check`). Types the store has never seen are compatible by definition; a
// stored type registered BACKWARD or FULL that is missing from the set while the set still
// holds the file that defined it is "type-renamed" (the same rule as register_event_types).
// Errors: invalid_argument when the set does not build (a file twice, a
// missing dependency), corruption for an undecodable stored set, busy, io.
result<schema_check_report> check_against_store(
    event_store& store, const google::protobuf::FileDescriptorSet& candidates);

}  // namespace annals
