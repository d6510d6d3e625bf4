// Aggregates: the streamed fold (annals::load), dispatch by stored type name, the aggregate
// concept, the given/when/then helper, and the bank sample's deciders and amount parsing.
#include <doctest/doctest.h>

#include <annals/aggregate.hpp>
#include <annals/testing.hpp>

#include "account.hpp"
#include "support/forwarding_store.hpp"
#include "support/support.hpp"
#include "support/bank_events.hpp"

#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace {

using annals::errc;
using annals::testing::given;
namespace v1 = bank::v1;
using namespace annals::test::bank_events;

// bank::account lists bank.v2.AccountOpened; bank_events::opened() is the stored v1 event.
bank::v2::AccountOpened opened_v2(const std::string& id, const std::string& owner) {
  bank::v2::AccountOpened e;
  e.set_account_id(id);
  *e.mutable_owner() = bank::split_name(owner);
  return e;
}

// A store in a fresh temporary directory, removed at the end of the test. It reads with the
// bank's upcasters, so the v1 events appended here reach bank::account as v2.
struct store_fixture {
  annals::test::temp_dir dir;
  std::unique_ptr<annals::event_store> store;
  store_fixture() {
    auto s = annals::open_sqlite_store(dir.file("s.db"), bank::store_options());
    REQUIRE_MESSAGE(s.ok(), s.error().message());
    store = std::move(s).value();
  }
  void append(const std::string& stream, std::vector<annals::event_data> events) {
    auto r = store->append(stream, annals::expected_version::any(), std::move(events));
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// load: the streamed fold

TEST_CASE("load folds a stream into the aggregate's state and version") {
  store_fixture f;
  f.append("account-a", {data_of(opened("a", "Ann")), data_of(deposited("a", 1000)),
                         data_of(withdrawn("a", 250)), data_of(deposited("a", 5))});
  // Another stream must not leak into this one.
  f.append("account-b", {data_of(opened("b", "Bob")), data_of(deposited("b", 99999))});

  auto a = annals::load<bank::account>(*f.store, "account-a");
  REQUIRE_MESSAGE(a.ok(), a.error().message());
  CHECK(a->version == 3);
  CHECK(a->state.opened);
  CHECK_FALSE(a->state.closed);
  CHECK(a->state.id == "a");
  CHECK(a->state.owner == "Ann");
  CHECK(a->state.balance_cents == 1000 - 250 + 5);

  f.append("account-a", {data_of(withdrawn("a", 755)), data_of(closed("a"))});
  auto again = annals::load<bank::account>(*f.store, "account-a");
  REQUIRE(again.ok());
  CHECK(again->version == 5);
  CHECK(again->state.balance_cents == 0);
  CHECK(again->state.closed);
}

TEST_CASE("load of a missing stream gives the initial state and version -1") {
  store_fixture f;
  f.append("account-other", {data_of(opened("other", "Olga"))});

  auto a = annals::load<bank::account>(*f.store, "account-nobody");
  REQUIRE_MESSAGE(a.ok(), a.error().message());
  CHECK(a->version == -1);
  CHECK_FALSE(a->state.opened);
  CHECK(a->state.balance_cents == 0);
  CHECK(a->state.id.empty());
}

TEST_CASE("load reports an event type the aggregate does not list as corruption, never skips it") {
  store_fixture f;

  SUBCASE("an unknown type name") {
    f.append("account-u", {data_of(opened("u", "Uma")), data_of(deposited("u", 10))});
    annals::event_data unknown;
    unknown.type = "bank.v1.Unknown";
    unknown.payload = "";
    f.append("account-u", {unknown, data_of(deposited("u", 20))});

    auto a = annals::load<bank::account>(*f.store, "account-u");
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().kind() == errc::corruption);
    const std::string& msg = a.error().message();
    CHECK_MESSAGE(msg.find("account-u") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("bank.v1.Unknown") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("version 2") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("bank::account") != std::string::npos, msg);
  }

  SUBCASE("a real Protobuf type that the aggregate does not list") {
    google::protobuf::Timestamp t;
    t.set_seconds(1700000000);
    f.append("account-t", {data_of(opened("t", "Tom")), data_of(t)});

    auto a = annals::load<bank::account>(*f.store, "account-t");
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().kind() == errc::corruption);
    const std::string& msg = a.error().message();
    CHECK_MESSAGE(msg.find("account-t") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("google.protobuf.Timestamp") != std::string::npos, msg);
  }

