// The `annals` tool end to end, through its real executable: every command, verify catching
// each kind of tampered row, export/import byte for byte, and bad stores and bad input.
#include <doctest/doctest.h>

#include <annals/schema.hpp>

#include "bank/v1/events.pb.h"
#include "support/support.hpp"
#include "tool/tool_support.hpp"

#include <google/protobuf/descriptor.pb.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace tool_test;


TEST_CASE("streams lists ids, versions and event counts, with prefix and limit") {
  seeded_cli cli;
  check_streams(cli);
}

TEST_CASE("read shows each event's metadata and its payload decoded from the stored schema") {
  seeded_cli cli;
  check_read(cli);
}

TEST_CASE("read --json prints one JSON object per event with metadata and decoded payload") {
  seeded_cli cli;
  check_read_json(cli);
}

TEST_CASE("read of a missing stream exits 1 and says so") {
  seeded_cli cli;
  check_read_missing(cli);
}

TEST_CASE("tail shows $all in position order, filtered by position, type and prefix") {
  seeded_cli cli;
  check_tail(cli);
}

TEST_CASE("tail --follow prints events committed later until SIGTERM, then exits 0") {
  seeded_cli cli;
  check_follow(cli);
}

TEST_CASE("stats shows counts, sizes, largest streams, event types, schemas and projections") {
  seeded_cli cli;
  check_stats(cli);
  create_format3_projection_tables(cli.db);
  exec_sql(cli.db, "INSERT INTO annals_projections VALUES('balances', 2, 3, NULL, NULL, 0, 0);");
  expect_projection_in_stats(cli);
}

TEST_CASE("subscriptions: list with lag, parked events listed, retried and skipped") {
  seeded_cli cli;
  check_subscriptions(cli);
}

// The store file's modification time, size and content hash: what any write would change.
std::string file_state(const std::string& db) {
  struct stat st {};
  REQUIRE(stat(db.c_str(), &st) == 0);
  const std::string bytes = read_file(db);
  return std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + " " +
         std::to_string(bytes.size()) + " " + std::to_string(std::hash<std::string>{}(bytes));
}

TEST_CASE("serve and subscriptions list|parked leave a format-1, read-only store file as it was") {
  for (bool with_mailer : {false, true}) {
    CAPTURE(with_mailer);
    seeded_cli cli;
    if (with_mailer) park_event_3(cli.db);
    // Storage format 1: before the schema registry and snapshots.
    exec_sql(cli.db,
             "DROP TABLE annals_schemas; DROP TABLE annals_snapshots; PRAGMA user_version = 1");
    // Root ignores the mode: the file's state and the server's descriptors show any write.
    REQUIRE(chmod(cli.db.c_str(), 0444) == 0);
    const std::string before = file_state(cli.db);
    check_read_only_serving(cli, with_mailer, [&](pid_t server) {
      auto modes = open_modes(server, cli.db);
      CHECK_FALSE(modes.empty());
      CHECK(std::count(modes.begin(), modes.end(), O_RDONLY) ==
            static_cast<std::ptrdiff_t>(modes.size()));
    });
    CHECK(file_state(cli.db) == before);
    CHECK(dump_sql(cli.db, "PRAGMA user_version") == "1|\n");
    CHECK(dump_sql(cli.db, "SELECT name FROM sqlite_master WHERE name IN ('annals_schemas', "
                           "'annals_snapshots', 'annals_consumers', 'annals_consumer_parked') "
                           "ORDER BY name") ==
          (with_mailer ? "annals_consumer_parked|\nannals_consumers|\n" : ""));
    REQUIRE(chmod(cli.db.c_str(), 0644) == 0);
  }
}

TEST_CASE("verify passes a healthy store") {
  seeded_cli cli;
  check_verify_clean(cli);
}

