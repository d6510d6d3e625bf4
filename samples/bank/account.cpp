#include "account.hpp"

#include "transfers.hpp"

#include <annals/schema.hpp>

#include <fmt/format.h>

#include <limits>
#include <stdexcept>

namespace bank {

void account::apply(const v2::AccountOpened& e) {
  opened = true;
  id = e.account_id();
  owner = full_name(e.owner());
}
// Checked: a balance beyond int64 cannot come from events the deciders accepted, only from a
// damaged snapshot or store; it is an error, never undefined behaviour.
void account::apply(const v1::MoneyDeposited& e) {
  if (__builtin_add_overflow(balance_cents, e.amount_cents(), &balance_cents))
    throw std::overflow_error("the account's balance overflows on a deposit");
}
void account::apply(const v1::MoneyWithdrawn& e) {
  if (__builtin_sub_overflow(balance_cents, e.amount_cents(), &balance_cents))
    throw std::overflow_error("the account's balance overflows on a withdrawal");
}
void account::apply(const v1::AccountClosed&) { closed = true; }

void account::save(v2::AccountState& out) const {
  out.set_account_id(id);
  out.set_owner(owner);
  out.set_balance_cents(balance_cents);
  out.set_opened(opened);
  out.set_closed(closed);
}

void account::restore(const v2::AccountState& in) {
  id = in.account_id();
  owner = in.owner();
  balance_cents = in.balance_cents();
  opened = in.opened();
  closed = in.closed();
}

v2::PersonName split_name(std::string_view owner) {
  v2::PersonName n;
  auto space = owner.rfind(' ');
  if (space == std::string_view::npos || space + 1 == owner.size()) {
    n.set_given(std::string(owner));
  } else {
    n.set_given(std::string(owner.substr(0, space)));
    n.set_family(std::string(owner.substr(space + 1)));
  }
  return n;
}

std::string full_name(const v2::PersonName& name) {
  return name.family().empty() ? name.given() : name.given() + " " + name.family();
}

std::shared_ptr<const annals::upcasters> event_upcasters() {
  static const auto up = [] {
    auto u = std::make_shared<annals::upcasters>();
    // Every stored version of bank.v1.AccountOpened (it is no longer registered) becomes
    // version 1 of bank.v2.AccountOpened.
    u->add<v1::AccountOpened, v2::AccountOpened>(
        std::numeric_limits<std::int32_t>::max(), 1, [](const v1::AccountOpened& old) {
          v2::AccountOpened e;
          e.set_account_id(old.account_id());
          *e.mutable_owner() = split_name(old.owner());
          return e;
        });
    return std::shared_ptr<const annals::upcasters>(std::move(u));
  }();
  return up;
}

annals::sqlite_options store_options() {
  annals::sqlite_options o;
  o.upcast = event_upcasters();
  return o;
}

annals::result<std::unique_ptr<annals::event_store>> open_store(std::string_view uri,
                                                                annals::sqlite_options options) {
  if (!options.upcast) options.upcast = event_upcasters();
  bool read_only = options.read_only;
  auto store = annals::open_store(uri, std::move(options));
  if (!store || read_only) return store;
  // Appends are stamped with these types' registered schema versions.
  if (auto r = annals::register_event_types(**store, account::events{}); !r) return r.error();
  if (auto r = annals::register_event_types(**store, transfer::events{}); !r) return r.error();
  // No longer written but still read (through the upcaster): registered so that generic tools
  // (`annals read`, `verify`, `export`) decode the old events from the stored descriptor.
  if (auto r = annals::register_event_types(**store, annals::event_list<v1::AccountOpened>{});
      !r) {
    return r.error();
  }
  return store;
}

std::string stream_for(std::string_view account_id) {
  return "account-" + std::string(account_id);
}

namespace {
using decision = annals::decision<account>;

// Rules shared by every command on an existing account.
std::optional<decision> refuse_unless_open(const account& a, std::string_view id) {
  if (!a.opened) return decision::reject(fmt::format("account '{}' does not exist", id));
  if (a.closed) return decision::reject(fmt::format("account '{}' is closed", id));
  return std::nullopt;
}
std::optional<decision> refuse_non_positive(std::int64_t cents) {
  if (cents <= 0) return decision::reject("the amount must be greater than zero");
  return std::nullopt;
}
}  // namespace

decision open(const account& a, std::string_view id, std::string_view owner) {
  if (a.opened) return decision::reject(fmt::format("account '{}' already exists", id));
  if (owner.empty()) return decision::reject("the owner's name must not be empty");
  v2::AccountOpened e;
  e.set_account_id(std::string(id));
  *e.mutable_owner() = split_name(owner);
  return decision::emit(std::move(e));
}

decision deposit(const account& a, std::string_view id, std::int64_t cents) {
  if (auto no = refuse_unless_open(a, id)) return std::move(*no);
  if (auto no = refuse_non_positive(cents)) return std::move(*no);
  if (a.balance_cents > std::numeric_limits<std::int64_t>::max() - cents) {
    return decision::reject("the deposit would overflow the account's balance");
  }
  v1::MoneyDeposited e;
  e.set_account_id(std::string(id));
  e.set_amount_cents(cents);
  return decision::emit(std::move(e));
}

decision withdraw(const account& a, std::string_view id, std::int64_t cents) {
  if (auto no = refuse_unless_open(a, id)) return std::move(*no);
  if (auto no = refuse_non_positive(cents)) return std::move(*no);
  if (cents > a.balance_cents) {
    return decision::reject(fmt::format("insufficient funds: the balance of '{}' is {}, {} asked",
                                        id, format_cents(a.balance_cents), format_cents(cents)));
  }
  v1::MoneyWithdrawn e;
  e.set_account_id(std::string(id));
  e.set_amount_cents(cents);
  return decision::emit(std::move(e));
}

decision close(const account& a, std::string_view id) {
  if (auto no = refuse_unless_open(a, id)) return std::move(*no);
  if (a.balance_cents != 0) {
    return decision::reject(fmt::format("only an account with a zero balance can be closed; "
                                        "the balance of '{}' is {}",
                                        id, format_cents(a.balance_cents)));
  }
  v1::AccountClosed e;
  e.set_account_id(std::string(id));
  return decision::emit(std::move(e));
}

decision withdraw_for_transfer(const account& a, std::string_view id,
                               std::string_view transfer_id, std::string_view to,
                               std::int64_t cents) {
  auto d = withdraw(a, id, cents);
  if (d.rejected()) return d;
  auto e = static_cast<const v1::MoneyWithdrawn&>(*d.events().front());
  e.set_transfer_id(std::string(transfer_id));
  e.set_counterparty(std::string(to));
  return decision::emit(std::move(e));
}

decision deposit_for_transfer(const account& a, std::string_view id, std::string_view transfer_id,
                              std::string_view from, std::int64_t cents) {
  auto d = deposit(a, id, cents);
  if (d.rejected()) return d;
  auto e = static_cast<const v1::MoneyDeposited&>(*d.events().front());
  e.set_transfer_id(std::string(transfer_id));
  e.set_counterparty(std::string(from));
  return decision::emit(std::move(e));
}

decision refund_transfer(const account& a, std::string_view id, std::string_view transfer_id,
                         std::string_view to, std::int64_t cents) {
  // Not refuse_unless_open: a closed account takes its refund back.
  if (!a.opened) return decision::reject(fmt::format("account '{}' does not exist", id));
  if (auto no = refuse_non_positive(cents)) return std::move(*no);
  v1::MoneyDeposited e;
  e.set_account_id(std::string(id));
  e.set_amount_cents(cents);
  e.set_transfer_id(std::string(transfer_id));
  e.set_counterparty(std::string(to));
  e.set_refund(true);
  return decision::emit(std::move(e));
}

annals::result<std::int64_t> parse_amount(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return annals::error(annals::errc::invalid_argument,
                         fmt::format("'{}' is not a valid amount: {}", text.substr(0, 40), why));
  };
  if (text.empty()) return bad("it is empty");
  auto dot = text.find('.');
  auto whole = text.substr(0, dot);
  auto frac = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (whole.empty()) return bad("write it like 12 or 12.50");
  if (dot != std::string_view::npos && frac.empty()) return bad("write it like 12 or 12.50");
  if (frac.size() > 2) return bad("at most two digits after the point");
  for (char c : std::string(whole) + std::string(frac)) {
    if (c < '0' || c > '9') {
      return bad(c == '-' ? "amounts must be positive" : "use digits and one '.' only");
    }
  }
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  std::int64_t cents = 0;
  for (char c : whole) {
    if (cents > (max - (c - '0')) / 10) return bad("it is too large");
    cents = cents * 10 + (c - '0');
  }
  for (std::size_t i = 0; i < 2; ++i) {
    int d = i < frac.size() ? frac[i] - '0' : 0;
    if (cents > (max - d) / 10) return bad("it is too large");
    cents = cents * 10 + d;
  }
  if (cents == 0) return bad("it must be greater than zero");
  return cents;
}

std::string format_cents(std::int64_t cents) {
  bool negative = cents < 0;
  auto abs = negative ? -static_cast<unsigned long long>(cents)
                      : static_cast<unsigned long long>(cents);
  return fmt::format("{}{}.{:02}", negative ? "-" : "", abs / 100, abs % 100);
}

}  // namespace bank
