// Bad input: ids, types, sizes and metadata the store must refuse (invalid_argument, nothing
// written); hostile but legal ids that must round-trip; damaged, foreign and odd files that
// must give a clean error kind, never a crash.
#include "store/backends.hpp"

#include <sqlite3.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace annals;
using namespace annals::test;
namespace fs = std::filesystem;

namespace {

struct fixture {
  temp_dir dir;
  std::string path = dir.file("store.db");
  std::unique_ptr<event_store> store = open(path);

  static std::unique_ptr<event_store> open(const std::string& path, sqlite_options o = {}) {
    auto r = open_sqlite_store(path, std::move(o));
    if (!r) FAIL("cannot open store: " << describe(r));
    return std::move(r).value();
  }
  // Nothing was written: the store still holds exactly its `expected` events.
  void check_untouched(std::int64_t expected = 1) {
    CHECK(must(store->head_position()) == expected);
    CHECK(read_all_vec(*store).size() == static_cast<std::size_t>(expected));
  }
};

void check_refused(event_store& s, std::string_view stream, std::vector<event_data> evs,
                   expected_version ev = expected_version::any()) {
  auto r = s.append(stream, ev, std::move(evs));
  INFO(describe(r));
  CHECK(kind_of(r) == errc::invalid_argument);
  if (!r.ok()) CHECK_FALSE(r.error().message().empty());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs SQL on a file through SQLite directly; returns the first column of the last row.
std::string raw_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    sqlite3_close_v2(db);
    FAIL("cannot open " << path);
  }
  const char* tail = sql.c_str();
  while (tail && *tail) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, tail, -1, &st, &tail) != SQLITE_OK) {
      std::string msg = sqlite3_errmsg(db);
      sqlite3_close_v2(db);
      FAIL("cannot prepare: " << msg);
    }
    if (!st) break;
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto text = sqlite3_column_text(st, 0);
      out = text ? reinterpret_cast<const char*>(text) : "";
    }
    sqlite3_finalize(st);
  }
  sqlite3_close_v2(db);
  return out;
}

// A store with `n` events in stream "s", closed (so its WAL is checkpointed into the file).
void make_store(const std::string& path, int n, std::size_t payload_bytes = 100) {
  auto s = fixture::open(path);
  for (int i = 0; i < n; i += 100) {
    std::vector<event_data> evs;
    for (int k = i; k < std::min(n, i + 100); ++k) {
      evs.push_back(make_event("test.v1.Thing", std::string(payload_bytes, 'a' + k % 26)));
    }
    must(s->append("s", expected_version::any(), std::move(evs)));
  }
}

}  // namespace

// ---- stream ids -------------------------------------------------------------------------------

TEST_CASE("an empty stream id is refused everywhere") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  check_refused(*f.store, "", make_events(1));
  check_refused(*f.store, "", make_events(1), expected_version::no_stream());
  check_refused(*f.store, "", {});
  CHECK(kind_of(f.store->read_stream("", {}, [](const recorded_event&) { return true; })) ==
        errc::invalid_argument);
  CHECK(kind_of(f.store->stream_version("")) == errc::invalid_argument);
  f.check_untouched();
}

TEST_CASE("a stream id over 512 bytes is refused and 512 bytes is accepted") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  check_refused(*f.store, std::string(513, 'a'), make_events(1));
  check_refused(*f.store, std::string(100000, 'a'), make_events(1));
  std::string cjk;
  while (cjk.size() < 513) cjk += "日";  // 171 three-byte characters: 513 bytes
  CHECK(cjk.size() == 513);
  check_refused(*f.store, cjk, make_events(1));
  CHECK(kind_of(f.store->stream_version(std::string(513, 'a'))) == errc::invalid_argument);
  f.check_untouched();

  std::string max(512, 'm');
  must(f.store->append(max, expected_version::no_stream(), make_events(1)));
  CHECK(must(f.store->stream_version(max)) == 0);
}

