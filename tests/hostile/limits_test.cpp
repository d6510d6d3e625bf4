// Hostile sizes and names, once per backend (hostile_pg_tests: PostgreSQL, a fresh database per
// case): events at and just over the size limits, a great many one-event streams, and stream
// names and event types with Unicode tricks, control characters and invalid UTF-8 through the
// store, the annals tool and HTTP.
#include <fmt/format.h>

#include <annals/admin.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "hostile/hostile_support.hpp"

using namespace hostile;
namespace fs = std::filesystem;

namespace {

#ifdef ANNALS_HOSTILE_ON_POSTGRES
constexpr bool on_postgres = true;
#else
constexpr bool on_postgres = false;
#endif

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    auto v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  for (std::size_t i = n - n % 8; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

struct located_store {
  temp_dir dir;
  pg::store_location loc{dir.file("store.db"), on_postgres};
  std::unique_ptr<event_store> store = open();
  std::unique_ptr<event_store> open(sqlite_options o = {}) {
    auto r = open_store(loc.path, std::move(o));
    if (!r) FAIL("cannot open " << loc.path << ": " << describe(r));
    return std::move(r).value();
  }
};

void check_refused(const result<append_result>& r, const std::string& names) {
  INFO(describe(r));
  CHECK(kind_of(r) == errc::invalid_argument);
  if (!r) CHECK(contains(r.error().message(), names));
}

}  // namespace

// ---- huge events --------------------------------------------------------------------------

TEST_CASE("an event of exactly max_event_bytes is stored byte for byte, one byte more is refused") {
  located_store s;
  must(s.store->append("before", expected_version::no_stream(), make_events(1)));
  constexpr std::size_t limit = store_limits::max_event_bytes;
  const auto big = random_bytes(limit, 7);
  check_refused(
      s.store->append("big", expected_version::no_stream(), {make_event("test.v1.Big", big + "x")}),
      "the limit is 4194304 bytes");
  // Over the limit by its metadata alone.
  event_data meta_heavy = make_event("test.v1.Big", big);
  meta_heavy.metadata.correlation_id = "c";
  check_refused(s.store->append("big", expected_version::no_stream(), {meta_heavy}),
                "the limit is 4194304 bytes");
  CHECK(must(s.store->head_position()) == 1);
  CHECK(must(s.store->stream_version("big")) == -1);

  auto r = s.store->append("big", expected_version::no_stream(), {make_event("test.v1.Big", big)});
  INFO(describe(r));
  REQUIRE(r.ok());
  auto back = read_stream_vec(*s.store, "big");
  REQUIRE(back.size() == 1);
  CHECK(back[0].payload.size() == limit);
  CHECK(back[0].payload == big);
  auto fresh = s.open();  // from the store, not from a cache
  CHECK(read_all_vec(*fresh, query().from(2)).at(0).payload == big);
  auto verify = annals_tool(s.loc.path, {"verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
}

TEST_CASE(
    "an append of exactly max_append_bytes is stored byte for byte, one byte more is "
    "refused whole") {
  located_store s;
  must(s.store->append("before", expected_version::no_stream(), make_events(1)));
  constexpr std::size_t per_event = store_limits::max_event_bytes;
  constexpr std::size_t count = store_limits::max_append_bytes / per_event;  // 16
  static_assert(count * per_event == store_limits::max_append_bytes);
  std::vector<std::string> payloads;
  for (std::size_t i = 0; i < count; ++i) payloads.push_back(random_bytes(per_event, 100 + i));
  auto events = [&](bool one_more_byte) {
    std::vector<event_data> evs;
    for (const auto& p : payloads) evs.push_back(make_event("test.v1.Big", p));
    if (one_more_byte) evs.push_back(make_event("test.v1.Big", "x"));
    return evs;
  };
  check_refused(s.store->append("heavy", expected_version::no_stream(), events(true)),
                "over 67108864 bytes");
  CHECK(must(s.store->head_position()) == 1);  // nothing partially written
  CHECK(must(s.store->stream_version("heavy")) == -1);

  auto r = s.store->append("heavy", expected_version::no_stream(), events(false));
  INFO(describe(r));
  REQUIRE(r.ok());
  CHECK(r->stream_version == static_cast<std::int64_t>(count) - 1);
  std::size_t i = 0;
  bool same = true;
  auto n = s.open()->read_stream("heavy", {}, [&](const recorded_event& e) {
    same = same && i < count && e.payload == payloads[i];
    ++i;
    return true;
  });
  CHECK(must(std::move(n)) == static_cast<std::int64_t>(count));
  CHECK(same);
}

// ---- many streams ---------------------------------------------------------------------------

TEST_CASE(
    "a million one-event streams (100,000 on PostgreSQL): versions, $all, appends, "
    "verify and stats stay right") {
  // Most streams are written in one batch through the import session (one transaction: the
  // store's bulk path), the rest through append() from many threads, whose appends share
  // commits. Per-append cost here is ~60 us on SQLite (thread hand-offs of the group commit
  // dominate on 2 cores): a million appends alone would take a minute. On PostgreSQL, 100,000:
  // import rows go to the server one statement each (~20k rows/s here, a million would take
  // ~50 s) and each append is its own transaction under the store's write lock (~1.5k/s).
  const int streams = on_postgres ? 100000 : 1000000;
  const int appended = on_postgres ? 5000 : 20000;
  const int threads = 64;
  auto name = [](int i) { return fmt::format("stream-{:07d}", i); };
  temp_dir dir;
  pg::store_location loc(dir.file("store.db"), on_postgres);
  auto t0 = std::chrono::steady_clock::now();
  {
    auto admin = open_admin(loc.path, true);
    REQUIRE_MESSAGE(admin.ok(), describe(admin));
    auto session = must((*admin)->begin_import());
    raw_event e;
    e.type = "test.v1.Tiny";
    e.metadata = std::string();
    e.recorded_at_us = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    for (int i = 0; i < streams - appended; ++i) {
      e.position = i + 1;
      e.stream_id = name(i);
      e.event_id = std::string(16, '\0');
      const auto id = static_cast<std::uint64_t>(i) + 1;  // a UUIDv4 with the counter last
      for (int b = 0; b < 6; ++b) e.event_id[15 - b] = static_cast<char>(id >> (8 * b));
      e.event_id[6] = 0x40;
      e.event_id[8] = static_cast<char>(0x80);
      e.payload = std::to_string(i);
      auto r = session->add_event(e);
      if (!r) FAIL("import of stream " << i << ": " << describe(r));
    }
    must(session->commit());
  }
  auto t1 = std::chrono::steady_clock::now();
  sqlite_options fast;
  fast.sync = durability::normal;  // the count matters here, not the fsyncs
  auto store = must(open_store(loc.path, fast));
  std::atomic<int> failures{0};
  {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = streams - appended + t; i < streams; i += threads) {
          auto r = store->append(name(i), expected_version::no_stream(),
                                 {make_event("test.v1.Tiny", std::to_string(i))});
          if (!r) ++failures;
        }
      });
    }
    for (auto& th : pool) th.join();
  }
  auto t2 = std::chrono::steady_clock::now();
  REQUIRE(failures == 0);
  CHECK(must(store->head_position()) == streams);
  std::mt19937 rng(5);
  for (int k = 0; k < 1000; ++k) {
    int i = static_cast<int>(rng() % static_cast<unsigned>(streams));
    CAPTURE(i);
    CHECK(must(store->stream_version(name(i))) == 0);
    if (k < 10) {
      auto evs = read_stream_vec(*store, name(i));
      REQUIRE(evs.size() == 1);
      CHECK(evs[0].payload == std::to_string(i));
    }
  }
  CHECK(must(store->stream_version(name(streams))) == -1);
  // An existing stream is no new stream, whichever way it was written.
  CHECK(kind_of(store->append(name(1), expected_version::no_stream(), make_events(1))) ==
        errc::concurrency_conflict);
  CHECK(kind_of(store->append(name(streams - 1), expected_version::no_stream(), make_events(1))) ==
        errc::concurrency_conflict);
  std::int64_t count = 0, last = 0;
  bool ordered = true;
  CHECK(must(store->read_all({}, [&](const recorded_event& ev) {
          ordered = ordered && ev.position == last + 1 && ev.stream_version == 0;
          last = ev.position;
          ++count;
          return true;
        })) == streams);
  CHECK(count == streams);
  CHECK(ordered);
  store.reset();
  auto t3 = std::chrono::steady_clock::now();

  auto verify = annals_tool(loc.path, {"verify"});
  auto t4 = std::chrono::steady_clock::now();
  INFO(verify.out.substr(0, 2000) << verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(contains(verify.out, "ok: no problems found"));
  auto stats = annals_tool(loc.path, {"stats"});
  INFO(stats.out << stats.err);
  CHECK(stats.exit_code == 0);
  CHECK(contains(stats.out, "events           " + std::to_string(streams) + "\n"));
  CHECK(contains(stats.out, "streams          " + std::to_string(streams) + "\n"));
  auto listed = annals_tool(loc.path, {"streams", "--prefix", name(streams - 1), "--limit", "3"});
  CHECK(listed.exit_code == 0);
  CHECK(listed.out == name(streams - 1) + "\tversion 0\t1 events\n");
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  MESSAGE(streams << " one-event streams on " << std::string(on_postgres ? "PostgreSQL" : "SQLite")
                  << ": " << streams - appended << " imported in " << secs(t0, t1) << " s, "
                  << appended << " appended by " << threads << " threads in " << secs(t1, t2)
                  << " s, checks " << secs(t2, t3) << " s, annals verify " << secs(t3, t4) << " s"
                  << (on_postgres
                          ? std::string()
                          : fmt::format(", file {} MiB", fs::file_size(loc.path) / 1024 / 1024)));
}

