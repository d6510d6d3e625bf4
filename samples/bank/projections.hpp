// The bank sample's read side: three projections and the queries the CLI runs on them.
//
//   account_balances   one row per account: owner, balance, transaction count, opened/closed,
//                      last activity (typed find + upsert)
//   account_statement  one row per money movement (transfers included, with a memo) with the
//                      running balance (custom SQL on its own table through sql_tx::table, so
//                      it also works on rebuild shadows)
//   daily_totals       deposits and withdrawals per UTC day of the events' recorded_at (one
//                      custom INSERT ... ON CONFLICT DO UPDATE per event)
//
// Each projection only reads its own tables, so each can be rebuilt on its own.
#pragma once

#include <annals/projection.hpp>
#include <annals/projection_runner.hpp>

#include "bank/v1/events.pb.h"
#include "bank/v2/events.pb.h"

#include <boost/hana/define_struct.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace bank {

// ---- Rows ------------------------------------------------------------------------------------

struct balance_row {
  BOOST_HANA_DEFINE_STRUCT(balance_row,
                           (std::string, account_id),
                           (std::string, owner),
                           (std::int64_t, balance_cents),
                           (std::int64_t, transaction_count),  // deposits + withdrawals
                           (bool, opened),
                           (bool, closed),
                           (std::int64_t, opened_at_us),
                           (std::int64_t, last_activity_us),  // recorded_at of the last event
                           (std::optional<std::int64_t>, closed_at_us));
  static constexpr std::string_view table = "account_balances";
  static constexpr std::string_view key[] = {"account_id"};
  friend bool operator==(const balance_row&, const balance_row&) = default;
};

struct statement_row {
  BOOST_HANA_DEFINE_STRUCT(statement_row,
                           (std::string, account_id),
                           (std::int64_t, stream_version),
                           (std::int64_t, recorded_at_us),
                           // "deposit", "withdrawal", "transfer in", "transfer out", "refund"
                           (std::string, kind),
                           (std::int64_t, amount_cents),
                           (std::int64_t, balance_after_cents),
                           // for transfers: "transfer 't1' to 'acc-2'"; empty otherwise
                           (std::string, memo));
  static constexpr std::string_view table = "account_statement";
  static constexpr std::string_view key[] = {"account_id", "stream_version"};
  friend bool operator==(const statement_row&, const statement_row&) = default;
};

struct daily_totals_row {
  BOOST_HANA_DEFINE_STRUCT(daily_totals_row,
                           (std::string, day),  // "YYYY-MM-DD", UTC
                           (std::int64_t, deposits_cents),
                           (std::int64_t, withdrawals_cents),
                           (std::int64_t, deposit_count),
                           (std::int64_t, withdrawal_count));
  static constexpr std::string_view table = "daily_totals";
  static constexpr std::string_view key[] = {"day"};
  friend bool operator==(const daily_totals_row&, const daily_totals_row&) = default;
};

// ---- Projections -----------------------------------------------------------------------------

struct account_balances {
  static constexpr std::string_view name = "account_balances";
  static constexpr int version = 1;
  using events = annals::event_list<v2::AccountOpened, v1::MoneyDeposited, v1::MoneyWithdrawn,
                                    v1::AccountClosed>;
  using tables = annals::table_list<balance_row>;

  annals::result<void> handle(const v2::AccountOpened& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
  annals::result<void> handle(const v1::MoneyDeposited& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
  annals::result<void> handle(const v1::MoneyWithdrawn& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
  annals::result<void> handle(const v1::AccountClosed& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
};

struct account_statement {
  static constexpr std::string_view name = "account_statement";
  // 2: transfers (kinds "transfer in", "transfer out", "refund", and the memo column).
  static constexpr int version = 2;
  using events = annals::event_list<v1::MoneyDeposited, v1::MoneyWithdrawn>;
  using tables = annals::table_list<statement_row>;

  annals::result<void> handle(const v1::MoneyDeposited& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
  annals::result<void> handle(const v1::MoneyWithdrawn& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
};

struct daily_totals {
  static constexpr std::string_view name = "daily_totals";
  static constexpr int version = 1;
  using events = annals::event_list<v1::MoneyDeposited, v1::MoneyWithdrawn>;
  using tables = annals::table_list<daily_totals_row>;

  annals::result<void> handle(const v1::MoneyDeposited& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
  annals::result<void> handle(const v1::MoneyWithdrawn& e, const annals::recorded_event& m,
                              annals::sql_tx& tx);
};

// The three projections, for projection_runner::open.
annals::projection_list projections();

// "YYYY-MM-DD" of a UTC time in microseconds since the Unix epoch (proleptic Gregorian).
std::string utc_day(std::int64_t us);

// A runner for the three projections on a store: a handle (bank::open_store's, with the bank's
// upcasters), or "PATH", "sqlite:PATH" or "postgresql://..." opened with the bank's upcasters
// (never created: not_found).
annals::result<std::unique_ptr<annals::projection_runner>> open_read_models(
    annals::store_ref store, annals::runner_options options = {});

// ---- Queries (each one consistent snapshot of the read models) -------------------------------

// The account's row, or nullopt when the read model has no such account (yet).
annals::result<std::optional<balance_row>> find_balance(annals::projection_runner& runner,
                                                        std::string_view account);
// Every account in id order; visit returns false to stop. Returns rows visited.
annals::result<std::int64_t> read_balances(annals::projection_runner& runner,
                                           const std::function<bool(const balance_row&)>& visit);
// The account's money movements in stream-version order; visit returns false to stop.
// Returns rows visited (0: no movement, or no such account).
annals::result<std::int64_t> read_statement(
    annals::projection_runner& runner, std::string_view account,
    const std::function<bool(const statement_row&)>& visit);
// Every day in date order; visit returns false to stop. Returns rows visited.
annals::result<std::int64_t> read_daily_totals(
    annals::projection_runner& runner, const std::function<bool(const daily_totals_row&)>& visit);

}  // namespace bank
