// Defaults of event_store's optional capabilities, for backends (and test doubles) without them.
#include <annals/event_store.hpp>

#include "store/prepared.hpp"

#include <fmt/format.h>

namespace annals {

result<std::vector<stored_schema>> event_store::read_schemas(std::string_view) {
  return error(errc::invalid_argument, "this event store keeps no schema registry");
}

result<std::vector<registered_type>> event_store::register_schemas(
    const std::vector<schema_candidate>&, const schema_check_fn&) {
  return error(errc::invalid_argument, "this event store keeps no schema registry");
}

result<std::optional<snapshot_record>> event_store::read_snapshot(std::string_view,
                                                                  std::string_view) {
  return std::optional<snapshot_record>{};
}

void event_store::save_snapshot(snapshot_record) noexcept {}

}  // namespace annals

namespace annals {

result<std::optional<recorded_event>> event_store::find_event(std::string_view) {
  return error(errc::invalid_argument, "this event store cannot look events up by id");
}

namespace {
// 64-bit FNV-1a over the bytes, then a strong finaliser (splitmix64); two seeds give the
// two halves of a 128-bit hash.
std::uint64_t hash64(std::string_view a, std::string_view b, std::uint64_t seed) {
  std::uint64_t h = 1469598103934665603ull ^ seed;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    // The length separates (a, b) pairs that concatenate to the same bytes.
    for (std::size_t n = s.size(), i = 0; i < 8; ++i, n >>= 8) {
      h ^= static_cast<unsigned char>(n & 0xff);
      h *= 1099511628211ull;
    }
  };
  mix(a);
  mix(b);
  h += 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}
}  // namespace

std::string derived_event_id(std::string_view source_event_id, std::string_view step) {
  unsigned char b[16];
  const std::uint64_t hi = hash64(source_event_id, step, 0x616e6e616c732d31ull);
  const std::uint64_t lo = hash64(step, source_event_id, 0x616e6e616c732d32ull);
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<unsigned char>(hi >> (56 - 8 * i));
    b[8 + i] = static_cast<unsigned char>(lo >> (56 - 8 * i));
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x80);  // version 8 (custom)
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 9562 variant
  return store::format_uuid(b);
}

namespace store {
result<std::optional<recorded_event>> event_at(event_store& s, std::int64_t position) {
  std::optional<recorded_event> found;
  read_all_options o;
  o.from_position = position;
  o.max_count = 1;
  auto r = s.read_all(o, [&](const recorded_event& e) {
    // An upcaster may drop the stored event: then the next one is not it.
    if (e.position == position) found = e;
    return false;
  });
  if (!r) return std::move(r).error();
  return found;
}

result<std::optional<recorded_event>> find_event_by_id(
    event_store& s, std::string_view event_id,
    const std::function<result<std::optional<std::int64_t>>(const uuid_bytes&)>& position_of) {
  auto id = parse_uuid(event_id);
  if (!id) {
    return error(errc::invalid_argument, fmt::format("'{}' is not an event id (a UUID)", event_id));
  }
  auto position = position_of(*id);
  if (!position) return std::move(position).error();
  if (!position.value()) return std::optional<recorded_event>{};
  return event_at(s, **position);
}
}  // namespace store

}  // namespace annals