// ---- names ------------------------------------------------------------------------------------

namespace {
std::string bytes_512_ending_in_emoji() {
  std::string s(508, 'n');
  s += "\xf0\x9f\x8e\x89";  // U+1F389, 4 bytes
  return s;
}
}  // namespace

TEST_CASE(
    "hostile but valid stream names read back byte for byte in the store, the tool and "
    "over HTTP") {
  located_store s;
  const std::vector<std::string> names{
      "rtl-\u202Eexe.txt\u202C",                      // right-to-left override
      "iso-\u2066isolate\u2069-\u200F",               // isolates, RLM
      "e\u0301-combining-Z\u0351\u0346\u036E\u0310",  // combining marks
      "\u0301starts-with-a-combining-mark",
      "family-\U0001F469\u200D\U0001F469\u200D\U0001F467",  // ZWJ sequence
      "flag-\U0001F1FA\U0001F1E6-\U0001F44D\U0001F3FD",     // regional indicators, skin tone
      "\uFFFD-replacement-\uFFFF-nonchar-\U0010FFFF",
      "slash/and?query#frag%2F&amp=;",
      "../../etc/passwd",
      "..",
      "a/./b",
      "\u00A0nbsp\u2028ls\u2029ps",
      bytes_512_ending_in_emoji()};
  REQUIRE(names.back().size() == store_limits::max_stream_id_bytes);
  for (const auto& n : names) {
    CAPTURE(n);
    auto r = s.store->append(n, expected_version::no_stream(),
                             {make_event("test.v1.Named", "payload of " + n)});
    INFO(describe(r));
    REQUIRE(r.ok());
    auto back = read_stream_vec(*s.store, n);
    REQUIRE(back.size() == 1);
    CHECK(back[0].stream_id == n);
    CHECK(back[0].payload == "payload of " + n);
    // Names written so far that start with this one ("..", a prefix of "../../etc/passwd").
    std::size_t expected = 0;
    for (const auto& m : names) {
      if (m.compare(0, n.size(), n) == 0) ++expected;
      if (&m == &n) break;
    }
    auto by_prefix = read_all_vec(*s.store, query().prefix(n));
    CHECK(by_prefix.size() == expected);
    for (const auto& e : by_prefix) CHECK(e.stream_id.compare(0, n.size(), n) == 0);
  }
  // The tool: `streams` lists each name exactly (one per line, tab-separated), `read --json`
  // names it exactly.
  auto listed = annals_tool(s.loc.path, {"streams"});
  REQUIRE(listed.exit_code == 0);
  for (const auto& n : names) {
    CAPTURE(n);
    CHECK(contains(listed.out, n + "\tversion 0\t1 events\n"));
    auto read = annals_tool(s.loc.path, {"read", n, "--json"});
    INFO(read.err);
    REQUIRE(read.exit_code == 0);
    CHECK(json_field(read.out, "stream_id") == n);
  }
  // HTTP: /streams/{id} percent-encoded. The server refuses a path whose decoded segment has
  // a "." or ".." component (its path-traversal guard), so such names are readable through the
  // store and the tool but answer 400 over HTTP (docs/hostile-input.md).
  tool_test::served_store server(s.loc.path);
  auto dot_component = [](const std::string& n) {
    for (std::size_t i = 0; i <= n.size();) {
      auto j = std::min(n.find('/', i), n.size());
      auto part = n.substr(i, j - i);
      if (part == "." || part == "..") return true;
      i = j + 1;
    }
    return false;
  };
  for (const auto& n : names) {
    CAPTURE(n);
    auto path = "/streams/" + percent_encode(n);
    const auto answer = server.get(path.c_str());  // not a binding: INFO captures (clang 14)
    const int status = answer.first;
    const std::string& body = answer.second;
    INFO(body.substr(0, 300));
    if (dot_component(n)) {
      CHECK(status == 400);
      CHECK(contains(body, "bad request path"));
      continue;
    }
    CHECK(status == 200);
    if (status == 200) CHECK(json_field(body, "stream_id") == n);
  }
  CHECK(server.stop() == 0);
}