TEST_CASE("stream ids with NUL newline or other control characters are refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  for (std::string bad :
       {std::string("a\0b", 3), std::string("\0", 1), std::string("abc\0", 4),
        std::string("line\nbreak"), std::string("cr\r"), std::string("\ttab"),
        std::string("bell\x07"), std::string("esc\x1b[31m"), std::string("unit\x1f"),
        std::string("del\x7f"), std::string("next\xc2\x85line"), std::string("c1\xc2\x9b"),
        std::string("\xc2\x80")}) {
    CAPTURE(bad);
    check_refused(*f.store, bad, make_events(1));
    CHECK(kind_of(f.store->stream_version(bad)) == errc::invalid_argument);
  }
  f.check_untouched();
}

TEST_CASE("stream ids that are not valid UTF-8 are refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  for (std::string bad : {std::string("\xff"), std::string("a\xfe"), std::string("\x80"),
                          std::string("trunc\xc3"), std::string("trunc\xe6\x97"),
                          std::string("\xc0\xaf"),            // overlong '/'
                          std::string("\xe0\x80\xaf"),        // overlong '/'
                          std::string("\xed\xa0\x80"),        // UTF-16 surrogate
                          std::string("\xf4\x90\x80\x80"),    // past U+10FFFF
                          std::string("\xf8\x88\x80\x80\x80"),  // 5-byte form
                          std::string("ok\xc3(")}) {
    CAPTURE(bad);
    check_refused(*f.store, bad, make_events(1));
  }
  f.check_untouched();
}

TEST_CASE("stream ids starting with $ are reserved") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  for (std::string bad : {"$all", "$", "$ce-order", "$$"}) {
    CAPTURE(bad);
    check_refused(*f.store, bad, make_events(1));
    CHECK(kind_of(f.store->stream_version(bad)) == errc::invalid_argument);
  }
  f.check_untouched();
  must(f.store->append("price$", expected_version::no_stream(), make_events(1)));
  must(f.store->append(" $leading-space", expected_version::no_stream(), make_events(1)));
}

// ---- event types, sizes, ids, metadata ---------------------------------------------------------

TEST_CASE("bad event type strings are refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  for (std::string bad : {std::string(""), std::string(".Thing"), std::string("bank.v1."),
                          std::string("bank..Thing"), std::string("bank v1.Thing"),
                          std::string("bank-v1.Thing"), std::string("bank/v1.Thing"),
                          std::string("bänk.v1.Thing"), std::string("bank.v1.Thing\n"),
                          std::string("bank.v1\0.Thing", 14), std::string(" bank.Thing"),
                          std::string("."), std::string(257, 'T')}) {
    CAPTURE(bad);
    check_refused(*f.store, "s", {make_event(bad, "x")});
    // One bad type among good ones refuses the whole append.
    check_refused(*f.store, "s",
                  {make_event("test.v1.Good", "x"), make_event(bad, "x"),
                   make_event("test.v1.Good", "y")});
    read_all_options o;
    o.event_types = {"test.v1.Good", bad};
    CHECK(kind_of(f.store->read_all(o, [](const recorded_event&) { return true; })) ==
          errc::invalid_argument);
  }
  f.check_untouched();
  // Names at the limits are accepted.
  std::string longest(256, 'T');
  must(f.store->append("s", expected_version::any(),
                       {make_event(longest, "x"), make_event("Thing", "y"),
                        make_event("a.b_c.D9", "z")}));
  CHECK(read_stream_vec(*f.store, "s").front().type == longest);
}

TEST_CASE("an event over 4 MiB of payload and metadata is refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  constexpr std::size_t limit = store_limits::max_event_bytes;
  check_refused(*f.store, "big", {make_event("test.v1.Big", std::string(limit + 1, 'x'))});
  event_data with_meta = make_event("test.v1.Big", std::string(limit - 10, 'x'));
  with_meta.metadata.correlation_id = std::string(100, 'c');
  check_refused(*f.store, "big", {make_event("test.v1.Small", "x"), with_meta});
  event_data header_heavy = make_event("test.v1.Big", "x");
  header_heavy.metadata.headers.push_back({"k", std::string(limit, 'h')});
  check_refused(*f.store, "big", {header_heavy});
  f.check_untouched();

  // Exactly at the limit is fine.
  auto r = must(f.store->append("big", expected_version::no_stream(),
                                {make_event("test.v1.Big", std::string(limit, 'y'))}));
  CHECK(r.stream_version == 0);
  CHECK(read_stream_vec(*f.store, "big").at(0).payload.size() == limit);
}

