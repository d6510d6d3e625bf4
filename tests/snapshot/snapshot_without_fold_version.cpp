// Must not compile: the aggregate names a snapshot message but no fold version. ctest checks
// that the compiler's message asks for `fold_version`.
#include <annals/command.hpp>

#include "bank/v1/events.pb.h"
#include "bank/v2/state.pb.h"

#include <cstdint>

namespace {

struct half_done {
  using events = annals::event_list<bank::v1::MoneyDeposited>;
  using snapshot = bank::v2::AccountState;
  // Missing: static constexpr std::uint32_t fold_version = 1;
  void apply(const bank::v1::MoneyDeposited& e) { balance_cents += e.amount_cents(); }
  void save(bank::v2::AccountState& out) const { out.set_balance_cents(balance_cents); }
  void restore(const bank::v2::AccountState& in) { balance_cents = in.balance_cents(); }
  std::int64_t balance_cents = 0;
};

}  // namespace

int main() {
  auto store = annals::open_sqlite_store("/nonexistent/unused.db");
  if (!store) return 1;
  auto r = annals::handle<half_done>(**store, "s", [](const half_done&) {
    return annals::decision<half_done>{};
  });
  return r.ok() ? 0 : 1;
}
