// The bank sample's argument parsing: amounts, account and transfer ids, transfer states, as
// typed on the command line or sent in an HTTP body.
// Properties: a parsed amount is positive and survives formatting; ids map to streams and back.
#include "support.hpp"

#include "account.hpp"
#include "transfers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto cents = bank::parse_amount(text)) {
    annals_fuzz::require(*cents > 0, "a parsed amount is positive");
    auto again = bank::parse_amount(bank::format_cents(*cents));
    annals_fuzz::require(again && *again == *cents, "format_cents then parse_amount is the same");
  }
  if (bank::validate_transfer_id(text)) {
    annals_fuzz::require(bank::transfer_id_of(bank::transfer_stream(text)) == text,
                         "a transfer id survives its stream name");
  }
  if (bank::validate_account_id(text)) {
    annals_fuzz::require(bank::stream_for(text) != bank::stream_for(std::string(text) + "x"),
                         "distinct account ids have distinct streams");
  }
  if (auto state = bank::parse_transfer_state(text)) {
    auto again = bank::parse_transfer_state(bank::to_string(*state));
    annals_fuzz::require(again && *again == *state, "a transfer state survives its name");
  }
  return 0;
}