TEST_CASE("an append over 64 MiB or over 100000 events is refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  std::vector<event_data> heavy;
  for (int i = 0; i < 17; ++i) {
    heavy.push_back(make_event("test.v1.Big", std::string(store_limits::max_event_bytes, 'z')));
  }
  check_refused(*f.store, "heavy", std::move(heavy));
  std::vector<event_data> many(store_limits::max_events_per_append + 1,
                               make_event("test.v1.Tiny", ""));
  check_refused(*f.store, "many", std::move(many));
  f.check_untouched();
}

TEST_CASE("bad event id text is refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  for (std::string bad : {std::string("not-a-uuid"),
                          std::string("0189abcd-ef01-7234-8567-89abcdef012"),    // 35
                          std::string("0189abcd-ef01-7234-8567-89abcdef01234"),  // 37
                          std::string("{0189abcd-ef01-7234-8567-89abcdef0123}"),
                          std::string("0189abcdef0172348567 89abcdef0123"),
                          std::string("0189abcdef01723485678 9abcdef0123"),
                          std::string("0189abcdef01723485678-9abcdef0123"),
                          std::string("0189abcd-ef01-7234-8567-89abcdef012g"),
                          std::string("0189abcd-ef0-17234-8567-89abcdef0123"),
                          std::string("urn:uuid:0189abcd-ef01-7234-8567-89abcdef0123"),
                          std::string(" 189abcd-ef01-7234-8567-89abcdef0123"),
                          std::string("0189abcd-ef01-7234-8567-89abcdef012\0", 36),
                          std::string("0189abcd+ef01-7234-8567-89abcdef0123")}) {
    CAPTURE(bad);
    check_refused(*f.store, "s", {make_event("test.v1.Thing", "x", bad)});
    check_refused(*f.store, "s",
                  {make_event("test.v1.Thing", "x"), make_event("test.v1.Thing", "y", bad)});
  }
  f.check_untouched();
}

TEST_CASE("an id source giving a bad id makes the append fail with invalid_argument") {
  temp_dir dir;
  sqlite_options o;
  o.id_source = [] { return std::string("definitely not a uuid"); };
  auto store = fixture::open(dir.file("ids.db"), std::move(o));
  check_refused(*store, "s", make_events(1));
  CHECK(must(store->head_position()) == 0);
  // A supplied id does not ask the source.
  must(store->append("s", expected_version::no_stream(),
                     {make_event("test.v1.Thing", "x", uuid(1))}));
}

TEST_CASE("a throwing clock fails that append with io and later appends still work") {
  temp_dir dir;
  sqlite_options o;
  int calls = 0;
  o.clock = [&calls]() -> std::int64_t {
    if (++calls == 2) throw std::runtime_error("clock is broken");
    return 1'000'000;
  };
  auto store = fixture::open(dir.file("clock.db"), std::move(o));
  must(store->append("s", expected_version::no_stream(), make_events(1)));
  auto r = store->append("s", expected_version::exact(0), make_events(1));
  CHECK(kind_of(r) == errc::io);
  if (!r.ok()) CHECK(r.error().message().find("clock is broken") != std::string::npos);
  // The failed batch was rolled back and the leader gave up leadership: no hang, no half write.
  CHECK(must(store->head_position()) == 1);
  must(store->append("s", expected_version::exact(0), make_events(1)));
  CHECK(must(store->stream_version("s")) == 1);
}

TEST_CASE("invalid UTF-8 in metadata is refused") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  const std::string bad = "ok\xff";
  for (int field = 0; field < 5; ++field) {
    CAPTURE(field);
    event_data e = make_event("test.v1.Thing", "x");
    switch (field) {
      case 0: e.metadata.correlation_id = bad; break;
      case 1: e.metadata.causation_id = bad; break;
      case 2: e.metadata.traceparent = bad; break;
      case 3: e.metadata.headers = {{"fine", "fine"}, {bad, "v"}}; break;
      case 4: e.metadata.headers = {{"k", std::string("\xed\xa0\x80")}}; break;
    }
    check_refused(*f.store, "s", {make_event("test.v1.Thing", "first"), e});
  }
  f.check_untouched();
}

