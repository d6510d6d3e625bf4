// The bank sample's read models: account_balances, account_statement (running balances) and
// daily_totals, built by a projection_runner from events appended with annals::handle; a
// rebuild gives identical rows, and repairs a damaged model.
#include <doctest/doctest.h>

#include <annals/command.hpp>
#include <annals/projection_runner.hpp>

#include "account.hpp"
#include "projections.hpp"
#include "support/support.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace doctest {
template <>
struct StringMaker<bank::balance_row> {
  static String convert(const bank::balance_row& r) {
    return fmt::format("{{{} owner={} balance={} count={} opened={} closed={} opened_at={} "
                       "last={} closed_at={}}}",
                       r.account_id, r.owner, r.balance_cents, r.transaction_count, r.opened,
                       r.closed, r.opened_at_us, r.last_activity_us,
                       r.closed_at_us ? std::to_string(*r.closed_at_us) : "NULL")
        .c_str();
  }
};
template <>
struct StringMaker<bank::statement_row> {
  static String convert(const bank::statement_row& r) {
    return fmt::format("{{{} v{} at={} {} {} after={}}}", r.account_id, r.stream_version,
                       r.recorded_at_us, r.kind, r.amount_cents, r.balance_after_cents)
        .c_str();
  }
};
template <>
struct StringMaker<bank::daily_totals_row> {
  static String convert(const bank::daily_totals_row& r) {
    return fmt::format("{{{} deposits={}x{} withdrawals={}x{}}}", r.day, r.deposits_cents,
                       r.deposit_count, r.withdrawals_cents, r.withdrawal_count)
        .c_str();
  }
};
}  // namespace doctest

namespace {

constexpr std::int64_t hour_us = 3'600'000'000;
// 2024-02-28T00:00:00Z: the next day is a leap day.
constexpr std::int64_t feb28_us = 1'709'078'400'000'000;

// A store whose clock the test sets, and a runner with the three bank projections.
struct bank_fixture {
  annals::test::temp_dir dir;
  std::string path = dir.file("bank.db");
  std::int64_t now_us = feb28_us;
  std::unique_ptr<annals::event_store> store;
  std::unique_ptr<annals::projection_runner> runner;

  explicit bank_fixture(annals::runner_options o = {}) {
    annals::sqlite_options so = bank::store_options();  // with the bank's upcasters
    so.clock = [this] { return now_us; };
    auto s = annals::open_sqlite_store(path, std::move(so));
    REQUIRE_MESSAGE(s.ok(), s.error().message());
    store = std::move(s).value();
    auto r = bank::open_read_models(path, o);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    runner = std::move(r).value();
  }

  template <class Decide>
  annals::result<annals::command_result> command(const std::string& id, Decide&& decide) {
    return annals::handle<bank::account>(*store, bank::stream_for(id),
                                         std::forward<Decide>(decide));
  }
  void open(const std::string& id, const std::string& owner) {
    auto r = command(id, [&](const bank::account& a) { return bank::open(a, id, owner); });
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }
  void deposit(const std::string& id, std::int64_t cents) {
    auto r = command(id, [&](const bank::account& a) { return bank::deposit(a, id, cents); });
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }
  void withdraw(const std::string& id, std::int64_t cents) {
    auto r = command(id, [&](const bank::account& a) { return bank::withdraw(a, id, cents); });
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }
  void close(const std::string& id) {
    auto r = command(id, [&](const bank::account& a) { return bank::close(a, id); });
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }

  void catch_up() {
    auto r = runner->catch_up();
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }

  template <class Row>
  std::vector<Row> rows() {
    std::vector<Row> out;
    auto r = runner->read([&](annals::sql_tx& tx) -> annals::result<void> {
      auto n = tx.template select<Row>({}, {}, [&](const Row& row) {
        out.push_back(row);
        return true;
      });
      if (!n) return n.error();
      return {};
    });
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    return out;
  }
  std::vector<bank::statement_row> statement(std::string_view id) {
    std::vector<bank::statement_row> out;
    auto n = bank::read_statement(*runner, id, [&](const bank::statement_row& row) {
      out.push_back(row);
      return true;
    });
    REQUIRE_MESSAGE(n.ok(), n.error().message());
    CHECK(*n == static_cast<std::int64_t>(out.size()));
    return out;
  }
  bank::balance_row balance(std::string_view id) {
    auto b = bank::find_balance(*runner, id);
    REQUIRE_MESSAGE(b.ok(), b.error().message());
    REQUIRE_MESSAGE(b->has_value(), "no balance row for ", id);
    return **b;
  }

