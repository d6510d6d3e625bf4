// Shared by the fuzz targets (docs/fuzzing.md): the bank sample's schemas as a store would
// hold them, a scratch directory, and a check that stops the fuzzer on a broken property.
#pragma once

#include <annals/event_store.hpp>
#include <annals/schema.hpp>

#include <google/protobuf/descriptor.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace annals_fuzz {

// A property that must hold for every input; a violation is a finding (the fuzzer saves the
// input and stops).
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what);
    std::abort();
  }
}

// Every message type of the bank sample's .proto files, version 1, as register_schemas would
// store it (descriptor set of the type's file and its dependencies).
std::vector<annals::stored_schema> bank_schemas();

// A directory of this process on tmpfs when there is one (removed at exit).
const std::string& scratch_dir();

// Reads input as consecutive fields: take(n) bytes, or the rest.
class input {
 public:
  input(const std::uint8_t* data, std::size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}
  std::uint8_t byte() { return size_ ? static_cast<std::uint8_t>(take(1)[0]) : 0; }
  std::string_view take(std::size_t n) {
    n = std::min(n, size_);
    std::string_view s(data_, n);
    data_ += n;
    size_ -= n;
    return s;
  }
  // A field prefixed by a length byte.
  std::string_view field() { return take(byte()); }
  std::string_view rest() { return take(size_); }

 private:
  const char* data_;
  std::size_t size_;
};

}  // namespace annals_fuzz