  SUBCASE("as the first event of the stream") {
    annals::event_data unknown;
    unknown.type = "bank.v3.AccountOpened";
    unknown.payload = opened("x", "Xi").SerializeAsString();
    f.append("account-x", {unknown});

    auto a = annals::load<bank::account>(*f.store, "account-x");
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().kind() == errc::corruption);
    CHECK(a.error().message().find("bank.v3.AccountOpened") != std::string::npos);
  }
}

TEST_CASE("load reports a payload that does not decode as corruption") {
  store_fixture f;
  annals::event_data bad;
  bad.type = "bank.v1.MoneyDeposited";
  // Field 1 (account_id, length-delimited) claims 10 bytes but only 2 follow.
  bad.payload = std::string("\x0a\x0a" "ab", 4);
  f.append("account-d", {data_of(opened("d", "Dee")), bad});

  auto a = annals::load<bank::account>(*f.store, "account-d");
  REQUIRE_FALSE(a.ok());
  CHECK(a.error().kind() == errc::corruption);
  const std::string& msg = a.error().message();
  CHECK_MESSAGE(msg.find("account-d") != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("bank.v1.MoneyDeposited") != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("version 1") != std::string::npos, msg);
}

namespace {

// Counts the applies it receives, to observe when the fold applies each event.
struct deposit_tally {  // the fixture's store upcasts v1 AccountOpened to v2
  using events = annals::event_list<bank::v2::AccountOpened, v1::MoneyDeposited>;
  static inline std::int64_t applied = 0;
  void apply(const bank::v2::AccountOpened&) { ++applied; }
  void apply(const v1::MoneyDeposited& e) {
    ++applied;
    total += e.amount_cents();
  }
  std::int64_t total = 0;
};

// Forwards to a real store and checks, per visited event, that the fold has applied exactly the
// events visited so far: events are applied while being read, not buffered.
class watching_store final : public annals::test::forwarding_store {
 public:
  using forwarding_store::forwarding_store;

  annals::result<std::int64_t> read_stream(std::string_view s,
                                           const annals::read_stream_options& o,
                                           const annals::event_visitor& visit) override {
    ++read_calls;
    return inner_.read_stream(s, o, [&](const annals::recorded_event& e) {
      ++visited;
      bool more = visit(e);
      if (deposit_tally::applied != visited) interleaved = false;
      return more;
    });
  }

  int read_calls = 0;
  std::int64_t visited = 0;
  bool interleaved = true;
};

}  // namespace

TEST_CASE("load streams a long stream: 5,000 events folded one at a time") {
  store_fixture f;
  constexpr int n = 5000;
  std::vector<annals::event_data> batch;
  batch.push_back(data_of(opened("big", "Bea")));
  std::int64_t expected_total = 0;
  for (int i = 1; i < n; ++i) {
    batch.push_back(data_of(deposited("big", i)));
    expected_total += i;
  }
  f.append("account-big", std::move(batch));

  auto a = annals::load<bank::account>(*f.store, "account-big");
  REQUIRE_MESSAGE(a.ok(), a.error().message());
  CHECK(a->version == n - 1);
  CHECK(a->state.balance_cents == expected_total);

  watching_store w(*f.store);
  deposit_tally::applied = 0;
  auto t = annals::load<deposit_tally>(w, "account-big");
  REQUIRE_MESSAGE(t.ok(), t.error().message());
  CHECK(t->version == n - 1);
  CHECK(t->state.total == expected_total);
  CHECK(w.read_calls == 1);
  CHECK(w.visited == n);
  CHECK(deposit_tally::applied == n);
  CHECK_MESSAGE(w.interleaved, "each event must be applied during its own visit");
}

// ---------------------------------------------------------------------------------------------
// The aggregate concept

namespace {
struct lacks_withdrawn_apply {
  using events = annals::event_list<v1::MoneyDeposited, v1::MoneyWithdrawn>;
  void apply(const v1::MoneyDeposited&) {}
};
struct lacks_event_list {
  void apply(const v1::MoneyDeposited&) {}
};
struct events_not_an_event_list {
  using events = std::tuple<v1::MoneyDeposited>;
  void apply(const v1::MoneyDeposited&) {}
};
struct not_default_constructible {
  explicit not_default_constructible(int) {}
  using events = annals::event_list<v1::MoneyDeposited>;
  void apply(const v1::MoneyDeposited&) {}
};
struct apply_takes_mutable_ref {
  using events = annals::event_list<v1::MoneyDeposited>;
  void apply(v1::MoneyDeposited&) {}
};
struct lists_a_non_protobuf_type {
  using events = annals::event_list<v1::MoneyDeposited, int>;
  void apply(const v1::MoneyDeposited&) {}
  void apply(const int&) {}
};
struct complete_one {
  using events = annals::event_list<v1::MoneyDeposited>;
  void apply(const v1::MoneyDeposited&) {}
};
}  // namespace

