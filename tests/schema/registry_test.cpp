// The registry in the store: versions, no-op re-registration, refusal without writes,
// stamping, several processes, format upgrade of a format-1 store, the offline check. The
// backend-independent cases run on every backend of ANNALS_STORE_BACKENDS (store/backends.hpp);
// PostgreSQL-only cases are in registry_postgres_test.cpp.
#include "schema/descriptors.hpp"
#include "schema/registry_support.hpp"
#include "store/backends.hpp"
#include "support/support.hpp"

#include <annals/admin.hpp>
#include <annals/schema.hpp>
#include <annals/sql_database.hpp>

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace annals;
using namespace annals::test;

namespace {

std::unique_ptr<event_store> open(const std::string& path, sqlite_options o = {}) {
  auto s = open_sqlite_store(path, std::move(o));
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message()));
  return std::move(s).value();
}

std::int64_t sql_int(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  std::int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

void sql_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

// The format-1 layout, as sqlite_store.cpp created it before format 2, with one event.
void create_format_1_store(const std::string& path) {
  sql_exec(path, R"sql(
PRAGMA journal_mode=WAL;
CREATE TABLE streams(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL);
CREATE TABLE events(position INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
  stream_version INTEGER NOT NULL, event_id BLOB NOT NULL, type TEXT NOT NULL,
  recorded_at INTEGER NOT NULL, metadata BLOB, payload BLOB NOT NULL);
CREATE UNIQUE INDEX events_by_stream ON events(stream, stream_version);
CREATE UNIQUE INDEX events_by_id ON events(event_id);
PRAGMA application_id = 1095650892;
PRAGMA user_version = 1;
INSERT INTO streams(id, name, version) VALUES(1, 'old-1', 0);
INSERT INTO events(stream, stream_version, event_id, type, recorded_at, metadata, payload)
  VALUES(1, 0, x'0190a0b0c0d07000800000000000abcd', 't.E', 1700000000000000, NULL, x'0801');
)sql");
}

// check_against_store, which must succeed.
schema_check_report checked(event_store& store, const pb::FileDescriptorSet& set) {
  auto r = check_against_store(store, set);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
  return std::move(r).value();
}

bool has_table(const std::string& path, const std::string& table) {
  return sql_int(path, "SELECT count(*) FROM sqlite_schema WHERE name = '" + table + "'") == 1;
}

}  // namespace

TEST_CASE_TEMPLATE("a registered type round-trips through the store", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto set = version_set(1);
  auto pool = build(set);
  auto regs = register_ok(*store, *pool, {"t.E"}, compatibility::full);
  REQUIRE(regs.size() == 1);
  CHECK(regs[0].type == "t.E");
  CHECK(regs[0].version == 1);
  CHECK(regs[0].added);

  auto stored = schemas(*store, "t.E");
  REQUIRE(stored.size() == 1);
  const auto& s = stored[0];
  CHECK(s.type == "t.E");
  CHECK(s.version == 1);
  CHECK(s.mode == compatibility::full);
  CHECK(s.descriptor_set == descriptor_set_of(*pool->find("t.E")));
  CHECK(s.fingerprint == type_fingerprint(*pool->find("t.E")));
  CHECK(s.fingerprint.size() == 32);
  CHECK(s.registered_at_us > 0);
  pb::FileDescriptorSet parsed;
  REQUIRE(parsed.ParseFromString(s.descriptor_set));
  REQUIRE(parsed.file_size() == 1);
  CHECK(parsed.file(0).name() == "t.proto");
  CHECK(schemas(*store, "t.G").empty());
  CHECK(schemas(*store).size() == 1);
}

