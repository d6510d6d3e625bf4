// The `annals` tool on PostgreSQL stores (--db postgresql://...), and `annals migrate` between
// SQLite and PostgreSQL, through the real executable. Each case gets fresh databases on the
// ANNALS_TEST_PG server (tools/scripts/test.sh starts one).
#include <doctest/doctest.h>

#include <annals/admin.hpp>

#include "store/backends.hpp"
#include "support/postgres.hpp"
#include "tool/tool_support.hpp"

#include <chrono>
#include <filesystem>

using namespace tool_test;
using annals::test::postgres_backend;
namespace pgt = annals::test::pg;

namespace {

// An annals_cli on a new PostgreSQL database, seeded by seed() (5 events, 3 streams, 3 schemas).
struct pg_seeded_cli : annals_cli {
  postgres_backend pg;
  pg_seeded_cli() {
    db = pg.uri();
    seed(db);
  }
};

// The projection tables as the PostgreSQL runner keeps them (same names as SQLite's).
void create_pg_projection_tables(pgt::session& s) {
  s.exec(
      "CREATE TABLE annals_projections(name TEXT PRIMARY KEY, version BIGINT NOT NULL, "
      "checkpoint BIGINT NOT NULL, stuck_position BIGINT, error TEXT, "
      "events_per_s DOUBLE PRECISION NOT NULL DEFAULT 0, updated_at BIGINT NOT NULL)");
  s.exec(
      "CREATE TABLE annals_parked(projection TEXT NOT NULL, position BIGINT NOT NULL, "
      "stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL, event_id TEXT NOT NULL, "
      "type TEXT NOT NULL, error TEXT NOT NULL, attempts BIGINT NOT NULL, "
      "parked_at BIGINT NOT NULL, state TEXT NOT NULL, resolved_at BIGINT, "
      "PRIMARY KEY(projection, position))");
}

// Every event of a store as the tool exports it (the stored bytes, base64), one per line.
std::string exported(const annals_cli& cli, const std::string& store) {
  auto r = cli.on(store, {"export"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

std::string count_events(const std::string& pg_uri) {
  pgt::session s(pg_uri);
  return s.exec("SELECT count(*) FROM annals_events");
}

}  // namespace

TEST_CASE("postgres: streams, read, tail and schema commands print what they print on SQLite") {
  pg_seeded_cli cli;
  check_streams(cli);
  check_read(cli);
  check_read_json(cli);
  check_read_missing(cli);
  check_tail(cli);
  check_schema_list_show(cli);
}

TEST_CASE("postgres: tail --follow prints events committed later until SIGTERM") {
  pg_seeded_cli cli;
  check_follow(cli, [&] {
    // It follows by LISTEN (woken by each append's NOTIFY), not by polling alone: a session
    // of the tail's listens on the append channel.
    // (Its listening connection is opened beside the tail's first read: waited for, briefly.)
    pgt::session s(cli.db);
    std::string listening;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (listening != "1" && std::chrono::steady_clock::now() < deadline) {
      listening = s.exec("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                         "current_database() AND query = 'LISTEN annals_appends'");
      if (listening != "1") std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(listening == "1");
  });
}

TEST_CASE("postgres: stats shows counts, sizes and projections when their tables exist") {
  pg_seeded_cli cli;
  check_stats(cli);
  pgt::session s(cli.db);
  create_pg_projection_tables(s);
  s.exec("INSERT INTO annals_projections VALUES('balances', 2, 3, NULL, NULL, 0, 0)");
  expect_projection_in_stats(cli);
}

TEST_CASE("postgres: verify passes a healthy store and reports each tampered row") {
  {
    pg_seeded_cli cli;
    check_verify_clean(cli);
  }
  struct tampering {
    const char* what;
    std::vector<const char*> sql;
    const char* where;
    const char* check;
  };
  const tampering cases[] = {
      {"an undecodable payload", {"UPDATE annals_events SET payload = '\\xffffffff' WHERE position = 2"},
       "position 2", "payload"},
      {"a malformed event id", {"UPDATE annals_events SET event_id = '\\x0102' WHERE position = 3"},
       "position 3", "event-id"},
      {"malformed metadata", {"UPDATE annals_events SET metadata = '\\x0aff' WHERE position = 2"},
       "position 2", "metadata"},
      {"a schema version the store does not have",
       {"UPDATE annals_events SET metadata = '\\x2809' WHERE position = 4"}, "position 4",
       "schema-version"},
      {"a malformed type", {"UPDATE annals_events SET type = 'not a type' WHERE position = 3"},
       "position 3", "type"},
      {"an implausible recorded_at", {"UPDATE annals_events SET recorded_at = 5 WHERE position = 3"},
       "position 3", "recorded-at"},
      {"a version gap", {"UPDATE annals_events SET stream_version = 4 WHERE position = 5"},
       "position 5", "version-gap"},
      {"a stream row that disagrees", {"UPDATE annals_streams SET version = 7"}, "store",
       "stream-version"},
      {"a position below 1", {"UPDATE annals_events SET position = 0 WHERE position = 1"},
       "store", "position"},
      {"a dropped constraint and the duplicate id it let in",
       {"ALTER TABLE annals_events DROP CONSTRAINT annals_events_event_id_key",
        "UPDATE annals_events SET event_id = (SELECT event_id FROM annals_events WHERE "
        "position = 1) WHERE position = 4"},
       "position 1", "event-id-duplicate"},
  };
  for (const auto& t : cases) {
    CAPTURE(t.what);
    pg_seeded_cli cli;
    {
      pgt::session s(cli.db);
      for (const char* sql : t.sql) s.exec(sql);
    }
    expect_problem(cli, t.where, t.check);
    if (std::string(t.check) == "event-id-duplicate") {
      // The backend's integrity check names the missing constraint.
      auto r = cli({"verify"});
      CHECK(contains(r.out, "store: integrity: PostgreSQL: constraint annals_events_event_id_key "
                            "is missing"));
    }
  }
}

TEST_CASE("postgres: verify reports projections past the head, stuck and parked") {
  pg_seeded_cli cli;
  {
    pgt::session s(cli.db);
    create_pg_projection_tables(s);
    s.exec("INSERT INTO annals_projections VALUES('ahead', 1, 99, NULL, NULL, 0, 0), "
           "('stuck', 1, 1, 2, 'boom', 0, 0)");
    s.exec("INSERT INTO annals_parked VALUES('stuck', 2, 'acc-1', 1, 'x', "
           "'bank.v1.MoneyDeposited', 'boom', 3, 0, 'parked', NULL), ('stuck', 1, 'acc-1', 0, "
           "'y', 'bank.v1.AccountOpened', 'old', 3, 0, 'skipped', 1)");
  }
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "store: projection-checkpoint: projection 'ahead' has checkpoint 99"));
  CHECK(contains(r.out, "position 2: projection-stuck: projection 'stuck' is stuck: boom"));
  CHECK(contains(r.out, "position 2: projection-parked:"));
  CHECK(!contains(r.out, "position 1: projection-parked:"));
  r = cli({"stats"});
  CHECK(contains(r.out, "  stuck\tversion 1\tcheckpoint 1\tlag 4\tparked 1\tstuck at 2: boom\n"));
}

TEST_CASE("postgres: export then import reproduces the store, and import refuses a non-empty one") {
  pg_seeded_cli cli;
  const std::string text = exported(cli, cli.db);
  std::string file = cli.dir.file("export.jsonl");
  write_file(file, text);

  postgres_backend copy;
  auto r = cli.on(copy.uri(), {"import", "--input", file});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(exported(cli, copy.uri()) == text);
  CHECK(cli.on(copy.uri(), {"verify"}).exit_code == 0);

  // The same file into a SQLite store gives the same export: the format is backend-neutral.
  std::string sqlite = cli.dir.file("copy.db");
  REQUIRE(cli.on(sqlite, {"import", "--input", file}).exit_code == 0);
  CHECK(exported(cli, sqlite) == text);

  r = cli.on(copy.uri(), {"import", "--input", file});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "import needs an empty store; this one has 5 events, 3 streams and 3 "
                        "schemas"));
  CHECK(count_events(copy.uri()) == "5");

  // A bad line: nothing written into a new database.
  postgres_backend empty;
  write_file(file, text.substr(0, text.rfind('\n', text.size() - 2) + 1));  // truncated
  r = cli.on(empty.uri(), {"import", "--input", file});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "nothing was written"));
  CHECK(count_events(empty.uri()) == "0");
}