static_assert(annals::aggregate<bank::account>);
static_assert(annals::aggregate<complete_one>);
static_assert(!annals::aggregate<lacks_withdrawn_apply>);
static_assert(!annals::aggregate<lacks_event_list>);
static_assert(!annals::aggregate<events_not_an_event_list>);
static_assert(!annals::aggregate<not_default_constructible>);
static_assert(!annals::aggregate<apply_takes_mutable_ref>);
// The concept agrees with check_aggregate(): event types must be Protobuf messages.
static_assert(!annals::aggregate<lists_a_non_protobuf_type>);
static_assert(annals::check_aggregate<bank::account>());

TEST_CASE("the aggregate concept holds for bank::account and not for a struct missing an apply") {
  CHECK(annals::aggregate<bank::account>);
  CHECK_FALSE(annals::aggregate<lacks_withdrawn_apply>);
  CHECK(annals::applies_event<lacks_withdrawn_apply, v1::MoneyDeposited>);
  CHECK_FALSE(annals::applies_event<lacks_withdrawn_apply, v1::MoneyWithdrawn>);
  CHECK(bank::account::events::size == 4);
  CHECK(bank::account::events::contains<v1::MoneyWithdrawn>);
  CHECK_FALSE(bank::account::events::contains<google::protobuf::Timestamp>);
}

// ---------------------------------------------------------------------------------------------
// given / when / then

namespace {
using annals::test::contains;
}  // namespace

TEST_CASE("then() passes when the decision emitted exactly the expected events") {
  auto v = given<bank::account>(opened_v2("a", "Ann"), deposited("a", 100))
               .when([](const bank::account& a) { return bank::withdraw(a, "a", 30); })
               .then(withdrawn("a", 30));
  CHECK_MESSAGE(v.passed, v.explanation);
  CHECK(static_cast<bool>(v));
  CHECK(v.explanation.empty());
  CHECK(v);  // prints the explanation through operator<< when it fails
}

TEST_CASE("then() fails and explains expected versus actual events") {
  auto scenario = given<bank::account>(opened_v2("a", "Ann"), deposited("a", 100));

  SUBCASE("a different field value") {
    auto v = scenario.when([](const bank::account& a) { return bank::withdraw(a, "a", 30); })
                 .then(withdrawn("a", 31));
    CHECK_FALSE(v.passed);
    CHECK_FALSE(static_cast<bool>(v));
    CHECK_MESSAGE(contains(v.explanation, "expected events"), v.explanation);
    CHECK_MESSAGE(contains(v.explanation, "amount_cents: 31"), v.explanation);
    CHECK_MESSAGE(contains(v.explanation, "amount_cents: 30"), v.explanation);
    // Expected comes before actual.
    CHECK(v.explanation.find("amount_cents: 31") < v.explanation.find("amount_cents: 30"));
  }

  SUBCASE("a different event type with the same fields") {
    auto v = scenario.when([](const bank::account& a) { return bank::withdraw(a, "a", 30); })
                 .then(deposited("a", 30));
    CHECK_FALSE(v.passed);
    CHECK_MESSAGE(contains(v.explanation, "bank.v1.MoneyDeposited"), v.explanation);
    CHECK_MESSAGE(contains(v.explanation, "bank.v1.MoneyWithdrawn"), v.explanation);
  }

  SUBCASE("the same events in another order") {
    auto two = [](const bank::account&) {
      return annals::decision<bank::account>::emit(deposited("a", 1), withdrawn("a", 1));
    };
    CHECK(scenario.when(two).then(deposited("a", 1), withdrawn("a", 1)));
    auto v = scenario.when(two).then(withdrawn("a", 1), deposited("a", 1));
    CHECK_FALSE(v.passed);
    CHECK_MESSAGE(contains(v.explanation, "but got"), v.explanation);
  }

  SUBCASE("fewer or more events than expected") {
    auto one = [](const bank::account& a) { return bank::deposit(a, "a", 5); };
    CHECK_FALSE(scenario.when(one).then(deposited("a", 5), deposited("a", 5)).passed);
    CHECK_FALSE(scenario.when(one).then().passed);
    auto none = scenario.when(one).then_nothing();
    CHECK_FALSE(none.passed);
    CHECK_MESSAGE(contains(none.explanation, "(no events)"), none.explanation);
    CHECK_MESSAGE(contains(none.explanation, "amount_cents: 5"), none.explanation);
  }

  SUBCASE("a rejection where events were expected") {
    auto v = scenario.when([](const bank::account& a) { return bank::withdraw(a, "a", 500); })
                 .then(withdrawn("a", 500));
    CHECK_FALSE(v.passed);
    CHECK_MESSAGE(contains(v.explanation, "rejected"), v.explanation);
    CHECK_MESSAGE(contains(v.explanation, "insufficient funds"), v.explanation);
  }
}

