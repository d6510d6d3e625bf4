// Helpers shared by the registry suites (SQLite: registry_test.cpp, PostgreSQL:
// registry_postgres_test.cpp).
#pragma once

#include "schema/descriptors.hpp"

#include <annals/event_store.hpp>
#include <annals/schema.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace annals::test {

// Version n of t.E: fields 1..n+1 (each version adds one optional field: BACKWARD-compatible).
inline pb::FileDescriptorSet version_set(int n) {
  std::string fields;
  for (int i = 1; i <= n + 1; ++i) fields += field("f" + std::to_string(i), i, "TYPE_INT64");
  return set_of(message("E", fields) + " " + message("G", field("x", 1, "TYPE_STRING")));
}

inline std::vector<registered_type> register_ok(event_store& store, const built_pool& pool,
                                                std::vector<std::string> types,
                                                compatibility mode = compatibility::backward) {
  std::vector<schema_registration> regs;
  for (const auto& t : types) regs.push_back({pool.find(t), mode});
  auto r = register_event_types(store, regs);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
  return std::move(r).value();
}

inline std::vector<stored_schema> schemas(event_store& store, std::string_view type = {}) {
  auto r = store.read_schemas(type);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
  return std::move(r).value();
}

inline event_data event_of(const std::string& type, std::int32_t schema_version = 0) {
  event_data e;
  e.type = type;
  e.payload = "x";
  e.metadata.schema_version = schema_version;
  return e;
}

// schema_version of every event of a stream, in order.
inline std::vector<std::int32_t> stamped(event_store& store, const std::string& stream) {
  std::vector<std::int32_t> out;
  auto r = store.read_stream(stream, {}, [&](const recorded_event& e) {
    out.push_back(e.metadata.schema_version);
    return true;
  });
  REQUIRE(r.ok());
  return out;
}

// Whether `r` failed with `kind` and a message containing `text`.
template <class R>
bool fails_with(const R& r, errc kind, std::string_view text = {}) {
  if (r.ok()) return false;
  INFO(r.error().message());
  return r.error().kind() == kind && r.error().message().find(text) != std::string::npos;
}

}  // namespace annals::test
