// Hostile files on the SQLite store: truncated, zeroed, bit-flipped and foreign database files
// through the library and the tools (annals verify, annals stats, bank balance); a full disk; a
// read-only file; a file locked by another process past the busy timeout.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <annals/schema.hpp>
#include <chrono>
#include <filesystem>
#include <random>

#include "bank/v1/events.pb.h"
#include "hostile/hostile_support.hpp"

using namespace hostile;
namespace fs = std::filesystem;

namespace {

constexpr int bank_deposits = 3000;        // 1 cent each, after the CLI's 10.00
const std::string bank_balance = "40.00";  // 10.00 + 3000 cents
const std::string account_stream = "account-acc-1";

// A bank store made by the bank CLI (schemas, read models) plus 3000 deposits appended through
// the library, its read models caught up, closed (WAL checkpointed into the file).
struct bank_store {
  temp_dir dir;
  std::string path = dir.file("bank.db");
  std::string bytes;            // the good file
  std::vector<event_row> rows;  // every event of the good file

  bank_store() {
    REQUIRE(run_on(BANK_EXE, path, {"open", "acc-1", "--owner", "Ann"}).exit_code == 0);
    REQUIRE(run_on(BANK_EXE, path, {"deposit", "acc-1", "10.00"}).exit_code == 0);
    {
      auto store = must(open_sqlite_store(path));
      // Registered, as the bank registers it: the events are stamped with schema version 1.
      must(register_event_types(*store, {{bank::v1::MoneyDeposited::descriptor()}}));
      bank::v1::MoneyDeposited d;
      d.set_account_id("acc-1");
      d.set_amount_cents(1);
      d.set_counterparty(std::string(120, 'c'));  // rows big enough to fill many pages
      for (int i = 0; i < bank_deposits; i += 100) {
        std::vector<event_data> evs;
        for (int k = 0; k < 100; ++k) {
          evs.push_back({"", "bank.v1.MoneyDeposited", d.SerializeAsString(), {}});
        }
        must(store->append(account_stream, expected_version::exact(1 + i), std::move(evs)));
      }
      rows = rows_of(*store);
    }
    auto b = run_on(BANK_EXE, path, {"balance", "acc-1"});
    REQUIRE(b.exit_code == 0);
    REQUIRE(b.out == bank_balance + "\n");
    REQUIRE_FALSE(fs::exists(path + "-wal"));
    bytes = read_file(path);
    REQUIRE(bytes.size() > 256 * 1024);
  }
  // A copy of the good file, damaged by `damage`, as a new file.
  std::string damaged(const std::string& name, const std::function<void(std::string&)>& damage) {
    std::string copy = bytes;
    damage(copy);
    auto p = dir.file(name);
    write_file(p, copy);
    return p;
  }
  std::int64_t page_size() {
    return std::stoll(tool_test::dump_sql(copy_for_sql(), "PRAGMA page_size"));
  }
  // Leaf pages of the events table (1-based page numbers), from SQLite's dbstat.
  std::vector<std::int64_t> event_leaf_pages() {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(copy_for_sql().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db,
                               "SELECT pageno FROM dbstat WHERE name = 'events' AND "
                               "pagetype = 'leaf' ORDER BY pageno",
                               -1, &st, nullptr) == SQLITE_OK);
    std::vector<std::int64_t> pages;
    while (sqlite3_step(st) == SQLITE_ROW) pages.push_back(sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    sqlite3_close_v2(db);
    REQUIRE(pages.size() > 20);
    return pages;
  }