TEST_CASE("then_rejected() matches a substring of the reason") {
  auto scenario = given<bank::account>(opened_v2("a", "Ann"), deposited("a", 100));
  auto overdraw = [](const bank::account& a) { return bank::withdraw(a, "a", 101); };

  CHECK(scenario.when(overdraw).then_rejected("insufficient funds"));
  CHECK(scenario.when(overdraw).then_rejected());
  CHECK(scenario.when(overdraw).result().rejected());

  auto wrong = scenario.when(overdraw).then_rejected("is closed");
  CHECK_FALSE(wrong.passed);
  CHECK_MESSAGE(contains(wrong.explanation, "is closed"), wrong.explanation);
  CHECK_MESSAGE(contains(wrong.explanation, "insufficient funds"), wrong.explanation);

  auto accepted = scenario.when([](const bank::account& a) { return bank::withdraw(a, "a", 100); })
                      .then_rejected("insufficient funds");
  CHECK_FALSE(accepted.passed);
  CHECK_MESSAGE(contains(accepted.explanation, "bank.v1.MoneyWithdrawn"), accepted.explanation);
  CHECK_FALSE(scenario.when([](const bank::account&) { return annals::decision<bank::account>{}; })
                  .then_rejected()
                  .passed);
}

TEST_CASE("then_nothing() passes only for an accepted decision without events") {
  auto scenario = given<bank::account>(opened_v2("a", "Ann"));
  CHECK(scenario.when([](const bank::account&) { return annals::decision<bank::account>{}; })
            .then_nothing());
  CHECK(scenario.when([](const bank::account&) { return annals::decision<bank::account>{}; })
            .then());
  auto rejected = scenario.when([](const bank::account& a) { return bank::open(a, "a", "Ann"); })
                      .then_nothing();
  CHECK_FALSE(rejected.passed);
  CHECK_MESSAGE(contains(rejected.explanation, "already exists"), rejected.explanation);
}

TEST_CASE("given() folds its events in order and and_given() adds more") {
  auto s = given<bank::account>(opened_v2("a", "Ann"), deposited("a", 70));
  CHECK(s.state().balance_cents == 70);
  s.and_given(withdrawn("a", 20)).and_given(deposited("a", 1));
  CHECK(s.state().balance_cents == 51);
  CHECK(given<bank::account>().state().opened == false);
}

// ---------------------------------------------------------------------------------------------
// The bank's deciders

TEST_CASE("bank: open") {
  CHECK(given<bank::account>()
            .when([](const bank::account& a) { return bank::open(a, "a", "Ann"); })
            .then(opened_v2("a", "Ann")));
  CHECK(given<bank::account>(opened_v2("a", "Ann"))
            .when([](const bank::account& a) { return bank::open(a, "a", "Ann"); })
            .then_rejected("already exists"));
  CHECK(given<bank::account>()
            .when([](const bank::account& a) { return bank::open(a, "a", ""); })
            .then_rejected("owner"));
}

TEST_CASE("bank: deposit") {
  auto on = [](std::int64_t cents) {
    return [cents](const bank::account& a) { return bank::deposit(a, "a", cents); };
  };
  CHECK(given<bank::account>(opened_v2("a", "Ann")).when(on(250)).then(deposited("a", 250)));
  CHECK(given<bank::account>().when(on(250)).then_rejected("does not exist"));
  CHECK(given<bank::account>(opened_v2("a", "Ann"), closed("a"))
            .when(on(250))
            .then_rejected("is closed"));
  CHECK(given<bank::account>(opened_v2("a", "Ann")).when(on(0)).then_rejected("greater than zero"));
  CHECK(given<bank::account>(opened_v2("a", "Ann")).when(on(-5)).then_rejected("greater than zero"));
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  CHECK(given<bank::account>(opened_v2("a", "Ann"), deposited("a", max - 10))
            .when(on(11))
            .then_rejected("overflow"));
  CHECK(given<bank::account>(opened_v2("a", "Ann"), deposited("a", max - 10))
            .when(on(10))
            .then(deposited("a", 10)));
}

