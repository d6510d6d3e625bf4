#include "support.hpp"

#include "bank/v1/events.pb.h"
#include "bank/v1/transfers.pb.h"
#include "bank/v2/events.pb.h"
#include "bank/v2/state.pb.h"

#include <filesystem>
#include <unistd.h>

namespace annals_fuzz {

std::vector<annals::stored_schema> bank_schemas() {
  std::vector<annals::stored_schema> out;
  for (const google::protobuf::FileDescriptor* file :
       {bank::v1::MoneyDeposited::descriptor()->file(), bank::v1::TransferRequested::descriptor()->file(),
        bank::v2::AccountOpened::descriptor()->file(), bank::v2::AccountState::descriptor()->file()}) {
    for (int i = 0; i < file->message_type_count(); ++i) {
      const auto* type = file->message_type(i);
      annals::stored_schema s;
      s.type = std::string(type->full_name());
      s.version = 1;
      s.fingerprint = annals::type_fingerprint(*type);
      s.descriptor_set = annals::descriptor_set_of(*type);
      out.push_back(std::move(s));
    }
  }
  return out;
}

const std::string& scratch_dir() {
  static const std::string dir = [] {
    const std::filesystem::path base =
        std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = base / ("annals-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    static struct cleanup {
      std::filesystem::path p;
      ~cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(p, ec);
      }
    } c{d};
    return d.string();
  }();
  return dir;
}

}  // namespace annals_fuzz
