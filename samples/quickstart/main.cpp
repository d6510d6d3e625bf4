// The README's quickstart, whole: built and run by the tests so the README cannot rot.
#include <annals/command.hpp>
#include <annals/schema.hpp>
#include <annals/testing.hpp>

#include "bank/v1/events.pb.h"   // generated from your .proto by protoc

#include <iostream>

struct account {
  using events = annals::event_list<bank::v1::AccountOpened, bank::v1::MoneyDeposited>;
  void apply(const bank::v1::AccountOpened&) { opened = true; }
  void apply(const bank::v1::MoneyDeposited& e) { balance += e.amount_cents(); }
  bool opened = false;
  std::int64_t balance = 0;
};

// Deciders are pure: state in, events or a rejection out.
annals::decision<account> open(const account& a, const std::string& owner) {
  if (a.opened) return annals::decision<account>::reject("account already exists");
  bank::v1::AccountOpened e;
  e.set_owner(owner);
  return annals::decision<account>::emit(e);
}
annals::decision<account> deposit(const account& a, std::int64_t cents) {
  if (!a.opened) return annals::decision<account>::reject("no such account");
  bank::v1::MoneyDeposited e;
  e.set_amount_cents(cents);
  return annals::decision<account>::emit(e);
}

int main(int argc, char** argv) {
  std::shared_ptr<annals::event_store> store =
      annals::open_sqlite_store(argc > 1 ? argv[1] : "quickstart.db").value_or_throw();
  // The descriptors go into the store: `annals read` and `verify` decode the events without
  // this program, and each event is stamped with its type's schema version.
  (void)annals::register_event_types(*store, account::events{}).value_or_throw();
  (void)annals::handle<account>(*store, "account-42", [](const account& a) { return open(a, "Ann"); });
  auto r = annals::handle<account>(*store, "account-42",
                                   [](const account& a) { return deposit(a, 1250); });
  if (!r) {
    std::cerr << r.error().message() << "\n";  // r.error().kind() is an annals::errc
    return annals::exit_code(r.error().kind());
  }
  std::cout << "version " << r->stream_version << ", position " << r->position << "\n";

  // The same decider, tested without a store:
  bank::v1::AccountOpened opened;
  bank::v1::MoneyDeposited five;
  five.set_amount_cents(5);
  using annals::testing::given;
  bool ok = given<account>(opened).when([](const account& a) { return deposit(a, 5); }).then(five) &&
            given<account>().when([](const account& a) { return deposit(a, 5); }).then_rejected("no such");
  return ok ? 0 : 1;
}
