// Backend-independent conformance cases for annals::event_store. Every TEST_CASE_TEMPLATE
// here runs once per backend in ANNALS_STORE_BACKENDS (backends.hpp); only the few plain
// TEST_CASEs at the end are about SQLite specifically.
#include "store/backends.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace annals;
using namespace annals::test;

namespace {

void check_conflict(const result<append_result>& r, const std::string& stream,
                    const std::string& expected, std::int64_t actual) {
  INFO(describe(r));
  REQUIRE(kind_of(r) == errc::concurrency_conflict);
  REQUIRE(r.error().conflict().has_value());
  const auto& d = *r.error().conflict();
  CHECK(d.stream_id == stream);
  CHECK(d.expected == expected);
  CHECK(d.actual == actual);
  // The message is for people: it names the stream.
  CHECK(r.error().message().find(stream) != std::string::npos);
}

std::vector<std::string> ids_of(const std::vector<recorded_event>& evs) {
  std::vector<std::string> out;
  for (const auto& e : evs) out.push_back(e.event_id);
  return out;
}

std::vector<std::int64_t> versions_of(const std::vector<recorded_event>& evs) {
  std::vector<std::int64_t> out;
  for (const auto& e : evs) out.push_back(e.stream_version);
  return out;
}

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to_inclusive, int step = 1) {
  std::vector<std::int64_t> out;
  for (std::int64_t v = from; step > 0 ? v <= to_inclusive : v >= to_inclusive; v += step) {
    out.push_back(v);
  }
  return out;
}

std::set<std::string> streams_of(const std::vector<recorded_event>& evs) {
  std::set<std::string> out;
  for (const auto& e : evs) out.insert(e.stream_id);
  return out;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_uuid_v7(const std::string& id) {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    char c = id[i];
    if (dash != (c == '-')) return false;
    if (!dash && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  // Version nibble 7; variant bits 10 (first hex digit of the 4th group is 8, 9, a or b).
  return id[14] == '7' && std::string_view("89ab").find(id[19]) != std::string_view::npos;
}

std::int64_t uuid_v7_ms(const std::string& id) {
  std::string hex = id.substr(0, 8) + id.substr(9, 4);
  return static_cast<std::int64_t>(std::stoull(hex, nullptr, 16));
}

}  // namespace

// ---- expected version forms -----------------------------------------------------------------

TEST_CASE_TEMPLATE("a new store is empty", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  CHECK(must(store->head_position()) == 0);
  CHECK(must(store->stream_version("nothing-here")) == -1);
  CHECK(read_all_vec(*store).empty());
}

TEST_CASE_TEMPLATE("append with no_stream creates the stream at version 0 and refuses an existing stream",
                   B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto r = must(store->append("order-1", expected_version::no_stream(), make_events(2)));
  CHECK(r.stream_version == 1);
  CHECK(r.position == 2);
  CHECK_FALSE(r.already_appended);

  auto again = store->append("order-1", expected_version::no_stream(), make_events(1, "late"));
  check_conflict(again, "order-1", "no_stream", 1);
  CHECK(must(store->head_position()) == 2);
  CHECK(must(store->stream_version("order-1")) == 1);
}

TEST_CASE_TEMPLATE("append with any succeeds on a missing and on an existing stream", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto first = must(store->append("s", expected_version::any(), make_events(1)));
  CHECK(first.stream_version == 0);
  auto second = must(store->append("s", expected_version::any(), make_events(3)));
  CHECK(second.stream_version == 3);
  CHECK(second.position == 4);
  CHECK(versions_of(read_stream_vec(*store, "s")) == range(0, 3));
}

TEST_CASE_TEMPLATE("append with stream_exists refuses a missing stream and accepts an existing one",
                   B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto missing = store->append("s", expected_version::stream_exists(), make_events(1));
  check_conflict(missing, "s", "stream_exists", -1);
  CHECK(must(store->head_position()) == 0);
  CHECK(must(store->stream_version("s")) == -1);

  must(store->append("s", expected_version::no_stream(), make_events(1)));
  auto r = must(store->append("s", expected_version::stream_exists(), make_events(2)));
  CHECK(r.stream_version == 2);
  CHECK(r.position == 3);
}

TEST_CASE_TEMPLATE("append with the exact current version succeeds", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(), make_events(2)));
  auto r = must(store->append("s", expected_version::exact(1), make_events(1)));
  CHECK(r.stream_version == 2);
  CHECK(r.position == 3);
  auto r2 = must(store->append("s", expected_version::exact(2), make_events(4)));
  CHECK(r2.stream_version == 6);
  CHECK(r2.position == 7);
}

TEST_CASE_TEMPLATE("append with stale exact version reports conflict naming stream and versions",
                   B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("account-7", expected_version::no_stream(), make_events(3)));

  SUBCASE("stale version") {
    check_conflict(store->append("account-7", expected_version::exact(0), make_events(1)),
                   "account-7", "0", 2);
  }
  SUBCASE("version from the future") {
    check_conflict(store->append("account-7", expected_version::exact(5), make_events(1)),
                   "account-7", "5", 2);
  }
  SUBCASE("exact version on a missing stream") {
    check_conflict(store->append("account-8", expected_version::exact(0), make_events(1)),
                   "account-8", "0", -1);
    CHECK(must(store->stream_version("account-8")) == -1);
  }
  CHECK(must(store->head_position()) == 3);
  CHECK(must(store->stream_version("account-7")) == 2);
}