// One tampered row per case: the SQL that damages a healthy seeded store, and what verify
// must report (where and which check).
struct tampering {
  const char* what;
  const char* sql;
  const char* where;
  const char* check;
};
const tampering tamperings[] = {
    {"a duplicate version",
     "DROP INDEX events_by_stream;"
     "UPDATE events SET stream_version = 1 WHERE position = 5",
     "position 5", "version-duplicate"},
    {"a missing stream row", "DELETE FROM streams WHERE name = 'acc-2'", "position 3",
     "stream-row-missing"},
    {"a malformed event id", "UPDATE events SET event_id = X'0102' WHERE position = 3",
     "position 3", "event-id"},
    {"a duplicate event id",
     "DROP INDEX events_by_id; UPDATE events SET event_id = "
     "(SELECT event_id FROM events WHERE position = 1) WHERE position = 4",
     "position 1", "event-id-duplicate"},
    {"an undecodable payload", "UPDATE events SET payload = X'FFFFFFFF' WHERE position = 2",
     "position 2", "payload"},
    {"a payload that is not a blob", "UPDATE events SET payload = 'text' WHERE position = 2",
     "position 2", "payload"},
    {"malformed metadata", "UPDATE events SET metadata = X'0AFF' WHERE position = 2", "position 2",
     "metadata"},
    {"metadata with invalid UTF-8", "UPDATE events SET metadata = X'0A02C328' WHERE position = 2",
     "position 2", "metadata"},
    {"a schema version the store does not have",
     "UPDATE events SET metadata = X'2809' WHERE position = 4", "position 4", "schema-version"},
    {"a malformed type", "UPDATE events SET type = 'not a type' WHERE position = 3", "position 3",
     "type"},
    {"an implausible recorded_at", "UPDATE events SET recorded_at = 5 WHERE position = 3",
     "position 3", "recorded-at"},
    {"a recorded_at going back in time",
     "UPDATE events SET recorded_at = recorded_at - 1000000 WHERE position = 4", "position 4",
     "recorded-at-decreasing"},
};

TEST_CASE("verify reports each kind of tampered row with its position and exits 1") {
  for (const auto& t : tamperings) {
    CAPTURE(t.what);
    seeded_cli cli;
    exec_sql(cli.db, t.sql);
    expect_problem(cli, t.where, t.check);
  }
}

// verify on a store holding projection 'ahead' (checkpoint 99, past the head) and 'stuck'
// (stuck at 2, parked there; its parked event at 1 skipped): what it must find. Returns the
// output.
static std::string projection_findings(seeded_cli& cli) {
  auto r = cli({"verify"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "store: projection-checkpoint: projection 'ahead' has checkpoint 99"));
  CHECK(contains(r.out, "position 2: projection-stuck: projection 'stuck' is stuck: boom"));
  CHECK(contains(r.out, "position 2: projection-parked:"));
  CHECK(!contains(r.out, "position 1: projection-parked:"));  // skipped on purpose
  return r.out;
}

TEST_CASE("verify reports version gaps, stream rows that disagree and projection problems") {
  seeded_cli cli;
  SUBCASE("a version gap") {
    exec_sql(cli.db, "UPDATE events SET stream_version = 4 WHERE position = 5");
    expect_problem(cli, "position 5", "version-gap");
    expect_problem(cli, "store", "stream-version");
  }
  SUBCASE("a stream row that disagrees with its events") {
    exec_sql(cli.db, "UPDATE streams SET version = 7 WHERE name = 'acc-1'");
    auto r = cli({"verify"});
    CHECK(r.exit_code == 1);
    CHECK(contains(r.out, "stream 'acc-1' says version 7 but its events end at 2"));
  }
  SUBCASE("projections in the consumer tables: checkpoint past the head, stuck, parked") {
    // The tables as a runner creates them; a subscription's rows are not a projection's.
    exec_sql(cli.db,
             "CREATE TABLE annals_consumers(kind TEXT NOT NULL, name TEXT NOT NULL, "
             "checkpoint INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, "
             "filter TEXT NOT NULL DEFAULT '', delivered INTEGER NOT NULL DEFAULT 0, owner TEXT, "
             "lease_until INTEGER NOT NULL DEFAULT 0, stuck_position INTEGER, "
             "error TEXT NOT NULL DEFAULT '', events_per_s REAL NOT NULL DEFAULT 0, "
             "updated_at INTEGER NOT NULL, PRIMARY KEY(kind, name));"
             "CREATE TABLE annals_consumer_parked(kind TEXT NOT NULL, consumer TEXT NOT NULL, "
             "position INTEGER NOT NULL, stream_id TEXT NOT NULL, "
             "stream_version INTEGER NOT NULL DEFAULT -1, event_id TEXT NOT NULL, "
             "type TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, "
             "parked_at INTEGER NOT NULL, state TEXT NOT NULL, resolved_at INTEGER, "
             "PRIMARY KEY(kind, consumer, position));"
             "INSERT INTO annals_consumers(kind, name, checkpoint, version, updated_at) "
             "VALUES('projection', 'ahead', 99, 1, 0), ('subscription', 'later', 98, 0, 0);"
             "INSERT INTO annals_consumers(kind, name, checkpoint, version, stuck_position, "
             "error, updated_at) VALUES('projection', 'stuck', 1, 1, 2, 'boom', 0);"
             "INSERT INTO annals_consumer_parked VALUES('projection', 'stuck', 2, 'acc-1', 1, "
             "'x', 'bank.v1.MoneyDeposited', 'boom', 3, 0, 'parked', NULL);"
             "INSERT INTO annals_consumer_parked VALUES('subscription', 'later', 3, 'acc-1', 2, "
             "'z', 'bank.v1.MoneyDeposited', 'mail', 3, 0, 'parked', NULL);"
             "INSERT INTO annals_consumer_parked VALUES('projection', 'stuck', 1, 'acc-1', 0, "
             "'y', 'bank.v1.AccountOpened', 'old', 3, 0, 'skipped', 1);");
    const auto out = projection_findings(cli);
    CHECK(!contains(out, "'later'"));
    CHECK(!contains(out, "position 3: projection-parked:"));  // a subscription's
  }
  SUBCASE("projections (a format-3 store's tables): checkpoint past the head, stuck, parked") {
    create_format3_projection_tables(cli.db);
    exec_sql(cli.db,
             "INSERT INTO annals_projections VALUES('ahead', 1, 99, NULL, NULL, 0, 0);"
             "INSERT INTO annals_projections VALUES('stuck', 1, 1, 2, 'boom', 0, 0);"
             "INSERT INTO annals_parked VALUES('stuck', 2, 'acc-1', 1, 'x', "
             "'bank.v1.MoneyDeposited', 'boom', 3, 0, 'parked', NULL);"
             "INSERT INTO annals_parked VALUES('stuck', 1, 'acc-1', 0, 'y', "
             "'bank.v1.AccountOpened', 'old', 3, 0, 'skipped', 1);");
    projection_findings(cli);
  }
}

