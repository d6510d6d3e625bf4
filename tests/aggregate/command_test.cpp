// Command handling: annals::handle() over a real SQLite store — expected versions, results,
// rejections, metadata, conflict retries and concurrent writers.
#include <doctest/doctest.h>

#include <annals/command.hpp>

#include "account.hpp"
#include "support/forwarding_store.hpp"
#include "support/support.hpp"
#include "support/bank_events.hpp"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using annals::errc;
using annals::expected_version;
namespace v1 = bank::v1;
using namespace annals::test::bank_events;
using decision = annals::decision<bank::account>;


// Forwards to a real store and records every append's stream and expected version.
class recording_store final : public annals::test::forwarding_store {
 public:
  using forwarding_store::forwarding_store;

  annals::result<annals::append_result> append(std::string_view s, expected_version x,
                                               std::vector<annals::event_data> e) override {
    {
      std::lock_guard lock(mu_);
      appends.push_back({std::string(s), x.to_string(), e.size()});
    }
    return inner_.append(s, x, std::move(e));
  }

  struct call {
    std::string stream;
    std::string expected;
    std::size_t events;
  };
  std::vector<call> appends;

 private:
  std::mutex mu_;
};

struct store_fixture {
  annals::test::temp_dir dir;
  std::unique_ptr<annals::event_store> store;
  explicit store_fixture(annals::sqlite_options o = {}) {
    auto s = annals::open_sqlite_store(dir.file("s.db"), std::move(o));
    REQUIRE_MESSAGE(s.ok(), s.error().message());
    store = std::move(s).value();
  }
  std::int64_t head() {
    auto h = store->head_position();
    REQUIRE(h.ok());
    return h.value();
  }
  std::int64_t version(std::string_view stream) {
    auto v = store->stream_version(stream);
    REQUIRE(v.ok());
    return v.value();
  }
  std::vector<annals::recorded_event> read(std::string_view stream) {
    std::vector<annals::recorded_event> out;
    auto r = store->read_stream(stream, {}, [&](const annals::recorded_event& e) {
      out.push_back(e);
      return true;
    });
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    return out;
  }
  bank::account load(std::string_view stream) {
    auto a = annals::load<bank::account>(*store, stream);
    REQUIRE_MESSAGE(a.ok(), a.error().message());
    return a->state;
  }
};

auto open_cmd(std::string id, std::string owner) {
  return [id, owner](const bank::account& a) { return bank::open(a, id, owner); };
}
auto deposit_cmd(std::string id, std::int64_t cents) {
  return [id, cents](const bank::account& a) { return bank::deposit(a, id, cents); };
}