TEST_CASE_TEMPLATE("an empty append checks the expected version and writes nothing", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(), make_events(2)));

  auto ok = must(store->append("s", expected_version::exact(1), {}));
  CHECK(ok.stream_version == 1);
  CHECK_FALSE(ok.already_appended);
  check_conflict(store->append("s", expected_version::exact(7), {}), "s", "7", 1);
  check_conflict(store->append("s", expected_version::no_stream(), {}), "s", "no_stream", 1);
  check_conflict(store->append("t", expected_version::stream_exists(), {}), "t", "stream_exists",
                 -1);

  auto none = must(store->append("t", expected_version::no_stream(), {}));
  CHECK(none.stream_version == -1);
  CHECK(must(store->stream_version("t")) == -1);  // an empty append creates no stream
  CHECK(must(store->head_position()) == 2);
}

// ---- atomicity, versions, positions -----------------------------------------------------------

TEST_CASE_TEMPLATE("a rejected multi-event append writes nothing", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("other", expected_version::no_stream(),
                     {make_event("test.v1.Thing", "x", uuid(100))}));
  must(store->append("s", expected_version::no_stream(), make_events(2)));

  SUBCASE("on a version conflict") {
    CHECK(kind_of(store->append("s", expected_version::exact(0), make_events(5))) ==
          errc::concurrency_conflict);
  }
  SUBCASE("when one event in the middle has a bad type") {
    auto evs = make_events(5);
    evs[2].type = "not a type";
    CHECK(kind_of(store->append("s", expected_version::exact(1), evs)) ==
          errc::invalid_argument);
  }
  SUBCASE("when the third event's id is already stored in another stream") {
    std::vector<event_data> evs{make_event("test.v1.Thing", "a", uuid(1)),
                                make_event("test.v1.Thing", "b", uuid(2)),
                                make_event("test.v1.Thing", "c", uuid(100)),
                                make_event("test.v1.Thing", "d", uuid(3))};
    CHECK(kind_of(store->append("s", expected_version::exact(1), evs)) ==
          errc::invalid_argument);
    // The ids of the events that were not written are not used up.
    auto r = must(store->append("s", expected_version::exact(1),
                                {make_event("test.v1.Thing", "a", uuid(1)),
                                 make_event("test.v1.Thing", "b", uuid(2))}));
    CHECK(r.stream_version == 3);
    CHECK(r.position == 5);
    CHECK_FALSE(r.already_appended);
    return;
  }
  CHECK(must(store->head_position()) == 3);
  CHECK(must(store->stream_version("s")) == 1);
  CHECK(read_stream_vec(*store, "s").size() == 2);
}

TEST_CASE_TEMPLATE("append returns the new stream version and global position", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto a = must(store->append("a", expected_version::no_stream(), make_events(3)));
  auto b = must(store->append("b", expected_version::no_stream(), make_events(2)));
  auto c = must(store->append("a", expected_version::exact(2), make_events(1)));
  CHECK(a.stream_version == 2);
  CHECK(a.position == 3);
  CHECK(b.stream_version == 1);
  CHECK(b.position == 5);
  CHECK(c.stream_version == 3);
  CHECK(c.position == 6);
  // The returned position is the position of the last event written, as $all says.
  auto tail = read_stream_vec(*store, "a", {.from_version = -1, .dir = direction::backward,
                                            .max_count = 1});
  REQUIRE(tail.size() == 1);
  CHECK(tail[0].position == c.position);
  CHECK(tail[0].stream_version == c.stream_version);
}

TEST_CASE_TEMPLATE("positions are gap-free and increasing across streams and versions contiguous",
                   B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  std::mt19937 rng(42);
  struct expected_event {
    std::string stream;
    std::int64_t version;
    std::string payload;
  };
  std::vector<expected_event> expected;
  std::map<std::string, std::int64_t> versions;
  std::int64_t head = 0;
  for (int i = 0; i < 60; ++i) {
    std::string stream = "stream-" + std::to_string(rng() % 5);
    int n = 1 + static_cast<int>(rng() % 4);
    auto evs = make_events(n, "i" + std::to_string(i) + "-");
    auto it = versions.find(stream);
    auto ev = it == versions.end() ? expected_version::no_stream()
                                   : expected_version::exact(it->second);
    auto r = must(store->append(stream, ev, evs));
    std::int64_t first = it == versions.end() ? 0 : it->second + 1;
    CHECK(r.stream_version == first + n - 1);
    CHECK(r.position == head + n);
    for (int k = 0; k < n; ++k) {
      expected.push_back({stream, first + k, "i" + std::to_string(i) + "-" + std::to_string(k)});
    }
    versions[stream] = r.stream_version;
    head = r.position;
  }
  auto all = check_store_invariants(*store);
  REQUIRE(all.size() == expected.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO("position " << i + 1);
    CHECK(all[i].position == static_cast<std::int64_t>(i + 1));
    CHECK(all[i].stream_id == expected[i].stream);
    CHECK(all[i].stream_version == expected[i].version);
    CHECK(all[i].payload == expected[i].payload);
  }
  for (const auto& [stream, last] : versions) {
    auto evs = read_stream_vec(*store, stream);
    CHECK(versions_of(evs) == range(0, last));
    for (std::size_t i = 1; i < evs.size(); ++i) CHECK(evs[i - 1].position < evs[i].position);
  }
}

// ---- idempotent appends -----------------------------------------------------------------------