TEST_CASE("stats shows a projection's lag even when the event after its checkpoint is damaged") {
  seeded_cli cli;
  create_format3_projection_tables(cli.db);
  exec_sql(cli.db,
           "INSERT INTO annals_projections VALUES('stuck', 1, 1, 2, 'boom', 0, 0);"
           "UPDATE events SET event_id = X'0102' WHERE position = 2");
  // The lag's age reads the event at 2, which fails: the count is still shown, not an error.
  auto r = cli({"stats"});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(contains(r.out, "stuck\tversion 1\tcheckpoint 1\tlag 4\tparked 0\tstuck at 2: boom"),
                r.out);
}

TEST_CASE("verify keeps going after a problem and reports every one") {
  seeded_cli cli;
  exec_sql(cli.db,
           "UPDATE events SET payload = X'FF' WHERE position = 1;"
           "UPDATE events SET event_id = X'00' WHERE position = 3;"
           "UPDATE events SET metadata = X'0AFF' WHERE position = 5;");
  auto r = cli({"verify"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "position 1: payload:"));
  CHECK(contains(r.out, "position 3: event-id:"));
  CHECK(contains(r.out, "position 5: metadata:"));
  // Each row was changed after it was written: its checksum says so too.
  CHECK(contains(r.out, "position 1: checksum:"));
  CHECK(contains(r.out, "position 3: checksum:"));
  CHECK(contains(r.out, "position 5: checksum:"));
  CHECK(contains(r.out, "6 problems found\n"));
}

// The bank's events, with only `registered` registered (the others keep schema version 0):
// 1 acc-1@0 AccountOpened, 2 acc-1@1 MoneyDeposited, 3 acc-2@0 MoneyWithdrawn.
void seed_partly_registered(const std::string& db,
                            const std::vector<const google::protobuf::Descriptor*>& registered) {
  auto store = annals::open_store(db).value_or_throw();
  std::vector<annals::schema_registration> types;
  for (auto* d : registered) types.push_back({d});
  if (!types.empty()) REQUIRE(annals::register_event_types(*store, types).ok());
  auto opened = annals::test::bank_events::opened("acc-1", "Ann Smith");
  auto dep = annals::test::bank_events::deposited("acc-1", 1250);
  bank::v1::MoneyWithdrawn w;
  w.set_account_id("acc-2");
  w.set_amount_cents(3);
  REQUIRE(store->append("acc-1", annals::expected_version::no_stream(),
                        {event(opened), event(dep)})
              .ok());
  REQUIRE(store->append("acc-2", annals::expected_version::no_stream(), {event(w)}).ok());
}

