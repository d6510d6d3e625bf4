// Must not compile: the projection lists bank::v1::MoneyWithdrawn but has no handle() for it.
// ctest checks that the compiler's message names
// projection_has_no_handler_for_event<..., bank::v1::MoneyWithdrawn>.
#include <annals/projection.hpp>

#include <boost/hana/define_struct.hpp>

#include "bank/v1/events.pb.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace {

struct balance_row {
  BOOST_HANA_DEFINE_STRUCT(balance_row, (std::string, account_id), (std::int64_t, balance_cents));
  static constexpr std::string_view table = "forgetful_balances";
  static constexpr std::string_view key[] = {"account_id"};
};

struct forgetful_balances {
  static constexpr std::string_view name = "forgetful_balances";
  static constexpr int version = 1;
  using events = annals::event_list<bank::v1::AccountOpened, bank::v1::MoneyDeposited,
                                    bank::v1::MoneyWithdrawn>;
  using tables = annals::table_list<balance_row>;

  annals::result<void> handle(const bank::v1::AccountOpened& e, const annals::recorded_event&,
                              annals::sql_tx& tx) {
    return tx.upsert(balance_row{e.account_id(), 0});
  }
  annals::result<void> handle(const bank::v1::MoneyDeposited& e, const annals::recorded_event&,
                              annals::sql_tx& tx) {
    return tx.upsert(balance_row{e.account_id(), e.amount_cents()});
  }
  // Missing: handle(const bank::v1::MoneyWithdrawn&, const annals::recorded_event&,
  //                 annals::sql_tx&);
};

}  // namespace

int main() {
  auto def = annals::make_projection(forgetful_balances{});
  return def->event_types.size() == 3 ? 0 : 1;
}