TEST_CASE_TEMPLATE("a stored schema row with an unknown compatibility mode is corruption, not a guess", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto pool = build(version_set(1));
  register_ok(*store, *pool, {"t.E"}, compatibility::full);
  {
    auto db = sql_database::open(backend.uri());
    REQUIRE_MESSAGE(db.ok(), describe(db));
    auto w = (*db)->write([](sql_tx& tx) -> result<void> {
      auto n = tx.exec("UPDATE annals_schemas SET compatibility = ?1", {"sideways"});
      if (!n) return n.error();
      return {};
    });
    REQUIRE_MESSAGE(w.ok(), describe(w));
  }
  // The store's readers and a registration (which reads the stored versions first) stop.
  auto read = store->read_schemas("t.E");
  REQUIRE_FALSE(read.ok());
  CHECK(read.error().kind() == errc::corruption);
  CHECK_MESSAGE(read.error().message().find("'sideways'") != std::string::npos,
                read.error().message());
  auto pool2 = build(version_set(2));
  auto again = register_event_types(*store, {{pool2->find("t.E"), compatibility::backward}});
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().kind() == errc::corruption);
  {  // nothing written: still the one row
    auto db = sql_database::open(backend.uri());
    REQUIRE_MESSAGE(db.ok(), describe(db));
    std::int64_t rows = -1;
    auto r = (*db)->write([&](sql_tx& tx) -> result<void> {
      auto q = tx.query("SELECT count(*) FROM annals_schemas", {}, [&](const sql_row& row) {
        rows = row.int64(0);
        return true;
      });
      if (!q) return q.error();
      return {};
    });
    REQUIRE_MESSAGE(r.ok(), describe(r));
    CHECK(rows == 1);
  }
  // verify reports it as a problem and reads on; export refuses rather than guess a mode.
  auto admin = open_admin(backend.uri());
  REQUIRE_MESSAGE(admin.ok(), describe(admin));
  std::vector<store_problem> found;
  auto problems = (*admin)->verify([&](const store_problem& p) { found.push_back(p); });
  REQUIRE_MESSAGE(problems.ok(), describe(problems));
  CHECK(problems.value() == 1);
  REQUIRE(found.size() == 1);
  CHECK(found[0].check == "schema-mode");
  CHECK_MESSAGE(found[0].detail.find("'sideways'") != std::string::npos, found[0].detail);
  dump_visitor visit{[](const std::vector<stored_schema>&, std::int64_t) -> result<void> { return {}; },
                     [](const raw_event&) -> result<void> { return {}; }};
  auto dumped = (*admin)->dump(visit);
  REQUIRE_FALSE(dumped.ok());
  CHECK(dumped.error().kind() == errc::corruption);
}

TEST_CASE("descriptor_set_of lists dependencies first, deterministically") {
  pb::FileDescriptorSet set;
  *set.add_file() = file_proto(message("Dep", field("x", 1, "TYPE_INT32")), "proto3", "dep.proto");
  auto top = file_proto(message("Top", field("d", 1, "TYPE_MESSAGE", "LABEL_OPTIONAL",
                                             "type_name: \".t.Dep\"")),
                        "proto3", "top.proto");
  top.add_dependency("dep.proto");
  *set.add_file() = top;
  auto pool = build(set);
  std::string bytes = descriptor_set_of(*pool->find("t.Top"));
  CHECK(bytes == descriptor_set_of(*pool->find("t.Top")));
  pb::FileDescriptorSet out;
  REQUIRE(out.ParseFromString(bytes));
  REQUIRE(out.file_size() == 2);
  CHECK(out.file(0).name() == "dep.proto");
  CHECK(out.file(1).name() == "top.proto");
  CHECK(schema_fingerprint(bytes) == schema_fingerprint(bytes));
  CHECK(schema_fingerprint(bytes) != schema_fingerprint(bytes + " "));
}

TEST_CASE_TEMPLATE("changed descriptors become versions 1, 2, 3; an old one is found again, not added", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  std::vector<std::unique_ptr<built_pool>> pools;
  for (int v = 1; v <= 3; ++v) {
    pools.push_back(build(version_set(v)));
    auto regs = register_ok(*store, *pools.back(), {"t.E"});
    CHECK(regs[0].version == v);
    CHECK(regs[0].added);
  }
  auto stored = schemas(*store, "t.E");
  REQUIRE(stored.size() == 3);
  for (int v = 1; v <= 3; ++v) CHECK(stored[v - 1].version == v);
  // An old deployment registering version 1's descriptor again writes nothing and stamps 1.
  auto again = register_ok(*store, *pools[0], {"t.E"});
  CHECK(again[0].version == 1);
  CHECK(!again[0].added);
  CHECK(schemas(*store, "t.E").size() == 3);
}