TEST_CASE_TEMPLATE("re-appending the same ids at the same versions returns the original result",
                   B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto batch = [] {
    return std::vector<event_data>{make_event("test.v1.Thing", "a", uuid(1)),
                                   make_event("test.v1.Thing", "b", uuid(2))};
  };
  auto check_same = [&](const result<append_result>& retry, const append_result& original,
                        std::int64_t head) {
    INFO(describe(retry));
    REQUIRE(retry.ok());
    CHECK(retry->already_appended);
    CHECK(retry->stream_version == original.stream_version);
    CHECK(retry->position == original.position);
    CHECK(must(store->head_position()) == head);
  };

  SUBCASE("with exact") {
    must(store->append("s", expected_version::no_stream(), make_events(1)));
    auto original = must(store->append("s", expected_version::exact(0), batch()));
    CHECK_FALSE(original.already_appended);
    must(store->append("elsewhere", expected_version::any(), make_events(1)));
    check_same(store->append("s", expected_version::exact(0), batch()), original, 4);
    // Still recognised after the stream moved on.
    must(store->append("s", expected_version::exact(2), make_events(2)));
    check_same(store->append("s", expected_version::exact(0), batch()), original, 6);
    CHECK(must(store->stream_version("s")) == 4);
  }
  SUBCASE("with no_stream") {
    auto original = must(store->append("s", expected_version::no_stream(), batch()));
    check_same(store->append("s", expected_version::no_stream(), batch()), original, 2);
    CHECK(must(store->stream_version("s")) == 1);
  }
  SUBCASE("with any") {
    must(store->append("s", expected_version::any(), make_events(1)));
    auto original = must(store->append("s", expected_version::any(), batch()));
    check_same(store->append("s", expected_version::any(), batch()), original, 3);
    CHECK(must(store->stream_version("s")) == 2);
  }
  SUBCASE("with stream_exists") {
    must(store->append("s", expected_version::any(), make_events(1)));
    auto original = must(store->append("s", expected_version::stream_exists(), batch()));
    check_same(store->append("s", expected_version::stream_exists(), batch()), original, 3);
  }
  SUBCASE("with ids given in another case") {
    auto original = must(store->append("s", expected_version::no_stream(),
                                       {make_event("test.v1.Thing", "x",
                                                   "0189ABCD-0000-7000-8000-00000000AAAA")}));
    check_same(store->append("s", expected_version::no_stream(),
                             {make_event("test.v1.Thing", "x",
                                         "0189abcd-0000-7000-8000-00000000aaaa")}),
               original, 1);
  }
  // Whatever the form, the stream holds each id once.
  auto ids = ids_of(read_all_vec(*store));
  std::set<std::string> unique(ids.begin(), ids.end());
  CHECK(unique.size() == ids.size());
}

TEST_CASE_TEMPLATE("re-appending stored ids at other versions is refused and writes nothing", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(),
                     {make_event("test.v1.Thing", "a", uuid(1)),
                      make_event("test.v1.Thing", "b", uuid(2))}));

  SUBCASE("exact version after them") {
    CHECK(kind_of(store->append("s", expected_version::exact(1),
                                {make_event("test.v1.Thing", "a", uuid(1)),
                                 make_event("test.v1.Thing", "b", uuid(2))})) ==
          errc::invalid_argument);
  }
  SUBCASE("second id alone as a new stream") {
    CHECK(kind_of(store->append("s", expected_version::no_stream(),
                                {make_event("test.v1.Thing", "b", uuid(2))})) ==
          errc::invalid_argument);
  }
  SUBCASE("ids in another order") {
    CHECK(kind_of(store->append("s", expected_version::any(),
                                {make_event("test.v1.Thing", "b", uuid(2)),
                                 make_event("test.v1.Thing", "a", uuid(1))})) ==
          errc::invalid_argument);
  }
  SUBCASE("with a gap between them") {
    CHECK(kind_of(store->append("s", expected_version::any(),
                                {make_event("test.v1.Thing", "a", uuid(1)),
                                 make_event("test.v1.Thing", "c", uuid(3)),
                                 make_event("test.v1.Thing", "b", uuid(2))})) ==
          errc::invalid_argument);
  }
  CHECK(must(store->head_position()) == 2);
  CHECK(must(store->stream_version("s")) == 1);
}

TEST_CASE_TEMPLATE("re-appending stored ids into another stream is refused and writes nothing", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto original = must(store->append("s", expected_version::no_stream(),
                                     {make_event("test.v1.Thing", "a", uuid(1))}));
  for (auto ev : {expected_version::no_stream(), expected_version::any()}) {
    CAPTURE(ev.to_string());
    CHECK(kind_of(store->append("t", ev, {make_event("test.v1.Thing", "a", uuid(1))})) ==
          errc::invalid_argument);
  }
  must(store->append("t", expected_version::no_stream(), make_events(1)));
  CHECK(kind_of(store->append("t", expected_version::exact(0),
                              {make_event("test.v1.Thing", "a", uuid(1))})) ==
        errc::invalid_argument);
  CHECK(must(store->stream_version("t")) == 0);
  CHECK(must(store->head_position()) == 2);
  auto s = read_stream_vec(*store, "s");
  REQUIRE(s.size() == 1);
  CHECK(s[0].position == original.position);
}