TEST_CASE("postgres: an import with a duplicate event id is refused whole") {
  pg_seeded_cli cli;
  std::string text = exported(cli, cli.db);
  // Event 4 gets event 1's id (lines 5 and 8: header, 3 schemas, events 1..5).
  std::vector<std::string> in;
  std::istringstream s(text);
  for (std::string l; std::getline(s, l);) in.push_back(l);
  REQUIRE(in.size() == 9);
  auto id_of = [](const std::string& line) {
    auto at = line.find("\"event_id\":\"") + 12;
    return line.substr(at, line.find('"', at) - at);
  };
  in[7].replace(in[7].find(id_of(in[7])), 36, id_of(in[4]));
  std::string file = cli.dir.file("dup.jsonl");
  std::string joined;
  for (auto& l : in) joined += l + "\n";
  write_file(file, joined);
  postgres_backend copy;
  auto r = cli.on(copy.uri(), {"import", "--input", file});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "event id appears twice"));
  CHECK(count_events(copy.uri()) == "0");
}

TEST_CASE("migrate SQLite -> PostgreSQL -> SQLite gives the same events byte for byte") {
  annals_cli cli;
  seed(cli.db);
  // A NULL and an empty metadata column must both survive the round trip.
  exec_sql(cli.db, "UPDATE events SET metadata = X'' WHERE position = 3;"
                   "UPDATE events SET metadata = NULL WHERE position = 4;");
  postgres_backend pg;
  auto r = annals::test::run({ANNALS_EXE, "migrate", cli.db, pg.uri()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "5 events, 3 streams, 3 schemas copied in "));
  CHECK(contains(r.out, "verified: every event, stream and schema identical"));
  {
    pgt::session s(pg.uri());
    CHECK(s.exec("SELECT count(*) FROM annals_events WHERE metadata IS NULL") == "1");
    CHECK(s.exec("SELECT octet_length(metadata) FROM annals_events WHERE position = 3") == "0");
  }
  CHECK(cli.on(pg.uri(), {"verify"}).exit_code == 0);

  std::string back = cli.dir.file("back.db");
  r = annals::test::run({ANNALS_EXE, "migrate", pg.uri(), back});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  expect_same_sqlite_rows(cli.db, back);
  CHECK(exported(cli, back) == exported(cli, cli.db));

  // PostgreSQL -> PostgreSQL too.
  postgres_backend pg2;
  r = annals::test::run({ANNALS_EXE, "migrate", pg.uri(), pg2.uri()});
  CHECK(r.exit_code == 0);
  CHECK(exported(cli, pg2.uri()) == exported(cli, cli.db));
}

