// The bank events folded by hand: what the aggregate-load baselines do instead of
// annals::load (SQLite in annals_bench.cpp, PostgreSQL in pg_bench.cpp).
#pragma once

#include "bench_common.hpp"

#include "account.hpp"

#include <string_view>
#include <utility>

namespace annals_bench {

// Applies one stored bank event (type + payload) to an account, as hand-written code would.
struct raw_folder {
  bank::v2::AccountOpened opened;
  bank::v1::MoneyDeposited deposited;
  bank::v1::MoneyWithdrawn withdrawn;
  bank::v1::AccountClosed closed;

  void apply(bank::account& a, std::string_view type, std::string_view payload) {
    auto parse = [&](google::protobuf::Message& m) {
      if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        storage_failure(fmt::format("baseline: undecodable {} payload", type));
      }
    };
    if (type == type_deposited()) {
      parse(deposited);
      a.apply(std::as_const(deposited));
    } else if (type == type_withdrawn()) {
      parse(withdrawn);
      a.apply(std::as_const(withdrawn));
    } else if (type == type_opened()) {
      parse(opened);
      a.apply(std::as_const(opened));
    } else if (type == bank::v1::AccountClosed::descriptor()->full_name()) {
      parse(closed);
      a.apply(std::as_const(closed));
    } else {
      storage_failure(fmt::format("baseline: unknown event type '{}'", type));
    }
  }
};

}  // namespace annals_bench