TEST_CASE_TEMPLATE("registering an identical descriptor again writes nothing", B, ANNALS_STORE_BACKENDS) {
  B backend;
  std::int64_t now = 1000;
  backend_options o;
  o.clock = [&] { return now; };
  auto store = backend.open(o);
  auto pool = build(version_set(1));
  register_ok(*store, *pool, {"t.E", "t.G"});
  auto before = schemas(*store);
  now = 2000;
  auto regs = register_ok(*store, *pool, {"t.E", "t.G"});
  for (const auto& r : regs) CHECK(!r.added);
  auto after = schemas(*store);
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].registered_at_us == 1000);
    CHECK(after[i].fingerprint == before[i].fingerprint);
  }
  // Another store object (a restarted process) finds the same versions.
  store.reset();
  auto reopened = backend.open();
  auto regs2 = register_ok(*reopened, *pool, {"t.E", "t.G"});
  CHECK(regs2[0].version == 1);
  CHECK(!regs2[0].added);
}

TEST_CASE_TEMPLATE("a breaking change is refused with its report and nothing of the call is written", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(version_set(1));
  register_ok(*store, *v1, {"t.E", "t.G"});
  // E gains a field (fine), G changes x's type (breaking): all or nothing.
  auto next = build(set_of(message("E", field("f1", 1, "TYPE_INT64") + field("f2", 2, "TYPE_INT64") +
                                            field("f3", 3, "TYPE_INT64")) +
                           " " + message("G", field("x", 1, "TYPE_INT32"))));
  auto r = register_event_types(*store, {{next->find("t.E"), compatibility::backward},
                                         {next->find("t.G"), compatibility::backward}});
  REQUIRE(fails_with(r, errc::invalid_argument, "t.G: field x (1): field-type-changed"));
  CHECK(fails_with(r, errc::invalid_argument, "against stored version 1"));
  CHECK(schemas(*store).size() == 2);
  // Events keep being stamped with what this process registered before.
  REQUIRE(store->append("s", expected_version::any(), {event_of("t.E")}).ok());
  CHECK(stamped(*store, "s") == std::vector<std::int32_t>{1});
  // The same change with mode none is accepted.
  auto ok = register_event_types(*store, {{next->find("t.G"), compatibility::none}});
  REQUIRE(ok.ok());
  CHECK(ok.value()[0].version == 2);
}

TEST_CASE_TEMPLATE("a change is checked against every stored version, not only the latest", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto with_b = build(set_of(message("E", field("a", 1, "TYPE_INT64") + field("b", 2, "TYPE_STRING"))));
  auto b_reserved = build(set_of(message(
      "E", field("a", 1, "TYPE_INT64") + " reserved_range { start: 2 end: 3 } reserved_name: \"b\"")));
  auto b_reused = build(set_of(message("E", field("a", 1, "TYPE_INT64") + field("c", 2, "TYPE_INT32"))));
  register_ok(*store, *with_b, {"t.E"});
  register_ok(*store, *b_reserved, {"t.E"});
  // Against version 2 alone this only adds a field; version 1 still has events with b (2).
  auto r = register_event_types(*store, {{b_reused->find("t.E"), compatibility::backward}});
  CHECK(fails_with(r, errc::invalid_argument, "field-type-changed"));
  CHECK(fails_with(r, errc::invalid_argument, "against stored version 1"));
}

TEST_CASE_TEMPLATE("events appended after registration carry the version this store registered", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  REQUIRE(store->append("s", expected_version::any(), {event_of("t.E")}).ok());
  auto v1 = build(version_set(1));
  register_ok(*store, *v1, {"t.E"});
  REQUIRE(store->append("s", expected_version::any(),
                        {event_of("t.E"), event_of("t.Unregistered"), event_of("t.E", 7)})
              .ok());
  // Another process registers version 2; this one still writes with version 1's descriptor.
  auto other = backend.open();
  auto v2 = build(version_set(2));
  CHECK(register_ok(*other, *v2, {"t.E"})[0].version == 2);
  REQUIRE(store->append("s", expected_version::any(), {event_of("t.E")}).ok());
  REQUIRE(other->append("s", expected_version::any(), {event_of("t.E")}).ok());
  CHECK(stamped(*store, "s") == std::vector<std::int32_t>{0, 1, 0, 7, 1, 2});
}

TEST_CASE_TEMPLATE("appends from many threads during a registration are stamped 0 or the new version", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(version_set(1));
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (!store->append("s-" + std::to_string(t), expected_version::any(), {event_of("t.E")})
                 .ok()) {
          failed = true;
        }
      }
    });
  }
  register_ok(*store, *v1, {"t.E"});
  for (auto& t : threads) t.join();
  CHECK(!failed);
  REQUIRE(store->append("s-0", expected_version::any(), {event_of("t.E")}).ok());
  for (int t = 0; t < 4; ++t) {
    auto v = stamped(*store, "s-" + std::to_string(t));
    for (auto x : v) CHECK((x == 0 || x == 1));
    if (t == 0) CHECK(v.back() == 1);
  }
}