TEST_CASE_TEMPLATE("a partially overlapping re-append is refused and writes nothing", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(),
                     {make_event("test.v1.Thing", "a", uuid(1)),
                      make_event("test.v1.Thing", "b", uuid(2))}));
  auto with_new_tail = std::vector<event_data>{make_event("test.v1.Thing", "a", uuid(1)),
                                               make_event("test.v1.Thing", "b", uuid(2)),
                                               make_event("test.v1.Thing", "c", uuid(3))};
  CHECK(kind_of(store->append("s", expected_version::no_stream(), with_new_tail)) ==
        errc::invalid_argument);
  CHECK(kind_of(store->append("s", expected_version::any(), with_new_tail)) ==
        errc::invalid_argument);
  // Old id after a new one: the new one is inserted first and must be undone.
  CHECK(kind_of(store->append("s", expected_version::exact(1),
                              {make_event("test.v1.Thing", "c", uuid(3)),
                               make_event("test.v1.Thing", "b", uuid(2))})) ==
        errc::invalid_argument);
  CHECK(kind_of(store->append("s", expected_version::any(),
                              {make_event("test.v1.Thing", "c", uuid(3)),
                               make_event("test.v1.Thing", "a", uuid(1))})) ==
        errc::invalid_argument);
  CHECK(must(store->head_position()) == 2);
  CHECK(ids_of(read_all_vec(*store)) == std::vector<std::string>{uuid(1), uuid(2)});
  // uuid(3) was never written, so it is still free.
  auto r = must(store->append("s", expected_version::exact(1),
                              {make_event("test.v1.Thing", "c", uuid(3))}));
  CHECK_FALSE(r.already_appended);
  CHECK(r.stream_version == 2);
}

TEST_CASE_TEMPLATE("an append holding the same event id twice is refused", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  CHECK(kind_of(store->append("s", expected_version::any(),
                              {make_event("test.v1.Thing", "a", uuid(1)),
                               make_event("test.v1.Thing", "b", uuid(1))})) ==
        errc::invalid_argument);
  // The same id written in two cases is the same id.
  CHECK(kind_of(store->append("s", expected_version::any(),
                              {make_event("test.v1.Thing", "a",
                                          "0189abcd-0000-7000-8000-00000000aaaa"),
                               make_event("test.v1.Thing", "b",
                                          "0189ABCD-0000-7000-8000-00000000AAAA")})) ==
        errc::invalid_argument);
  CHECK(must(store->head_position()) == 0);
  CHECK(must(store->stream_version("s")) == -1);
}

// ---- event ids, metadata, payloads ----------------------------------------------------------------

TEST_CASE_TEMPLATE("events appended without an id get increasing UUIDv7 ids", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  std::int64_t before_ms = now_us() / 1000;
  for (int i = 0; i < 30; ++i) {
    must(store->append("s-" + std::to_string(i % 3), expected_version::any(), make_events(10)));
  }
  std::int64_t after_ms = now_us() / 1000;
  auto all = read_all_vec(*store);
  REQUIRE(all.size() == 300);
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO("event id " << all[i].event_id << " at position " << all[i].position);
    CHECK(is_uuid_v7(all[i].event_id));
    auto ms = uuid_v7_ms(all[i].event_id);
    CHECK(ms >= before_ms - 1000);
    CHECK(ms <= after_ms + 1000);
    if (i > 0) CHECK(all[i - 1].event_id < all[i].event_id);
  }
}

TEST_CASE("new_uuid_v7 is a monotonic RFC 9562 version 7 UUID") {
  std::string last;
  for (int i = 0; i < 20000; ++i) {
    auto id = new_uuid_v7();
    if (!is_uuid_v7(id)) FAIL("not a UUIDv7: " << id);
    if (!(last < id)) FAIL("not increasing: " << last << " then " << id);
    last = id;
  }
}

TEST_CASE_TEMPLATE("a supplied event id is kept and stored in canonical lower case", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(),
                     {make_event("test.v1.Thing", "x", "0189ABCD-EF01-7234-8567-89ABCDEF0123"),
                      make_event("test.v1.Thing", "y", uuid(5))}));
  auto evs = read_stream_vec(*store, "s");
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].event_id == "0189abcd-ef01-7234-8567-89abcdef0123");
  CHECK(evs[1].event_id == uuid(5));
}

TEST_CASE_TEMPLATE("metadata round-trips with headers in order and recorded_at close to now", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  event_data e = make_event("bank.v1.MoneyDeposited", "payload");
  e.metadata.correlation_id = "corr-42";
  e.metadata.causation_id = "0189abcd-ef01-7234-8567-89abcdef0123";
  e.metadata.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  e.metadata.headers = {{"z-last", "1"},   {"a-first", "2"}, {"dup", "x"},
                        {"dup", "y"},      {"empty", ""},    {"", "empty key"},
                        {"unicode", "ü日本🎉"}};
  event_data plain = make_event("bank.v1.MoneyWithdrawn", "p2");

  auto before = now_us();
  must(store->append("acc", expected_version::no_stream(), {e, plain}));
  auto after = now_us();

  auto evs = read_stream_vec(*store, "acc");
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].type == "bank.v1.MoneyDeposited");
  CHECK(evs[0].metadata.correlation_id == e.metadata.correlation_id);
  CHECK(evs[0].metadata.causation_id == e.metadata.causation_id);
  CHECK(evs[0].metadata.traceparent == e.metadata.traceparent);
  CHECK(evs[0].metadata.headers == e.metadata.headers);
  CHECK(evs[0].metadata == e.metadata);
  CHECK(evs[1].metadata == event_metadata{});
  for (const auto& ev : evs) {
    CHECK(ev.recorded_at_us >= before - 1'000'000);
    CHECK(ev.recorded_at_us <= after + 1'000'000);
  }
  // read_all decodes the same metadata as read_stream.
  auto all = read_all_vec(*store);
  REQUIRE(all.size() == 2);
  CHECK(all[0].metadata == e.metadata);
  CHECK(all[0].recorded_at_us == evs[0].recorded_at_us);
}