TEST_CASE("migrate: the PostgreSQL copy takes appends after the imported positions") {
  annals_cli cli;
  seed(cli.db);
  postgres_backend pg;
  REQUIRE(annals::test::run({ANNALS_EXE, "migrate", cli.db, pg.uri()}).exit_code == 0);
  auto store = annals::open_store(pg.uri()).value_or_throw();
  bank::v1::MoneyDeposited dep;
  dep.set_account_id("acc-1");
  dep.set_amount_cents(1);
  auto a = store->append("acc-1", annals::expected_version::exact(2), {event(dep)});
  REQUIRE(a.ok());
  CHECK(a->stream_version == 3);
  CHECK(a->position == 6);
  auto b = store->append("new-1", annals::expected_version::no_stream(), {event(dep)});
  REQUIRE(b.ok());
  CHECK(b->position == 7);
  // A stale expected version is still a conflict (the stream row's version was imported).
  CHECK(store->append("acc-2", annals::expected_version::no_stream(), {event(dep)}).error().kind() ==
        annals::errc::concurrency_conflict);
  auto r = cli.on(pg.uri(), {"verify"});
  INFO(r.out);
  CHECK(r.exit_code == 0);
}

TEST_CASE("migrate refuses a non-empty target and writes nothing into it") {
  annals_cli cli;
  seed(cli.db);
  pg_seeded_cli target;  // 5 events of its own
  {
    auto store = annals::open_store(target.db).value_or_throw();
    bank::v1::MoneyDeposited dep;
    dep.set_account_id("x");
    REQUIRE(store->append("only-in-target", annals::expected_version::any(), {event(dep)}).ok());
  }
  const std::string before = exported(cli, target.db);
  auto r = annals::test::run({ANNALS_EXE, "migrate", cli.db, target.db});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "import needs an empty store; this one has 6 events"));
  CHECK(exported(cli, target.db) == before);

  // A SQLite target too, and the other way round.
  std::string other = cli.dir.file("other.db");
  seed(other);
  const std::string other_before = exported(cli, other);
  r = annals::test::run({ANNALS_EXE, "migrate", target.db, other});
  CHECK(r.exit_code == 2);
  CHECK(exported(cli, other) == other_before);
}

