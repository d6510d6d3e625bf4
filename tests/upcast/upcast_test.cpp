// Upcasters end to end: chains run on every read, before aggregates (load and handle) and
// projections (runner catch-up, rebuild, inline) see an event; type filters find the old stored
// types; an old payload that does not decode is corruption, never skipped. And the bank's own
// evolution: bank.v1.AccountOpened read as bank.v2.AccountOpened.
#include <doctest/doctest.h>

#include <annals/command.hpp>
#include <annals/projection_runner.hpp>
#include <annals/schema.hpp>
#include <annals/upcaster.hpp>

#include "account.hpp"
#include "projections.hpp"
#include "support/bank_events.hpp"
#include "support/support.hpp"

#include <boost/hana/define_struct.hpp>

#include <cctype>
#include <optional>
#include <string>
#include <vector>

namespace {

using annals::errc;
using annals::test::temp_dir;
using namespace annals::test::bank_events;
namespace v1 = bank::v1;
namespace v2 = bank::v2;

// A history with three stored shapes of a deposit: schema version 1 (amounts in whole units,
// account ids upper case), 2 (cents, ids upper case) and 3 (current). Two steps chain from 1.
std::shared_ptr<const annals::upcasters> test_upcasters() {
  auto up = std::make_shared<annals::upcasters>();
  up->add<v1::MoneyDeposited, v1::MoneyDeposited>(1, 2, [](const v1::MoneyDeposited& old) {
    v1::MoneyDeposited e = old;
    e.set_amount_cents(old.amount_cents() * 100);
    return e;
  });
  up->add<v1::MoneyDeposited, v1::MoneyDeposited>(2, 3, [](const v1::MoneyDeposited& old) {
    v1::MoneyDeposited e = old;
    std::string id = old.account_id();
    for (auto& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    e.set_account_id(id);
    return e;
  });
  // The rename: the bank's step.
  up->add<v1::AccountOpened, v2::AccountOpened>(
      std::numeric_limits<std::int32_t>::max(), 1, [](const v1::AccountOpened& old) {
        v2::AccountOpened e;
        e.set_account_id(old.account_id());
        *e.mutable_owner() = bank::split_name(old.owner());
        return e;
      });
  return up;
}

v2::AccountOpened opened_v2(const std::string& id, const std::string& given) {
  v2::AccountOpened e;
  e.set_account_id(id);
  e.mutable_owner()->set_given(given);
  return e;
}

annals::event_data at_version(const google::protobuf::Message& m, std::int32_t version) {
  auto d = data_of(m);
  d.metadata.schema_version = version;
  return d;
}

// Lists only the current types.
struct ledger {
  using events = annals::event_list<v2::AccountOpened, v1::MoneyDeposited, v1::AccountClosed>;
  void apply(const v2::AccountOpened& e) {
    family = e.owner().family();
    given = e.owner().given();
  }
  void apply(const v1::MoneyDeposited& e) {
    balance += e.amount_cents();
    ids.push_back(e.account_id());
  }
  void apply(const v1::AccountClosed&) { closed = true; }
  std::string given, family;
  std::int64_t balance = 0;
  std::vector<std::string> ids;
  bool closed = false;
};

struct deposit_row {
  BOOST_HANA_DEFINE_STRUCT(deposit_row, (std::string, account_id), (std::string, family),
                           (std::int64_t, cents), (std::int64_t, deposits));
  static constexpr std::string_view table = "upcast_deposits";
  static constexpr std::string_view key[] = {"account_id"};
};

struct deposits {
  static constexpr std::string_view name = "upcast_deposits";
  static constexpr int version = 1;
  using events = annals::event_list<v2::AccountOpened, v1::MoneyDeposited>;
  using tables = annals::table_list<deposit_row>;
  annals::result<void> handle(const v2::AccountOpened& e, const annals::recorded_event&,
                              annals::sql_tx& tx) {
    return tx.upsert(deposit_row{e.account_id(), e.owner().family(), 0, 0});
  }
  annals::result<void> handle(const v1::MoneyDeposited& e, const annals::recorded_event&,
                              annals::sql_tx& tx) {
    auto row = tx.find<deposit_row>(e.account_id());
    if (!row) return row.error();
    if (!*row) return annals::error(errc::corruption, "deposit before opening: " + e.account_id());
    (*row)->cents += e.amount_cents();
    ++(*row)->deposits;
    return tx.upsert(**row);
  }
};

struct fixture {
  temp_dir dir;
  std::string path = dir.file("up.db");
  std::shared_ptr<annals::event_store> store;

  explicit fixture(annals::sqlite_options o = {}) {
    if (!o.upcast) o.upcast = test_upcasters();
    auto s = annals::open_sqlite_store(path, std::move(o));
    REQUIRE_MESSAGE(s.ok(), s.error().message());
    store = std::move(s).value();
  }
  // "acc-1" opened as v1 (one string owner), deposits at schema versions 1, 2 and 3:
  // 5 units (500 cents), 70 cents, 9 cents; ids upper case before version 3.
  void old_history() {
    auto r = store->append("acc-1", annals::expected_version::no_stream(),
                           {at_version(opened("acc-1", "Ann Marie Smith"), 1),
                            at_version(deposited("ACC-1", 5), 1),
                            at_version(deposited("ACC-1", 70), 2),
                            at_version(deposited("acc-1", 9), 3)});
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }
  // On the handle: the runner reads through the store's upcasters.
  std::unique_ptr<annals::projection_runner> runner() {
    auto r = annals::projection_runner::open(store, {annals::make_projection<deposits>()});
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    return std::move(r).value();
  }
};

std::optional<deposit_row> row_of(annals::projection_runner& runner, const std::string& id) {
  std::optional<deposit_row> out;
  auto r = runner.read([&](annals::sql_tx& tx) -> annals::result<void> {
    auto row = tx.find<deposit_row>(id);
    if (!row) return row.error();
    out = *row;
    return {};
  });
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  return out;
}

}  // namespace

TEST_CASE("load runs each event's upcaster chain before apply: multi-step, partial and rename") {
  fixture f;
  f.old_history();
  auto l = annals::load<ledger>(*f.store, "acc-1");
  REQUIRE_MESSAGE(l.ok(), l.error().message());
  CHECK(l->version == 3);
  CHECK(l->state.given == "Ann Marie");
  CHECK(l->state.family == "Smith");
  CHECK(l->state.balance == 500 + 70 + 9);
  CHECK(l->state.ids == std::vector<std::string>{"acc-1", "acc-1", "acc-1"});
}

TEST_CASE("the stored bytes never change: a store without upcasters reads the old events") {
  fixture f;
  f.old_history();
  annals::sqlite_options plain;
  auto other = annals::open_sqlite_store(f.path, plain);
  REQUIRE(other.ok());
  std::vector<annals::recorded_event> seen;
  REQUIRE((*other)->read_stream("acc-1", {}, [&](const annals::recorded_event& e) {
    seen.push_back(e);
    return true;
  }).ok());
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].type == "bank.v1.AccountOpened");
  CHECK(seen[0].metadata.schema_version == 1);
  v1::MoneyDeposited d;
  REQUIRE(d.ParseFromString(seen[1].payload));
  CHECK(d.amount_cents() == 5);
  CHECK(d.account_id() == "ACC-1");
  // The upcasting store reports the upcast type and version.
  std::vector<annals::recorded_event> upcast;
  REQUIRE(f.store->read_stream("acc-1", {}, [&](const annals::recorded_event& e) {
    upcast.push_back(e);
    return true;
  }).ok());
  CHECK(upcast[0].type == "bank.v2.AccountOpened");
  CHECK(upcast[0].metadata.schema_version == 1);
  CHECK(upcast[1].metadata.schema_version == 3);
  CHECK(upcast[2].metadata.schema_version == 3);
  CHECK(upcast[3].metadata.schema_version == 3);
}