TEST_CASE("verify passes a store that never registered schemas, with one warning per type") {
  annals_cli cli;
  seed_partly_registered(cli.db, {});
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "position 1: warning: type-unregistered: event type bank.v1.AccountOpened "
                        "has no schema in the store"));
  CHECK(contains(r.out, "position 2: warning: type-unregistered:"));
  CHECK(contains(r.out, "position 3: warning: type-unregistered:"));
  CHECK(contains(r.out, "ok: no problems found, 3 warnings\n"));
  // Problems are still problems, counted apart from the warnings.
  exec_sql(cli.db, "UPDATE events SET event_id = X'00' WHERE position = 2");
  r = cli({"verify"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "position 2: event-id:"));
  CHECK(contains(r.out, "position 2: checksum:"));
  CHECK(contains(r.out, "2 problems found, 3 warnings\n"));
}

TEST_CASE("a type never registered is decoded from the stored file that defines it") {
  // MoneyDeposited's stored descriptor set holds bank/v1/events.proto, AccountOpened too.
  annals_cli cli;
  seed_partly_registered(cli.db, {bank::v1::MoneyDeposited::descriptor()});
  auto r = cli({"read", "acc-1"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, R"({"account_id":"acc-1","owner":"Ann Smith"})"));
  CHECK(contains(r.out, R"({"account_id":"acc-1","amount_cents":"1250"})"));
  r = cli({"tail", "--json"});
  CHECK(contains(r.out, R"("payload_json":{"account_id":"acc-2","amount_cents":"3"})"));
  r = cli({"export"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, R"("payload_json":{"account_id":"acc-1","owner":"Ann Smith"})"));
  CHECK(!contains(r.out, "payload_error"));
  r = cli({"verify"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "ok: no problems found\n");
  // A payload that this best guess does not parse is a warning, not a problem. (The row
  // stands for one written before checksums.)
  exec_sql(cli.db, "UPDATE events SET payload = X'FFFFFFFF', checksum = NULL WHERE position = 1");
  r = cli({"verify"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "position 1: warning: payload-unregistered: event type "
                        "bank.v1.AccountOpened has no schema in the store; payload does not "
                        "parse as bank.v1.AccountOpened (as defined in the stored schema of "
                        "bank.v1.MoneyDeposited version 1)"));
  CHECK(contains(r.out, "position 1: warning: checksum-missing: 1 event was written before "
                        "checksums"));
  CHECK(contains(r.out, "ok: no problems found, 2 warnings\n"));
}

TEST_CASE("verify: an event without a schema version is checked against the latest, softly") {
  seeded_cli cli;
  // Position 3 loses its metadata (schema version 0) and still parses with the latest. The
  // changed rows stand for events written by an older writer: without a checksum either.
  exec_sql(cli.db, "UPDATE events SET metadata = NULL, checksum = NULL WHERE position = 3");
  auto r = cli({"verify"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "position 3: warning: checksum-missing: 1 event was written before checksums "
                 "(storage format 2 or older): not checked\nok: no problems found, 1 warning\n");
  exec_sql(cli.db, "UPDATE events SET metadata = NULL, payload = X'FFFFFFFF', checksum = NULL "
                   "WHERE position = 4");
  r = cli({"verify"});
  INFO(r.out);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "position 4: warning: payload-unversioned: the event has no schema "
                        "version and the latest stored version of bank.v1.MoneyDeposited does "
                        "not parse it"));
  CHECK(contains(r.out, "ok: no problems found, 2 warnings\n"));
  // Naming a stored version makes the same payload a problem.
  exec_sql(cli.db, "UPDATE events SET metadata = X'2801' WHERE position = 4");
  expect_problem(cli, "position 4", "payload");
}