TEST_CASE_TEMPLATE("the injected clock and id source are used", B, ANNALS_STORE_BACKENDS) {
  B backend;
  std::atomic<int> clock_calls{0};
  std::atomic<std::uint64_t> next_id{1000};
  backend_options o;
  o.clock = [&] {
    ++clock_calls;
    return std::int64_t{1'700'000'000'123'456};
  };
  o.id_source = [&] { return uuid(next_id++); };
  auto store = backend.open(o);
  must(store->append("s", expected_version::no_stream(),
                     {make_event("test.v1.Thing", "a"), make_event("test.v1.Thing", "b", uuid(7)),
                      make_event("test.v1.Thing", "c")}));
  auto evs = read_stream_vec(*store, "s");
  REQUIRE(evs.size() == 3);
  CHECK(evs[0].event_id == uuid(1000));
  CHECK(evs[1].event_id == uuid(7));  // a supplied id wins over the source
  CHECK(evs[2].event_id == uuid(1001));
  for (const auto& ev : evs) CHECK(ev.recorded_at_us == 1'700'000'000'123'456);
  CHECK(clock_calls.load() >= 1);
}

TEST_CASE_TEMPLATE("payload bytes including NUL round-trip exactly", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  std::string every_byte;
  for (int c = 0; c < 256; ++c) every_byte.push_back(static_cast<char>(c));
  std::string nuls("\0\0a\0", 4);
  std::string big(1 << 20, '\0');
  std::mt19937 rng(7);
  for (auto& ch : big) ch = static_cast<char>(rng());
  std::vector<std::string> payloads{every_byte, nuls, std::string(), big, std::string(1, '\0')};
  std::vector<event_data> evs;
  for (const auto& p : payloads) evs.push_back(make_event("test.v1.Blob", p));
  must(store->append("blobs", expected_version::no_stream(), evs));

  auto back = read_stream_vec(*store, "blobs");
  REQUIRE(back.size() == payloads.size());
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    INFO("payload " << i);
    CHECK(back[i].payload.size() == payloads[i].size());
    CHECK(back[i].payload == payloads[i]);
  }
  auto all = read_all_vec(*store);
  REQUIRE(all.size() == payloads.size());
  CHECK(all[0].payload == every_byte);
  CHECK(all[3].payload == big);
}

// ---- reading streams ------------------------------------------------------------------------

TEST_CASE_TEMPLATE("read_stream reads forward from a version with max_count", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("noise", expected_version::any(), make_events(2)));
  must(store->append("s", expected_version::no_stream(), make_events(10)));
  must(store->append("noise", expected_version::any(), make_events(2)));

  auto all = read_stream_vec(*store, "s");
  CHECK(versions_of(all) == range(0, 9));
  for (const auto& e : all) {
    CHECK(e.stream_id == "s");
    CHECK(e.type == "test.v1.Thing");
    CHECK(e.payload == "p" + std::to_string(e.stream_version));
    CHECK(e.position == e.stream_version + 3);
  }
  CHECK(versions_of(read_stream_vec(*store, "s", {.from_version = 0})) == range(0, 9));
  CHECK(versions_of(read_stream_vec(*store, "s", {.from_version = 4})) == range(4, 9));
  CHECK(versions_of(read_stream_vec(*store, "s", {.from_version = 4, .max_count = 3})) ==
        range(4, 6));
  CHECK(versions_of(read_stream_vec(*store, "s", {.from_version = 9})) == range(9, 9));
  CHECK(read_stream_vec(*store, "s", {.from_version = 10}).empty());
  CHECK(read_stream_vec(*store, "s", {.from_version = 0, .max_count = 0}).empty());
}

TEST_CASE_TEMPLATE("read_stream reads backward from the end and from a version", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(), make_events(10)));
  must(store->append("t", expected_version::no_stream(), make_events(3)));
  using o = read_stream_options;
  CHECK(versions_of(read_stream_vec(*store, "s", o{.dir = direction::backward})) ==
        range(9, 0, -1));
  CHECK(versions_of(read_stream_vec(*store, "s", o{.from_version = -1, .dir = direction::backward,
                                                   .max_count = 2})) == range(9, 8, -1));
  CHECK(versions_of(read_stream_vec(*store, "s", o{.from_version = 5, .dir = direction::backward})) ==
        range(5, 0, -1));
  CHECK(versions_of(read_stream_vec(*store, "s", o{.from_version = 5, .dir = direction::backward,
                                                   .max_count = 2})) == range(5, 4, -1));
  CHECK(versions_of(read_stream_vec(*store, "s", o{.from_version = 0, .dir = direction::backward})) ==
        range(0, 0));
  auto back = read_stream_vec(*store, "s", o{.dir = direction::backward});
  REQUIRE(back.size() == 10);
  CHECK(back.front().payload == "p9");
  CHECK(back.back().payload == "p0");
  CHECK(back.front().position == 10);
}

