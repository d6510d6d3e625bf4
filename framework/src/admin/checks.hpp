// Internal to the admin code: the row checks that verify (sqlite_admin.cpp) and import
// (export.cpp) share, so an import accepts exactly what verify would pass.
#pragma once

#include <annals/event_store.hpp>

#include "store/prepared.hpp"

#include <cstdint>
#include <string_view>

namespace annals::admin_detail {

// Imported positions stay below this, so that appends can go on after them.
inline constexpr std::int64_t max_import_position = std::int64_t{1} << 62;

// Stored metadata bytes as verify accepts them: an annals.v1.EventMetadata with
// schema_version >= 0 and every string UTF-8. Decodes into `out`; on false, out.schema_version
// is 0.
inline bool well_formed_metadata(std::string_view bytes, event_metadata& out) {
  bool ok = store::decode_metadata(bytes, out) && out.schema_version >= 0 &&
            store::valid_utf8(out.correlation_id) && store::valid_utf8(out.causation_id) &&
            store::valid_utf8(out.traceparent);
  for (const auto& h : out.headers) {
    if (!store::valid_utf8(h.key) || !store::valid_utf8(h.value)) ok = false;
  }
  if (!ok) out.schema_version = 0;
  return ok;
}

}  // namespace annals::admin_detail
