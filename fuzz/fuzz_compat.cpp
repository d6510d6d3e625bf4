// The descriptor compatibility checker (`annals schema check`, register_schemas): a candidate
// FileDescriptorSet from the input against a stored bank type, and against itself.
// Properties: no crash; NONE accepts everything; a set that builds is compatible with itself
// in every mode; FULL finds a violation whenever BACKWARD or FORWARD does.
#include "support.hpp"

#include <google/protobuf/descriptor.pb.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<annals::stored_schema> schemas = annals_fuzz::bank_schemas();
  annals_fuzz::input in(data, size);
  const auto& stored = schemas[in.byte() % schemas.size()];
  static google::protobuf::FileDescriptorSet stored_set;
  stored_set.Clear();
  stored_set.ParseFromString(stored.descriptor_set);
  const std::string type(in.field());
  google::protobuf::FileDescriptorSet candidate;
  if (!candidate.ParseFromArray(in.rest().data(), static_cast<int>(in.rest().size()))) {
    // Not a descriptor set: as text it names no file, which must be refused, not crash.
    candidate.Clear();
  }
  const std::string candidate_type = type.empty() ? stored.type : type;
  using annals::compatibility;
  auto none = annals::check_compatibility(stored_set, stored.type, candidate, candidate_type,
                                          compatibility::none);
  annals_fuzz::require(none.compatible(), "NONE accepts everything");
  auto back = annals::check_compatibility(stored_set, stored.type, candidate, candidate_type,
                                          compatibility::backward);
  auto fwd = annals::check_compatibility(stored_set, stored.type, candidate, candidate_type,
                                         compatibility::forward);
  auto full = annals::check_compatibility(stored_set, stored.type, candidate, candidate_type,
                                          compatibility::full);
  annals_fuzz::require(full.compatible() == (back.compatible() && fwd.compatible()),
                       "FULL is BACKWARD and FORWARD");
  (void)back.to_string();
  auto self = annals::check_compatibility(candidate, candidate_type, candidate, candidate_type,
                                          compatibility::full);
  for (const auto& v : self.violations) {
    annals_fuzz::require(v.rule == "descriptor-invalid",
                         "a set that builds is compatible with itself");
  }
  return 0;
}