TEST_CASE("reads refuse negative max_count and bad filters") {
  fixture f;
  must(f.store->append("ok", expected_version::no_stream(), make_events(1)));
  auto visit = [](const recorded_event&) { return true; };
  read_stream_options rs;
  rs.max_count = -1;
  CHECK(kind_of(f.store->read_stream("ok", rs, visit)) == errc::invalid_argument);
  read_all_options ra;
  ra.max_count = -5;
  CHECK(kind_of(f.store->read_all(ra, visit)) == errc::invalid_argument);
  read_all_options types;
  types.event_types = {""};
  CHECK(kind_of(f.store->read_all(types, visit)) == errc::invalid_argument);
  CHECK(kind_of(f.store->read_stream("$all", {}, visit)) == errc::invalid_argument);
}

// ---- hostile but legal ids --------------------------------------------------------------------

TEST_CASE("hostile but legal stream ids round-trip exactly") {
  fixture f;
  std::vector<std::string> ids{"it's",
                               "say \"hi\"",
                               "x'; DROP TABLE events; --",
                               "\"); DELETE FROM streams; --",
                               "back\\slash\\",
                               "\\",
                               "100%",
                               "%",
                               "_",
                               "a_b%c",
                               "emoji-🎉🚀",
                               "中文-流-1",
                               "日本語のストリーム",
                               "mixed ünïcödé ✓",
                               "with spaces  and  tabs? no: spaces only",
                               " leading and trailing ",
                               "semi;colon",
                               "NULL",
                               "null",
                               "*",
                               "?",
                               "[abc]",
                               "{json: 1}",
                               "<script>alert(1)</script>",
                               "\u2028line-separator",
                               "zero\u200bwidth",
                               "\xef\xbb\xbf" "bom",
                               std::string(512, 'x'),
                               std::string(170, 'x') + std::string(114, 'y') + "日本🎉" +
                                   std::string(512 - 170 - 114 - 10, 'z')};
  REQUIRE(ids.back().size() == 512);
  for (const auto& id : ids) {
    CAPTURE(id);
    auto r = f.store->append(id, expected_version::no_stream(),
                             {make_event("test.v1.Thing", "payload of " + id)});
    INFO(describe(r));
    REQUIRE(r.ok());
    CHECK(must(f.store->stream_version(id)) == 0);
    auto evs = read_stream_vec(*f.store, id);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].stream_id == id);
    CHECK(evs[0].payload == "payload of " + id);
    auto by_prefix = read_all_vec(*f.store, query().prefix(id));
    REQUIRE(by_prefix.size() >= 1);
    for (const auto& e : by_prefix) CHECK(e.stream_id.compare(0, id.size(), id) == 0);
  }
  auto all = check_store_invariants(*f.store);
  REQUIRE(all.size() == ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(all[i].stream_id == ids[i]);
  // The "DROP TABLE" id did nothing but name a stream: the store still works.
  must(f.store->append("after", expected_version::no_stream(), make_events(1)));
  CHECK(must(f.store->head_position()) == static_cast<std::int64_t>(ids.size()) + 1);
}

// ---- files ------------------------------------------------------------------------------------

TEST_CASE("a file of random bytes is corruption and is left unchanged") {
  temp_dir dir;
  auto path = dir.file("random.db");
  std::mt19937 rng(99);
  std::string bytes(64 * 1024, '\0');
  for (auto& c : bytes) c = static_cast<char>(rng());
  write_file(path, bytes);
  for (bool read_only : {false, true}) {
    CAPTURE(read_only);
    sqlite_options o;
    o.read_only = read_only;
    auto r = open_sqlite_store(path, std::move(o));
    INFO(describe(r));
    CHECK(kind_of(r) == errc::corruption);
  }
  auto via_uri = open_store("sqlite:" + path);
  CHECK(kind_of(via_uri) == errc::corruption);
  CHECK(read_file(path) == bytes);
}