TEST_CASE_TEMPLATE("returning false from the visitor stops a read early", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("s", expected_version::no_stream(), make_events(20)));
  int calls = 0;
  auto stop_after_3 = [&](const recorded_event&) { return ++calls < 3; };
  auto n = must(store->read_stream("s", {}, stop_after_3));
  CHECK(n == 3);
  CHECK(calls == 3);
  calls = 0;
  n = must(store->read_stream("s", {.dir = direction::backward}, stop_after_3));
  CHECK(n == 3);
  CHECK(calls == 3);
  calls = 0;
  n = must(store->read_all({}, stop_after_3));
  CHECK(n == 3);
  CHECK(calls == 3);
  // The store is usable afterwards (the stopped read left nothing open).
  must(store->append("s", expected_version::exact(19), make_events(1)));
  CHECK(read_all_vec(*store).size() == 21);
}

TEST_CASE_TEMPLATE("reading a missing stream visits nothing", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  must(store->append("present", expected_version::no_stream(), make_events(3)));
  int calls = 0;
  auto count = [&](const recorded_event&) { return ++calls, true; };
  CHECK(must(store->read_stream("absent", {}, count)) == 0);
  CHECK(must(store->read_stream("absent", {.dir = direction::backward}, count)) == 0);
  CHECK(must(store->read_stream("presen", {}, count)) == 0);  // no prefix matching
  CHECK(calls == 0);
  CHECK(must(store->stream_version("absent")) == -1);
}

// ---- reading $all -----------------------------------------------------------------------------

TEST_CASE_TEMPLATE("read_all reads forward from a position with max_count", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  for (int i = 0; i < 5; ++i) {
    must(store->append("s" + std::to_string(i), expected_version::no_stream(), make_events(2)));
  }
  auto positions = [](const std::vector<recorded_event>& evs) {
    std::vector<std::int64_t> out;
    for (const auto& e : evs) out.push_back(e.position);
    return out;
  };
  CHECK(positions(read_all_vec(*store)) == range(1, 10));
  CHECK(positions(read_all_vec(*store, query().from(4))) == range(4, 10));
  CHECK(positions(read_all_vec(*store, query().from(4).max(3))) == range(4, 6));
  CHECK(positions(read_all_vec(*store, query().from(10))) == range(10, 10));
  CHECK(read_all_vec(*store, query().from(11)).empty());
  CHECK(read_all_vec(*store, query().max(0)).empty());
  auto all = read_all_vec(*store, query().from(3).max(1));
  REQUIRE(all.size() == 1);
  CHECK(all[0].stream_id == "s1");
  CHECK(all[0].stream_version == 0);
  CHECK(all[0].payload == "p0");
}

TEST_CASE_TEMPLATE("read_all filters by event types", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  for (int i = 0; i < 12; ++i) {
    std::string type = std::string("test.v1.") + "ABC"[i % 3];
    must(store->append("s" + std::to_string(i % 4), expected_version::any(),
                       {make_event(type, std::to_string(i))}));
  }
  auto ac = read_all_vec(*store, query().types({"test.v1.A", "test.v1.C"}));
  REQUIRE(ac.size() == 8);
  for (const auto& e : ac) {
    CHECK((e.type == "test.v1.A" || e.type == "test.v1.C"));
    CHECK(e.type.back() == "ABC"[std::stoi(e.payload) % 3]);
  }
  for (std::size_t i = 1; i < ac.size(); ++i) CHECK(ac[i - 1].position < ac[i].position);
  CHECK(read_all_vec(*store, query().types({"test.v1.B"})).size() == 4);
  CHECK(read_all_vec(*store, query().types({"test.v1.Unknown"})).empty());
  // Type names match exactly, not by prefix or case.
  CHECK(read_all_vec(*store, query().types({"test.v1"})).empty());
  CHECK(read_all_vec(*store, query().types({"test.v1.a"})).empty());
}

TEST_CASE_TEMPLATE("read_all filters by stream prefix", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  for (std::string s : {"order-1", "customer-1", "order-2", "orders", "Order-3", "order-"}) {
    must(store->append(s, expected_version::no_stream(), make_events(2)));
  }
  CHECK(streams_of(read_all_vec(*store, query().prefix("order-"))) ==
        std::set<std::string>{"order-", "order-1", "order-2"});
  CHECK(read_all_vec(*store, query().prefix("order-")).size() == 6);
  CHECK(streams_of(read_all_vec(*store, query().prefix("order"))) ==
        std::set<std::string>{"order-", "order-1", "order-2", "orders"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("order-1"))) ==
        std::set<std::string>{"order-1"});
  CHECK(read_all_vec(*store, query().prefix("order-1x")).empty());
  CHECK(read_all_vec(*store, query().prefix("ORDER")).empty());
  CHECK(streams_of(read_all_vec(*store, query().prefix("O"))) ==
        std::set<std::string>{"Order-3"});
}

TEST_CASE_TEMPLATE("a stream prefix with % _ and Unicode is matched literally", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  for (std::string s : {"a%b-1", "axb-1", "a_c-1", "abc-1", "ü-1", "üx", "u-1", "日本-1",
                        "日本語", "A%b", "a\\_c", "%", "_"}) {
    must(store->append(s, expected_version::no_stream(), make_events(1)));
  }
  using set = std::set<std::string>;
  CHECK(streams_of(read_all_vec(*store, query().prefix("a%"))) == set{"a%b-1"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("a_"))) == set{"a_c-1"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("a_c"))) == set{"a_c-1"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("%"))) == set{"%"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("_"))) == set{"_"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("a\\"))) == set{"a\\_c"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("ü"))) == set{"ü-1", "üx"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("u"))) == set{"u-1"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("日本-"))) == set{"日本-1"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("日本"))) == set{"日本-1", "日本語"});
  CHECK(streams_of(read_all_vec(*store, query().prefix("A"))) == set{"A%b"});
}