bool is_uuid_v7(const std::string& s) {
  if (s.size() != 36 || s[14] != '7') return false;  // version 7
  if (s[19] != '8' && s[19] != '9' && s[19] != 'a' && s[19] != 'b') return false;  // variant
  for (std::size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    char c = s[i];
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("handle appends with no_stream to a new stream and the exact version afterwards") {
  store_fixture f;
  recording_store rec(*f.store);

  auto r1 = annals::handle<bank::account>(rec, "account-a", open_cmd("a", "Ann"));
  REQUIRE_MESSAGE(r1.ok(), r1.error().message());
  CHECK(r1->stream_version == 0);
  CHECK(r1->events_appended == 1);
  CHECK(r1->conflicts_retried == 0);
  CHECK(r1->position == f.head());

  auto r2 = annals::handle<bank::account>(rec, "account-a", deposit_cmd("a", 300));
  REQUIRE_MESSAGE(r2.ok(), r2.error().message());
  CHECK(r2->stream_version == 1);
  CHECK(r2->position == f.head());
  CHECK(r2->position > r1->position);

  auto r3 = annals::handle<bank::account>(rec, "account-a", deposit_cmd("a", 45));
  REQUIRE(r3.ok());

  REQUIRE(rec.appends.size() == 3);
  CHECK(rec.appends[0].stream == "account-a");
  CHECK(rec.appends[0].expected == "no_stream");
  CHECK(rec.appends[1].expected == "0");
  CHECK(rec.appends[2].expected == "1");
  CHECK(f.load("account-a").balance_cents == 345);
}

TEST_CASE("handle returns the stream version, the last position and the number of events") {
  store_fixture f;
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann")).ok());
  // Interleave another stream so positions and versions differ.
  REQUIRE(annals::handle<bank::account>(*f.store, "account-b", open_cmd("b", "Bob")).ok());

  auto r = annals::handle<bank::account>(*f.store, "account-a", [](const bank::account& a) {
    (void)a;
    return decision::emit(deposited("a", 1), deposited("a", 2), deposited("a", 3));
  });
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->events_appended == 3);
  CHECK(r->stream_version == 3);
  auto events = f.read("account-a");
  REQUIRE(events.size() == 4);
  CHECK(r->position == events.back().position);
  CHECK(r->stream_version == events.back().stream_version);
  CHECK(r->position == f.head());
  CHECK(f.load("account-a").balance_cents == 6);
}

TEST_CASE("a rejection returns errc::rejected with the reason and writes nothing") {
  store_fixture f;
  recording_store rec(*f.store);
  REQUIRE(annals::handle<bank::account>(rec, "account-a", open_cmd("a", "Ann")).ok());
  std::int64_t head = f.head();

  auto r = annals::handle<bank::account>(rec, "account-a", [](const bank::account& a) {
    return bank::withdraw(a, "a", 1);
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::rejected);
  CHECK_MESSAGE(r.error().message().find("insufficient funds") != std::string::npos,
                r.error().message());
  CHECK_FALSE(r.error().conflict().has_value());
  CHECK(f.head() == head);
  CHECK(f.version("account-a") == 0);
  CHECK(rec.appends.size() == 1);  // only the open

  auto custom = annals::handle<bank::account>(
      rec, "account-new", [](const bank::account&) { return decision::reject("no, because X"); });
  REQUIRE_FALSE(custom.ok());
  CHECK(custom.error().kind() == errc::rejected);
  CHECK(custom.error().message() == "no, because X");
  CHECK(f.version("account-new") == -1);
  CHECK(f.head() == head);
}

TEST_CASE("a decision with no events writes nothing") {
  store_fixture f;
  recording_store rec(*f.store);
  REQUIRE(annals::handle<bank::account>(rec, "account-a", open_cmd("a", "Ann")).ok());
  std::int64_t head = f.head();

  auto r = annals::handle<bank::account>(rec, "account-a",
                                         [](const bank::account&) { return decision{}; });
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->events_appended == 0);
  CHECK(r->position == 0);
  CHECK(r->stream_version == 0);
  CHECK(f.head() == head);
  CHECK(rec.appends.size() == 1);

  auto none = annals::handle<bank::account>(rec, "account-empty",
                                            [](const bank::account&) { return decision{}; });
  REQUIRE(none.ok());
  CHECK(none->stream_version == -1);
  CHECK(none->events_appended == 0);
  CHECK(f.version("account-empty") == -1);
}

TEST_CASE("command options land in every event's metadata") {
  store_fixture f;
  annals::command_options o;
  o.command_id = "0190a4f2-0000-7000-8000-000000000001";
  o.correlation_id = "corr-42";
  o.causation_id = "cause-7";
  o.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  o.headers = {{"tenant", "acme"}, {"user", "ann"}, {"tenant", "second"}};

  auto r = annals::handle<bank::account>(
      *f.store, "account-a",
      [](const bank::account& a) {
        auto d = bank::open(a, "a", "Ann");
        d.add(deposited("a", 10));
        return d;
      },
      o);
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  auto events = f.read("account-a");
  REQUIRE(events.size() == 2);
  for (const auto& e : events) {
    CAPTURE(e.stream_version);
    CHECK(e.metadata.correlation_id == "corr-42");
    CHECK(e.metadata.causation_id == "cause-7");
    CHECK(e.metadata.traceparent == o.traceparent);
    CHECK(e.metadata.headers == o.headers);
  }
  CHECK(events[0].type == "bank.v2.AccountOpened");
  CHECK(events[1].type == "bank.v1.MoneyDeposited");
  CHECK(events[0].event_id != events[1].event_id);
}

TEST_CASE("empty correlation and causation default to the command id") {
  store_fixture f;

  SUBCASE("no ids at all: a fresh UUIDv7 per command") {
    auto two = [](const bank::account& a) {
      auto d = bank::open(a, "a", "Ann");
      d.add(deposited("a", 1));
      return d;
    };
    REQUIRE(annals::handle<bank::account>(*f.store, "account-a", two).ok());
    REQUIRE(annals::handle<bank::account>(*f.store, "account-a", deposit_cmd("a", 2)).ok());
    auto events = f.read("account-a");
    REQUIRE(events.size() == 3);
    const auto& first = events[0].metadata;
    CHECK_MESSAGE(is_uuid_v7(first.correlation_id), first.correlation_id);
    CHECK(first.causation_id == first.correlation_id);
    CHECK(events[1].metadata.correlation_id == first.correlation_id);
    CHECK(events[1].metadata.causation_id == first.causation_id);
    CHECK(first.traceparent.empty());
    CHECK(first.headers.empty());
    // The next command is a new command with its own id.
    CHECK(is_uuid_v7(events[2].metadata.correlation_id));
    CHECK(events[2].metadata.correlation_id != first.correlation_id);
    CHECK(events[2].metadata.causation_id == events[2].metadata.correlation_id);
  }

  SUBCASE("a command id only") {
    annals::command_options o;
    o.command_id = "0190a4f2-0000-7000-8000-0000000000aa";
    REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann"), o).ok());
    auto events = f.read("account-a");
    REQUIRE(events.size() == 1);
    CHECK(events[0].metadata.correlation_id == o.command_id);
    CHECK(events[0].metadata.causation_id == o.command_id);
  }

  SUBCASE("a correlation id only: causation is the fresh command id") {
    annals::command_options o;
    o.correlation_id = "conversation-1";
    REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann"), o).ok());
    auto events = f.read("account-a");
    REQUIRE(events.size() == 1);
    CHECK(events[0].metadata.correlation_id == "conversation-1");
    CHECK_MESSAGE(is_uuid_v7(events[0].metadata.causation_id), events[0].metadata.causation_id);
  }
}

TEST_CASE("a rejection is final: no retry even if a competing write happened meanwhile") {
  store_fixture f;
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann")).ok());
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", deposit_cmd("a", 1000)).ok());

  int calls = 0;
  std::vector<std::int64_t> seen_balances;
  annals::command_options o;
  o.retry_backoff = std::chrono::microseconds(0);
  auto r = annals::handle<bank::account>(
      *f.store, "account-a",
      [&](const bank::account& a) {
        ++calls;
        seen_balances.push_back(a.balance_cents);
        if (calls == 1) {
          // A competing writer slips in between this load and the handler's append.
          auto c = f.store->append("account-a", expected_version::any(),
                                   {data_of(deposited("a", 50))});
          REQUIRE_MESSAGE(c.ok(), c.error().message());
        }
        return bank::withdraw(a, "a", 1030);  // more than the balance this decision saw
      },
      o);
  // A rejection is the decision on the state that was loaded; it is not a conflict.
  CHECK(calls == 1);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::rejected);
  CHECK(seen_balances == std::vector<std::int64_t>{1000});
  CHECK(f.load("account-a").balance_cents == 1050);
}

