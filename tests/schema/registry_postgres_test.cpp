// The schema registry on PostgreSQL only: several store objects registering at once, and the
// tables' creation in a store made before the registry. (The backend-independent cases of
// registry_test.cpp run on PostgreSQL too.) Each case gets a fresh database on the
// ANNALS_TEST_PG server (store/backends.hpp).
#include "schema/descriptors.hpp"
#include "schema/registry_support.hpp"
#include "store/backends.hpp"

#include <annals/schema.hpp>
#include <annals/sql_database.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace annals;
using namespace annals::test;

namespace {

std::unique_ptr<event_store> open_pg(const std::string& uri, postgres_options o = {}) {
  auto s = open_postgres_store(uri, std::move(o));
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message()));
  return std::move(s).value();
}

}  // namespace

TEST_CASE("postgres: store objects registering concurrently end with one row per descriptor") {
  postgres_backend backend;
  open_pg(backend.uri());  // create the store first
  std::vector<std::unique_ptr<built_pool>> pools;
  for (int v = 1; v <= 3; ++v) pools.push_back(build(version_set(v)));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto s = open_postgres_store(backend.uri());
      if (!s) {
        ++failures;
        return;
      }
      for (int v = 1; v <= 3; ++v) {
        auto r = register_event_types(**s, {{pools[v - 1]->find("t.E"), compatibility::backward}});
        if (!r || r.value()[0].version != v) ++failures;
        // Appends interleave with the registrations and are stamped with v.
        auto a = (*s)->append("s", expected_version::any(), {event_of("t.E")});
        if (!a) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 0);
  auto store = open_pg(backend.uri());
  auto stored = schemas(*store, "t.E");
  REQUIRE(stored.size() == 3);
  for (int v = 1; v <= 3; ++v) {
    CHECK(stored[v - 1].version == v);
    CHECK(stored[v - 1].fingerprint == type_fingerprint(*pools[v - 1]->find("t.E")));
  }
  auto versions = stamped(*store, "s");
  CHECK(versions.size() == 12);
  CHECK(std::count(versions.begin(), versions.end(), 3) == 4);
}

TEST_CASE("postgres: a store made before the registry gets its tables when opened writable; "
          "read-only it has no schemas and no snapshots") {
  postgres_backend backend;
  open_pg(backend.uri());
  {
    pg::session s(backend.uri());
    s.exec("DROP TABLE annals_schemas");
    s.exec("DROP TABLE annals_snapshots");
  }
  postgres_options ro;
  ro.read_only = true;
  auto reader = open_pg(backend.uri(), ro);
  CHECK(schemas(*reader).empty());
  auto snap = reader->read_snapshot("s", "k");
  REQUIRE(snap.ok());
  CHECK_FALSE(snap->has_value());
  CHECK(fails_with(register_event_types(*reader, {{build(version_set(1))->find("t.E"),
                                                   compatibility::backward}}),
                   errc::read_only, "read-only"));

  auto store = open_pg(backend.uri());
  auto pool = build(version_set(1));
  CHECK(register_ok(*store, *pool, {"t.E"})[0].version == 1);
  CHECK(schemas(*store).size() == 1);
  pg::session s(backend.uri());
  CHECK(s.exec("SELECT count(*) FROM annals_snapshots") == "0");
}

TEST_CASE("postgres: descriptor sets and read-model blobs read back under bytea_output = escape") {
  postgres_backend backend;
  {
    pg::session s(backend.uri());
    s.exec("ALTER DATABASE \"" + backend.name + "\" SET bytea_output = 'escape'");
  }
  auto store = open_pg(backend.uri());  // new connections: the escape format
  auto pool = build(version_set(1));
  register_ok(*store, *pool, {"t.E"});
  auto stored = schemas(*store, "t.E");
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].descriptor_set == descriptor_set_of(*pool->find("t.E")));
  // Registering the same descriptor again finds it (its stored fingerprint, read back).
  CHECK_FALSE(register_ok(*store, *pool, {"t.E"})[0].added);

  auto db = sql_database::open(backend.uri());
  REQUIRE_MESSAGE(db.ok(), (db.ok() ? "" : db.error().message()));
  const blob bytes{std::string("\0\x01\\x\xff\x7f'", 7)};
  blob back;
  auto w = (*db)->write([&](sql_tx& tx) -> result<void> {
    if (auto r = tx.exec("CREATE TABLE b(v bytea)"); !r) return r.error();
    if (auto r = tx.exec("INSERT INTO b(v) VALUES (?1)", {bytes}); !r) return r.error();
    auto q = tx.query("SELECT v FROM b", {}, [&](const sql_row& row) {
      back = row.bytes(0);
      return true;
    });
    if (!q) return q.error();
    return {};
  });
  REQUIRE_MESSAGE(w.ok(), (w.ok() ? "" : w.error().message()));
  CHECK(back == bytes);
}