TEST_CASE(
    "invalid stream names and event types are refused naming the problem, and nothing is "
    "written") {
  located_store s;
  must(s.store->append("ok", expected_version::no_stream(), make_events(1)));
  struct bad {
    std::string name, says;
  };
  const std::vector<bad> stream_names{
      {std::string("nul\0inside", 10), "control character U+0000"},
      {"new\nline", "control character U+000A"},
      {"tab\there", "control character U+0009"},
      {"cr\r", "control character U+000D"},
      {"esc\x1b[2J", "control character U+001B"},
      {"c1-\xc2\x9b", "control character U+009B"},
      {"latin1-caf\xe9", "not valid UTF-8"},
      {"overlong-\xc0\xae\xc0\xae", "not valid UTF-8"},
      {"overlong-nul-\xc0\x80", "not valid UTF-8"},
      {"overlong-3-\xe0\x80\xaf", "not valid UTF-8"},
      {"surrogate-\xed\xa0\xbd\xed\xb8\x80", "not valid UTF-8"},
      {"lone-continuation-\x80", "not valid UTF-8"},
      {"truncated-emoji-\xf0\x9f\x8e", "not valid UTF-8"},
      {bytes_512_ending_in_emoji() + "n", "513 bytes long; the limit is 512"},
      {std::string(509, 'n') + "\xf0\x9f\x8e\x89", "513 bytes long; the limit is 512"},
  };
  for (const auto& b : stream_names) {
    CAPTURE(b.name);
    check_refused(s.store->append(b.name, expected_version::any(), make_events(1)), b.says);
    CHECK(kind_of(s.store->stream_version(b.name)) == errc::invalid_argument);
  }
  const std::vector<std::string> types{std::string("bank.v1.Nul\0", 12),
                                       "bank.v1.New\nline",
                                       "bank.v1.Tab\t",
                                       "bank.v1.\u202Eevil",
                                       "bank.v1.e\u0301",
                                       "bank.v1.\U0001F389",
                                       "bank.v1.caf\xe9",
                                       "bank.v1.\xc0\xae",
                                       std::string(257, 'T')};
  for (const auto& t : types) {
    CAPTURE(t);
    check_refused(s.store->append("typed", expected_version::any(),
                                  {make_event("test.v1.Good", "x"), make_event(t, "x")}),
                  "event 1: event type");
  }
  // A 256-byte type is the longest accepted.
  must(s.store->append("typed", expected_version::no_stream(),
                       {make_event(std::string(256, 'T'), "x")}));
  CHECK(must(s.store->head_position()) == 2);
  auto all = read_all_vec(*s.store);
  REQUIRE(all.size() == 2);
  CHECK(all[1].type == std::string(256, 'T'));

  // Through the tool (argv cannot hold NUL): exit 2, the problem named.
  for (const auto& b : stream_names) {
    if (b.name.find('\0') != std::string::npos) continue;
    CAPTURE(b.name);
    auto r = annals_tool(s.loc.path, {"read", b.name});
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, b.says));
  }
  // Over HTTP: 4xx, never 200 or 500.
  tool_test::served_store server(s.loc.path);
  for (const auto& b : stream_names) {
    CAPTURE(b.name);
    auto path = "/streams/" + percent_encode(b.name);
    const auto answer = server.get(path.c_str());  // not a binding: INFO captures (clang 14)
    const int status = answer.first;
    const std::string& body = answer.second;
    INFO(body.substr(0, 300));
    CHECK(status >= 400);
    CHECK(status < 500);
  }
  CHECK(server.stop() == 0);
  CHECK(must(s.open()->head_position()) == 2);
}