TEST_CASE("a conflict is retried: conflicts_retried == 1 and both writes are kept") {
  store_fixture f;
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann")).ok());
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", deposit_cmd("a", 1000)).ok());

  int calls = 0;
  std::vector<std::int64_t> seen_balances;
  annals::command_options o;
  o.retry_backoff = std::chrono::microseconds(0);
  auto r = annals::handle<bank::account>(
      *f.store, "account-a",
      [&](const bank::account& a) {
        ++calls;
        seen_balances.push_back(a.balance_cents);
        if (calls == 1) {
          auto c = f.store->append("account-a", expected_version::any(),
                                   {data_of(deposited("a", 50))});
          REQUIRE_MESSAGE(c.ok(), c.error().message());
        }
        return bank::deposit(a, "a", 7);
      },
      o);
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(calls == 2);
  CHECK(r->conflicts_retried == 1);
  CHECK(r->stream_version == 3);
  CHECK(r->events_appended == 1);
  // The second decision saw the competing deposit.
  CHECK(seen_balances == std::vector<std::int64_t>{1000, 1050});
  auto events = f.read("account-a");
  REQUIRE(events.size() == 4);
  CHECK(events[2].payload == deposited("a", 50).SerializeAsString());
  CHECK(events[3].payload == deposited("a", 7).SerializeAsString());
  CHECK(f.load("account-a").balance_cents == 1057);
}