TEST_CASE("processes registering concurrently end with one row per descriptor, in order") {
  temp_dir dir;
  auto path = dir.file("s.db");
  open(path);  // create the store first
  std::vector<std::unique_ptr<built_pool>> pools;
  for (int v = 1; v <= 3; ++v) pools.push_back(build(version_set(v)));
  std::vector<pid_t> children;
  for (int c = 0; c < 4; ++c) {
    children.push_back(fork_child([&] {
      auto s = open_sqlite_store(path);
      if (!s) return 10;
      for (int v = 1; v <= 3; ++v) {
        auto r = register_event_types(**s, {{pools[v - 1]->find("t.E"), compatibility::backward}});
        if (!r) return 20 + v;
        if (r.value()[0].version != v) return 30 + v;
      }
      return 0;
    }));
  }
  for (auto pid : children) CHECK(wait_child(pid) == 0);
  auto store = open(path);
  auto stored = schemas(*store, "t.E");
  REQUIRE(stored.size() == 3);
  std::set<std::string> fingerprints;
  for (int v = 1; v <= 3; ++v) {
    CHECK(stored[v - 1].version == v);
    CHECK(stored[v - 1].fingerprint ==
          type_fingerprint(*pools[v - 1]->find("t.E")));
    fingerprints.insert(stored[v - 1].fingerprint);
  }
  CHECK(fingerprints.size() == 3);
}

TEST_CASE("a read-only store reads schemas and refuses to register") {
  temp_dir dir;
  auto path = dir.file("s.db");
  auto v1 = build(version_set(1));
  register_ok(*open(path), *v1, {"t.E"});
  sqlite_options o;
  o.read_only = true;
  auto ro = open(path, o);
  CHECK(schemas(*ro).size() == 1);
  auto r = register_event_types(*ro, {{v1->find("t.E"), compatibility::backward}});
  CHECK(fails_with(r, errc::read_only, "read-only"));
}

TEST_CASE_TEMPLATE("bad registrations are invalid_argument", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto r = register_event_types(*store, {{nullptr, compatibility::backward}});
  CHECK(fails_with(r, errc::invalid_argument));
  auto v1 = build(version_set(1));
  auto twice = register_event_types(*store, {{v1->find("t.E"), compatibility::backward},
                                             {v1->find("t.E"), compatibility::backward}});
  CHECK(fails_with(twice, errc::invalid_argument));
  auto empty = store->register_schemas({schema_candidate{"t.E", compatibility::backward, "", ""}},
                                       nullptr);
  CHECK(fails_with(empty, errc::invalid_argument));
  auto bad_type = store->read_schemas("not a type");
  CHECK(fails_with(bad_type, errc::invalid_argument));
  CHECK(schemas(*store).empty());
}

TEST_CASE("a format-1 store is upgraded to the current format (4) when opened for writing") {
  temp_dir dir;
  auto path = dir.file("v1.db");
  create_format_1_store(path);
  CHECK(!has_table(path, "annals_schemas"));
  auto store = open(path);
  CHECK(sql_int(path, "PRAGMA user_version") == 4);
  CHECK(has_table(path, "annals_schemas"));
  CHECK(has_table(path, "annals_snapshots"));
  // The old event is still there, and the registry works.
  auto versions = stamped(*store, "old-1");
  CHECK(versions == std::vector<std::int32_t>{0});
  auto v1 = build(version_set(1));
  CHECK(register_ok(*store, *v1, {"t.E"})[0].version == 1);
  REQUIRE(store->append("old-1", expected_version::exact(0), {event_of("t.E")}).ok());
  CHECK(stamped(*store, "old-1") == std::vector<std::int32_t>{0, 1});
  // Opening again is a no-op.
  store.reset();
  auto again = open(path);
  CHECK(sql_int(path, "PRAGMA user_version") == 4);
  CHECK(schemas(*again).size() == 1);
}