TEST_CASE("bank: withdraw") {
  auto take = [](std::int64_t cents) {
    return [cents](const bank::account& a) { return bank::withdraw(a, "a", cents); };
  };
  auto funded = given<bank::account>(opened_v2("a", "Ann"), deposited("a", 1000));
  CHECK(funded.when(take(1000)).then(withdrawn("a", 1000)));
  auto over = funded.when(take(1001)).then_rejected("insufficient funds");
  CHECK(over);
  auto reason = funded.when(take(1001)).result().reason();
  CHECK_MESSAGE(contains(reason, "10.00"), reason);
  CHECK_MESSAGE(contains(reason, "10.01"), reason);
  CHECK(given<bank::account>(opened_v2("a", "Ann"), deposited("a", 1000), withdrawn("a", 600))
            .when(take(401))
            .then_rejected("insufficient funds"));
  CHECK(given<bank::account>().when(take(1)).then_rejected("does not exist"));
  CHECK(given<bank::account>(opened_v2("a", "Ann"), closed("a")).when(take(1)).then_rejected("is closed"));
  CHECK(funded.when(take(0)).then_rejected("greater than zero"));
}

TEST_CASE("bank: close only at a zero balance") {
  auto shut = [](const bank::account& a) { return bank::close(a, "a"); };
  CHECK(given<bank::account>(opened_v2("a", "Ann")).when(shut).then(closed("a")));
  CHECK(given<bank::account>(opened_v2("a", "Ann"), deposited("a", 1))
            .when(shut)
            .then_rejected("zero balance"));
  CHECK(given<bank::account>(opened_v2("a", "Ann"), deposited("a", 5), withdrawn("a", 5))
            .when(shut)
            .then(closed("a")));
  CHECK(given<bank::account>().when(shut).then_rejected("does not exist"));
  CHECK(given<bank::account>(opened_v2("a", "Ann"), closed("a")).when(shut).then_rejected("is closed"));
}

// ---------------------------------------------------------------------------------------------
// Amounts

TEST_CASE("parse_amount accepts plain decimal amounts with up to two fraction digits") {
  struct row {
    const char* text;
    std::int64_t cents;
  };
  for (row r0 : {row{"12.50", 1250}, row{"12", 1200}, row{"0.5", 50},
                             row{"12.5", 1250}, row{"0.01", 1}, row{"007", 700},
                             row{"92233720368547758.07", std::numeric_limits<std::int64_t>::max()},
                             row{"92233720368547758", 9223372036854775800}}) {
    const char* text = r0.text;  // not a structured binding: clang 14 cannot capture one
    const std::int64_t cents = r0.cents;
    CAPTURE(text);
    auto r = bank::parse_amount(text);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(r.value() == cents);
  }
}

TEST_CASE("parse_amount refuses signs, bad syntax, zero and overflow") {
  for (const char* text :
       {"-1", "+1", "1.234", "abc", "", ".5", "1.", "0", "0.00", "1e3", " 1", "1 ", "1,50",
        "1.2.3", "1..2", "12a", "0x10", "92233720368547758.08", "92233720368547759",
        "99999999999999999999999999", "18446744073709551616", "-0"}) {
    CAPTURE(text);
    auto r = bank::parse_amount(text);
    CHECK_FALSE(r.ok());
    if (!r.ok()) CHECK(r.error().kind() == errc::invalid_argument);
  }
  auto r = bank::parse_amount("-1");
  REQUIRE_FALSE(r.ok());
  CHECK(contains(r.error().message(), "positive"));
}

TEST_CASE("format_cents writes two fraction digits") {
  CHECK(bank::format_cents(1250) == "12.50");
  CHECK(bank::format_cents(5) == "0.05");
  CHECK(bank::format_cents(0) == "0.00");
  CHECK(bank::format_cents(100) == "1.00");
  CHECK(bank::format_cents(-1250) == "-12.50");
  CHECK(bank::format_cents(std::numeric_limits<std::int64_t>::max()) == "92233720368547758.07");
  CHECK(bank::format_cents(std::numeric_limits<std::int64_t>::min()) == "-92233720368547758.08");
  for (std::int64_t c : {1, 99, 101, 123456789}) {
    auto back = bank::parse_amount(bank::format_cents(c));
    REQUIRE(back.ok());
    CHECK(back.value() == c);
  }
}