TEST_CASE_TEMPLATE("read_all combines the type filter with stream prefix and start position", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  // 40 events: streams order-0..3 and cust-0..3, types A/B alternating.
  for (int i = 0; i < 40; ++i) {
    std::string stream = std::string(i % 2 ? "cust-" : "order-") + std::to_string(i % 4);
    std::string type = i % 3 == 0 ? "test.v1.A" : "test.v1.B";
    must(store->append(stream, expected_version::any(), {make_event(type, std::to_string(i))}));
  }
  auto got = read_all_vec(*store, query().from(11).types({"test.v1.A"}).prefix("order-"));
  std::vector<int> expect;
  for (int i = 10; i < 40; ++i) {
    if (i % 2 == 0 && i % 3 == 0) expect.push_back(i);
  }
  REQUIRE(got.size() == expect.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    CHECK(got[k].payload == std::to_string(expect[k]));
    CHECK(got[k].position == expect[k] + 1);
    CHECK(got[k].type == "test.v1.A");
    CHECK(got[k].stream_id.rfind("order-", 0) == 0);
  }
  auto limited = read_all_vec(*store, query().from(11).max(2).types({"test.v1.A"}).prefix("order-"));
  REQUIRE(limited.size() == 2);
  CHECK(limited[0].payload == std::to_string(expect[0]));
  CHECK(limited[1].payload == std::to_string(expect[1]));
}

TEST_CASE_TEMPLATE("reads across many pages neither lose nor repeat events", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  // 45 batches of 100 events in "big" (types A/B alternating), each followed by one event in
  // its own "other-N" stream of type C: 4545 events, more than two internal pages (SQLite
  // reads in pages of 2048 rows).
  for (int b = 0; b < 45; ++b) {
    std::vector<event_data> evs;
    for (int i = 0; i < 100; ++i) {
      int n = b * 100 + i;
      evs.push_back(make_event(n % 2 ? "test.v1.B" : "test.v1.A", std::to_string(n)));
    }
    must(store->append("big", expected_version::any(), std::move(evs)));
    must(store->append("other-" + std::to_string(b), expected_version::no_stream(),
                       {make_event("test.v1.C", "other" + std::to_string(b))}));
  }
  auto check_payloads = [](const std::vector<recorded_event>& evs, std::int64_t first,
                           int step) {
    bool ok = true;
    for (std::size_t i = 0; i < evs.size(); ++i) {
      auto v = first + step * static_cast<std::int64_t>(i);
      ok = ok && evs[i].stream_version == v && evs[i].payload == std::to_string(v);
    }
    return ok;
  };
  auto fwd = read_stream_vec(*store, "big");
  CHECK(fwd.size() == 4500);
  CHECK(check_payloads(fwd, 0, 1));
  auto bwd = read_stream_vec(*store, "big", {.dir = direction::backward});
  CHECK(bwd.size() == 4500);
  CHECK(check_payloads(bwd, 4499, -1));
  auto mid = read_stream_vec(*store, "big", {.from_version = 300, .max_count = 3000});
  CHECK(mid.size() == 3000);
  CHECK(check_payloads(mid, 300, 1));
  auto mid_back = read_stream_vec(*store, "big", {.from_version = 4000,
                                                  .dir = direction::backward,
                                                  .max_count = 2500});
  CHECK(mid_back.size() == 2500);
  CHECK(check_payloads(mid_back, 4000, -1));

  auto all = check_store_invariants(*store);
  CHECK(all.size() == 4545);
  auto from = read_all_vec(*store, query().from(700).max(2100));
  REQUIRE(from.size() == 2100);
  CHECK(from.front().position == 700);
  CHECK(from.back().position == 2799);
  auto a = read_all_vec(*store, query().types({"test.v1.A"}));
  CHECK(a.size() == 2250);
  std::set<std::int64_t> a_positions;
  for (const auto& e : a) a_positions.insert(e.position);
  CHECK(a_positions.size() == 2250);
  auto c = read_all_vec(*store, query().types({"test.v1.C"}));
  REQUIRE(c.size() == 45);
  for (int b = 0; b < 45; ++b) {
    CHECK(c[b].payload == "other" + std::to_string(b));
    CHECK(c[b].position == 101 * (b + 1));
  }
  CHECK(read_all_vec(*store, query().prefix("other-")).size() == 45);
  CHECK(read_all_vec(*store, query().prefix("big")).size() == 4500);
  std::int64_t seen = 0;
  auto n = must(store->read_all(query().from(1), [&](const recorded_event& e) {
    if (e.position != seen + 1) return false;
    seen = e.position;
    return true;
  }));
  CHECK(n == 4545);
  CHECK(seen == 4545);
}

TEST_CASE_TEMPLATE("stream_version and head_position follow appends", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  CHECK(must(store->head_position()) == 0);
  must(store->append("a", expected_version::no_stream(), make_events(3)));
  CHECK(must(store->stream_version("a")) == 2);
  CHECK(must(store->head_position()) == 3);
  must(store->append("b", expected_version::no_stream(), make_events(1)));
  CHECK(must(store->stream_version("a")) == 2);
  CHECK(must(store->stream_version("b")) == 0);
  CHECK(must(store->head_position()) == 4);
  (void)store->append("a", expected_version::exact(0), make_events(2));  // conflict
  CHECK(must(store->stream_version("a")) == 2);
  CHECK(must(store->head_position()) == 4);
}

