// Inline projections: updated in the same transaction as the append. Compiled twice:
// inline_projection_tests (SQLite) and inline_projection_pg_tests (PostgreSQL, a fresh
// database per case).
#include <doctest/doctest.h>

#include "account.hpp"
#include "projections.hpp"
#include "support/postgres.hpp"
#include "support/support.hpp"

#include <annals/projection_runner.hpp>

#include <atomic>
#include <thread>

namespace {

#ifdef ANNALS_PROJECTIONS_ON_POSTGRES
constexpr bool on_postgres = true;
#else
constexpr bool on_postgres = false;
#endif

struct poison_row {
  BOOST_HANA_DEFINE_STRUCT(poison_row, (std::string, account_id), (std::int64_t, cents));
  static constexpr std::string_view table = "inline_totals";
  static constexpr std::string_view key[] = {"account_id"};
};

// Sums deposits; refuses a deposit of exactly 666 cents.
struct inline_totals {
  static constexpr std::string_view name = "inline_totals";
  static constexpr int version = 1;
  using events = annals::event_list<bank::v1::MoneyDeposited>;
  using tables = annals::table_list<poison_row>;
  annals::result<void> handle(const bank::v1::MoneyDeposited& e, const annals::recorded_event&,
                              annals::sql_tx& tx) {
    if (e.amount_cents() == 666) return annals::error(annals::errc::rejected, "poison amount");
    auto cur = tx.find<poison_row>(e.account_id());
    if (!cur) return cur.error();
    poison_row r = cur->value_or(poison_row{e.account_id(), 0});
    r.cents += e.amount_cents();
    return tx.upsert(r);
  }
};

std::int64_t total(annals::projection_runner& runner, const std::string& id) {
  std::int64_t out = -1;
  auto r = runner.read([&](annals::sql_tx& tx) -> annals::result<void> {
    auto row = tx.find<poison_row>(id);
    if (!row) return row.error();
    if (*row) out = (*row)->cents;
    return {};
  });
  REQUIRE(r.ok());
  return out;
}

annals::result<annals::command_result> deposit(annals::event_store& s, const std::string& id,
                                               std::int64_t cents) {
  return annals::handle<bank::account>(s, bank::stream_for(id), [&](const bank::account& a) {
    return bank::deposit(a, id, cents);
  });
}

struct fixture {
  annals::test::temp_dir dir;
  annals::test::pg::store_location loc{dir.file("inline.db"), on_postgres};
  std::string path = loc.path;
  std::unique_ptr<annals::event_store> store;
  std::unique_ptr<annals::projection_runner> runner;
  fixture() {
    annals::sqlite_options o;
    o.inline_projections.push_back(annals::make_projection<inline_totals>());
    auto s = annals::open_store(path, o);
    REQUIRE_MESSAGE(s.ok(), s.error().message());
    store = std::move(s).value();
    auto r = annals::projection_runner::open(path, {annals::make_projection<inline_totals>()});
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    runner = std::move(r).value();
    REQUIRE(annals::handle<bank::account>(*store, bank::stream_for("a"), [](const bank::account& a) {
              return bank::open(a, "a", "Ann");
            }).ok());
  }
};

}  // namespace

TEST_CASE("an inline projection is up to date as soon as the append returns") {
  fixture f;
  for (int i = 1; i <= 5; ++i) {
    auto r = deposit(*f.store, "a", 100);
    REQUIRE(r.ok());
    CHECK(total(*f.runner, "a") == 100 * i);  // no catch_up, no wait
  }
  auto st = f.runner->status();
  REQUIRE(st.ok());
  CHECK(st->front().checkpoint == st->front().head);
}

TEST_CASE("an inline handler failure fails the append and writes nothing") {
  fixture f;
  REQUIRE(deposit(*f.store, "a", 100).ok());
  auto head = f.store->head_position();
  auto bad = deposit(*f.store, "a", 666);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().kind() == annals::errc::rejected);
  CHECK(bad.error().message().find("poison amount") != std::string::npos);
  CHECK(f.store->head_position().value() == head.value());  // the event was not stored
  CHECK(total(*f.runner, "a") == 100);
  REQUIRE(deposit(*f.store, "a", 1).ok());  // the store goes on
  CHECK(total(*f.runner, "a") == 101);
}

TEST_CASE("an inline projection catches up events appended by a store without it") {
  fixture f;
  {
    auto plain = annals::open_store(f.path);  // no inline projections
    REQUIRE(plain.ok());
    REQUIRE(deposit(**plain, "a", 7).ok());
    REQUIRE(deposit(**plain, "a", 8).ok());
  }
  CHECK(total(*f.runner, "a") == -1);  // nothing applied yet
  REQUIRE(deposit(*f.store, "a", 10).ok());
  CHECK(total(*f.runner, "a") == 25);  // 7 + 8 caught up inside the append, then 10
}

TEST_CASE("inline appends from many threads keep the model exact") {
  fixture f;
  constexpr int threads = 6, each = 25;
  std::atomic<std::int64_t> acknowledged{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < each; ++i) {
        if (deposit(*f.store, "a", 3).ok()) acknowledged += 3;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(acknowledged > 0);
  CHECK(total(*f.runner, "a") == acknowledged.load());
  // A rebuild from the log agrees with what inline mode built.
  annals::rebuild_options o;
  o.verify = true;
  auto v = f.runner->rebuild("inline_totals", o);
  REQUIRE_MESSAGE(v.ok(), v.error().message());
  CHECK(v->differences == 0);
}
