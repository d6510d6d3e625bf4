// The bank-account sample's aggregate and deciders. Amounts are integer cents.
#pragma once

#include <annals/command.hpp>

#include "bank/v1/events.pb.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace bank {

struct account {
  using events = annals::event_list<v1::AccountOpened, v1::MoneyDeposited, v1::MoneyWithdrawn,
                                    v1::AccountClosed>;

  void apply(const v1::AccountOpened& e);
  void apply(const v1::MoneyDeposited& e);
  void apply(const v1::MoneyWithdrawn& e);
  void apply(const v1::AccountClosed& e);

  bool opened = false;
  bool closed = false;
  std::string id;
  std::string owner;
  std::int64_t balance_cents = 0;
};

// The stream holding one account's events: "account-<id>".
std::string stream_for(std::string_view account_id);

// Deciders: pure functions of the state.
annals::decision<account> open(const account& a, std::string_view id, std::string_view owner);
annals::decision<account> deposit(const account& a, std::string_view id, std::int64_t cents);
annals::decision<account> withdraw(const account& a, std::string_view id, std::int64_t cents);
annals::decision<account> close(const account& a, std::string_view id);

// Parses "12", "12.5" or "12.50" into cents. Refuses signs, more than two fraction digits,
// zero, anything not a number, and amounts over 2^63-1 cents.
annals::result<std::int64_t> parse_amount(std::string_view text);
// 1250 -> "12.50"
std::string format_cents(std::int64_t cents);

}  // namespace bank
