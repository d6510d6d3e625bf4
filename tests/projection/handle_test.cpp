// One store handle, opened once: the projection runner, a subscription, the application's
// sql_database and the subscription admin are built from it, share it, and read through its
// upcasters. Misuse (a store double, other upcasters, a read-only handle for a writer) is a
// clear error. Compiled once per backend (ANNALS_PROJECTIONS_ON_POSTGRES).
#include <doctest/doctest.h>

#include <annals/projection_runner.hpp>
#include <annals/sql_database.hpp>
#include <annals/subscription.hpp>

#include "account.hpp"
#include "projections.hpp"
#include "support/bank_events.hpp"
#include "support/forwarding_store.hpp"
#include "support/postgres.hpp"
#include "support/support.hpp"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace {

using annals::errc;
using annals::test::pg::store_location;
using annals::test::temp_dir;
using namespace annals::test::bank_events;

#ifdef ANNALS_PROJECTIONS_ON_POSTGRES
constexpr bool on_postgres = true;
#define HANDLE_SUITE "store handle (postgres)"
#else
constexpr bool on_postgres = false;
#define HANDLE_SUITE "store handle (sqlite)"
#endif

template <class T>
std::string message_of(const annals::result<T>& r) {
  return r.ok() ? "ok" : std::string(annals::to_string(r.error().kind())) + ": " +
                             r.error().message();
}

// The bank's store: its upcasters read bank.v1.AccountOpened as bank.v2.AccountOpened.
std::shared_ptr<annals::event_store> open_handle(const std::string& uri, bool read_only = false) {
  annals::sqlite_options o = bank::store_options();
  o.read_only = read_only;
  auto s = annals::open_store(uri, std::move(o));
  REQUIRE_MESSAGE(s.ok(), message_of(s));
  return std::move(s).value();
}

}  // namespace

