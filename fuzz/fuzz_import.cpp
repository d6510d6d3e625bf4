// The `annals import` reader: JSON lines as a user hands them over, into an empty SQLite store.
// Properties: an import is all or nothing (a refused one leaves the store empty), and what it
// accepts passes `annals verify` with no problem other than payloads and decreasing times
// (import copies payloads and times as they are, documented; schemas it checks).
#include "support.hpp"

#include <annals/admin.hpp>

#include <filesystem>
#include <sstream>

namespace {

std::unique_ptr<annals::store_admin> fresh_store(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix, ec);
  auto admin = annals::open_admin(path, true);
  annals_fuzz::require(static_cast<bool>(admin), "the scratch store opens");
  return std::move(admin).value();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = annals_fuzz::scratch_dir() + "/import.db";
  static std::unique_ptr<annals::store_admin> admin = fresh_store(path);
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  auto imported = annals::import_store(*admin, in);
  if (!imported) {
    auto head = admin->store().head_position();
    annals_fuzz::require(head && *head == 0, "a refused import writes nothing");
    return 0;
  }
  std::string problems;
  auto checked = admin->verify([&](const annals::store_problem& p) {
    // Import copies payloads and times as they are (annals/admin.hpp): verify's payload and
    // recorded-at-decreasing findings on them are not import's to refuse (yet: see the note).
    if (!p.warning && p.check != "payload" && p.check != "recorded-at-decreasing")
      problems += p.check + ": " + p.detail + "\n";
  });
  if (!problems.empty()) std::fprintf(stderr, "%s", problems.c_str());
  annals_fuzz::require(checked && problems.empty(), "an accepted import passes verify");
  admin = fresh_store(path);  // import needs an empty store
  return 0;
}
