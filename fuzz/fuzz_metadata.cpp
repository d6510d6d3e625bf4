// Metadata decoding: the bytes of a row's metadata column (annals.v1.EventMetadata), as a
// damaged or hostile file holds them. Property: what decodes re-encodes to bytes that decode
// to the same metadata.
#include "support.hpp"
#include "store/prepared.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  annals::event_metadata m;
  if (!annals::store::decode_metadata(bytes, m)) return 0;
  const std::string again = annals::store::encode_metadata(m);
  annals::event_metadata m2;
  annals_fuzz::require(annals::store::decode_metadata(again, m2), "re-encoded metadata decodes");
  annals_fuzz::require(m == m2, "metadata survives a re-encoding");
  return 0;
}
