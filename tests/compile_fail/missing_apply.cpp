// Must not compile: the aggregate lists bank::v1::MoneyWithdrawn but has no apply() for it.
// ctest checks that the compiler's message names aggregate_has_no_apply_for_event<..., the type>.
#include <annals/command.hpp>

#include "bank/v1/events.pb.h"

#include <cstdint>
#include <memory>

namespace {

struct forgetful_account {
  using events = annals::event_list<bank::v1::AccountOpened, bank::v1::MoneyDeposited,
                                    bank::v1::MoneyWithdrawn>;
  void apply(const bank::v1::AccountOpened&) { opened = true; }
  void apply(const bank::v1::MoneyDeposited& e) { balance_cents += e.amount_cents(); }
  // Missing: void apply(const bank::v1::MoneyWithdrawn&);

  bool opened = false;
  std::int64_t balance_cents = 0;
};

}  // namespace

int main() {
  auto store = annals::open_sqlite_store("/nonexistent/unused.db");
  if (!store) return 1;
  auto loaded = annals::load<forgetful_account>(**store, "account-a");
  auto handled = annals::handle<forgetful_account>(
      **store, "account-a",
      [](const forgetful_account&) { return annals::decision<forgetful_account>{}; });
  return loaded.ok() && handled.ok() ? 0 : 1;
}
