// Internal: a DescriptorPool over a FileDescriptorSet whose files build on demand, in any
// order, and whose build errors are collected (for reports) instead of logged.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>

#include <string>

namespace annals::schema_detail {

class set_pool {
 public:
  // `set` is copied into the pool's database; it need not outlive the pool.
  explicit set_pool(const google::protobuf::FileDescriptorSet& set) {
    for (const auto& f : set.file()) {
      if (!db_.Add(f) && errors_.empty()) {
        errors_ = "file '" + f.name() + "' is in the set twice, differently";
      }
    }
  }
  set_pool(const set_pool&) = delete;
  set_pool& operator=(const set_pool&) = delete;

  google::protobuf::DescriptorPool& pool() { return pool_; }
  // The first problem met so far (adding files, or building them on demand); empty if none.
  const std::string& errors() const { return errors_; }

 private:
  struct collector : google::protobuf::DescriptorPool::ErrorCollector {
    explicit collector(std::string& out) : out(out) {}
    void AddError(const std::string& filename, const std::string& element,
                  const google::protobuf::Message*, ErrorLocation,
                  const std::string& message) override {
      if (out.empty()) out = "file '" + filename + "': " + element + ": " + message;
    }
    std::string& out;
  };
  std::string errors_;
  google::protobuf::SimpleDescriptorDatabase db_;
  collector collector_{errors_};
  google::protobuf::DescriptorPool pool_{&db_, &collector_};
};

}  // namespace annals::schema_detail