TEST_CASE("a format-1 store opened read-only stays format 1 and has no schemas") {
  temp_dir dir;
  auto path = dir.file("v1.db");
  create_format_1_store(path);
  sqlite_options o;
  o.read_only = true;
  auto store = open(path, o);
  CHECK(schemas(*store).empty());
  CHECK(schemas(*store, "t.E").empty());
  CHECK(stamped(*store, "old-1") == std::vector<std::int32_t>{0});
  auto v1 = build(version_set(1));
  CHECK(!register_event_types(*store, {{v1->find("t.E"), compatibility::backward}}).ok());
  CHECK(sql_int(path, "PRAGMA user_version") == 1);
  CHECK(!has_table(path, "annals_schemas"));
}

TEST_CASE("a store of a newer format is refused, read-write and read-only") {
  temp_dir dir;
  auto path = dir.file("v5.db");
  open(path);
  sql_exec(path, "PRAGMA user_version = 5");
  for (bool read_only : {false, true}) {
    sqlite_options o;
    o.read_only = read_only;
    auto s = open_sqlite_store(path, o);
    CHECK(fails_with(s, errc::corruption, "storage format 5, newer"));
  }
}

TEST_CASE_TEMPLATE("check_against_store: compatible, breaking, renamed, unrelated and invalid sets", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(version_set(1));
  register_ok(*store, *v1, {"t.E", "t.G"});

  CHECK(checked(*store, version_set(1)).compatible());
  CHECK(checked(*store, version_set(2)).compatible());

  auto breaking = checked(
      *store, set_of(message("E", field("f1", 1, "TYPE_STRING") + field("f2", 2, "TYPE_INT64")) +
                     " " + message("G", field("x", 1, "TYPE_STRING"))));
  REQUIRE(breaking.violations.size() == 1);
  CHECK(breaking.violations[0].type == "t.E");
  CHECK(breaking.violations[0].field == "f1 (1)");
  CHECK(breaking.violations[0].rule == "field-type-changed");

  // t.proto still there, t.G gone (renamed to t.H): a rename.
  auto renamed = checked(
      *store, set_of(message("E", field("f1", 1, "TYPE_INT64") + field("f2", 2, "TYPE_INT64")) +
                     " " + message("H", field("x", 1, "TYPE_STRING"))));
  REQUIRE(renamed.violations.size() == 1);
  CHECK(renamed.violations[0].type == "t.G");
  CHECK(renamed.violations[0].rule == "type-renamed");

  // A set about other files says nothing about t.E and t.G.
  pb::FileDescriptorSet other;
  *other.add_file() = file_proto(message("Z", field("z", 1, "TYPE_BOOL")), "proto3", "other.proto");
  CHECK(checked(*store, other).compatible());

  // A set that does not build (a missing dependency) is bad input.
  pb::FileDescriptorSet broken;
  auto f = file_proto(message("E", field("d", 1, "TYPE_MESSAGE", "LABEL_OPTIONAL",
                                         "type_name: \".t.Dep\"")));
  f.add_dependency("dep.proto");
  *broken.add_file() = f;
  auto bad = check_against_store(*store, broken);
  CHECK(fails_with(bad, errc::invalid_argument, "dep.proto"));
}

TEST_CASE_TEMPLATE("check_against_store uses the mode each type was registered with", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(version_set(1));
  register_ok(*store, *v1, {"t.E", "t.G"}, compatibility::none);
  CHECK(checked(*store, set_of(message("E", field("f1", 1, "TYPE_STRING")) + " " +
                                message("G", field("x", 1, "TYPE_INT32"))))
            .compatible());
}

namespace {

// dep.proto (Dep, enum Color) and top.proto (A referring to both, with a nested N; B a
// sibling), as FileDescriptorSet pieces that tests vary one at a time.
struct two_files {
  std::string dep = message("Dep", field("x", 1, "TYPE_INT32")) +
                    " enum_type { name: \"Color\" value { name: \"RED\" number: 0 } }";
  std::string a_extra;
  std::string nested = field("n", 1, "TYPE_INT32");
  std::string b = message("B", field("y", 1, "TYPE_STRING"));
  std::string top_options;

  pb::FileDescriptorSet set() const {
    pb::FileDescriptorSet out;
    *out.add_file() = file_proto(dep, "proto3", "dep.proto");
    auto top = file_proto(
        message("A", field("d", 1, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.Dep\"") +
                         field("c", 2, "TYPE_ENUM", "LABEL_OPTIONAL", "type_name: \".t.Color\"") +
                         field("self", 3, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.A\"") +
                         field("nn", 4, "TYPE_MESSAGE", "LABEL_OPTIONAL", "type_name: \".t.A.N\"") +
                         " nested_type { name: \"N\" " + nested + " } " + a_extra) +
            " " + b + " " + top_options,
        "proto3", "top.proto");
    top.add_dependency("dep.proto");
    *out.add_file() = top;
    return out;
  }
  std::string fingerprint(const std::string& type = "t.A") const {
    auto pool = build(set());
    return type_fingerprint(*pool->find(type));
  }
};

}  // namespace