TEST_CASE("max_retries bounds the attempts and the final conflict carries its details") {
  store_fixture f;
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann")).ok());

  for (int max_retries : {0, 1, 3}) {
    CAPTURE(max_retries);
    std::int64_t before = f.version("account-a");
    int calls = 0;
    annals::command_options o;
    o.max_retries = max_retries;
    o.retry_backoff = std::chrono::microseconds(0);
    auto r = annals::handle<bank::account>(
        *f.store, "account-a",
        [&](const bank::account& a) {
          ++calls;
          // Every attempt loses the race.
          auto c = f.store->append("account-a", expected_version::any(),
                                   {data_of(deposited("a", 1))});
          REQUIRE_MESSAGE(c.ok(), c.error().message());
          return bank::deposit(a, "a", 1000);
        },
        o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind() == errc::concurrency_conflict);
    CHECK(calls == max_retries + 1);
    REQUIRE(r.error().conflict().has_value());
    const auto& c = *r.error().conflict();
    CHECK(c.stream_id == "account-a");
    // The last attempt loaded version before + max_retries and lost to one more competing event.
    CHECK(c.expected == std::to_string(before + max_retries));
    CHECK(c.actual == before + max_retries + 1);
    CHECK_MESSAGE(r.error().message().find("account-a") != std::string::npos, r.error().message());
    // Only the competing events were written.
    CHECK(f.version("account-a") == before + max_retries + 1);
  }
  auto state = f.load("account-a");
  CHECK(state.balance_cents == 1 + 2 + 4);

  annals::command_options bad;
  bad.max_retries = -1;
  auto r = annals::handle<bank::account>(*f.store, "account-a", deposit_cmd("a", 1), bad);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::invalid_argument);
}

TEST_CASE("handle reports corruption for a stream event the aggregate does not list") {
  store_fixture f;
  annals::event_data unknown;
  unknown.type = "bank.v1.Unknown";
  REQUIRE(f.store->append("account-a", expected_version::any(), {unknown}).ok());
  int calls = 0;
  auto r = annals::handle<bank::account>(*f.store, "account-a", [&](const bank::account& a) {
    ++calls;
    return bank::open(a, "a", "Ann");
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::corruption);
  CHECK(calls == 0);
  CHECK(f.version("account-a") == 0);
}

TEST_CASE("handle reports corruption for a payload that does not decode") {
  store_fixture f;
  REQUIRE(annals::handle<bank::account>(*f.store, "account-a", open_cmd("a", "Ann")).ok());
  annals::event_data bad;
  bad.type = "bank.v1.MoneyDeposited";
  bad.payload = std::string("\x0a\x0a" "ab", 4);  // field 1 claims 10 bytes, 2 follow
  REQUIRE(f.store->append("account-a", expected_version::exact(0), {bad}).ok());
  auto r = annals::handle<bank::account>(*f.store, "account-a", deposit_cmd("a", 1));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::corruption);
  CHECK(f.version("account-a") == 1);
}

