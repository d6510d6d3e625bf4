// Upcaster chains: stored events of the bank's old AccountOpened (and others) with any payload
// and schema version, run through the sample's chain as every read does.
// Property: no crash; an upcast event is the new type with a payload that parses.
#include "support.hpp"

#include "account.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto chain = bank::event_upcasters();
  annals_fuzz::input in(data, size);
  annals::recorded_event e;
  const std::uint8_t pick = in.byte();
  switch (pick % 4) {
    case 0: e.type = "bank.v1.AccountOpened"; break;
    case 1: e.type = "bank.v2.AccountOpened"; break;
    case 2: e.type = "bank.v1.MoneyDeposited"; break;
    default: e.type = std::string(in.field()); break;
  }
  const std::uint8_t v = in.byte();
  e.metadata.schema_version = (v & 0x80) ? -static_cast<std::int32_t>(v & 0x7f)
                                         : static_cast<std::int32_t>(v);
  if (pick & 0x10) e.metadata.schema_version = std::numeric_limits<std::int32_t>::max();
  e.payload = std::string(in.rest());
  const std::string before = e.type;
  auto r = chain->apply(e);
  if (r && before == "bank.v1.AccountOpened" && e.type != before) {
    bank::v2::AccountOpened out;
    annals_fuzz::require(e.type == "bank.v2.AccountOpened", "v1 opens become v2 opens");
    annals_fuzz::require(out.ParseFromString(e.payload), "an upcast payload parses");
  }
  return 0;
}