// ---- opening ---------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("a reopened store sees every event and continues the sequence", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  std::vector<recorded_event> before;
  {
    auto store = backend.open();
    event_data e = make_event("test.v1.Meta", std::string("x\0y", 3));
    e.metadata.correlation_id = "c";
    e.metadata.headers = {{"k", "v"}};
    must(store->append("a", expected_version::no_stream(), {e}));
    must(store->append("b", expected_version::no_stream(), make_events(4)));
    must(store->append("a", expected_version::exact(0), make_events(2)));
    before = read_all_vec(*store);
  }
  auto store = backend.open();
  auto after = read_all_vec(*store);
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].position == before[i].position);
    CHECK(after[i].stream_id == before[i].stream_id);
    CHECK(after[i].stream_version == before[i].stream_version);
    CHECK(after[i].event_id == before[i].event_id);
    CHECK(after[i].type == before[i].type);
    CHECK(after[i].recorded_at_us == before[i].recorded_at_us);
    CHECK(after[i].metadata == before[i].metadata);
    CHECK(after[i].payload == before[i].payload);
  }
  CHECK(must(store->stream_version("a")) == 2);
  CHECK(must(store->head_position()) == 7);
  check_conflict(store->append("a", expected_version::exact(0), make_events(1)), "a", "0", 2);
  auto r = must(store->append("a", expected_version::exact(2), make_events(1)));
  CHECK(r.stream_version == 3);
  CHECK(r.position == 8);
}

TEST_CASE_TEMPLATE("two store instances on one store see each other's appends", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  auto one = backend.open();
  auto two = backend.open();
  must(one->append("s", expected_version::no_stream(), make_events(1)));
  CHECK(must(two->stream_version("s")) == 0);
  check_conflict(two->append("s", expected_version::no_stream(), make_events(1)), "s",
                 "no_stream", 0);
  auto r = must(two->append("s", expected_version::exact(0), make_events(1)));
  CHECK(r.position == 2);
  CHECK(must(one->head_position()) == 2);
  check_conflict(one->append("s", expected_version::exact(0), make_events(1)), "s", "0", 1);
  CHECK(read_all_vec(*one).size() == 2);
}

TEST_CASE_TEMPLATE("open_store with the backend URI opens the same store", B,
                   ANNALS_STORE_BACKENDS) {
  B backend;
  {
    auto store = backend.open();
    must(store->append("s", expected_version::no_stream(), make_events(3)));
  }
  auto opened = open_store(backend.uri());
  INFO(describe(opened));
  REQUIRE(opened.ok());
  CHECK(must((*opened)->stream_version("s")) == 2);
  CHECK(must((*opened)->head_position()) == 3);
}

// ---- SQLite specifics and values --------------------------------------------------------------

TEST_CASE("expected_version::parse accepts the four forms and refuses anything else") {
  struct good_case {
    const char* text;
    expected_version::kind form;
    std::int64_t version;
  };
  for (auto g : {good_case{"any", expected_version::kind::any, -1},
                 good_case{"no_stream", expected_version::kind::no_stream, -1},
                 good_case{"stream_exists", expected_version::kind::stream_exists, -1},
                 good_case{"0", expected_version::kind::exact, 0},
                 good_case{"42", expected_version::kind::exact, 42},
                 good_case{"9223372036854775807", expected_version::kind::exact, INT64_MAX}}) {
    CAPTURE(g.text);
    auto r = expected_version::parse(g.text);
    INFO(describe(r));
    REQUIRE(r.ok());
    CHECK(r->form() == g.form);
    if (g.form == expected_version::kind::exact) CHECK(r->version() == g.version);
    CHECK(r->to_string() == g.text);
  }
  for (std::string bad : std::vector<std::string>{"", "-1", "+1", " 1", "1 ", "1.0", "0x10", "1e3", "ANY", "Any",
                          "exact", "no-stream", "NoStream", "12a", "9223372036854775808",
                          "99999999999999999999", std::string("1\0", 2), std::string("any\0", 4),
                          "٣"}) {
    CAPTURE(bad);
    auto r = expected_version::parse(bad);
    CHECK(kind_of(r) == errc::invalid_argument);
  }
  CHECK(expected_version::exact(7).to_string() == "7");
  CHECK(expected_version::any().form() == expected_version::kind::any);
}

TEST_CASE("open_store accepts sqlite:PATH and a plain path for the same file") {
  temp_dir dir;
  auto path = dir.file("uri.db");
  {
    auto created = open_store("sqlite:" + path);
    INFO(describe(created));
    REQUIRE(created.ok());
    must((*created)->append("s", expected_version::no_stream(), make_events(2)));
  }
  auto plain = open_store(path);
  INFO(describe(plain));
  REQUIRE(plain.ok());
  CHECK(must((*plain)->stream_version("s")) == 1);
  auto direct = open_sqlite_store(path);
  REQUIRE(direct.ok());
  CHECK(must((*direct)->head_position()) == 2);
}

TEST_CASE("open_store refuses an unknown URI scheme") {
  temp_dir dir;
  auto r = open_store("nosuchscheme://" + dir.file("x.db"));
  CHECK(kind_of(r) == errc::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(dir.file("x.db")));
}