 private:
  std::string copy_for_sql() {  // SQLite reads a copy: the good file is never opened again
    auto p = dir.file("for-sql.db");
    if (!fs::exists(p)) write_file(p, bytes);
    return p;
  }
};

bool names_damage(const std::string& err) {
  return contains(err, "damaged") || contains(err, "not an Annals store") ||
         contains(err, "I/O error") || contains(err, "malformed");
}

// What a damaged copy gave; the checks are in check_damaged.
struct outcome {
  bool open_failed = false, read_failed = false, altered = false;
};

// Through the tools then the library: a clean error, or correct data; altered data must be
// reported by verify. The read-only tools leave the file as it was.
outcome check_damaged(bank_store& good, const std::string& path) {
  outcome o;
  const std::string before = read_file(path);
  auto verify = annals_tool(path, {"verify"});
  auto stats = annals_tool(path, {"stats"});
  INFO("verify exit " << verify.exit_code << ": " << verify.out.substr(0, 600) << verify.err);
  INFO("stats exit " << stats.exit_code << ": " << stats.err);
  CHECK((verify.exit_code == 0 || verify.exit_code == 1 || verify.exit_code == 4));
  CHECK((stats.exit_code == 0 || stats.exit_code == 4));
  if (verify.exit_code == 4) CHECK(names_damage(verify.err));
  if (stats.exit_code == 4) CHECK(names_damage(stats.err));
  CHECK(read_file(path) == before);  // read-only tools wrote nothing

  // The library, read-only first: the same answer as the tools.
  sqlite_options ro;
  ro.read_only = true;
  auto opened = open_sqlite_store(path, ro);
  if (!opened) {
    INFO(describe(opened));
    CHECK((kind_of(opened) == errc::corruption || kind_of(opened) == errc::io));
    CHECK_FALSE(opened.error().message().empty());
    o.open_failed = true;
  } else {
    std::vector<event_row> rows;
    auto n = (*opened)->read_all({}, [&](const recorded_event& e) {
      rows.push_back(row_of(e));
      return true;
    });
    if (!n) {
      INFO(describe(n));
      CHECK((kind_of(n) == errc::corruption || kind_of(n) == errc::io));
      o.read_failed = true;
    } else {
      o.altered = rows != good.rows;
    }
    auto v = (*opened)->stream_version(account_stream);
    if (v) {
      // A version read without error is the true one, or the damage is reported by verify.
      if (*v != bank_deposits + 1) o.altered = true;
    } else {
      CHECK((kind_of(v) == errc::corruption || kind_of(v) == errc::io));
    }
  }
  // Never wrong data silently: whatever reads back differently, verify reports.
  if (o.altered) {
    CHECK_MESSAGE(verify.exit_code != 0, "reads succeed with altered content, verify says ok");
  }
  // bank balance (which catches its read models up, so it writes): the true balance or exit 4.
  auto balance = run_on(BANK_EXE, path, {"balance", "acc-1"});
  INFO("bank balance exit " << balance.exit_code << ": " << balance.out << balance.err);
  CHECK((balance.exit_code == 0 || balance.exit_code == 4));
  if (balance.exit_code == 4) CHECK(names_damage(balance.err));
  if (balance.exit_code == 0 && balance.out != bank_balance + "\n") {
    CHECK_MESSAGE(verify.exit_code != 0, "bank balance is wrong and verify says ok");
  }
  // An append through the library: it works or fails cleanly, never a crash.
  auto rw = open_sqlite_store(path);
  if (rw) {
    auto a = (*rw)->append("other", expected_version::any(), make_events(1));
    INFO("append: " << describe(a));
    CHECK((a.ok() || kind_of(a) == errc::corruption || kind_of(a) == errc::io));
  } else {
    INFO(describe(rw));
    CHECK((kind_of(rw) == errc::corruption || kind_of(rw) == errc::io));
  }
  return o;
}

void flip_bits(std::string& bytes, std::size_t from, std::size_t to, int flips, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::size_t> at(from, to - 1);
  for (int i = 0; i < flips; ++i) bytes[at(rng)] ^= static_cast<char>(1u << (rng() % 8));
}

}  // namespace

// ---- damaged files ------------------------------------------------------------------------