TEST_CASE("a text file with a few bytes is corruption") {
  temp_dir dir;
  auto path = dir.file("notes.txt");
  write_file(path, "hello, this is not a database\n");
  auto r = open_sqlite_store(path);
  INFO(describe(r));
  CHECK(kind_of(r) == errc::corruption);
  CHECK(read_file(path) == "hello, this is not a database\n");
}

TEST_CASE("a truncated store file is corruption and never a crash") {
  temp_dir dir;
  auto good = dir.file("good.db");
  make_store(good, 2000, 200);
  auto full = read_file(good);
  REQUIRE(full.size() > 64 * 1024);
  for (std::size_t keep : {full.size() / 2, full.size() / 10, std::size_t(4096 + 100),
                           std::size_t(1000), std::size_t(50)}) {
    CAPTURE(keep);
    auto path = dir.file("truncated-" + std::to_string(keep) + ".db");
    write_file(path, full.substr(0, keep));
    auto r = open_sqlite_store(path);
    if (!r.ok()) {
      INFO(describe(r));
      CHECK((kind_of(r) == errc::corruption || kind_of(r) == errc::io));
      continue;
    }
    // Opening may work (SQLite reads pages lazily); reading what is missing must not.
    auto n = (*r)->read_all({}, [](const recorded_event&) { return true; });
    INFO(describe(n));
    CHECK((kind_of(n) == errc::corruption || kind_of(n) == errc::io));
  }
}

TEST_CASE("an empty file becomes a new store") {
  // A 0-byte file is what `touch` or mktemp leaves: SQLite treats it as an empty database,
  // and Annals initializes it like a missing file, rather than calling it corruption.
  temp_dir dir;
  auto path = dir.file("empty.db");
  write_file(path, "");
  REQUIRE(fs::file_size(path) == 0);
  {
    auto r = open_sqlite_store(path);
    INFO(describe(r));
    REQUIRE(r.ok());
    CHECK(must((*r)->head_position()) == 0);
    must((*r)->append("s", expected_version::no_stream(), make_events(2)));
  }
  auto again = fixture::open(path);
  CHECK(must(again->stream_version("s")) == 1);
}

TEST_CASE("an empty file opened read-only is not a store") {
  temp_dir dir;
  auto path = dir.file("empty.db");
  write_file(path, "");
  sqlite_options o;
  o.read_only = true;
  auto r = open_sqlite_store(path, std::move(o));
  INFO(describe(r));
  CHECK(kind_of(r) == errc::corruption);
  CHECK(fs::file_size(path) == 0);
}

TEST_CASE("a SQLite database with a foreign table and no Annals header is corruption") {
  temp_dir dir;
  auto path = dir.file("foreign.db");
  raw_sql(path, "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT);"
                "INSERT INTO customers(name) VALUES('Ann'), ('Bob');");
  REQUIRE(raw_sql(path, "PRAGMA journal_mode") == "delete");
  auto before = read_file(path);
  for (bool read_only : {false, true}) {
    CAPTURE(read_only);
    sqlite_options o;
    o.read_only = read_only;
    auto r = open_sqlite_store(path, std::move(o));
    INFO(describe(r));
    CHECK(kind_of(r) == errc::corruption);
  }
  // The foreign database is not modified: no Annals tables, no switch to WAL.
  CHECK(read_file(path) == before);
  CHECK(raw_sql(path, "PRAGMA journal_mode") == "delete");
  CHECK(raw_sql(path, "SELECT count(*) FROM sqlite_schema") == "1");
  CHECK(raw_sql(path, "SELECT group_concat(name) FROM customers") == "Ann,Bob");
}

TEST_CASE("a SQLite database of another application is corruption") {
  temp_dir dir;
  auto path = dir.file("other-app.db");
  raw_sql(path, "PRAGMA application_id = 12345; CREATE TABLE t(x);");
  auto r = open_sqlite_store(path);
  CHECK(kind_of(r) == errc::corruption);
}

TEST_CASE("a store written by a newer storage format is corruption") {
  temp_dir dir;
  auto path = dir.file("future.db");
  make_store(path, 3);
  raw_sql(path, "PRAGMA user_version = 99;");
  auto r = open_sqlite_store(path);
  INFO(describe(r));
  CHECK(kind_of(r) == errc::corruption);
}

