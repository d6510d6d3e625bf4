// The bank-account sample's aggregate and deciders. Amounts are integer cents.
#pragma once

#include <annals/command.hpp>
#include <annals/upcaster.hpp>

#include "bank/v1/events.pb.h"
#include "bank/v2/events.pb.h"
#include "bank/v2/state.pb.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace bank {

// Lists the current event types only: stored bank.v1.AccountOpened events reach it as
// bank.v2.AccountOpened through event_upcasters(). Snapshots: bank.v2.AccountState.
struct account {
  using events = annals::event_list<v2::AccountOpened, v1::MoneyDeposited, v1::MoneyWithdrawn,
                                    v1::AccountClosed>;
  using snapshot = v2::AccountState;
  static constexpr std::uint32_t fold_version = 1;
  static constexpr std::int64_t snapshot_every = 100;

  void apply(const v2::AccountOpened& e);
  void apply(const v1::MoneyDeposited& e);
  void apply(const v1::MoneyWithdrawn& e);
  void apply(const v1::AccountClosed& e);
  void save(v2::AccountState& out) const;
  void restore(const v2::AccountState& in);

  bool opened = false;
  bool closed = false;
  std::string id;
  std::string owner;
  std::int64_t balance_cents = 0;
};

// The bank's schema evolution: bank.v1.AccountOpened (owner as one string) is read as
// bank.v2.AccountOpened (owner split by split_name). Shared, read-only.
std::shared_ptr<const annals::upcasters> event_upcasters();
// Store options with the bank's upcasters.
annals::sqlite_options store_options();
// Opens the bank's store ("PATH" or "sqlite:PATH") with its upcasters and, unless read-only,
// registers the bank's current event types in the store's schema registry (a changed
// descriptor that breaks compatibility is refused: invalid_argument with the report).
annals::result<std::unique_ptr<annals::event_store>> open_store(std::string_view uri,
                                                                annals::sqlite_options options =
                                                                    store_options());

// "Ann Smith" -> {given "Ann", family "Smith"}: split at the last space (none: all given).
// full_name(split_name(s)) == s for every s.
v2::PersonName split_name(std::string_view owner);
std::string full_name(const v2::PersonName& name);

// The stream holding one account's events: "account-<id>".
std::string stream_for(std::string_view account_id);

// Deciders: pure functions of the state.
annals::decision<account> open(const account& a, std::string_view id, std::string_view owner);
annals::decision<account> deposit(const account& a, std::string_view id, std::int64_t cents);
annals::decision<account> withdraw(const account& a, std::string_view id, std::int64_t cents);
annals::decision<account> close(const account& a, std::string_view id);

// The account's side of a transfer (samples/bank/transfers.hpp drives these): the events are
// MoneyWithdrawn / MoneyDeposited carrying the transfer's id and the other account, so every
// read model that counts money counts transfers too.
// Debits the source: the rules of withdraw().
annals::decision<account> withdraw_for_transfer(const account& a, std::string_view id,
                                                std::string_view transfer_id,
                                                std::string_view to, std::int64_t cents);
// Credits the target: the rules of deposit().
annals::decision<account> deposit_for_transfer(const account& a, std::string_view id,
                                               std::string_view transfer_id,
                                               std::string_view from, std::int64_t cents);
// Gives a failed transfer's money back to its source. Never refused for an account that was
// opened, even one closed since the debit: money is conserved, and a closed account holding a
// refund keeps it until someone pays it out (its balance is no longer zero). Refused only for
// an account that never existed (it cannot have been debited) and a non-positive amount.
annals::decision<account> refund_transfer(const account& a, std::string_view id,
                                          std::string_view transfer_id, std::string_view to,
                                          std::int64_t cents);

// Parses "12", "12.5" or "12.50" into cents. Refuses signs, more than two fraction digits,
// zero, anything not a number, and amounts over 2^63-1 cents.
annals::result<std::int64_t> parse_amount(std::string_view text);
// 1250 -> "12.50"
std::string format_cents(std::int64_t cents);

}  // namespace bank
