// The per-row checksum of an event (docs/storage-format.md, "Row checksums"): CRC-32C over a
// canonical encoding of every stored field but the position. Written by every path that
// inserts event rows (append on both stores, import, migrate) and recomputed by verify.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace annals::store {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `data`, continuing from `crc`
// (0 to start). crc32c(0, "123456789") == 0xE3069283.
std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept;

// The checksum of one event row. Each field is length-prefixed (8-byte little-endian length,
// then its bytes; integers as their 8 little-endian bytes), so bytes moved from one field to
// the next change the sum. `metadata` is empty when the column is NULL.
std::uint32_t event_checksum(std::string_view stream_id, std::int64_t stream_version,
                             std::string_view event_id, std::string_view type,
                             std::int64_t recorded_at_us, std::string_view metadata,
                             std::string_view payload) noexcept;

}  // namespace annals::store
