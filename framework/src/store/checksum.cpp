// CRC-32C and the event row checksum (checksum.hpp).
#include "store/checksum.hpp"

#include <array>

namespace annals::store {
namespace {

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto table = make_table();

std::uint32_t add_u64(std::uint32_t crc, std::uint64_t v) noexcept {
  unsigned char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  return crc32c(crc, b, sizeof b);
}

std::uint32_t add_bytes(std::uint32_t crc, std::string_view s) noexcept {
  crc = add_u64(crc, s.size());
  return crc32c(crc, s.data(), s.size());
}

std::uint32_t add_int(std::uint32_t crc, std::int64_t v) noexcept {
  crc = add_u64(crc, 8);
  return add_u64(crc, static_cast<std::uint64_t>(v));
}

}  // namespace

std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::uint32_t event_checksum(std::string_view stream_id, std::int64_t stream_version,
                             std::string_view event_id, std::string_view type,
                             std::int64_t recorded_at_us, std::string_view metadata,
                             std::string_view payload) noexcept {
  std::uint32_t crc = add_bytes(0, stream_id);
  crc = add_int(crc, stream_version);
  crc = add_bytes(crc, event_id);
  crc = add_bytes(crc, type);
  crc = add_int(crc, recorded_at_us);
  crc = add_bytes(crc, metadata);
  return add_bytes(crc, payload);
}

}  // namespace annals::store