  struct snapshot {
    std::vector<bank::balance_row> balances;
    std::vector<bank::statement_row> statement;
    std::vector<bank::daily_totals_row> days;
  };
  snapshot all() {
    return {rows<bank::balance_row>(), rows<bank::statement_row>(),
            rows<bank::daily_totals_row>()};
  }
};

template <class Row>
void check_same(const std::vector<Row>& got, const std::vector<Row>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == want[i]);
}

void check_same(const bank_fixture::snapshot& got, const bank_fixture::snapshot& want) {
  check_same(got.balances, want.balances);
  check_same(got.statement, want.statement);
  check_same(got.days, want.days);
}

// alice and bob over two days, crossing midnight by a microsecond; bob's account is closed.
struct two_days {
  std::int64_t t_open = feb28_us + 10 * hour_us;
  std::int64_t t_midnight = feb28_us + 24 * hour_us;  // 2024-02-29T00:00:00Z
  std::int64_t t_close = feb28_us + 48 * hour_us + 5;  // 2024-03-01

  void run(bank_fixture& f) const {
    f.now_us = t_open;
    f.open("alice", "Alice Liddell");
    f.deposit("alice", 100'00);
    f.open("bob", "Bob Dylan");
    f.deposit("bob", 50'00);
    f.now_us = t_midnight - 1;
    f.withdraw("alice", 30'00);
    f.now_us = t_midnight;
    f.deposit("alice", 5'25);
    f.withdraw("bob", 50'00);
    f.now_us = t_close;
    f.close("bob");
  }

  void check(bank_fixture& f) const {
    auto alice = f.balance("alice");
    CHECK(alice.owner == "Alice Liddell");
    CHECK(alice.balance_cents == 75'25);
    CHECK(alice.transaction_count == 3);
    CHECK(alice.opened);
    CHECK_FALSE(alice.closed);
    CHECK(alice.opened_at_us == t_open);
    CHECK(alice.last_activity_us == t_midnight);
    CHECK_FALSE(alice.closed_at_us.has_value());

    auto bob = f.balance("bob");
    CHECK(bob.owner == "Bob Dylan");
    CHECK(bob.balance_cents == 0);
    CHECK(bob.transaction_count == 2);
    CHECK(bob.opened);
    CHECK(bob.closed);
    CHECK(bob.opened_at_us == t_open);
    CHECK(bob.last_activity_us == t_close);
    CHECK(bob.closed_at_us == std::optional<std::int64_t>(t_close));

    auto st = f.statement("alice");
    REQUIRE(st.size() == 3);
    CHECK(st[0] == bank::statement_row{"alice", 1, t_open, "deposit", 100'00, 100'00, ""});
    CHECK(st[1] == bank::statement_row{"alice", 2, t_midnight - 1, "withdrawal", 30'00, 70'00, ""});
    CHECK(st[2] == bank::statement_row{"alice", 3, t_midnight, "deposit", 5'25, 75'25, ""});
    auto bst = f.statement("bob");
    REQUIRE(bst.size() == 2);
    CHECK(bst[0] == bank::statement_row{"bob", 1, t_open, "deposit", 50'00, 50'00, ""});
    CHECK(bst[1] == bank::statement_row{"bob", 2, t_midnight, "withdrawal", 50'00, 0, ""});

    auto days = f.rows<bank::daily_totals_row>();
    REQUIRE(days.size() == 2);
    CHECK(days[0] == bank::daily_totals_row{"2024-02-28", 150'00, 30'00, 2, 1});
    CHECK(days[1] == bank::daily_totals_row{"2024-02-29", 5'25, 50'00, 1, 1});
    std::vector<bank::daily_totals_row> read;
    auto n = bank::read_daily_totals(*f.runner, [&](const bank::daily_totals_row& r) {
      read.push_back(r);
      return true;
    });
    REQUIRE(n.ok());
    CHECK(*n == 2);
    check_same(read, days);
  }
};

// Random deposits and withdrawals on a few accounts over several days; a few closes.
void random_workload(bank_fixture& f, int commands, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int accounts = 5;
  for (int i = 0; i < accounts; ++i) f.open(fmt::format("acc-{}", i), fmt::format("Owner {}", i));
  for (int i = 0; i < commands; ++i) {
    f.now_us += static_cast<std::int64_t>(rng() % (3 * hour_us));
    std::string id = fmt::format("acc-{}", rng() % accounts);
    std::int64_t cents = 1 + static_cast<std::int64_t>(rng() % 500'00);
    bool deposit = rng() % 2 == 0;
    auto r = f.command(id, [&](const bank::account& a) {
      return deposit ? bank::deposit(a, id, cents) : bank::withdraw(a, id, cents);
    });
    REQUIRE((r.ok() || r.error().kind() == annals::errc::rejected));
  }
  // Empty and close the first account.
  auto a = annals::load<bank::account>(*f.store, bank::stream_for("acc-0"));
  REQUIRE(a.ok());
  if (a->state.balance_cents > 0) f.withdraw("acc-0", a->state.balance_cents);
  f.close("acc-0");
}

}  // namespace

TEST_CASE("utc_day formats UTC calendar days, leap days and times before 1970") {
  CHECK(bank::utc_day(0) == "1970-01-01");
  CHECK(bank::utc_day(-1) == "1969-12-31");
  CHECK(bank::utc_day(feb28_us) == "2024-02-28");
  CHECK(bank::utc_day(feb28_us + 24 * hour_us - 1) == "2024-02-28");
  CHECK(bank::utc_day(feb28_us + 24 * hour_us) == "2024-02-29");
  CHECK(bank::utc_day(feb28_us + 48 * hour_us) == "2024-03-01");
  CHECK(bank::utc_day(951'782'400'000'000) == "2000-02-29");
  CHECK(bank::utc_day(253'402'300'799'999'999) == "9999-12-31");
}

TEST_CASE("catch-up builds balances, statements with running balances, and daily totals") {
  bank_fixture f;
  two_days scenario;
  scenario.run(f);
  f.catch_up();
  scenario.check(f);

  auto none = bank::find_balance(*f.runner, "nobody");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  CHECK(f.statement("nobody").empty());
}

TEST_CASE("running balances continue across catch-ups and stop when the visitor says so") {
  bank_fixture f;
  f.open("carol", "Carol");
  f.deposit("carol", 10'00);
  f.catch_up();
  f.withdraw("carol", 2'50);
  f.catch_up();
  f.deposit("carol", 1);
  f.catch_up();
  auto st = f.statement("carol");
  REQUIRE(st.size() == 3);
  CHECK(st[0].balance_after_cents == 10'00);
  CHECK(st[1].balance_after_cents == 7'50);
  CHECK(st[2].balance_after_cents == 7'51);
  CHECK(f.balance("carol").balance_cents == 7'51);

  int seen = 0;
  auto n = bank::read_statement(*f.runner, "carol", [&](const bank::statement_row&) {
    return ++seen < 2;
  });
  REQUIRE(n.ok());
  CHECK(seen == 2);
}

TEST_CASE("the read models agree with the aggregates, and a rebuild gives identical rows") {
  annals::runner_options o;
  o.batch_size = 64;  // several catch-up transactions
  bank_fixture f(o);
  random_workload(f, 600, 42);
  f.catch_up();
  auto before = f.all();
  REQUIRE(before.balances.size() == 5);
  REQUIRE(before.days.size() > 10);

  // Each balance equals the aggregate's, and the statement's last running balance.
  std::int64_t deposits = 0, withdrawals = 0, movements = 0;
  for (const auto& b : before.balances) {
    auto a = annals::load<bank::account>(*f.store, bank::stream_for(b.account_id));
    REQUIRE(a.ok());
    CHECK(b.balance_cents == a->state.balance_cents);
    CHECK(b.closed == a->state.closed);
    auto st = f.statement(b.account_id);
    CHECK(static_cast<std::int64_t>(st.size()) == b.transaction_count);
    std::int64_t running = 0;
    for (const auto& s : st) {
      running += s.kind == "deposit" ? s.amount_cents : -s.amount_cents;
      CHECK(s.balance_after_cents == running);
      CHECK(s.balance_after_cents >= 0);
      (s.kind == "deposit" ? deposits : withdrawals) += s.amount_cents;
      ++movements;
    }
    if (!st.empty()) CHECK(st.back().balance_after_cents == b.balance_cents);
  }
  std::int64_t day_deposits = 0, day_withdrawals = 0, day_movements = 0;
  for (const auto& d : before.days) {
    day_deposits += d.deposits_cents;
    day_withdrawals += d.withdrawals_cents;
    day_movements += d.deposit_count + d.withdrawal_count;
  }
  CHECK(day_deposits == deposits);
  CHECK(day_withdrawals == withdrawals);
  CHECK(day_movements == movements);

  // --verify finds nothing to report; a real rebuild (small batches) swaps in the same rows.
  for (auto name : {bank::account_balances::name, bank::account_statement::name,
                    bank::daily_totals::name}) {
    CAPTURE(name);
    annals::rebuild_options verify;
    verify.verify = true;
    verify.batch_size = 97;
    std::vector<std::string> lines;
    verify.difference = [&](std::string_view l) { lines.emplace_back(l); };
    auto v = f.runner->rebuild(name, verify);
    REQUIRE_MESSAGE(v.ok(), v.error().message());
    CHECK_FALSE(v->swapped);
    CHECK(v->differences == 0);
    CHECK(lines.empty());

    annals::rebuild_options ro;
    ro.batch_size = 97;
    auto r = f.runner->rebuild(name, ro);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(r->swapped);
    CHECK(r->events > 0);
  }
  check_same(f.all(), before);
}

TEST_CASE("a rebuild replaces a damaged model, reading only its own shadow table") {
  bank_fixture f;
  two_days scenario;
  scenario.run(f);
  f.catch_up();

  // Damage the live statement. If the handler read the live table instead of the shadow one
  // (tx.table), the rebuilt running balances would carry the damage.
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    char* err = nullptr;
    int rc = sqlite3_exec(db,
                          "UPDATE account_statement SET balance_after_cents = "
                          "balance_after_cents + 1000000",
                          nullptr, nullptr, &err);
    std::string message = err ? err : "";
    sqlite3_free(err);
    CHECK(sqlite3_changes(db) == 5);
    sqlite3_close(db);
    REQUIRE_MESSAGE(rc == SQLITE_OK, message);
  }
  CHECK(f.statement("alice")[0].balance_after_cents == 100'00 + 1000000);

  annals::rebuild_options verify;
  verify.verify = true;
  std::vector<std::string> lines;
  verify.difference = [&](std::string_view l) { lines.emplace_back(l); };
  auto v = f.runner->rebuild(bank::account_statement::name, verify);
  REQUIRE_MESSAGE(v.ok(), v.error().message());
  CHECK_FALSE(v->swapped);
  CHECK(v->differences > 0);
  CHECK_FALSE(lines.empty());
  CHECK(f.statement("alice")[0].balance_after_cents == 100'00 + 1000000);  // not swapped

  auto r = f.runner->rebuild(bank::account_statement::name);
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->swapped);
  CHECK(r->events == 5);  // the statement lists only money movements
  scenario.check(f);
}

TEST_CASE("a money event for an account never opened parks the event in account_balances") {
  annals::runner_options o;
  o.retry_backoff = std::chrono::milliseconds(1);
  bank_fixture f(o);
  f.open("dave", "Dave");
  bank::v1::MoneyDeposited e;
  e.set_account_id("ghost");
  e.set_amount_cents(1);
  annals::event_data d;
  d.type = e.GetDescriptor()->full_name();
  d.payload = e.SerializeAsString();
  auto a = f.store->append(bank::stream_for("ghost"), annals::expected_version::any(), {d});
  REQUIRE(a.ok());
  f.catch_up();

  auto status = f.runner->status();
  REQUIRE(status.ok());
  bool seen = false;
  for (const auto& s : *status) {
    if (s.name != bank::account_balances::name) continue;
    seen = true;
    CHECK(s.state == annals::consumer_state::stuck);
    CHECK(s.stuck_position == a->position);
    CHECK_MESSAGE(s.error.find("never opened") != std::string::npos, s.error);
  }
  CHECK(seen);
  auto parked = f.runner->parked(bank::account_balances::name);
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK((*parked)[0].position == a->position);
  CHECK(f.balance("dave").balance_cents == 0);
}