TEST_CASE("a store whose events table was overwritten with garbage fails reads cleanly") {
  temp_dir dir;
  auto path = dir.file("damaged.db");
  make_store(path, 3000, 300);  // ~1 MB of events
  std::int64_t page_size = std::stoll(raw_sql(path, "PRAGMA page_size"));
  std::int64_t root = std::stoll(
      raw_sql(path, "SELECT rootpage FROM sqlite_schema WHERE name = 'events'"));
  std::int64_t pages = std::stoll(raw_sql(path, "PRAGMA page_count"));
  REQUIRE(raw_sql(path, "PRAGMA journal_mode") == "wal");
  REQUIRE_FALSE(fs::exists(path + "-wal"));  // checkpointed on close: pages are in the file
  REQUIRE(pages > 20);

  SUBCASE("root page") {
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    std::string garbage(static_cast<std::size_t>(page_size), '\0');
    std::mt19937 rng(1);
    for (auto& c : garbage) c = static_cast<char>(rng());
    io.seekp((root - 1) * page_size);
    io.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  SUBCASE("every other page in the second half of the file") {
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    std::mt19937 rng(2);
    std::string garbage(static_cast<std::size_t>(page_size), '\0');
    for (std::int64_t p = pages / 2; p <= pages; p += 2) {
      for (auto& c : garbage) c = static_cast<char>(rng());
      io.seekp((p - 1) * page_size);
      io.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }
  }
  auto opened = open_sqlite_store(path);
  if (!opened.ok()) {
    INFO(describe(opened));
    CHECK((kind_of(opened) == errc::corruption || kind_of(opened) == errc::io));
    return;
  }
  auto& store = *opened.value();
  auto visit = [](const recorded_event&) { return true; };
  auto all = store.read_all({}, visit);
  INFO("read_all: " << describe(all));
  CHECK((kind_of(all) == errc::corruption || kind_of(all) == errc::io));
  auto back = store.read_stream("s", {.dir = direction::backward}, visit);
  INFO("read_stream backward: " << describe(back));
  CHECK((back.ok() || kind_of(back) == errc::corruption || kind_of(back) == errc::io));
  // Appending to a damaged table may fail, but only with a storage error.
  auto app = store.append("s", expected_version::any(), make_events(1));
  INFO("append: " << describe(app));
  CHECK((app.ok() || kind_of(app) == errc::corruption || kind_of(app) == errc::io));
}

TEST_CASE("a directory path is io") {
  temp_dir dir;
  auto r = open_sqlite_store(dir.path());
  INFO(describe(r));
  CHECK(kind_of(r) == errc::io);
  CHECK(kind_of(open_store("sqlite:" + dir.path())) == errc::io);
}

TEST_CASE("a path in a missing directory is io or not_found and creates nothing") {
  temp_dir dir;
  auto r = open_sqlite_store(dir.file("no/such/dir/store.db"));
  INFO(describe(r));
  CHECK((kind_of(r) == errc::io || kind_of(r) == errc::not_found));
  CHECK_FALSE(fs::exists(dir.file("no")));
}

TEST_CASE("an empty path or a path with NUL is invalid_argument") {
  CHECK(kind_of(open_sqlite_store("")) == errc::invalid_argument);
  CHECK(kind_of(open_sqlite_store(std::string("/tmp/a\0b.db", 11))) == errc::invalid_argument);
  CHECK(kind_of(open_store("sqlite:")) == errc::invalid_argument);
}

TEST_CASE("a missing file with create_if_missing false is not_found and is not created") {
  temp_dir dir;
  auto path = dir.file("missing.db");
  sqlite_options o;
  o.create_if_missing = false;
  auto r = open_sqlite_store(path, std::move(o));
  INFO(describe(r));
  CHECK(kind_of(r) == errc::not_found);
  CHECK_FALSE(fs::exists(path));
  sqlite_options ro;
  ro.read_only = true;
  CHECK(kind_of(open_sqlite_store(path, std::move(ro))) == errc::not_found);
  CHECK_FALSE(fs::exists(path));
  // An existing store opens without create_if_missing.
  make_store(path, 2);
  sqlite_options again;
  again.create_if_missing = false;
  auto ok = open_sqlite_store(path, std::move(again));
  REQUIRE(ok.ok());
  CHECK(must((*ok)->head_position()) == 2);
}

TEST_CASE("a read_only store serves reads and refuses appends with read_only") {
  temp_dir dir;
  auto path = dir.file("ro.db");
  make_store(path, 5);
  auto before = read_file(path);
  {
  sqlite_options o;
  o.read_only = true;
  auto r = open_sqlite_store(path, std::move(o));
  INFO(describe(r));
  REQUIRE(r.ok());
  auto& store = *r.value();
  CHECK(must(store.head_position()) == 5);
  CHECK(must(store.stream_version("s")) == 4);
  CHECK(read_stream_vec(store, "s").size() == 5);
  CHECK(read_all_vec(store).size() == 5);
  for (auto ev : {expected_version::any(), expected_version::exact(4)}) {
    auto app = store.append("s", ev, make_events(1));
    CHECK(kind_of(app) == errc::read_only);
  }
  CHECK(kind_of(store.append("new", expected_version::no_stream(), {})) == errc::read_only);
  CHECK(must(store.head_position()) == 5);
  }
  CHECK(read_file(path) == before);  // the read-only store wrote nothing
}

TEST_CASE("a read_only store sees appends made by a writer meanwhile") {
  temp_dir dir;
  auto path = dir.file("ro-live.db");
  auto writer = fixture::open(path);
  must(writer->append("s", expected_version::no_stream(), make_events(2)));
  sqlite_options o;
  o.read_only = true;
  auto reader = fixture::open(path, std::move(o));
  CHECK(must(reader->head_position()) == 2);
  must(writer->append("s", expected_version::exact(1), make_events(3)));
  CHECK(must(reader->head_position()) == 5);
  CHECK(read_stream_vec(*reader, "s").size() == 5);
}

// ---- fuzz-ish ---------------------------------------------------------------------------------

namespace {

// Reference rules, written independently of the store's validation.
bool reference_utf8(const std::string& s, bool& has_control) {
  has_control = false;
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::uint32_t cp;
    std::size_t len;
    if (c < 0x80) cp = c, len = 1;
    else if (c >= 0xc2 && c <= 0xdf) cp = c & 0x1f, len = 2;
    else if (c >= 0xe0 && c <= 0xef) cp = c & 0x0f, len = 3;
    else if (c >= 0xf0 && c <= 0xf4) cp = c & 0x07, len = 4;
    else return false;
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) has_control = true;
    i += len;
  }
  return true;
}