TEST_CASE("handle passes store errors through") {
  store_fixture f;
  auto r = annals::handle<bank::account>(*f.store, "", open_cmd("a", "Ann"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::invalid_argument);
}

TEST_CASE("concurrent deposits on shared accounts lose no update") {
  store_fixture f;
  const std::vector<std::string> accounts = {"x", "y", "z"};
  for (const auto& id : accounts) {
    REQUIRE(annals::handle<bank::account>(*f.store, bank::stream_for(id), open_cmd(id, id)).ok());
  }
  constexpr int threads = 8;
  constexpr int per_thread = 40;

  std::mutex mu;
  std::map<std::string, std::int64_t> acknowledged;
  std::map<std::string, std::int64_t> acknowledged_count;
  std::map<std::string, std::vector<std::int64_t>> versions;  // result.stream_version per ack
  std::vector<std::string> unexpected;
  std::atomic<int> conflicts_given_up{0};
  std::atomic<int> retries{0};

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      annals::command_options o;
      o.max_retries = 50;
      o.retry_backoff = std::chrono::microseconds(100);
      for (int i = 0; i < per_thread; ++i) {
        const std::string& id = accounts[static_cast<std::size_t>(t + i) % accounts.size()];
        std::int64_t cents = 1 + t * 1000 + i;  // distinct amounts: a lost update shows
        auto r = annals::handle<bank::account>(*f.store, bank::stream_for(id),
                                               deposit_cmd(id, cents), o);
        std::lock_guard lock(mu);
        if (r.ok()) {
          acknowledged[id] += cents;
          acknowledged_count[id] += 1;
          versions[id].push_back(r->stream_version);
          retries += r->conflicts_retried;
        } else if (r.error().kind() == errc::concurrency_conflict) {
          ++conflicts_given_up;
        } else {
          unexpected.push_back(r.error().message());
        }
      }
    });
  }
  for (auto& th : pool) th.join();

  CHECK(unexpected.empty());
  std::int64_t acked_total = 0;
  for (const auto& id : accounts) {
    CAPTURE(id);
    auto a = annals::load<bank::account>(*f.store, bank::stream_for(id));
    REQUIRE(a.ok());
    CHECK(a->state.balance_cents == acknowledged[id]);
    CHECK(a->version == acknowledged_count[id]);  // version 0 is the open
    // Each acknowledged command reports its own version: 1..n, each exactly once.
    auto v = versions[id];
    std::sort(v.begin(), v.end());
    std::vector<std::int64_t> expected(v.size());
    std::iota(expected.begin(), expected.end(), 1);
    CHECK(v == expected);
    acked_total += acknowledged_count[id];
  }
  CHECK(acked_total + conflicts_given_up.load() == threads * per_thread);
  // With 8 writers on 3 streams, at least most commands must get through.
  CHECK(acked_total > threads * per_thread / 2);
  MESSAGE("acknowledged ", acked_total, ", gave up ", conflicts_given_up.load(), ", retries ",
          retries.load());
}

TEST_CASE("concurrent withdrawals never overdraw: every decision sees the latest state") {
  store_fixture f;
  const std::string id = "w";
  const std::string stream = bank::stream_for(id);
  constexpr std::int64_t initial = 10000;
  REQUIRE(annals::handle<bank::account>(*f.store, stream, open_cmd(id, "Wes")).ok());
  REQUIRE(annals::handle<bank::account>(*f.store, stream, deposit_cmd(id, initial)).ok());

  constexpr int threads = 6;
  constexpr int per_thread = 30;
  constexpr std::int64_t amount = 70;  // demand 6 * 30 * 70 = 12600 > 10000
  std::atomic<std::int64_t> withdrawn_total{0};
  std::atomic<int> insufficient{0}, gave_up{0}, other{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      annals::command_options o;
      o.max_retries = 100;
      o.retry_backoff = std::chrono::microseconds(50);
      for (int i = 0; i < per_thread; ++i) {
        auto r = annals::handle<bank::account>(
            *f.store, stream, [&](const bank::account& a) { return bank::withdraw(a, id, amount); },
            o);
        if (r.ok()) {
          withdrawn_total += amount;
        } else if (r.error().kind() == errc::rejected) {
          ++insufficient;
        } else if (r.error().kind() == errc::concurrency_conflict) {
          ++gave_up;
        } else {
          ++other;
        }
      }
    });
  }
  go = true;
  for (auto& th : pool) th.join();

  CHECK(other.load() == 0);
  auto a = annals::load<bank::account>(*f.store, stream);
  REQUIRE(a.ok());
  CHECK(a->state.balance_cents >= 0);
  CHECK(a->state.balance_cents == initial - withdrawn_total.load());
  // Enough demand was refused that the account could not be drained further.
  CHECK(withdrawn_total.load() <= initial);
  if (gave_up.load() == 0) {
    CHECK(a->state.balance_cents < amount);
    CHECK(insufficient.load() > 0);
  }
}

