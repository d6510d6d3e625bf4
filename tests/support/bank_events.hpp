// Bank events and event_data for tests, built in one line each.
#pragma once

#include <annals/event_store.hpp>

#include "bank/v1/events.pb.h"

#include <cstdint>
#include <string>

namespace annals::test::bank_events {

inline bank::v1::AccountOpened opened(const std::string& id, const std::string& owner) {
  bank::v1::AccountOpened e;
  e.set_account_id(id);
  e.set_owner(owner);
  return e;
}
inline bank::v1::MoneyDeposited deposited(const std::string& id, std::int64_t cents) {
  bank::v1::MoneyDeposited e;
  e.set_account_id(id);
  e.set_amount_cents(cents);
  return e;
}
inline bank::v1::MoneyWithdrawn withdrawn(const std::string& id, std::int64_t cents) {
  bank::v1::MoneyWithdrawn e;
  e.set_account_id(id);
  e.set_amount_cents(cents);
  return e;
}
inline bank::v1::AccountClosed closed(const std::string& id) {
  bank::v1::AccountClosed e;
  e.set_account_id(id);
  return e;
}
// An event to append, from a message; `id` empty lets the store assign one.
inline event_data data_of(const google::protobuf::Message& m, std::string id = {}) {
  event_data d;
  d.event_id = std::move(id);
  d.type = m.GetDescriptor()->full_name();
  d.payload = m.SerializeAsString();
  return d;
}

}  // namespace annals::test::bank_events