TEST_CASE("handle decides on the upcast state") {
  fixture f;
  f.old_history();
  auto r = annals::handle<ledger>(*f.store, "acc-1", [](const ledger& s) {
    if (s.balance != 579 || s.family != "Smith") {
      return annals::decision<ledger>::reject("saw " + std::to_string(s.balance));
    }
    return annals::decision<ledger>::emit(closed("acc-1"));
  });
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->stream_version == 4);
  auto l = annals::load<ledger>(*f.store, "acc-1");
  REQUIRE(l.ok());
  CHECK(l->state.closed);
}

TEST_CASE("read_all filtered by a current type finds the old stored types, upcast") {
  fixture f;
  f.old_history();
  REQUIRE(f.store->append("acc-2", annals::expected_version::no_stream(),
                          {data_of(opened_v2("acc-2", "Bo")), data_of(deposited("acc-2", 1))})
              .ok());
  std::vector<std::string> types;
  annals::read_all_options o;
  o.event_types = {"bank.v2.AccountOpened"};
  auto n = f.store->read_all(o, [&](const annals::recorded_event& e) {
    types.push_back(e.type + "@" + e.stream_id);
    return true;
  });
  REQUIRE(n.ok());
  CHECK(*n == 2);
  CHECK(types == std::vector<std::string>{"bank.v2.AccountOpened@acc-1",
                                          "bank.v2.AccountOpened@acc-2"});
  // Filtering by the old type finds nothing: every such event is read as the new type.
  o.event_types = {"bank.v1.AccountOpened"};
  auto none = f.store->read_all(o, [&](const annals::recorded_event&) { return true; });
  REQUIRE(none.ok());
  CHECK(*none == 0);
}