TEST_CASE("type_fingerprint covers the type and what it references, not its file's siblings") {
  two_files base;
  const std::string a = base.fingerprint();
  CHECK(a.size() == 32);
  CHECK(a == base.fingerprint());
  CHECK(a != base.fingerprint("t.B"));

  auto changed = [&](auto edit) {
    two_files f;
    edit(f);
    return f.fingerprint();
  };
  // A sibling of the file changing, file options and comments: the same type.
  CHECK(changed([](two_files& f) { f.b = message("B", field("y", 1, "TYPE_BYTES")); }) == a);
  CHECK(changed([](two_files& f) { f.b = ""; }) == a);
  CHECK(changed([](two_files& f) {
          f.top_options = "options { java_package: \"com.example\" } source_code_info { location "
                          "{ path: 4 path: 0 span: 0 span: 0 span: 9 leading_comments: \" A \" } }";
        }) == a);
  // The type itself, its nested type, a referenced message or enum in another file: changed.
  CHECK(changed([](two_files& f) { f.a_extra = field("z", 9, "TYPE_BOOL"); }) != a);
  CHECK(changed([](two_files& f) { f.nested = field("n", 1, "TYPE_INT64"); }) != a);
  CHECK(changed([](two_files& f) {
          f.dep = message("Dep", field("x", 1, "TYPE_INT64")) +
                  " enum_type { name: \"Color\" value { name: \"RED\" number: 0 } }";
        }) != a);
  CHECK(changed([](two_files& f) {
          f.dep = message("Dep", field("x", 1, "TYPE_INT32")) +
                  " enum_type { name: \"Color\" value { name: \"RED\" number: 0 } "
                  "value { name: \"BLUE\" number: 1 } }";
        }) != a);
  // A sibling of the referenced file is not referenced.
  CHECK(changed([](two_files& f) { f.dep += " " + message("Other", ""); }) == a);
}

TEST_CASE("type_fingerprint ignores json_name values protoc writes by default") {
  // protoc --descriptor_set_out writes every json_name; compiled descriptors do not.
  auto with = [](const std::string& json) {
    return set_of(message("E", field("amount_cents", 1, "TYPE_INT64", "LABEL_OPTIONAL", json)));
  };
  auto plain = build(with(""));
  auto protoc = build(with("json_name: \"amountCents\""));
  auto custom = build(with("json_name: \"amount\""));
  CHECK(type_fingerprint(*plain->find("t.E")) == type_fingerprint(*protoc->find("t.E")));
  CHECK(type_fingerprint(*plain->find("t.E")) != type_fingerprint(*custom->find("t.E")));
}

TEST_CASE_TEMPLATE("changing one type of a file bumps only that type's version", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(version_set(1));
  register_ok(*store, *v1, {"t.E", "t.G"});
  // G changes (compatibly); E does not.
  auto g2 = build(set_of(
      message("E", field("f1", 1, "TYPE_INT64") + field("f2", 2, "TYPE_INT64")) + " " +
      message("G", field("x", 1, "TYPE_STRING") + field("y", 2, "TYPE_BOOL"))));
  auto regs = register_ok(*store, *g2, {"t.E", "t.G"});
  CHECK(regs[0].type == "t.E");
  CHECK(regs[0].version == 1);
  CHECK(!regs[0].added);
  CHECK(regs[1].version == 2);
  CHECK(regs[1].added);
  CHECK(schemas(*store, "t.E").size() == 1);
  REQUIRE(store->append("s", expected_version::any(), {event_of("t.E"), event_of("t.G")}).ok());
  CHECK(stamped(*store, "s") == std::vector<std::int32_t>{1, 2});
  // The stored set is still the whole file: version 2 of G's set holds E too (for decoding).
  pb::FileDescriptorSet set;
  REQUIRE(set.ParseFromString(schemas(*store, "t.G")[1].descriptor_set));
  REQUIRE(set.file_size() == 1);
  CHECK(set.file(0).message_type_size() == 2);
  // E changing leaves G alone.
  auto e3 = build(version_set(2));
  auto regs3 = register_ok(*store, *e3, {"t.E"});
  CHECK(regs3[0].version == 2);
}