TEST_CASE("migrate from a missing or foreign source exits 4 and creates nothing") {
  annals_cli cli;
  std::string target = cli.dir.file("target.db");
  auto r = annals::test::run({ANNALS_EXE, "migrate", cli.dir.file("missing.db"), target});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "does not exist"));
  CHECK_FALSE(std::filesystem::exists(target));

  std::string foreign = cli.dir.file("foreign.db");
  exec_sql(foreign, "CREATE TABLE t(x); INSERT INTO t VALUES(1);");
  postgres_backend pg;
  r = annals::test::run({ANNALS_EXE, "migrate", foreign, pg.uri()});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "not an Annals store"));
  {
    pgt::session s(pg.uri());
    CHECK(s.exec("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'") == "0");
  }

  // A PostgreSQL database without the store's tables is not a source either.
  r = annals::test::run({ANNALS_EXE, "migrate", pg.uri(), target});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "no Annals store"));
  CHECK_FALSE(std::filesystem::exists(target));
  {
    pgt::session s(pg.uri());
    CHECK(s.exec("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'") == "0");
  }
}

TEST_CASE("a PostgreSQL URI with a bad port, host or database exits 4 quickly, clearly") {
  annals_cli cli;
  postgres_backend pg;  // a live server, for the bad database name
  std::string bad_db = pg.uri().substr(0, pg.uri().rfind('/')) + "/annals_no_such_database";
  for (const std::string& uri : {std::string("postgresql://postgres@127.0.0.1:1/x"),
                                 std::string("postgres://postgres@no-such-host.invalid/x"),
                                 bad_db}) {
    CAPTURE(uri);
    for (const auto& cmd : std::vector<std::vector<std::string>>{
             {"streams"}, {"stats"}, {"verify"}, {"export"}, {"import"}, {"schema", "list"}}) {
      CAPTURE(cmd.front());
      auto started = std::chrono::steady_clock::now();
      auto r = cli.on(uri, cmd);
      CHECK(r.exit_code == 4);
      CHECK(contains(r.err, "annals: cannot connect to PostgreSQL: "));
      CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
    }
    std::string target = cli.dir.file("t.db");
    auto r = annals::test::run({ANNALS_EXE, "migrate", uri, target});
    CHECK(r.exit_code == 4);
    CHECK_FALSE(std::filesystem::exists(target));
  }
  // As a target: the source is left alone and nothing is created.
  seed(cli.db);
  auto r = annals::test::run({ANNALS_EXE, "migrate", cli.db, bad_db});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "does not exist"));
}

TEST_CASE("compare_stores names each difference between two stores") {
  annals_cli cli;
  seed(cli.db);
  postgres_backend pg;
  {
    auto from = annals::open_admin(cli.db).value_or_throw();
    auto to = annals::open_admin(pg.uri(), true).value_or_throw();
    auto copied = annals::copy_store(*from, *to);
    REQUIRE(copied.ok());
    CHECK(copied->events == 5);
    CHECK(copied->streams == 3);
    CHECK(copied->schemas == 3);
    auto same = annals::compare_stores(*from, *to);
    REQUIRE(same.ok());
    CHECK(same->empty());
  }
  {
    pgt::session s(pg.uri());
    s.exec("UPDATE annals_events SET payload = '\\x0801' WHERE position = 2");
    s.exec("UPDATE annals_events SET metadata = NULL WHERE position = 3");
    s.exec("DELETE FROM annals_events WHERE position = 5");
    s.exec("UPDATE annals_schemas SET fingerprint = 'other' WHERE type = 'bank.v1.MoneyDeposited'");
  }
  auto from = annals::open_admin(cli.db).value_or_throw();
  auto to = annals::open_admin(pg.uri()).value_or_throw();
  auto diff = annals::compare_stores(*from, *to);
  REQUIRE(diff.ok());
  std::string all;
  for (const auto& d : *diff) all += d + "\n";
  INFO(all);
  CHECK(contains(all, "the first store has 5 events, the second 4"));
  CHECK(contains(all, "schema bank.v1.MoneyDeposited version 1 differs"));
  CHECK(contains(all, "event at position 2 (stream 'acc-1' version 1): the second store has "
                      "payload of 2 bytes (0801)"));
  CHECK(contains(all, "event at position 3 (stream 'acc-2' version 0): the second store has "
                      "metadata NULL"));
  CHECK(contains(all, "the event at position 5 is only in the first store"));
  CHECK(contains(all, "stream 'acc-1' (version 2, 3 events) is 'acc-1' (version 2, 2 events)"));
  CHECK(!contains(all, "position 1"));
  CHECK(!contains(all, "position 4"));
}

TEST_CASE("postgres: subscriptions list, parked, retry and skip") {
  pg_seeded_cli cli;
  check_subscriptions(cli);
}