TEST_CASE("a truncated store file: a clean error from the library and the tools, never a crash") {
  bank_store good;
  for (std::size_t keep : {good.bytes.size() - 4096, good.bytes.size() / 2, good.bytes.size() / 10,
                           std::size_t(4096), std::size_t(100), std::size_t(10)}) {
    CAPTURE(keep);
    auto path = good.damaged("truncated-" + std::to_string(keep) + ".db",
                             [&](std::string& b) { b.resize(keep); });
    auto o = check_damaged(good, path);
    // Events are missing: nothing may read back as complete.
    CHECK((o.open_failed || o.read_failed || o.altered));
  }
}

TEST_CASE("a zeroed store file, header or events page: a clean error, never a crash") {
  bank_store good;
  const auto page = static_cast<std::size_t>(good.page_size());
  const auto leaves = good.event_leaf_pages();
  const auto middle = static_cast<std::size_t>(leaves[leaves.size() / 2]);
  struct variant {
    const char* name;
    std::function<void(std::string&)> damage;
  };
  for (const auto& v : std::vector<variant>{
           {"whole file", [](std::string& b) { std::fill(b.begin(), b.end(), '\0'); }},
           {"first page", [&](std::string& b) { std::fill_n(b.begin(), page, '\0'); }},
           {"events leaf page",
            [&](std::string& b) { std::fill_n(b.begin() + (middle - 1) * page, page, '\0'); }}}) {
    CAPTURE(v.name);
    auto o = check_damaged(good, good.damaged(std::string("zeroed-") + v.name, v.damage));
    CHECK((o.open_failed || o.read_failed || o.altered));
  }
}

TEST_CASE("random bit flips across the store file: a clean error or correct data") {
  bank_store good;
  int errors = 0, intact = 0, altered = 0;
  for (unsigned seed = 1; seed <= 6; ++seed) {
    CAPTURE(seed);
    auto path = good.damaged("flipped-" + std::to_string(seed) + ".db",
                             [&](std::string& b) { flip_bits(b, 0, b.size(), 16, seed); });
    auto o = check_damaged(good, path);
    (o.open_failed || o.read_failed ? errors : o.altered ? altered : intact)++;
  }
  MESSAGE("bit flips, 16 per file over 6 seeds: " << errors << " clean errors, " << intact
                                                  << " intact reads, " << altered
                                                  << " altered reads reported by verify");
}

TEST_CASE("bit flips in one page in the middle of the events table") {
  bank_store good;
  const auto page = static_cast<std::size_t>(good.page_size());
  const auto leaves = good.event_leaf_pages();
  const auto middle = static_cast<std::size_t>(leaves[leaves.size() / 2]);
  const std::size_t from = (middle - 1) * page;
  SUBCASE("a few bits in its cells") {
    for (unsigned seed = 11; seed <= 14; ++seed) {
      CAPTURE(seed);
      auto path = good.damaged("page-bits-" + std::to_string(seed) + ".db",
                               [&](std::string& b) { flip_bits(b, from, from + page, 4, seed); });
      check_damaged(good, path);
    }
  }
  SUBCASE("every bit of the page") {
    auto path = good.damaged("page-inverted.db", [&](std::string& b) {
      for (std::size_t i = from; i < from + page; ++i) b[i] = static_cast<char>(~b[i]);
    });
    auto o = check_damaged(good, path);
    CHECK((o.open_failed || o.read_failed || o.altered));
  }
}

