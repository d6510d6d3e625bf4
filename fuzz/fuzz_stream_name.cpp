// Stream-name handling: a name as a client sends it (HTTP path, CLI argument), checked, used
// as a bound SQL value, turned into a NATS subject token and a category.
// Properties: an accepted name reads back byte-identical from the store; a subject token is
// non-empty and made of [A-Za-z0-9_~-] only, and distinct names give distinct tokens.
#include "support.hpp"
#include "store/prepared.hpp"

#include <annals/relay.hpp>

#include <atomic>

namespace {

annals::event_store& store() {
  static std::unique_ptr<annals::event_store> s = [] {
    auto st = annals::open_sqlite_store(annals_fuzz::scratch_dir() + "/names.db");
    annals_fuzz::require(static_cast<bool>(st), "the scratch store opens");
    return std::move(st).value();
  }();
  return *s;
}

bool token_ok(std::string_view t) {
  if (t.empty()) return false;
  for (unsigned char c : t) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '~')) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view name(reinterpret_cast<const char*>(data), size);
  const std::string token = annals::subject_token(name);
  annals_fuzz::require(token_ok(token), "a subject token uses subject-safe bytes only");
  if (!name.empty()) {
    annals_fuzz::require(annals::subject_token(std::string(name) + "x") != token,
                         "distinct names give distinct tokens");
  }
  const std::string subject = annals::relay_subject("annals", name, "t.Type");
  annals_fuzz::require(subject.rfind("annals.", 0) == 0, "a subject starts with its prefix");
  if (!annals::store::check_stream_id(name)) return 0;
  auto r = store().append(name, annals::expected_version::any(), {{{}, "fuzz.Event", "p", {}}});
  annals_fuzz::require(static_cast<bool>(r), "an accepted stream name can be appended to");
  std::string read_back;
  auto n = store().read_stream(name, {}, [&](const annals::recorded_event& e) {
    read_back = e.stream_id;
    return true;
  });
  annals_fuzz::require(n && read_back == name, "a stream name reads back byte-identical");
  return 0;
}
