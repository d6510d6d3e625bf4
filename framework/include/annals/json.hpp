// annals/json.hpp — decode stored events to JSON without the application's code, from the
// descriptors kept in the store's schema registry (annals/schema.hpp).
//
// An event is decoded with the stored version of its type equal to its
// metadata.schema_version; when that version is 0 (unknown) or not stored, the latest stored
// version is used (strict checks, as `annals verify` needs, use find() first). A type that was
// never registered is still decoded when a stored descriptor set of another type defines its
// message (its .proto file was stored with that type's): the most recently registered such
// set is used (find_defining()).
//
// Thread safety: a payload_decoder caches descriptor pools as it decodes; use one per thread.
// Ownership: it owns copies of the schemas it was given.
#pragma once

#include <annals/event_store.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

class payload_decoder {
 public:
  explicit payload_decoder(std::vector<stored_schema> schemas = {});
  ~payload_decoder();
  payload_decoder(payload_decoder&&) noexcept;
  payload_decoder& operator=(payload_decoder&&) noexcept;

  // Every stored schema of `store`. A backend without a registry gives an empty decoder.
  static result<payload_decoder> from_store(event_store& store);

  const std::vector<stored_schema>& schemas() const noexcept;
  // The stored schema (type, version), or nullptr. Version 0 or absent: nullptr.
  const stored_schema* find(std::string_view type, std::int32_t version) const noexcept;
  // The schema that decodes an event of `type` written with `version`: that version when
  // stored, else the latest; nullptr when the type has none.
  const stored_schema* pick(std::string_view type, std::int32_t version) const noexcept;

  // For a type with no stored schema of its own: the stored schema of another type whose
  // descriptor set defines the message `type`, the most recently registered first (then the
  // highest version); nullptr when none does. Not const: it builds (and caches) pools.
  const stored_schema* find_defining(std::string_view type);

  // The payload as JSON (protobuf's JSON mapping, field names as in the .proto, compact),
  // decoded with pick(type, version), else with find_defining(type). Errors: not_found (no
  // stored descriptor for the type), corruption (the payload does not parse),
  // invalid_argument (the stored descriptor set does not define the type or does not build).
  result<std::string> to_json(std::string_view type, std::int32_t version,
                              std::string_view payload);
  result<std::string> to_json(const recorded_event& event);

  // Parses the payload with exactly `schema` (one of schemas()) as the message `type` defined
  // in its descriptor set (empty: schema.type; another type as find_defining() found it);
  // errors as to_json.
  result<void> check(const stored_schema& schema, std::string_view payload,
                     std::string_view type = {});

  // The .proto-like text of the file that defines `schema`'s type (with its dependencies'
  // names), for `annals schema show`. invalid_argument if the descriptor set is unusable.
  result<std::string> describe(const stored_schema& schema);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// A JSON string literal, quotes included, for any bytes: escapes '"', '\\' and control
// characters; in text that is not valid UTF-8, each byte above 0x7f becomes U+FFFD.
std::string json_quote(std::string_view text);
// ISO-8601 UTC with microseconds, e.g. 2026-11-23T10:00:00.123456Z, from UTC microseconds.
std::string iso8601_utc(std::int64_t us);

}  // namespace annals