TEST_CASE("foreign files: a clean error from the library, the tools and bank, file unchanged") {
  temp_dir dir;
  struct variant {
    std::string name;
    std::function<void(const std::string&)> make;
  };
  for (const auto& v : std::vector<variant>{
           {"png.db",
            [](const std::string& p) {
              write_file(p, std::string("\x89PNG\r\n\x1a\n", 8) + std::string(5000, '\x42'));
            }},
           {"other-app-events.db",
            [](const std::string& p) {
              // Another application's database with tables named like the store's.
              tool_test::exec_sql(p,
                                  "PRAGMA journal_mode=WAL; PRAGMA application_id = 7;"
                                  "CREATE TABLE events(id INTEGER PRIMARY KEY, what TEXT);"
                                  "CREATE TABLE streams(id INTEGER PRIMARY KEY, name TEXT);"
                                  "INSERT INTO events(what) VALUES ('meeting'), ('lunch');");
            }},
           {"sqlite-no-app-id.db", [](const std::string& p) {
              tool_test::exec_sql(p,
                                  "CREATE TABLE events(position INTEGER PRIMARY KEY, payload BLOB);"
                                  "INSERT INTO events(payload) VALUES (x'00ff');");
            }}}) {
    CAPTURE(v.name);
    auto path = dir.file(v.name);
    v.make(path);
    const auto before = read_file(path);
    auto r = open_sqlite_store(path);
    INFO(describe(r));
    CHECK(kind_of(r) == errc::corruption);
    if (!r) CHECK(contains(r.error().message(), "not an Annals store"));
    for (auto args : std::vector<std::vector<std::string>>{{"verify"}, {"stats"}}) {
      auto t = annals_tool(path, args);
      INFO(args[0] << ": " << t.err);
      CHECK(t.exit_code == 4);
      CHECK(contains(t.err, "not an Annals store"));
    }
    auto b = run_on(BANK_EXE, path, {"balance", "acc-1"});
    INFO("bank: " << b.err);
    CHECK(b.exit_code == 4);
    CHECK(contains(b.err, "not an Annals store"));
    auto d = run_on(BANK_EXE, path, {"deposit", "acc-1", "1.00"});
    CHECK(d.exit_code == 4);
    CHECK(read_file(path) == before);  // no Annals table, no WAL switch, nothing
  }
}

