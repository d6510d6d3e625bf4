// Test descriptors written as FileDescriptorProto text, so no .proto file is needed.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/text_format.h>

#include <doctest/doctest.h>

#include <memory>
#include <string>

namespace annals::test {

namespace pb = google::protobuf;

// A field as FileDescriptorProto text. `type` is e.g. "TYPE_INT32"; `extra` adds
// "type_name: ...", "oneof_index: 0", "options { packed: true }"...
inline std::string field(const std::string& name, int number, const std::string& type,
                         const std::string& label = "LABEL_OPTIONAL",
                         const std::string& extra = "") {
  return "field { name: \"" + name + "\" number: " + std::to_string(number) + " label: " + label +
         " type: " + type + " " + extra + " }";
}

// One file "<name>" in package "t" holding `body` (message_type / enum_type text).
inline pb::FileDescriptorProto file_proto(const std::string& body,
                                          const std::string& syntax = "proto3",
                                          const std::string& name = "t.proto") {
  pb::FileDescriptorProto f;
  std::string text = "name: \"" + name + "\" package: \"t\" " + body;
  if (syntax == "proto3") text += " syntax: \"proto3\"";
  INFO(text);
  REQUIRE(pb::TextFormat::ParseFromString(text, &f));
  return f;
}

inline pb::FileDescriptorSet set_of(const std::string& body, const std::string& syntax = "proto3") {
  pb::FileDescriptorSet set;
  *set.add_file() = file_proto(body, syntax);
  return set;
}

// "message_type { name: NAME <fields> }"
inline std::string message(const std::string& name, const std::string& fields) {
  return "message_type { name: \"" + name + "\" " + fields + " }";
}

// Compiled descriptors of a set's files, kept alive together.
struct built_pool {
  pb::DescriptorPool pool;
  const pb::Descriptor* find(const std::string& type) const {
    const auto* d = pool.FindMessageTypeByName(type);
    REQUIRE(d != nullptr);
    return d;
  }
};

inline std::unique_ptr<built_pool> build(const pb::FileDescriptorSet& set) {
  auto p = std::make_unique<built_pool>();
  for (const auto& f : set.file()) REQUIRE(p->pool.BuildFile(f) != nullptr);
  return p;
}

}  // namespace annals::test