TEST_CASE("a page whose rows upcasting drops does not end a bounded read of $all early") {
  // Filtering by both v1 types selects both, but every AccountOpened is read as v2 and dropped:
  // half of each page is dropped. A bounded read (as a runner's batch) must still fill up.
  fixture f;
  std::vector<annals::event_data> events;
  for (int i = 0; i < 3000; ++i) {
    events.push_back(at_version(opened("a" + std::to_string(i), "A B"), 1));
    events.push_back(at_version(deposited("a" + std::to_string(i), 1), 3));
  }
  REQUIRE(f.store->append("many", annals::expected_version::no_stream(), std::move(events)).ok());
  annals::read_all_options o;
  o.event_types = {"bank.v1.AccountOpened", "bank.v1.MoneyDeposited"};
  o.max_count = 1000;
  std::int64_t last = 0;
  auto n = f.store->read_all(o, [&](const annals::recorded_event& e) {
    CHECK(e.type == "bank.v1.MoneyDeposited");
    last = e.position;
    return true;
  });
  REQUIRE(n.ok());
  CHECK(*n == 1000);
  CHECK(last == 2000);
  o.max_count = INT64_MAX;
  o.from_position = 1;
  auto all = f.store->read_all(o, [](const annals::recorded_event&) { return true; });
  REQUIRE(all.ok());
  CHECK(*all == 3000);
}

TEST_CASE("same-type steps need declared schema versions: a fresh store stamps the declared one") {
  // test_upcasters() treats MoneyDeposited at versions 1 and 2 as old shapes; today's shape is
  // version 3. Declared, version 3 is the number in every store, so new events are not upcast.
  auto amount_read_back = [](fixture& f, std::int32_t declared) {
    auto r = annals::register_event_types(
        *f.store, {{v1::MoneyDeposited::descriptor(), annals::compatibility::backward, declared}});
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    REQUIRE(f.store->append("d", annals::expected_version::any(), {data_of(deposited("d", 7))})
                .ok());
    std::int64_t cents = -1;
    std::int32_t version = -1;
    REQUIRE(f.store->read_stream("d", {}, [&](const annals::recorded_event& e) {
      v1::MoneyDeposited m;
      REQUIRE(m.ParseFromString(e.payload));
      cents = m.amount_cents();
      version = e.metadata.schema_version;
      return true;
    }).ok());
    return std::pair{cents, version};
  };
  fixture declared;
  CHECK(amount_read_back(declared, 3) == std::pair<std::int64_t, std::int32_t>{7, 3});
  // Numbered by the store instead, today's descriptor becomes version 1 in a fresh store, and
  // the step written for version-1 events runs on new ones: what declaring prevents.
  fixture numbered;
  CHECK(amount_read_back(numbered, 0) == std::pair<std::int64_t, std::int32_t>{700, 3});
}

TEST_CASE("a projection runner upcasts in catch-up and in rebuild") {
  fixture f;
  f.old_history();
  auto runner = f.runner();
  auto c = runner->catch_up();
  REQUIRE_MESSAGE(c.ok(), c.error().message());
  auto row = row_of(*runner, "acc-1");
  REQUIRE(row.has_value());
  CHECK(row->family == "Smith");
  CHECK(row->cents == 579);
  CHECK(row->deposits == 3);

  auto rb = runner->rebuild("upcast_deposits");
  REQUIRE_MESSAGE(rb.ok(), rb.error().message());
  CHECK(rb->events == 4);
  row = row_of(*runner, "acc-1");
  REQUIRE(row.has_value());
  CHECK(row->cents == 579);
  CHECK(row->deposits == 3);
}

TEST_CASE("an inline projection sees upcast events") {
  annals::sqlite_options o;
  o.inline_projections = {annals::make_projection<deposits>()};
  fixture f(o);
  f.old_history();
  auto runner = f.runner();
  auto row = row_of(*runner, "acc-1");  // no catch-up: written inside the append
  REQUIRE(row.has_value());
  CHECK(row->family == "Smith");
  CHECK(row->cents == 579);
}

