// Payload decoding to JSON (the HTTP API, export, `annals read`): a payload against the bank's
// stored descriptors, or against a stored descriptor set that is itself damaged.
// Property: no crash; a decoded payload is a JSON object.
#include "support.hpp"

#include <annals/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<annals::stored_schema> schemas = annals_fuzz::bank_schemas();
  static annals::payload_decoder bank(schemas);
  annals_fuzz::input in(data, size);
  const std::uint8_t mode = in.byte();
  if (mode & 1) {
    // A damaged stored schema: its descriptor set and type name come from the input.
    annals::stored_schema s;
    s.type = std::string(in.field());
    s.version = 1;
    s.descriptor_set = std::string(in.take(std::size_t(in.byte()) * 8));
    annals::payload_decoder d({s});
    auto r = d.to_json(s.type, 1, in.rest());
    if (r) annals_fuzz::require(!r->empty() && r->front() == '{', "a decoded payload is an object");
    return 0;
  }
  const auto& s = schemas[(mode >> 1) % schemas.size()];
  const std::int32_t version = static_cast<std::int32_t>(in.byte() % 3);  // 0 (unknown), 1, 2
  auto r = bank.to_json(s.type, version, in.rest());
  if (r) annals_fuzz::require(!r->empty() && r->front() == '{', "a decoded payload is an object");
  return 0;
}