TEST_CASE_TEMPLATE("a change to a referenced message in another file is a new version of the type", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  two_files base;
  auto p1 = build(base.set());
  register_ok(*store, *p1, {"t.A", "t.B"});
  two_files dep_changed;
  dep_changed.dep = message("Dep", field("x", 1, "TYPE_INT32") + field("w", 2, "TYPE_BOOL")) +
                    " enum_type { name: \"Color\" value { name: \"RED\" number: 0 } }";
  auto p2 = build(dep_changed.set());
  auto regs = register_ok(*store, *p2, {"t.A", "t.B"});
  CHECK(regs[0].version == 2);
  CHECK(regs[0].added);
  CHECK(regs[1].version == 1);
  CHECK(!regs[1].added);
}

namespace {

// The bank sample's layout: v1.proto keeps Opened and Deposited; v2.proto adds OpenedV2.
pb::FileDescriptorSet bank_like(bool keep_opened, bool with_v2) {
  pb::FileDescriptorSet set;
  std::string v1 = message("Deposited", field("cents", 1, "TYPE_INT64"));
  if (keep_opened) v1 += " " + message("Opened", field("owner", 1, "TYPE_STRING"));
  *set.add_file() = file_proto(v1, "proto3", "v1.proto");
  if (with_v2) {
    *set.add_file() = file_proto(
        message("OpenedV2", field("owner", 1, "TYPE_STRING") + field("currency", 2, "TYPE_STRING")),
        "proto3", "v2.proto");
  }
  return set;
}

}  // namespace

TEST_CASE_TEMPLATE("registration refuses a stored type its file no longer defines", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(bank_like(true, false));
  register_ok(*store, *v1, {"t.Opened", "t.Deposited"});

  // The bank sample's way: the old message stays, the new type lives in another file.
  auto v2 = build(bank_like(true, true));
  register_ok(*store, *v2, {"t.Deposited", "t.OpenedV2"});
  register_ok(*store, *v2, {"t.OpenedV2"});
  register_ok(*store, *v2, {"t.Opened", "t.Deposited", "t.OpenedV2"});

  // Opened renamed (dropped from v1.proto): refused, naming the old type, nothing written.
  auto renamed = build(bank_like(false, true));
  auto before = schemas(*store).size();
  auto r = register_event_types(*store, {{renamed->find("t.Deposited"), compatibility::backward},
                                         {renamed->find("t.OpenedV2"), compatibility::backward}});
  REQUIRE(fails_with(r, errc::invalid_argument, "t.Opened: type-renamed"));
  CHECK(fails_with(r, errc::invalid_argument, "keep the old message"));
  CHECK(schemas(*store).size() == before);
  // A registration that does not touch v1.proto says nothing about its types.
  register_ok(*store, *renamed, {"t.OpenedV2"});
  // The same check offline.
  auto offline = checked(*store, bank_like(false, true));
  REQUIRE(offline.violations.size() == 1);
  CHECK(offline.violations[0].type == "t.Opened");
  CHECK(offline.violations[0].rule == "type-renamed");
  CHECK(checked(*store, bank_like(true, true)).compatible());
}

TEST_CASE_TEMPLATE("a removed type is refused under backward and full, not forward or none", B, ANNALS_STORE_BACKENDS) {
  for (auto mode : {compatibility::backward, compatibility::full, compatibility::forward,
                    compatibility::none}) {
    CAPTURE(to_string(mode));
    B backend;
    auto store = backend.open();
    auto v1 = build(version_set(1));
    register_ok(*store, *v1, {"t.E"});
    register_ok(*store, *v1, {"t.G"}, mode);
    auto without_g = build(set_of(message("E", field("f1", 1, "TYPE_INT64") +
                                                   field("f2", 2, "TYPE_INT64"))));
    bool refused = mode == compatibility::backward || mode == compatibility::full;
    auto r = register_event_types(*store, {{without_g->find("t.E"), compatibility::backward}});
    CHECK(r.ok() == !refused);
    if (refused) CHECK(fails_with(r, errc::invalid_argument, "t.G: type-renamed"));
    CHECK(checked(*store, set_of(message("E", field("f1", 1, "TYPE_INT64") +
                                                  field("f2", 2, "TYPE_INT64"))))
              .compatible() == !refused);
  }
}