TEST_SUITE(HANDLE_SUITE) {

TEST_CASE("a runner, a subscription and an sql_database built on one handle share it") {
  temp_dir dir;
  const store_location loc(dir.file("h.db"), on_postgres);
  auto store = open_handle(loc.path);
  const auto alone = store.use_count();
  // Stored as v1 (an older writer): only the store's upcasters make it a v2 event.
  REQUIRE(store->append("account-a", annals::expected_version::no_stream(),
                        {data_of(opened("a", "Ann Lee")), data_of(deposited("a", 700))})
              .ok());

  auto runner = annals::projection_runner::open(store, bank::projections());
  REQUIRE_MESSAGE(runner.ok(), message_of(runner));
  std::vector<std::string> types;
  auto sub = annals::subscription::open(
      store, "types", annals::subscription_handler([&](const annals::recorded_event& e) {
        types.push_back(e.type);
        return annals::result<void>{};
      }));
  REQUIRE_MESSAGE(sub.ok(), message_of(sub));
  auto db = annals::sql_database::open(store);
  REQUIRE_MESSAGE(db.ok(), message_of(db));
  auto admin = annals::subscription_admin::open(store);
  REQUIRE_MESSAGE(admin.ok(), message_of(admin));
  // The runner and the subscription read through this very store and keep it alive.
  CHECK(store.use_count() >= alone + 2);

  auto c = (*runner)->catch_up();
  REQUIRE_MESSAGE(c.ok(), message_of(c));
  auto row = bank::find_balance(**runner, "a");
  REQUIRE_MESSAGE(row.ok(), message_of(row));
  REQUIRE(row->has_value());
  CHECK((*row)->owner == "Ann Lee");  // the v2 event's owner, split and joined again
  CHECK((*row)->balance_cents == 700);

  REQUIRE((*sub)->catch_up().ok());
  CHECK(types == std::vector<std::string>{"bank.v2.AccountOpened", "bank.v1.MoneyDeposited"});
  auto listed = (*admin)->list();
  REQUIRE_MESSAGE(listed.ok(), message_of(listed));
  REQUIRE(listed->size() == 1);
  CHECK((*listed)[0].checkpoint == 2);

  // The application's own table, in the store's database, beside the events.
  auto w = (*db)->write([](annals::sql_tx& tx) -> annals::result<void> {
    if (auto r = tx.exec("CREATE TABLE IF NOT EXISTS app_notes (id TEXT PRIMARY KEY)", {}); !r)
      return r.error();
    if (auto r = tx.exec("INSERT INTO app_notes (id) VALUES (?1)", {"n1"}); !r) return r.error();
    return {};
  });
  REQUIRE_MESSAGE(w.ok(), message_of(w));

  // An append through the handle reaches the components at once.
  REQUIRE(store->append("account-a", annals::expected_version::exact(1),
                        {data_of(withdrawn("a", 200))})
              .ok());
  auto head = store->head_position();
  REQUIRE(head.ok());
  REQUIRE((*runner)->wait_for("account_balances", *head, std::chrono::seconds(10)).ok());
  row = bank::find_balance(**runner, "a");
  REQUIRE(row.ok());
  CHECK((*row)->balance_cents == 500);
  REQUIRE((*sub)->wait_for(*head, std::chrono::seconds(10)).ok());
  CHECK(types.size() == 3);

  // The components go; the handle stays the application's, and works.
  runner->reset();
  sub->reset();
  db->reset();
  admin->reset();
  CHECK(store.use_count() == alone);
  CHECK(store->stream_version("account-a").value() == 2);
}

TEST_CASE("components refuse a store double and a read-only handle") {
  temp_dir dir;
  const store_location loc(dir.file("h.db"), on_postgres);
  auto store = open_handle(loc.path);

  // A double reads and appends, but has no database for a component's bookkeeping.
  auto twin = std::make_shared<annals::test::forwarding_store>(*store);
  auto r1 = annals::projection_runner::open(twin, bank::projections());
  REQUIRE_FALSE(r1.ok());
  CHECK(r1.error().kind() == errc::invalid_argument);
  CHECK_MESSAGE(annals::test::contains(r1.error().message(), "store double"),
                r1.error().message());
  auto s1 = annals::subscription::open(
      twin, "s", annals::subscription_handler([](const annals::recorded_event&) {
        return annals::result<void>{};
      }));
  REQUIRE_FALSE(s1.ok());
  CHECK(s1.error().kind() == errc::invalid_argument);
  auto d1 = annals::sql_database::open(twin);
  REQUIRE_FALSE(d1.ok());
  CHECK(d1.error().kind() == errc::invalid_argument);

  // Upcasters are the store's (no component option takes any): the handle's own serve.
  CHECK(annals::projection_runner::open(store, bank::projections()).ok());

  // A read-only handle serves readers; writers are told why not.
  auto ro_store = open_handle(loc.path, true);
  auto r3 = annals::projection_runner::open(ro_store, bank::projections());
  REQUIRE_FALSE(r3.ok());
  CHECK(r3.error().kind() == errc::read_only);
  auto d3 = annals::sql_database::open(ro_store);
  REQUIRE_FALSE(d3.ok());
  CHECK(d3.error().kind() == errc::read_only);
  auto a3 = annals::subscription_admin::open_read_only(ro_store);
  REQUIRE_MESSAGE(a3.ok(), message_of(a3));
  CHECK((*a3)->list().ok());

  // Adopted with the database, the same double is accepted.
  CHECK(annals::projection_runner::open(annals::store_ref::adopt(twin, loc.path),
                                        bank::projections())
            .ok());

  // A null handle is an error, not a crash.
  auto r4 = annals::projection_runner::open(std::shared_ptr<annals::event_store>(),
                                            bank::projections());
  REQUIRE_FALSE(r4.ok());
  CHECK(r4.error().kind() == errc::invalid_argument);
  // Nor an sql_database on nothing (SQLite would open a private temporary database, and the
  // writes would vanish), nor adopt() without a store.
  auto d4 = annals::sql_database::open(std::shared_ptr<annals::event_store>());
  REQUIRE_FALSE(d4.ok());
  CHECK(d4.error().kind() == errc::invalid_argument);
  auto d5 = annals::sql_database::open("");
  REQUIRE_FALSE(d5.ok());
  CHECK(d5.error().kind() == errc::invalid_argument);
  auto r5 = annals::projection_runner::open(
      annals::store_ref::adopt(std::shared_ptr<annals::event_store>(), loc.path),
      bank::projections());
  REQUIRE_FALSE(r5.ok());
  CHECK(r5.error().kind() == errc::invalid_argument);
}

TEST_CASE("a store double adopted with a database drives a runner and a subscription") {
  temp_dir dir;
  const store_location loc(dir.file("h.db"), on_postgres);
  auto real = open_handle(loc.path);
  REQUIRE(real->append("account-d", annals::expected_version::no_stream(),
                       {data_of(opened("d", "Dee")), data_of(deposited("d", 300))})
              .ok());

  // Counts the reads of $all, and fails them on demand: the components read through it.
  struct watching_store : annals::test::forwarding_store {
    using forwarding_store::forwarding_store;
    std::atomic<int> reads{0};
    std::atomic<bool> broken{false};
    annals::result<std::int64_t> read_all(const annals::read_all_options& o,
                                          const annals::event_visitor& visit) override {
      ++reads;
      if (broken) return annals::error(errc::io, "the double's disk is gone");
      return forwarding_store::read_all(o, visit);
    }
  };
  auto twin = std::make_shared<watching_store>(*real);
  const auto adopted = annals::store_ref::adopt(twin, loc.path);

  auto runner = annals::projection_runner::open(adopted, bank::projections());
  REQUIRE_MESSAGE(runner.ok(), message_of(runner));
  std::vector<std::int64_t> seen;
  auto sub = annals::subscription::open(
      adopted, "adopted", annals::subscription_handler([&](const annals::recorded_event& e) {
        seen.push_back(e.position);
        return annals::result<void>{};
      }));
  REQUIRE_MESSAGE(sub.ok(), message_of(sub));

  REQUIRE((*runner)->catch_up().ok());
  auto row = bank::find_balance(**runner, "d");
  REQUIRE(row.ok());
  REQUIRE(row->has_value());
  CHECK((*row)->balance_cents == 300);
  REQUIRE((*sub)->catch_up().ok());
  CHECK(seen == std::vector<std::int64_t>{1, 2});
  CHECK(twin->reads.load() > 0);

  // The double's failure is the components' failure: they read nothing else.
  REQUIRE(real->append("account-d", annals::expected_version::exact(1),
                       {data_of(deposited("d", 5))})
              .ok());
  twin->broken = true;
  auto failed = (*sub)->catch_up();
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error().kind() == errc::io);
  CHECK(seen.size() == 2);
  twin->broken = false;
  REQUIRE((*sub)->catch_up().ok());
  CHECK(seen == std::vector<std::int64_t>{1, 2, 3});
}

}  // TEST_SUITE