TEST_CASE("export: a file that cannot be written exits 4; a row it cannot copy names itself") {
  seeded_cli cli;
  auto r = cli({"export", "--output", "/nonexistent/dir/x.jsonl"});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "cannot write '/nonexistent/dir/x.jsonl'"));
  r = cli({"import", "--input", cli.dir.file("missing.jsonl")});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "cannot read"));
  // An input that is a directory is refused before the new store file is created.
  std::string fresh = cli.dir.file("fresh.db");
  r = cli.on(fresh, {"import", "--input", cli.dir.path()});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "is a directory"));
  CHECK_FALSE(std::filesystem::exists(fresh));

  exec_sql(cli.db, "UPDATE events SET metadata = X'0AFF' WHERE position = 2");
  std::string file = cli.dir.file("e.jsonl");
  r = cli({"export", "--output", file});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "the event at position 2 has undecodable metadata (run annals verify)"));
  CHECK(access(file.c_str(), F_OK) != 0);  // no partial export left behind
  exec_sql(cli.db, "UPDATE events SET metadata = NULL, event_id = X'0102' WHERE position = 2");
  r = cli({"export"});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "the event at position 2 has a malformed event id (run annals verify)"));
}

TEST_CASE("export then import reproduces events, streams and schemas byte for byte") {
  seeded_cli cli;
  // A NULL and an empty metadata column must both survive.
  exec_sql(cli.db, "UPDATE events SET metadata = X'' WHERE position = 3");
  std::string file = cli.dir.file("export.jsonl");
  auto r = cli({"export", "--output", file});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::string text = read_file(file);
  CHECK(lines(text) == 1 + 3 + 5);  // header, schemas, events
  CHECK(contains(text, R"({"header":{"format":"annals-export","format_version":1,"events":"5")"));
  CHECK(contains(text, R"("payload_json":{"account_id":"acc-1","amount_cents":"1250"})"));
  CHECK(contains(text, R"("descriptor_set":")"));

  std::string copy = cli.dir.file("copy.db");
  r = cli.on(copy, {"import", "--input", file});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  expect_same_sqlite_rows(cli.db, copy);
  // Exporting the copy gives the same file.
  r = cli.on(copy, {"export"});
  CHECK(r.out == text);
}

TEST_CASE("import reads stdin, refuses a non-empty store and leaves it unchanged") {
  seeded_cli cli;
  auto exported = cli({"export"});
  REQUIRE(exported.exit_code == 0);
  std::string file = cli.dir.file("e.jsonl");
  write_file(file, exported.out);
  auto before = dump_sql(cli.db, "SELECT position, quote(event_id) FROM events");
  auto r = cli({"import", "--input", file});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "import needs an empty store; this one has 5 events"));
  CHECK(dump_sql(cli.db, "SELECT position, quote(event_id) FROM events") == before);
}

// The seeded store's export, one JSON line per element.
std::vector<std::string> export_lines(const seeded_cli& cli) {
  auto exported = cli({"export"});
  REQUIRE(exported.exit_code == 0);
  std::vector<std::string> in;
  std::istringstream s(exported.out);
  for (std::string l; std::getline(s, l);) in.push_back(l);
  return in;
}

// `annals import` of `lines` (written to a file) into the store at `copy`.
auto import_lines(const seeded_cli& cli, const std::vector<std::string>& lines,
                  const std::string& copy) {
  std::string text;
  for (auto& l : lines) text += l + "\n";
  const std::string file = cli.dir.file("bad.jsonl");
  write_file(file, text);
  return cli.on(copy, {"import", "--input", file});
}

TEST_CASE("import reports every malformed line by number and writes nothing") {
  seeded_cli cli;
  std::vector<std::string> in = export_lines(cli);
  REQUIRE(in.size() == 9);
  in[7] = "{not json";                                                                    // line 8
  in[6] = R"({"event":{"position":"3","event_id":"not-a-uuid"}})";                        // line 7
  in[8].replace(in[8].find("\"stream_version\":\"2\""), 20, "\"stream_version\":\"9\"");  // line 9
  const std::string copy = cli.dir.file("copy.db");
  auto r = import_lines(cli, in, copy);
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "nothing was written"));
  CHECK(contains(r.err, "line 8: not an export line"));
  CHECK(contains(r.err, "line 7: event id 'not-a-uuid' is not a UUID"));
  CHECK(contains(r.err, "line 9: stream 'acc-1' version 9 does not follow (expected 2)"));
  CHECK(!contains(r.err, "line 6:"));
  CHECK(dump_sql(copy, "SELECT count(*) FROM events") == "0|\n");
  CHECK(dump_sql(copy, "SELECT count(*) FROM streams") == "0|\n");
  CHECK(dump_sql(copy, "SELECT count(*) FROM annals_schemas") == "0|\n");

  SUBCASE("a truncated export is refused") {
    auto whole = export_lines(cli);
    whole.pop_back();
    r = import_lines(cli, whole, copy);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "the header announces 5 events and 3 schemas but the input has 4"));
    CHECK(dump_sql(copy, "SELECT count(*) FROM events") == "0|\n");
  }
  SUBCASE("a file that is not an export is refused at its first line") {
    r = import_lines(cli, {"hello", "{}"}, copy);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "line 1:"));
  }
}