TEST_CASE("an event with invalid UTF-8 in a string field is refused before it is stored") {
  store_fixture f;
  std::optional<annals::result<annals::command_result>> r;
  // Refused with the field named, and without the raw lines libprotobuf would log about it.
  const auto err = annals::test::capture_stderr([&] {
    r = annals::handle<bank::account>(*f.store, "account-u", open_cmd("u", "Ann \xff\xfe"));
  });
  CHECK_MESSAGE(err.empty(), err);
  REQUIRE_FALSE(r->ok());
  CHECK(r->error().kind() == annals::errc::invalid_argument);
  CHECK_MESSAGE(annals::test::contains(r->error().message(),
                                       "string field 'owner.family' is not valid UTF-8"),
                r->error().message());
  CHECK(f.head() == 0);
  // The account is still usable: the bad event never reached the store.
  CHECK(annals::handle<bank::account>(*f.store, "account-u", open_cmd("u", "Ulla")).ok());
}

TEST_CASE("a stored event with invalid UTF-8 in a string field fails the load cleanly") {
  store_fixture f;
  // Bytes another writer stored: field 1 (account_id) holding 0xff 0xfe.
  annals::event_data bad;
  bad.type = "bank.v2.AccountOpened";
  bad.payload = std::string("\x0a\x02\xff\xfe", 4);
  REQUIRE(f.store->append("account-x", annals::expected_version::no_stream(), {bad}).ok());
  std::optional<annals::result<annals::loaded<bank::account>>> l;
  // Only the clear error: none of the raw lines libprotobuf logs while parsing such bytes.
  const auto err = annals::test::capture_stderr(
      [&] { l = annals::load<bank::account>(*f.store, "account-x"); });
  CHECK_MESSAGE(err.empty(), err);
  REQUIRE_FALSE(l->ok());
  CHECK(l->error().kind() == annals::errc::corruption);
  CHECK_MESSAGE(annals::test::contains(l->error().message(),
                                       "does not decode as bank.v2.AccountOpened"),
                l->error().message());
}

TEST_CASE("exit codes follow the documented table") {
  using annals::errc;
  CHECK(annals::exit_code(errc::rejected) == 1);
  CHECK(annals::exit_code(errc::not_found) == 1);
  CHECK(annals::exit_code(errc::invalid_argument) == 2);
  CHECK(annals::exit_code(errc::concurrency_conflict) == 3);
  CHECK(annals::exit_code(errc::corruption) == 4);
  CHECK(annals::exit_code(errc::busy) == 4);
  CHECK(annals::exit_code(errc::io) == 4);
  CHECK(annals::exit_code(errc::timed_out) == 4);
  CHECK(annals::exit_code(errc::stuck) == 4);
  CHECK(annals::exit_code(errc::read_only) == 4);
  CHECK(annals::exit_code(errc::handler_failed) == 4);
}

TEST_CASE("every error kind has its own name") {
  using annals::errc;
  std::set<std::string_view> names;
  for (auto k : {errc::concurrency_conflict, errc::rejected, errc::not_found,
                 errc::invalid_argument, errc::corruption, errc::busy, errc::io, errc::timed_out,
                 errc::stuck, errc::read_only, errc::handler_failed}) {
    auto n = annals::to_string(k);
    CHECK(n != "unknown");
    CHECK(names.insert(n).second);
  }
}