TEST_CASE_TEMPLATE("a type moved to another file is not a rename", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  auto v1 = build(version_set(1));
  register_ok(*store, *v1, {"t.E", "t.G"});
  pb::FileDescriptorSet moved;
  *moved.add_file() = file_proto(message("G", field("x", 1, "TYPE_STRING")), "proto3", "g.proto");
  *moved.add_file() =
      file_proto(message("E", field("f1", 1, "TYPE_INT64") + field("f2", 2, "TYPE_INT64")),
                 "proto3", "t.proto");
  auto pool = build(moved);
  register_ok(*store, *pool, {"t.E"});
  register_ok(*store, *pool, {"t.E", "t.G"});
  CHECK(checked(*store, moved).compatible());
}

TEST_CASE_TEMPLATE("an older build of a file registers again after a newer one added a type", B, ANNALS_STORE_BACKENDS) {
  B backend;
  auto store = backend.open();
  const std::string a = message("A", field("x", 1, "TYPE_STRING"));
  auto old_build = build(set_of(a));
  auto new_build = build(set_of(a + " " + message("N", field("y", 1, "TYPE_INT64"))));
  register_ok(*store, *old_build, {"t.A"});
  register_ok(*store, *new_build, {"t.A", "t.N"});
  // A worker not yet redeployed, or a rollback: its file is one the store accepted before.
  auto again = register_ok(*store, *old_build, {"t.A"});
  CHECK(again[0].version == 1);
  CHECK_FALSE(again[0].added);
  CHECK(checked(*store, set_of(a)).compatible());
  // A new edit of the file that drops N is still refused.
  auto dropped = build(set_of(message("A", field("x", 1, "TYPE_STRING") +
                                               field("z", 2, "TYPE_STRING"))));
  auto r = register_event_types(*store, {{dropped->find("t.A"), compatibility::backward}});
  CHECK(fails_with(r, errc::invalid_argument, "t.N: type-renamed"));
}

TEST_CASE_TEMPLATE("declared versions are the same number in every store; conflicts are refused", B, ANNALS_STORE_BACKENDS) {
  B fresh_backend, old_backend;
  auto v1 = build(version_set(1));
  auto v2 = build(version_set(2));
  auto v3 = build(version_set(3));
  // A fresh store that meets the current descriptor first stores it under its declared number,
  // so an upcaster of "version <= 2" never touches the events written now.
  auto fresh = fresh_backend.open();
  auto r = register_event_types(*fresh, {{v3->find("t.E"), compatibility::backward, 3}});
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
  CHECK((*r)[0].version == 3);
  CHECK((*r)[0].added);
  REQUIRE(fresh->append("s", expected_version::any(), {event_of("t.E")}).ok());
  CHECK(stamped(*fresh, "s") == std::vector<std::int32_t>{3});
  r = register_event_types(*fresh, {{v3->find("t.E"), compatibility::backward, 3}});
  REQUIRE(r.ok());
  CHECK((*r)[0].version == 3);
  CHECK_FALSE((*r)[0].added);

  // Another descriptor claiming a taken number, or this descriptor under another number:
  // refused, nothing written.
  auto before = schemas(*fresh).size();
  r = register_event_types(*fresh, {{v2->find("t.E"), compatibility::none, 3}});
  CHECK(fails_with(r, errc::invalid_argument, "version 3 is stored with another descriptor"));
  r = register_event_types(*fresh, {{v3->find("t.E"), compatibility::backward, 4}});
  CHECK(fails_with(r, errc::invalid_argument, "stored as version 3"));
  r = register_event_types(*fresh, {{v3->find("t.E"), compatibility::backward, -1}});
  CHECK(fails_with(r, errc::invalid_argument, "must not be negative"));
  CHECK(schemas(*fresh).size() == before);

  // A store numbered automatically before: a declared new descriptor takes its number there
  // too, and later automatic numbers continue after the highest.
  auto old = old_backend.open();
  CHECK(register_ok(*old, *v1, {"t.E"})[0].version == 1);
  r = register_event_types(*old, {{v3->find("t.E"), compatibility::backward, 3}});
  REQUIRE(r.ok());
  CHECK((*r)[0].version == 3);
  auto v4 = build(version_set(4));
  CHECK(register_ok(*old, *v4, {"t.E"})[0].version == 4);
}