// Replaces the value of `"field":"..."` (a JSON string) in one export line.
void set_field(std::string& line, const std::string& field, const std::string& value) {
  auto key = "\"" + field + "\":\"";
  auto at = line.find(key);
  REQUIRE(at != std::string::npos);
  at += key.size();
  line.replace(at, line.find('"', at) - at, value);
}

TEST_CASE("import refuses what verify would refuse: metadata, positions, schema versions") {
  seeded_cli cli;
  std::vector<std::string> in = export_lines(cli);
  REQUIRE(in.size() == 9);  // header, 3 schemas, events at positions 1..5 on lines 5..9
  auto import = [&](const std::vector<std::string>& lines) {
    std::string copy = cli.dir.file("copy.db");
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((copy + suffix).c_str());
    auto r = import_lines(cli, lines, copy);
    if (r.exit_code != 0) {
      CHECK(dump_sql(copy, "SELECT count(*) FROM events") == "0|\n");
      CHECK(dump_sql(copy, "SELECT count(*) FROM annals_schemas") == "0|\n");
    }
    return r;
  };
  auto bad = in;
  set_field(bad[4], "metadata_bytes", "Cv8=");  // 0A FF: a truncated string
  set_field(bad[7], "metadata_bytes", "KAk=");  // schema version 9
  set_field(bad[8], "position", "9223372036854775807");
  auto r = import(bad);
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "line 5: metadata_bytes is not a well-formed annals.v1.EventMetadata"));
  CHECK(contains(r.err, "line 8: the event says schema version 9 of bank.v1.MoneyDeposited, "
                        "which the input does not have"));
  CHECK(contains(r.err, "line 9: position 9223372036854775807 is not between 1 and 2^62 - 1"));
  CHECK(!contains(r.err, "line 6:"));
  CHECK(!contains(r.err, "line 7:"));

  bad = in;
  set_field(bad[4], "position", "0");
  set_field(bad[8], "position", "4611686018427387904");  // 2^62
  r = import(bad);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "line 5: position 0 is not between"));
  CHECK(contains(r.err, "line 9: position 4611686018427387904 is not between"));

  // The last position allowed imports, and appends go on after it.
  bad = in;
  set_field(bad[8], "position", "4611686018427387903");
  r = import(bad);
  REQUIRE(r.exit_code == 0);
  auto store = annals::open_store(cli.dir.file("copy.db")).value_or_throw();
  bank::v1::MoneyDeposited dep;
  dep.set_account_id("acc-1");
  REQUIRE(store->append("acc-1", annals::expected_version::exact(2), {event(dep)}).ok());
  CHECK(cli.on(cli.dir.file("copy.db"), {"verify"}).exit_code == 0);
}

TEST_CASE("import refuses a schema whose descriptor set does not define it or whose fingerprint is not its own") {
  // Found by fuzz_import: such a schema imported, and every payload of its type was then
  // undecodable (verify's "payload" problems), with nothing said at import.
  seeded_cli cli;
  std::vector<std::string> in = export_lines(cli);
  REQUIRE(in.size() == 9);  // header, 3 schemas on lines 2..4, then events
  set_field(in[1], "descriptor_set", "Z2FyYmFnZQ==");  // "garbage"
  set_field(in[2], "fingerprint", "00000000000000000000000000000000");
  const std::string copy = cli.dir.file("copy.db");
  auto r = import_lines(cli, in, copy);
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "line 2: schema "));
  CHECK(contains(r.err, "its descriptor set does not parse"));
  CHECK(contains(r.err, "line 3: schema "));
  CHECK(contains(r.err, "its fingerprint is not that of"));
  CHECK(!contains(r.err, "line 4:"));
  CHECK(dump_sql(copy, "SELECT count(*) FROM events") == "0|\n");
}

TEST_CASE("schema list and show print what the store keeps") {
  seeded_cli cli;
  check_schema_list_show(cli);
}