bool reference_stream_id_ok(const std::string& s) {
  bool control = false;
  return !s.empty() && s.size() <= 512 && s[0] != '$' && reference_utf8(s, control) && !control;
}

bool reference_type_ok(const std::string& s) {
  if (s.empty() || s.size() > 256 || s.front() == '.' || s.back() == '.') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_';
    if (c == '.' && s[i - 1] == '.') return false;
    if (!word && c != '.') return false;
  }
  return true;
}

std::string random_bytes(std::mt19937& rng) {
  static const std::vector<std::string> pieces{
      "a", "Z", "0", "9", "_", ".", "..", "-", "$", "%", "'", "\"", "\\", " ", "/",
      std::string(1, '\0'), "\n", "\x7f", "\x1f", "\xc2\x85", "ü", "日", "🎉", "\xed\xa0\x80",
      "\xc0\xaf", "\xf4\x90\x80\x80", "\xff", "\x80", "\xc3", "\xe6\x97"};
  static const std::vector<std::string> legal{"a", "Z", "0", "_", ".", "-", "ü", "日", "🎉", " "};
  std::string out;
  int mode = static_cast<int>(rng() % 10);
  std::size_t len = mode == 0 ? 500 + rng() % 30 : rng() % 12;
  if (mode >= 6) {  // mostly legal pieces, so plenty of cases are accepted
    while (out.size() < len) out += legal[rng() % legal.size()];
    return out;
  }
  while (out.size() < len) {
    if (rng() % 4 == 0) {
      out.push_back(static_cast<char>(rng()));  // any byte at all
    } else {
      out += pieces[rng() % pieces.size()];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("random byte-string stream ids and types either round-trip or are invalid_argument") {
  temp_dir dir;
  sqlite_options o;
  o.sync = durability::normal;
  auto store = fixture::open(dir.file("fuzz.db"), std::move(o));
  std::mt19937 rng(20240611);
  int accepted = 0, refused = 0, unexpected = 0, disagreements = 0;
  std::int64_t head = 0;
  for (int i = 0; i < 2000; ++i) {
    bool fuzz_stream = i % 2 == 0;
    std::string stream = fuzz_stream ? random_bytes(rng) : "fuzz-" + std::to_string(i);
    std::string type = fuzz_stream ? "test.v1.Fuzz" : random_bytes(rng);
    bool expect_ok = reference_stream_id_ok(stream) && reference_type_ok(type);
    // Some random stream ids repeat ("a", "_"): `any` keeps those appends legal.
    auto r = store->append(stream, expected_version::any(), {make_event(type, stream + type)});
    if (!r) {
      if (r.error().kind() != errc::invalid_argument) {
        ++unexpected;
        MESSAGE("unexpected " << describe(r));
        continue;
      }
      ++refused;
      if (expect_ok) {
        ++disagreements;
        MESSAGE("refused but legal: " << describe(r));
      }
      CHECK(must(store->head_position()) == head);
      continue;
    }
    ++accepted;
    head = r->position;
    if (!expect_ok) {
      ++disagreements;
      MESSAGE("accepted but should be refused: stream " << doctest::toString(stream)
                                                        << " type " << doctest::toString(type));
    }
    recorded_event got;
    int n = 0;
    auto read = store->read_stream(stream, {.from_version = r->stream_version, .max_count = 1},
                                   [&](const recorded_event& e) {
                                     got = e;
                                     return ++n, true;
                                   });
    if (!read || n != 1 || got.stream_id != stream || got.type != type ||
        got.payload != stream + type || got.position != r->position) {
      ++unexpected;
      MESSAGE("did not round-trip: " << describe(read));
    }
  }
  MESSAGE("accepted " << accepted << ", refused " << refused);
  CHECK(unexpected == 0);
  CHECK(disagreements == 0);
  CHECK(accepted > 200);
  CHECK(refused > 200);
  check_store_invariants(*store);
}

TEST_CASE("a negative exact expected version is invalid_argument, not a conflict") {
  fixture f;
  for (std::int64_t v : {-1LL, -5LL, static_cast<long long>(INT64_MIN)}) {
    CAPTURE(v);
    auto r = f.store->append("neg", expected_version::exact(v), make_events(1));
    CHECK(kind_of(r) == errc::invalid_argument);
  }
  CHECK(must(f.store->head_position()) == 0);
  // exact(INT64_MAX) on a repeated append is a plain conflict, with no overflow.
  auto e = make_event("test.v1.Thing", "x", uuid(7));
  must(f.store->append("big", expected_version::no_stream(), {e}));
  CHECK(kind_of(f.store->append("big", expected_version::exact(INT64_MAX), {e})) ==
        errc::invalid_argument);
}

TEST_CASE("a busy timeout out of range is invalid_argument") {
  temp_dir dir;
  for (std::int64_t ms : {-1LL, 1LL << 40}) {
    sqlite_options o;
    o.busy_timeout_ms = ms;
    CHECK(kind_of(open_sqlite_store(dir.file("t.db"), o)) == errc::invalid_argument);
  }
}

TEST_CASE("a store opened by a relative path keeps reading the same file after chdir") {
  temp_dir a, b;
  char cwd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd));
  REQUIRE(chdir(a.path().c_str()) == 0);
  auto store = open_sqlite_store("rel.db");
  REQUIRE(store.ok());
  must((*store)->append("s", expected_version::no_stream(), make_events(3)));
  REQUIRE(chdir(b.path().c_str()) == 0);
  auto seen = read_stream_vec(**store, "s");  // a new reader connection opens now
  REQUIRE(chdir(cwd) == 0);
  CHECK(seen.size() == 3);
  CHECK(!fs::exists(b.file("rel.db")));
}