TEST_CASE("postgres: serve and subscriptions list|parked read a read-only store, adding no table") {
  const std::string tables =
      "SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '') FROM pg_tables "
      "WHERE schemaname = current_schema() AND tablename IN ('annals_schemas', "
      "'annals_snapshots', 'annals_consumers', 'annals_consumer_parked')";
  for (bool with_mailer : {false, true}) {
    CAPTURE(with_mailer);
    pg_seeded_cli cli;
    if (with_mailer) park_event_3(cli.db);
    {
      pgt::session s(cli.db);
      // A store made before the schema registry: opened writable, it would get the tables.
      s.exec("DROP TABLE annals_schemas, annals_snapshots");
      // Read-only for every new session: any write fails.
      s.exec(s.exec("SELECT format('ALTER DATABASE %I SET default_transaction_read_only = on', "
                    "current_database())"));
    }
    check_read_only_serving(cli, with_mailer);
    CHECK(pgt::session(cli.db).exec(tables) ==
          (with_mailer ? "annals_consumer_parked,annals_consumers" : ""));
  }
}


// ---- row checksums (PostgreSQL storage format 2) ------------------------------------------

TEST_CASE("postgres: migrate writes every checksum; verify catches a row changed in SQL") {
  annals_cli cli;
  seed(cli.db);
  postgres_backend pg;
  auto r = annals::test::run({ANNALS_EXE, "migrate", cli.db, pg.uri()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  {
    pgt::session s(pg.uri());
    CHECK(s.exec("SELECT count(*) FROM annals_events WHERE checksum IS NULL") == "0");
    // The same sums as the SQLite appends wrote (positions and stream keys are not in the sum).
    CHECK(s.exec("SELECT string_agg(checksum::text, ',' ORDER BY position) FROM "
                 "annals_events") + "|\n" ==
          dump_sql(cli.db, "SELECT group_concat(checksum, ',') FROM "
                           "(SELECT checksum FROM events ORDER BY position)"));
  }
  CHECK(cli.on(pg.uri(), {"verify"}).out == "ok: no problems found\n");
  {
    pgt::session s(pg.uri());
    s.exec("UPDATE annals_events SET recorded_at = recorded_at + 1 WHERE position = 5");
  }
  r = cli.on(pg.uri(), {"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "position 5: checksum: the stored bytes of event 5 (stream "));
  CHECK(contains(r.out, "1 problem found\n"));
}

TEST_CASE("postgres: a format-1 store: read-only verify writes nothing; a writable open adds "
          "the checksum column") {
  pg_seeded_cli cli;
  {
    pgt::session s(cli.db);
    s.exec("ALTER TABLE annals_events DROP COLUMN checksum");
    s.exec("UPDATE annals_meta SET value = 1 WHERE key = 'format'");
  }
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "position 1: warning: checksum-missing: 5 events were written before "
                        "checksums (storage format 1 or older): not checked"));
  const char* has_column =
      "SELECT count(*) FROM information_schema.columns WHERE table_name = 'annals_events' "
      "AND column_name = 'checksum'";
  {
    pgt::session s(cli.db);
    CHECK(s.exec("SELECT value FROM annals_meta WHERE key = 'format'") == "1");
    CHECK(s.exec(has_column) == "0");
  }
  annals::postgres_options ro;
  ro.read_only = true;
  {
    auto store = annals::open_postgres_store(cli.db, ro).value_or_throw();
    CHECK(annals::test::read_all_vec(*store).size() == 5);
  }
  {
    pgt::session s(cli.db);
    CHECK(s.exec("SELECT value FROM annals_meta WHERE key = 'format'") == "1");
    CHECK(s.exec(has_column) == "0");
  }
  {
    auto store = annals::open_postgres_store(cli.db).value_or_throw();
    REQUIRE(store->append("acc-3", annals::expected_version::no_stream(),
                          annals::test::make_events(1))
                .ok());
  }
  {
    pgt::session s(cli.db);
    CHECK(s.exec("SELECT value FROM annals_meta WHERE key = 'format'") == "3");
    CHECK(s.exec("SELECT count(*) FROM annals_events WHERE checksum IS NULL") == "5");
    CHECK(s.exec("SELECT count(*) FROM annals_events WHERE position = 6 AND checksum IS NOT "
                 "NULL") == "1");
  }
  r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "warning: checksum-missing: 5 events were written before checksums"));
  CHECK(!contains(r.out, "checksum:"));
  {
    pgt::session s(cli.db);
    s.exec("UPDATE annals_events SET recorded_at = recorded_at + 1 WHERE position = 6");
  }
  expect_problem(cli, "position 6", "checksum");
}