TEST_CASE("schema check: 0 when compatible, 1 with the report when breaking, 2 for a bad file, "
          "4 for a missing one") {
  seeded_cli cli;
  std::string same = cli.dir.file("same.pb");
  write_file(same, annals::descriptor_set_of(*bank::v1::MoneyDeposited::descriptor()));
  auto r = cli({"schema", "check", "--descriptor-set", same});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);

  google::protobuf::FileDescriptorSet set;
  REQUIRE(set.ParseFromString(read_file(same)));
  for (auto& f : *set.mutable_file()) {
    for (auto& m : *f.mutable_message_type()) {
      if (m.name() != "MoneyDeposited") continue;
      for (auto& field : *m.mutable_field()) {
        if (field.name() == "amount_cents") {
          field.set_type(google::protobuf::FieldDescriptorProto::TYPE_STRING);
        }
      }
    }
  }
  std::string breaking = cli.dir.file("breaking.pb");
  write_file(breaking, set.SerializeAsString());
  r = cli({"schema", "check", "--descriptor-set", breaking});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "amount_cents (2)"));

  std::string garbage = cli.dir.file("garbage.pb");
  write_file(garbage, "this is not a descriptor set");
  r = cli({"schema", "check", "--descriptor-set", garbage});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "is not a descriptor set"));
  // A file that cannot be read is an I/O error, like any other.
  r = cli({"schema", "check", "--descriptor-set", cli.dir.file("missing.pb")});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "cannot read"));
}

TEST_CASE("a missing file, a foreign SQLite file, a non-SQLite file and a newer format exit 4") {
  annals_cli cli;
  auto r = cli({"streams"});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "does not exist"));
  CHECK(access(cli.db.c_str(), F_OK) != 0);  // not created

  std::string foreign = cli.dir.file("foreign.db");
  exec_sql(foreign, "CREATE TABLE t(x); INSERT INTO t VALUES(1);");
  std::string text = cli.dir.file("notes.txt");
  write_file(text, std::string(4096, 'x'));
  std::string newer = cli.dir.file("newer.db");
  seed(newer);
  exec_sql(newer, "PRAGMA user_version = 99");
  for (const auto& cmd : std::vector<std::vector<std::string>>{{"streams"},
                                                               {"read", "a"},
                                                               {"tail"},
                                                               {"stats"},
                                                               {"verify"},
                                                               {"export"},
                                                               {"schema", "list"}}) {
    CAPTURE(cmd.front());
    r = cli.on(foreign, cmd);
    CHECK(r.exit_code == 4);
    CHECK(contains(r.err, "not an Annals store"));
    r = cli.on(text, cmd);
    CHECK(r.exit_code == 4);
    CHECK(!r.err.empty());
    r = cli.on(newer, cmd);
    CHECK(r.exit_code == 4);
    CHECK(contains(r.err, "newer"));
  }
  CHECK(dump_sql(foreign, "SELECT x FROM t") == "1|\n");  // left untouched
  r = cli.on(foreign, {"import"});
  CHECK(r.exit_code == 4);
}

TEST_CASE("usage errors exit 2 and every command has --help") {
  annals_cli cli;
  CHECK(annals::test::run({ANNALS_EXE}).exit_code == 2);
  CHECK(annals::test::run({ANNALS_EXE, "bogus"}).exit_code == 2);
  CHECK(annals::test::run({ANNALS_EXE, "streams"}).exit_code == 2);  // no --db
  auto missing = annals::test::run({ANNALS_EXE, "schema", "list"});
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.err, "--db is required"));
  // --db may also come before the command, as with `bank --db FILE ...`.
  seeded_cli seeded;
  auto after = seeded({"stats"});
  auto before = annals::test::run({ANNALS_EXE, "--db", seeded.db, "stats"});
  CHECK(after.exit_code == 0);
  CHECK(before.exit_code == 0);
  CHECK(before.out == after.out);
  CHECK(cli({"streams", "--limit", "-3"}).exit_code == 2);
  CHECK(cli({"read"}).exit_code == 2);
  CHECK(cli({"tail", "--from", "0"}).exit_code == 2);
  CHECK(cli({"schema"}).exit_code == 2);
  for (const auto& cmd : std::vector<std::vector<std::string>>{{},
                                                               {"streams"},
                                                               {"read"},
                                                               {"tail"},
                                                               {"stats"},
                                                               {"verify"},
                                                               {"export"},
                                                               {"import"},
                                                               {"schema"},
                                                               {"schema", "list"},
                                                               {"schema", "show"},
                                                               {"schema", "check"},
                                                               {"migrate"}}) {
    std::vector<std::string> argv{ANNALS_EXE};
    argv.insert(argv.end(), cmd.begin(), cmd.end());
    argv.push_back("--help");
    auto r = annals::test::run(argv);
    CAPTURE(argv.size());
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "Usage"));
  }
}