TEST_CASE("an old payload that does not decode is corruption, never skipped") {
  fixture f;
  annals::event_data bad;
  bad.type = "bank.v1.MoneyDeposited";
  bad.payload = std::string("\x0a\xff\xff", 3);  // a length running past the end
  bad.metadata.schema_version = 1;
  REQUIRE(f.store->append("acc-1", annals::expected_version::any(),
                          {at_version(opened("acc-1", "Ann"), 1), bad}).ok());

  auto l = annals::load<ledger>(*f.store, "acc-1");
  REQUIRE_FALSE(l.ok());
  CHECK(l.error().kind() == errc::corruption);
  CHECK_MESSAGE(l.error().message().find("does not decode") != std::string::npos,
                l.error().message());

  auto all = f.store->read_all({}, [](const annals::recorded_event&) { return true; });
  REQUIRE_FALSE(all.ok());
  CHECK(all.error().kind() == errc::corruption);

  auto runner = f.runner();
  auto c = runner->catch_up();
  auto st = runner->status();
  REQUIRE(st.ok());
  CHECK((*st)[0].checkpoint < 2);  // never moved past the undecodable event
  CHECK_FALSE(c.ok());
}

TEST_CASE("an old payload with invalid UTF-8 is corruption, with no libprotobuf lines") {
  fixture f;
  annals::event_data bad;
  bad.type = "bank.v1.MoneyDeposited";
  bad.payload = std::string("\x0a\x02\xff\xfe", 4);  // account_id holding 0xff 0xfe
  bad.metadata.schema_version = 1;
  REQUIRE(f.store->append("acc-u", annals::expected_version::any(),
                          {at_version(opened("acc-u", "Ann"), 1), bad}).ok());
  std::optional<annals::result<annals::loaded<ledger>>> l;
  const auto err =
      annals::test::capture_stderr([&] { l = annals::load<ledger>(*f.store, "acc-u"); });
  CHECK_MESSAGE(err.empty(), err);
  REQUIRE_FALSE(l->ok());
  CHECK(l->error().kind() == errc::corruption);
}

TEST_CASE("bank: a stream holding v1 and v2 events loads and projects correctly") {
  temp_dir dir;
  std::string path = dir.file("bank.db");
  {
    // Written by the old program: v1 AccountOpened, one deposit.
    auto old = annals::open_sqlite_store(path);
    REQUIRE(old.ok());
    REQUIRE((*old)->append("account-a", annals::expected_version::no_stream(),
                           {data_of(opened("a", "Ann Smith")), data_of(deposited("a", 1000))})
                .ok());
  }
  auto s = bank::open_store(path);  // upcasters, registered types
  REQUIRE_MESSAGE(s.ok(), s.error().message());
  auto& store = **s;
  // The new program appends v2 events to the same stream and opens a new account.
  auto r = annals::handle<bank::account>(store, "account-a", [](const bank::account& a) {
    return bank::withdraw(a, "a", 250);
  });
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  REQUIRE(annals::handle<bank::account>(store, "account-b", [](const bank::account& a) {
            return bank::open(a, "b", "Bob Jones");
          }).ok());

  auto a = annals::load<bank::account>(store, "account-a");
  REQUIRE(a.ok());
  CHECK(a->state.opened);
  CHECK(a->state.owner == "Ann Smith");
  CHECK(a->state.balance_cents == 750);

  std::vector<std::pair<std::string, std::int32_t>> stored;
  annals::sqlite_options plain;
  auto raw = annals::open_sqlite_store(path, plain);
  REQUIRE(raw.ok());
  REQUIRE((*raw)->read_all({}, [&](const annals::recorded_event& e) {
    stored.emplace_back(e.type, e.metadata.schema_version);
    return true;
  }).ok());
  REQUIRE(stored.size() == 4);
  CHECK(stored[0].first == "bank.v1.AccountOpened");
  CHECK(stored[3].first == "bank.v2.AccountOpened");
  CHECK(stored[3].second >= 1);  // stamped with the registered version

  auto runner = bank::open_read_models(path);
  REQUIRE_MESSAGE(runner.ok(), runner.error().message());
  REQUIRE((*runner)->catch_up().ok());
  auto ann = bank::find_balance(**runner, "a");
  REQUIRE(ann.ok());
  REQUIRE(ann->has_value());
  CHECK((*ann)->owner == "Ann Smith");
  CHECK((*ann)->balance_cents == 750);
  auto bob = bank::find_balance(**runner, "b");
  REQUIRE(bob.ok());
  REQUIRE(bob->has_value());
  CHECK((*bob)->owner == "Bob Jones");
}

TEST_CASE("bank: split_name and full_name round-trip every owner string") {
  for (std::string s : {"Ann Smith", "Ann Marie Smith", "Cher", " Smith", "Ann ", "", "a  b",
                        "Ünal Çelik"}) {
    CAPTURE(s);
    CHECK(bank::full_name(bank::split_name(s)) == s);
  }
  auto n = bank::split_name("Ann Marie Smith");
  CHECK(n.given() == "Ann Marie");
  CHECK(n.family() == "Smith");
}
