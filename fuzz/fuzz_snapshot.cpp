// Snapshot decoding: the state bytes and version of a stored snapshot, as a damaged file or a
// snapshot from another build holds them, under the bank account's key. The stream itself is
// good (opened, three deposits).
// Properties: loading never fails because of the snapshot (a bad one is ignored and the
// stream folded), and a snapshot beyond the stream's end is never used.
#include "support.hpp"

#include "account.hpp"
#include "forwarding_store.hpp"

#include <annals/aggregate.hpp>

#include <memory>

namespace {

// Serves the fuzzed snapshot for every key it is asked for; saves nothing.
class fuzzed_snapshot_store : public annals::test::forwarding_store {
 public:
  using forwarding_store::forwarding_store;
  annals::snapshot_record snap;

  annals::result<std::optional<annals::snapshot_record>> read_snapshot(
      std::string_view stream_id, std::string_view key) override {
    annals::snapshot_record s = snap;
    s.stream_id = std::string(stream_id);
    s.key = std::string(key);
    return std::optional<annals::snapshot_record>(std::move(s));
  }
  void save_snapshot(annals::snapshot_record) noexcept override {}
};

annals::event_store& account_store() {
  static std::unique_ptr<annals::event_store> store = [] {
    auto s = annals::open_sqlite_store(annals_fuzz::scratch_dir() + "/snapshot.db");
    annals_fuzz::require(static_cast<bool>(s), "the scratch store opens");
    std::vector<annals::event_data> events;
    bank::v2::AccountOpened opened;
    opened.set_account_id("a1");
    opened.mutable_owner()->set_given("Ada");
    events.push_back({{}, "bank.v2.AccountOpened", opened.SerializeAsString(), {}});
    for (int i = 1; i <= 3; ++i) {
      bank::v1::MoneyDeposited d;
      d.set_account_id("a1");
      d.set_amount_cents(100 * i);
      events.push_back({{}, "bank.v1.MoneyDeposited", d.SerializeAsString(), {}});
    }
    auto written =
        (*s)->append("account-a1", annals::expected_version::no_stream(), std::move(events));
    annals_fuzz::require(static_cast<bool>(written), "the account stream is written");
    return std::move(s).value();
  }();
  return *store;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzzed_snapshot_store store(account_store());
  annals_fuzz::input in(data, size);
  const std::uint8_t v = in.byte();
  store.snap.version = (v & 0x80) ? -static_cast<std::int64_t>(v & 0x7f) : (v % 8);
  store.snap.state = std::string(in.rest());
  annals::load_options o;
  o.warning = [](std::string_view) {};  // a refused snapshot is reported; expected here
  auto r = annals::load<bank::account>(store, "account-a1", o);
  annals_fuzz::require(static_cast<bool>(r), "a bad snapshot never fails a load");
  annals_fuzz::require(r->version == 3, "the whole stream is loaded");
  annals_fuzz::require(r->snapshot_version <= 3, "a snapshot beyond the stream is not used");
  return 0;
}