TEST_CASE("migrate has --help and needs both stores") {
  auto r = annals::test::run({ANNALS_EXE, "migrate", "--help"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "byte for byte"));
  CHECK(contains(r.out, "FROM"));
  CHECK(contains(r.out, "TO"));
  CHECK(annals::test::run({ANNALS_EXE, "migrate"}).exit_code == 2);
  CHECK(annals::test::run({ANNALS_EXE, "migrate", "a.db"}).exit_code == 2);
}

// ---- row checksums (storage format 3) -----------------------------------------------------

TEST_CASE("verify: a row changed in SQL with every field still valid fails only its checksum") {
  seeded_cli cli;
  CHECK(dump_sql(cli.db, "SELECT count(*) FROM events WHERE checksum IS NULL") == "0|\n");
  // One microsecond later: plausible, still in order (the last event), nothing else notices.
  exec_sql(cli.db, "UPDATE events SET recorded_at = recorded_at + 1 WHERE position = 5");
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "position 5: checksum: the stored bytes of event 5 (stream "));
  CHECK(contains(r.out, "do not match their checksum: the row was altered after it was written"));
  CHECK(contains(r.out, "1 problem found\n"));
}

TEST_CASE("a format-2 store: read-only opens write nothing; a writable open adds the checksum") {
  seeded_cli cli;
  // Storage format 2: the same tables without the checksum column.
  exec_sql(cli.db, "ALTER TABLE events DROP COLUMN checksum; PRAGMA user_version = 2");
  const std::string before = file_state(cli.db);
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "position 1: warning: checksum-missing: 5 events were written before "
                        "checksums (storage format 2 or older): not checked"));
  CHECK(cli({"stats"}).exit_code == 0);
  CHECK(cli({"read", "acc-1"}).exit_code == 0);
  CHECK(file_state(cli.db) == before);  // the read-only commands wrote nothing
  CHECK(dump_sql(cli.db, "PRAGMA user_version") == "2|\n");
  CHECK(dump_sql(cli.db, "SELECT count(*) FROM pragma_table_info('events') "
                         "WHERE name = 'checksum'") == "0|\n");

  // A writable open upgrades it: the column, old rows NULL, new rows checked.
  {
    auto store = annals::open_store(cli.db).value_or_throw();
    CHECK(dump_sql(cli.db, "PRAGMA user_version") == "4|\n");
    REQUIRE(store->append("acc-3", annals::expected_version::no_stream(),
                          {event(annals::test::bank_events::opened("acc-3", "Cy"))})
                .ok());
  }
  CHECK(dump_sql(cli.db, "SELECT count(*) FROM events WHERE checksum IS NULL") == "5|\n");
  CHECK(dump_sql(cli.db, "SELECT checksum IS NOT NULL FROM events WHERE position = 6") == "1|\n");
  r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "warning: checksum-missing: 5 events were written before checksums"));
  CHECK(contains(r.out, "ok: no problems found, 1 warning\n"));
  exec_sql(cli.db, "UPDATE events SET recorded_at = recorded_at + 1 WHERE position = 6");
  expect_problem(cli, "position 6", "checksum");
}

TEST_CASE("import recomputes every checksum: verify passes the copy and catches a changed row") {
  seeded_cli cli;
  std::string file = cli.dir.file("export.jsonl");
  REQUIRE(cli({"export", "--output", file}).exit_code == 0);
  std::string copy = cli.dir.file("copy.db");
  auto r = cli.on(copy, {"import", "--input", file});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  // The same sums as the appends wrote (the same fields; positions are not in the sum).
  const char* sums = "SELECT position, checksum FROM events ORDER BY position";
  CHECK(dump_sql(copy, sums) == dump_sql(cli.db, sums));
  CHECK(dump_sql(copy, "SELECT count(*) FROM events WHERE checksum IS NULL") == "0|\n");
  CHECK(cli.on(copy, {"verify"}).out == "ok: no problems found\n");
  exec_sql(copy, "UPDATE events SET recorded_at = recorded_at + 1 WHERE position = 5");
  r = cli.on(copy, {"verify"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, "position 5: checksum:"));
}