TEST_CASE("a flipped bit in a stored event type is a verify problem, not a warning") {
  // "bank.v1.MoneyDeposited" -> "bank.v1.MongyDeposited" (0x65 -> 0x67, one bit) in one row in
  // the middle of the file: the row still reads, with a type the store never registered. The
  // event is stamped with schema version 1 of its type, so verify knows the type was changed.
  bank_store good;
  const std::string type = "bank.v1.MoneyDeposited";
  auto at = good.bytes.find(type, good.bytes.size() / 2);
  REQUIRE(at != std::string::npos);
  auto path = good.damaged("type-flip.db", [&](std::string& b) { b[at + 11] ^= 0x02; });
  auto o = check_damaged(good, path);
  CHECK(o.altered);
  auto verify = annals_tool(path, {"verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 1);
  CHECK(contains(verify.out,
                 "schema-version: the event says schema version 1 of "
                 "bank.v1.MongyDeposited, but the store has no schema of that type"));
}

// ---- flips that leave the row well-formed: only the row checksum sees them ---------------

namespace {

// A small store with one deposit of a distinctive amount, recorded at a distinctive time and
// carrying a distinctive correlation id, between ordinary deposits: each can be found in the
// file's bytes and changed by one bit so that the row stays well-formed.
constexpr std::int64_t target_amount = 987654321987;  // odd: a flipped low bit subtracts 1
constexpr std::int64_t base_us = 1700000000000000;
constexpr std::int64_t target_us = base_us + 2001;  // odd, between its neighbours' times
const std::string target_correlation = "corr-target-AAAAAAAA";

std::string varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

std::string big_endian(std::int64_t v) {  // how SQLite stores an 8-byte integer
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<std::uint64_t>(v) >> (56 - 8 * i));
  return out;
}

struct checksummed_store {
  temp_dir dir;
  std::string path = dir.file("sums.db");
  std::string bytes;

  checksummed_store() {
    std::int64_t now = 0;
    sqlite_options o;
    o.clock = [&now] { return now; };
    {
      auto store = must(open_sqlite_store(path, o));
      must(register_event_types(*store, {{bank::v1::MoneyDeposited::descriptor()}}));
      for (int i = 0; i < 5; ++i) {
        bank::v1::MoneyDeposited d;
        d.set_account_id("acc-9");
        d.set_amount_cents(i == 2 ? target_amount : 100);
        event_data e{"", "bank.v1.MoneyDeposited", d.SerializeAsString(), {}};
        if (i == 2) e.metadata.correlation_id = target_correlation;
        now = i == 2 ? target_us : base_us + 1000 * i;
        must(store->append("account-acc-9", expected_version::any(), {e}));
      }
    }
    REQUIRE_FALSE(fs::exists(path + "-wal"));
    bytes = read_file(path);
    auto clean = annals_tool(path, {"verify"});
    INFO(clean.out << clean.err);
    REQUIRE(clean.exit_code == 0);
  }
  // A copy with one bit flipped in the only occurrence of `needle`, `offset` bytes into it.
  std::string flipped(const std::string& name, const std::string& needle, std::size_t offset,
                      unsigned char bit) {
    auto at = bytes.find(needle);
    REQUIRE(at != std::string::npos);
    REQUIRE(bytes.find(needle, at + 1) == std::string::npos);  // one place: the target row
    std::string copy = bytes;
    copy[at + offset] ^= static_cast<char>(bit);
    auto p = dir.file(name);
    write_file(p, copy);
    return p;
  }
};

// verify on a flipped copy: exit 1 with the checksum problem of position 3 and nothing else;
// the library reads the altered value back without error (reads do not check).
void expect_checksum_problem(const std::string& path) {
  auto verify = annals_tool(path, {"verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 1);
  CHECK(contains(verify.out,
                 "position 3: checksum: the stored bytes of event 3 (stream 'account-acc-9' "
                 "version 2) do not match their checksum: the row was altered after it was "
                 "written"));
  CHECK(contains(verify.out, "1 problem found"));
}

}  // namespace

TEST_CASE("a flipped bit that leaves a payload parsing (an amount changed) fails verify: checksum") {
  checksummed_store s;
  // The amount's first varint byte holds its low 7 bits: flipping bit 0 makes it one less.
  auto path = s.flipped("amount.db", varint(target_amount), 0, 0x01);
  sqlite_options ro;
  ro.read_only = true;
  {
    auto store = must(open_sqlite_store(path, ro));
    auto e = read_stream_vec(*store, "account-acc-9", {2, direction::forward, 1});
    REQUIRE(e.size() == 1);
    bank::v1::MoneyDeposited d;
    REQUIRE(d.ParseFromString(e[0].payload));
    CHECK(d.amount_cents() == target_amount - 1);  // reads back altered, without error
  }
  expect_checksum_problem(path);
}

TEST_CASE("a flipped bit in recorded_at that stays plausible and in order fails verify: checksum") {
  checksummed_store s;
  auto path = s.flipped("recorded.db", big_endian(target_us), 7, 0x01);
  sqlite_options ro;
  ro.read_only = true;
  {
    auto store = must(open_sqlite_store(path, ro));
    auto e = read_stream_vec(*store, "account-acc-9", {2, direction::forward, 1});
    REQUIRE(e.size() == 1);
    CHECK(e[0].recorded_at_us == target_us - 1);
  }
  expect_checksum_problem(path);
}

TEST_CASE("a flipped bit in metadata that stays valid fails verify: checksum") {
  checksummed_store s;
  // 'A' (0x41) -> 'C' (0x43): still UTF-8, still a well-formed EventMetadata.
  auto path = s.flipped("metadata.db", target_correlation, target_correlation.size() - 1, 0x02);
  sqlite_options ro;
  ro.read_only = true;
  {
    auto store = must(open_sqlite_store(path, ro));
    auto e = read_stream_vec(*store, "account-acc-9", {2, direction::forward, 1});
    REQUIRE(e.size() == 1);
    CHECK(e[0].metadata.correlation_id == "corr-target-AAAAAAAC");
  }
  expect_checksum_problem(path);
}
