// Helpers shared by the `annals` tool suites (tool_test.cpp on SQLite files,
// tool_postgres_test.cpp on PostgreSQL databases): running the tool, seeding a store through
// open_store (any URI), and the checks of the commands whose output must be the same on every
// backend. A check takes an annals_cli whose `db` is the seeded store.
#pragma once

#include <doctest/doctest.h>

#include <annals/projection_runner.hpp>
#include <annals/schema.hpp>
#include <annals/subscription.hpp>

#include "bank/v1/events.pb.h"
#include "support/bank_events.hpp"
#include "support/support.hpp"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tool_test {

using annals::test::process_result;
using annals::test::temp_dir;

using annals::test::contains;
inline std::size_t lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

// Raw SQL on a store file, for tampering and for byte-for-byte comparisons.
inline void exec_sql(const std::string& db, const std::string& sql) {
  sqlite3* c = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &c) == SQLITE_OK);
  char* msg = nullptr;
  int rc = sqlite3_exec(c, sql.c_str(), nullptr, nullptr, &msg);
  std::string why = msg ? msg : "";
  sqlite3_free(msg);
  sqlite3_close(c);
  INFO(sql << ": " << why);
  REQUIRE(rc == SQLITE_OK);
}
// Every row of `sql`, each column quote()d, one row per line.
inline std::string dump_sql(const std::string& db, const std::string& sql) {
  sqlite3* c = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(c, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  std::string out;
  while (sqlite3_step(st) == SQLITE_ROW) {
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      auto t = sqlite3_column_text(st, i);
      out += t ? reinterpret_cast<const char*>(t) : "NULL";
      out += '|';
    }
    out += '\n';
  }
  sqlite3_finalize(st);
  sqlite3_close(c);
  return out;
}

// The projection tables of a store written before the consumer tables (SQLite format 3), which
// a read-only open reads as they are.
inline void create_format3_projection_tables(const std::string& db) {
  exec_sql(db,
           "CREATE TABLE annals_projections(name TEXT PRIMARY KEY, version INTEGER NOT NULL, "
           "checkpoint INTEGER NOT NULL, stuck_position INTEGER, error TEXT, "
           "events_per_s REAL NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);"
           "CREATE TABLE annals_parked(projection TEXT NOT NULL, position INTEGER NOT NULL, "
           "stream_id TEXT NOT NULL, stream_version INTEGER NOT NULL, event_id TEXT NOT NULL, "
           "type TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, "
           "parked_at INTEGER NOT NULL, state TEXT NOT NULL, resolved_at INTEGER, "
           "PRIMARY KEY(projection, position));");
}

inline annals::event_data event(const google::protobuf::Message& m, annals::event_metadata meta = {}) {
  return {"", m.GetDescriptor()->full_name(), m.SerializeAsString(), std::move(meta)};
}

// A store with registered bank schemas and five events in three streams:
// 1 acc-1@0 opened, 2 acc-1@1 deposited 1250 (with metadata), 3 acc-2@0 opened,
// 4 other-1@0 deposited 7, 5 acc-1@2 withdrawn 250.
inline void seed(const std::string& db) {
  auto store = annals::open_store(db).value_or_throw();
  auto reg = annals::register_event_types(*store, {{bank::v1::AccountOpened::descriptor()},
                                                   {bank::v1::MoneyDeposited::descriptor()},
                                                   {bank::v1::MoneyWithdrawn::descriptor()}});
  REQUIRE(reg.ok());
  auto opened = annals::test::bank_events::opened("acc-1", "Ann Smith");
  auto dep = annals::test::bank_events::deposited("acc-1", 1250);
  annals::event_metadata meta;
  meta.correlation_id = "corr-1";
  meta.causation_id = "cause-1";
  meta.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  meta.headers = {{"user", "ann"}, {"source", "test"}};
  REQUIRE(store
              ->append("acc-1", annals::expected_version::no_stream(),
                       {event(opened), event(dep, meta)})
              .ok());
  opened.set_account_id("acc-2");
  REQUIRE(store->append("acc-2", annals::expected_version::no_stream(), {event(opened)}).ok());
  dep.set_account_id("other-1");
  dep.set_amount_cents(7);
  REQUIRE(store->append("other-1", annals::expected_version::any(), {event(dep)}).ok());
  bank::v1::MoneyWithdrawn w;
  w.set_account_id("acc-1");
  w.set_amount_cents(250);
  REQUIRE(store->append("acc-1", annals::expected_version::exact(1), {event(w)}).ok());
}

struct annals_cli {
  temp_dir dir;
  std::string db = dir.file("store.db");
  // Runs `annals ARGS... --db DB`.
  process_result operator()(std::vector<std::string> args) const { return on(db, args); }
  process_result on(const std::string& store, std::vector<std::string> args) const {
    args.insert(args.begin(), ANNALS_EXE);
    args.push_back("--db");
    args.push_back(store);
    return annals::test::run(args);
  }
};

struct seeded_cli : annals_cli {
  seeded_cli() { seed(db); }
};

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Verify must exit 1 and report `check` at `position` ("store" for whole-store problems).
inline void expect_problem(const annals_cli& cli, const std::string& where, const std::string& check) {
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out, where + ": " + check + ":"));
}


// The subscription `name` on the store, caught up, with event 3 parked (its handler refuses
// it); closed on return.
inline void park_event_3(const std::string& db, const std::string& name = "mailer") {
  annals::subscription_options o;
  o.max_attempts = 1;
  o.log = [](std::string_view) {};
  auto sub = annals::subscription::open(
      db, name,
      [](const annals::recorded_event& e) -> annals::result<void> {
        if (e.position == 3) return annals::error(annals::errc::rejected, "no template");
        return {};
      },
      o);
  REQUIRE(sub.ok());
  REQUIRE(sub.value()->catch_up().ok());
}

// `annals subscriptions`: a subscription that parked event 3 shows in the list with its lag,
// its parked event is listed, retried (then redelivered by the subscription) or skipped.
inline void check_subscriptions(const annals_cli& cli) {
  auto r = cli({"subscriptions", "list"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "no subscriptions"));
  bool fixed = false;
  std::vector<std::int64_t> seen;
  annals::subscription_options o;
  o.max_attempts = 1;
  o.log = [](std::string_view) {};
  o.filter.stream_prefix = "acc-";
  auto sub = annals::subscription::open(
      cli.db, "mailer",
      [&](const annals::recorded_event& e) -> annals::result<void> {
        if (e.position == 3 && !fixed) return annals::error(annals::errc::rejected, "no template");
        seen.push_back(e.position);
        return {};
      },
      o);
  REQUIRE(sub.ok());
  REQUIRE(sub.value()->catch_up().ok());
  CHECK(seen == std::vector<std::int64_t>{1, 2, 5});
  auto idle = annals::subscription::open(
      cli.db, "idle", [](const annals::recorded_event&) -> annals::result<void> { return {}; }, o);
  REQUIRE(idle.ok());

  r = cli({"subscriptions", "list"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  // name, checkpoint, head, lag, lag seconds, delivered, parked, active, filter
  CHECK(contains(r.out, "mailer"));
  CHECK(contains(r.out, "prefix:acc-"));
  std::istringstream lines(r.out);
  std::string line, name;
  std::int64_t checkpoint = -1, head = -1, lag = -1, delivered = -1, parked = -1;
  double lag_s = -1;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    f >> name;
    if (name == "mailer") {
      f >> checkpoint >> head >> lag >> lag_s >> delivered >> parked;
      CHECK(checkpoint == 5);
      CHECK(lag == 0);
      CHECK(delivered == 3);
      CHECK(parked == 1);
    } else if (name == "idle") {
      f >> checkpoint >> head >> lag >> lag_s;
      CHECK(checkpoint == 0);
      CHECK(lag == 5);
      CHECK(lag_s > 0);
    }
  }

  r = cli({"subscriptions", "parked", "mailer"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "#3 acc-2 bank.v1.AccountOpened"));
  CHECK(contains(r.out, "state=parked"));
  CHECK(contains(r.out, "error: no template"));
  CHECK(cli({"subscriptions", "parked", "nobody"}).exit_code == 1);
  CHECK(cli({"subscriptions", "retry", "mailer"}).exit_code == 2);  // --position or --all
  CHECK(cli({"subscriptions", "retry", "mailer", "--position", "2"}).exit_code == 1);
  r = cli({"subscriptions", "retry", "mailer", "--position", "3"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "retrying 1 parked event of 'mailer'"));
  fixed = true;
  REQUIRE(sub.value()->catch_up().ok());
  CHECK(seen == std::vector<std::int64_t>{1, 2, 5, 3});
  r = cli({"subscriptions", "parked", "mailer"});
  CHECK(contains(r.out, "state=retried"));
  CHECK(cli({"subscriptions", "skip", "mailer", "--all"}).exit_code == 1);  // none left
  CHECK(cli({"subscriptions", "list"}).exit_code == 0);

  // `annals consumers`: the same subscriptions beside a projection stuck at event 3.
  auto def = std::make_shared<annals::projection_def>();
  def->name = "ledger";
  def->event_types = {"bank.v1.AccountOpened"};
  def->apply = [](const annals::recorded_event& e, annals::sql_tx&) -> annals::result<void> {
    if (e.position == 3) return annals::error(annals::errc::rejected, "no ledger for acc-2");
    return {};
  };
  annals::runner_options ro;
  ro.max_attempts = 1;
  auto runner = annals::projection_runner::open(cli.db, {def}, ro);
  REQUIRE(runner.ok());
  REQUIRE(runner.value()->catch_up().ok());
  r = cli({"consumers", "list"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  // kind, name, checkpoint, head, lag, lag seconds, parked, state, detail
  std::istringstream rows(r.out);
  std::string kind;
  bool saw_ledger = false, saw_mailer = false;
  while (std::getline(rows, line)) {
    std::istringstream f(line);
    std::string state;
    f >> kind >> name >> checkpoint >> head >> lag >> lag_s >> parked >> state;
    if (kind == "projection" && name == "ledger") {
      saw_ledger = true;
      CHECK(checkpoint == 2);
      CHECK(head == 5);
      CHECK(parked == 1);
      CHECK(state == "stuck");
    } else if (kind == "subscription" && name == "mailer") {
      saw_mailer = true;
      CHECK(checkpoint == 5);
      CHECK(parked == 0);
    }
  }
  CHECK(saw_ledger);
  CHECK(saw_mailer);
  CHECK(contains(r.out, "stuck at position 3"));
  CHECK(contains(r.out, "failed on event at position 3 (bank.v1.AccountOpened): no ledger"));
  r = cli({"consumers", "parked", "ledger"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "#3 acc-2 bank.v1.AccountOpened"));
  CHECK(cli({"consumers", "parked", "mailer"}).exit_code == 0);
  CHECK(cli({"consumers", "parked", "nobody"}).exit_code == 1);
  CHECK(cli({"consumers", "skip", "ledger", "--all"}).exit_code == 2);  // only its stuck event
  CHECK(cli({"consumers", "skip", "ledger", "--position", "4"}).exit_code == 1);  // not there
  CHECK(cli({"consumers", "retry", "ledger", "--position", "4"}).exit_code == 1);
  r = cli({"consumers", "retry", "ledger", "--position", "3"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "retrying 1 parked event of 'ledger'"));
  REQUIRE(runner.value()->catch_up().ok());  // fails again: stuck at 3 again
  r = cli({"consumers", "skip", "ledger", "--position", "3"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "skipped 1 parked event of 'ledger'"));
  REQUIRE(runner.value()->catch_up().ok());
  r = cli({"consumers", "list"});
  CHECK(contains(r.out, "version 1"));
  bool caught_up = false;
  std::istringstream after(r.out);
  while (std::getline(after, line)) {
    if (line.starts_with("projection") && contains(line, " ledger ")) {
      caught_up = contains(line, " caught_up ");
    }
  }
  CHECK(caught_up);
  CHECK(cli({"consumers", "retry", "ledger", "--all"}).exit_code == 1);  // nothing waits

  // A name both kinds have: given unqualified, refused (2); qualified, found.
  park_event_3(cli.db, "ledger");
  CHECK(cli({"consumers", "parked", "ledger"}).exit_code == 2);
  r = cli({"consumers", "parked", "projection:ledger"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "state=skipped"));
  r = cli({"consumers", "parked", "subscription:ledger"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "state=parked"));
}

// `annals serve --port 0` on a store, in a child process, until stop() (SIGTERM).
class served_store {
 public:
  explicit served_store(const std::string& store) {
    int out[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);  // dup2 gives the child a stdout that stays open
    pid_ = annals::test::fork_child([&] {
      dup2(out[1], 1);  // stderr (the request log) stays the test's
      execl(ANNALS_EXE, ANNALS_EXE, "serve", "--db", store.c_str(), "--port", "0",
            static_cast<char*>(nullptr));
      return 127;
    });
    close(out[1]);
    std::string line;
    char ch;
    while (read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
    close(out[0]);
    const std::string url = "at http://127.0.0.1:";
    if (auto at = line.find(url); at != std::string::npos) port_ = std::stoi(line.substr(at + url.size()));
    if (port_ == 0) {
      stop();
      FAIL("annals serve did not say where it serves: " << line);
    }
  }
  ~served_store() {
    if (pid_ > 0) stop();
  }
  served_store(const served_store&) = delete;
  served_store& operator=(const served_store&) = delete;

  pid_t pid() const { return pid_; }
  // GET `path`: the status and the body.
  std::pair<int, std::string> get(const char* path) const {
    httplib::Client c("127.0.0.1", port_);
    auto r = c.Get(path);
    REQUIRE_MESSAGE(r, path);
    return {r->status, r->body};
  }
  // Stops the server; its exit code.
  int stop() {
    kill(pid_, SIGTERM);
    int code = annals::test::wait_child(pid_);
    pid_ = -1;
    return code;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// The access modes (O_RDONLY, O_WRONLY, O_RDWR) of the descriptors process `pid` holds on the
// file `path`, from /proc: how it opened the file, whatever root's permissions would allow.
inline std::vector<int> open_modes(pid_t pid, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file = fs::canonical(path);
  const std::string proc = "/proc/" + std::to_string(pid);
  std::vector<int> modes;
  for (const auto& fd : fs::directory_iterator(proc + "/fd")) {
    std::error_code ec;
    if (fs::read_symlink(fd.path(), ec) != file || ec) continue;
    std::ifstream info(proc + "/fdinfo/" + fd.path().filename().string());
    std::string key, flags;
    while (info >> key >> flags && key != "flags:") {
    }
    REQUIRE(key == "flags:");
    modes.push_back(std::stoi(flags, nullptr, 8) & O_ACCMODE);
  }
  return modes;
}

// `annals serve` and `annals subscriptions list|parked` on a store they may only read (the
// caller write-protects it and checks afterwards that nothing changed). `with_mailer`: the
// store has the subscription "mailer" with event 3 parked (park_event_3); otherwise it has
// no subscription tables. `while_serving` is called with the server's pid after the
// subscription routes answered.
inline void check_read_only_serving(const annals_cli& cli, bool with_mailer,
                                    const std::function<void(pid_t)>& while_serving = {}) {
  auto r = cli({"subscriptions", "list"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, with_mailer ? "mailer" : "no subscriptions"));
  r = cli({"subscriptions", "parked", "mailer"});
  CHECK(r.exit_code == (with_mailer ? 0 : 1));
  if (with_mailer) CHECK(contains(r.out, "#3 acc-2 bank.v1.AccountOpened"));
  // The consumer commands that only read are read-only too.
  r = cli({"consumers", "list"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, with_mailer ? "mailer" : "no projections or subscriptions"));
  r = cli({"consumers", "parked", "mailer"});
  CHECK(r.exit_code == (with_mailer ? 0 : 1));
  if (with_mailer) CHECK(contains(r.out, "#3 acc-2 bank.v1.AccountOpened"));

  served_store server(cli.db);
  // Plain variables, not structured bindings: clang 14 cannot capture those (INFO does).
  const auto subscriptions = server.get("/subscriptions");
  const int status = subscriptions.first;
  const std::string& body = subscriptions.second;
  INFO(body);
  CHECK(status == 200);
  if (with_mailer) {
    CHECK(contains(body, R"({"name":"mailer","filter":"all","checkpoint":5,"head":5,)"));
    CHECK(contains(body, R"("parked":1,)"));
  } else {
    CHECK(body == R"({"subscriptions":[]})");
  }
  const auto exposition = server.get("/metrics");
  const int metrics_status = exposition.first;
  const std::string& metrics = exposition.second;
  INFO(metrics);
  CHECK(metrics_status == 200);
  CHECK(contains(metrics, "# TYPE annals_subscription_lag_events gauge\n"));
  CHECK(contains(metrics, R"(annals_parked_events{consumer="mailer",kind="subscription"} 1)") ==
        with_mailer);
  CHECK(contains(metrics, "annals_subscription_lag_events{") == with_mailer);
  auto [all_status, all] = server.get("/all");
  CHECK(all_status == 200);
  CHECK(contains(all, R"("position":5)"));
  if (while_serving) while_serving(server.pid());
  CHECK(server.stop() == 0);
}

// Streams lists ids, versions and event counts, with prefix and limit.
inline void check_streams(const annals_cli& cli) {
  auto r = cli({"streams"});
  CHECK(r.exit_code == 0);
  CHECK(r.out ==
        "acc-1\tversion 2\t3 events\nacc-2\tversion 0\t1 events\nother-1\tversion 0\t1 events\n");
  r = cli({"streams", "--prefix", "acc-"});
  CHECK(lines(r.out) == 2);
  CHECK(!contains(r.out, "other-1"));
  r = cli({"streams", "--limit", "1"});
  CHECK(r.out == "acc-1\tversion 2\t3 events\n");
  CHECK(cli({"streams", "--prefix", "zzz"}).out.empty());
}

// Read shows each event's metadata and its payload decoded from the stored schema.
inline void check_read(const annals_cli& cli) {
  auto r = cli({"read", "acc-1"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "#1 acc-1@0 bank.v1.AccountOpened 20"));
  CHECK(contains(r.out, "#2 acc-1@1 bank.v1.MoneyDeposited"));
  CHECK(contains(r.out, "schema=1"));
  CHECK(contains(r.out, "correlation=corr-1 causation=cause-1 traceparent=00-0af7"));
  CHECK(contains(r.out, "header user=ann\n  header source=test"));
  CHECK(contains(r.out, R"({"account_id":"acc-1","amount_cents":"1250"})"));
  CHECK(contains(r.out, R"({"account_id":"acc-1","owner":"Ann Smith"})"));
  // recorded_at is ISO-8601 UTC with microseconds.
  CHECK(contains(r.out, "Z\n"));

  r = cli({"read", "acc-1", "--backward", "--limit", "2"});
  auto newest = r.out.find("#5 acc-1@2"), older = r.out.find("#2 acc-1@1");
  CHECK(newest != std::string::npos);
  CHECK(older != std::string::npos);
  CHECK(newest < older);
  CHECK(!contains(r.out, "#1 "));
  r = cli({"read", "acc-1", "--from", "2"});
  CHECK(contains(r.out, "#5 acc-1@2"));
  CHECK(!contains(r.out, "#2 "));
}

// Read --json prints one JSON object per event with metadata and decoded payload.
inline void check_read_json(const annals_cli& cli) {
  auto r = cli({"read", "acc-1", "--json"});
  REQUIRE(r.exit_code == 0);
  CHECK(lines(r.out) == 3);
  std::istringstream in(r.out);
  std::string line;
  std::getline(in, line);
  CHECK(line.front() == '{');
  CHECK(line.back() == '}');
  CHECK(contains(line, R"("position":"1")"));
  CHECK(contains(line, R"("stream_id":"acc-1")"));
  CHECK(contains(line, R"("stream_version":"0")"));  // printed although it is the default
  CHECK(contains(line, R"("payload_json":{"account_id":"acc-1","owner":"Ann Smith"})"));
  std::getline(in, line);
  CHECK(contains(line, R"("stream_version":"1")"));
  CHECK(contains(line, R"("correlation_id":"corr-1")"));
  CHECK(contains(line,
                 R"("headers":[{"key":"user","value":"ann"},{"key":"source","value":"test"}])"));
  CHECK(contains(line, R"("schema_version":1)"));
  CHECK(contains(line, R"("recorded_at":"20)"));
  CHECK(contains(line, R"("amount_cents":"1250")"));
}

// Read of a missing stream exits 1 and says so.
inline void check_read_missing(const annals_cli& cli) {
  auto r = cli({"read", "nope"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "stream 'nope' not found"));
  CHECK(r.out.empty());
}

// Tail shows $all in position order, filtered by position, type and prefix.
inline void check_tail(const annals_cli& cli) {
  auto r = cli({"tail"});
  REQUIRE(r.exit_code == 0);
  std::size_t last = 0;
  for (int p = 1; p <= 5; ++p) {
    auto at = r.out.find("#" + std::to_string(p) + " ");
    REQUIRE(at != std::string::npos);
    CHECK(at >= last);
    last = at;
  }
  r = cli({"tail", "--from", "4"});
  CHECK(!contains(r.out, "#3 "));
  CHECK(contains(r.out, "#4 other-1@0"));
  CHECK(contains(r.out, "#5 acc-1@2"));
  r = cli({"tail", "--type", "bank.v1.MoneyDeposited", "--type", "bank.v1.MoneyWithdrawn"});
  CHECK(contains(r.out, "#2 "));
  CHECK(contains(r.out, "#4 "));
  CHECK(contains(r.out, "#5 "));
  CHECK(!contains(r.out, "AccountOpened"));
  r = cli({"tail", "--prefix", "other", "--json"});
  CHECK(lines(r.out) == 1);
  CHECK(contains(r.out, R"("stream_id":"other-1")"));
}

// Tail --follow prints events committed later until SIGTERM, then exits 0.
// `while_following` (when given) runs once the tail has printed the seeded events.
inline void check_follow(const annals_cli& cli,
                         const std::function<void()>& while_following = {}) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    execl(ANNALS_EXE, ANNALS_EXE, "tail", "--follow", "--from", "5", "--db", cli.db.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  auto read_until = [&](const std::string& wanted) {
    std::string seen;
    char buf[4096];
    // Generous: only a failing test waits this long.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!contains(seen, wanted) && std::chrono::steady_clock::now() < deadline) {
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      seen.append(buf, static_cast<std::size_t>(n));
    }
    return seen;
  };
  CHECK(contains(read_until("#5 "), "#5 acc-1@2"));
  if (while_following) while_following();
  {
    auto store = annals::open_store(cli.db).value_or_throw();
    bank::v1::MoneyDeposited dep;
    dep.set_account_id("late");
    dep.set_amount_cents(99);
    REQUIRE(store->append("late", annals::expected_version::any(), {event(dep)}).ok());
  }
  auto seen = read_until("amount_cents");
  CHECK(contains(seen, "#6 late@0 bank.v1.MoneyDeposited"));
  CHECK(contains(seen, R"("amount_cents":"99")"));
  kill(pid, SIGTERM);
  CHECK(annals::test::wait_child(pid) == 0);
  close(out[0]);
}

// Schema list and show print what the store keeps.
inline void check_schema_list_show(const annals_cli& cli) {
  auto r = cli({"schema", "list"});
  REQUIRE(r.exit_code == 0);
  CHECK(lines(r.out) == 3);
  CHECK(contains(r.out, "bank.v1.MoneyDeposited\tversion 1\tbackward\t"));
  r = cli({"schema", "show", "bank.v1.MoneyDeposited"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "// bank.v1.MoneyDeposited version 1 (backward"));
  CHECK(contains(r.out, "message MoneyDeposited {"));
  CHECK(contains(r.out, "int64 amount_cents = 2;"));
  CHECK(cli({"schema", "show", "bank.v1.MoneyDeposited", "--version", "1"}).exit_code == 0);
  r = cli({"schema", "show", "bank.v1.MoneyDeposited", "--version", "2"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "no version 2 of type 'bank.v1.MoneyDeposited'"));
  r = cli({"schema", "show", "bank.v1.Nope"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "no schema for type 'bank.v1.Nope'"));
}

// Two SQLite stores hold the same rows, byte for byte: events (every column, the metadata's
// NULL or blob kept apart), streams (ids too) and schemas.
inline void expect_same_sqlite_rows(const std::string& original, const std::string& copy) {
  for (const char* sql :
       {"SELECT position, stream, stream_version, quote(event_id), type, recorded_at, "
        "quote(metadata), quote(payload), typeof(metadata) FROM events ORDER BY position",
        "SELECT id, name, version FROM streams ORDER BY id",
        "SELECT type, version, compatibility, fingerprint, quote(descriptor_set), registered_at "
        "FROM annals_schemas ORDER BY type, version"}) {
    CAPTURE(sql);
    auto rows = dump_sql(original, sql);
    CHECK(!rows.empty());
    CHECK(dump_sql(copy, sql) == rows);
  }
}

// Verify passes a healthy store.
inline void check_verify_clean(const annals_cli& cli) {
  auto r = cli({"verify"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "ok: no problems found\n");
}

// Stats shows counts, sizes, largest streams, event types and schemas; no projections
// section while the store has no projection tables.
inline void check_stats(const annals_cli& cli) {
  auto r = cli({"stats"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "storage format   "));
  CHECK(contains(r.out, "events           5\n"));
  CHECK(contains(r.out, "streams          3\n"));
  CHECK(contains(r.out, "head position    5\n"));
  CHECK(contains(r.out, "schemas          3\n"));
  CHECK(contains(r.out, "snapshots        0\n"));
  CHECK(!contains(r.out, "file bytes       0\n"));
  CHECK(!contains(r.out, "payload bytes    0\n"));
  CHECK(contains(r.out, "largest streams:\n  acc-1\t3 events\tversion 2\n"));
  CHECK(contains(r.out, "  bank.v1.MoneyDeposited\t2 events\t"));
  CHECK(contains(r.out, "  bank.v1.MoneyWithdrawn\t1 events\t"));
  CHECK(!contains(r.out, "projections:"));
}

// After the projection row ('balances', version 2, checkpoint 3) was added by hand.
inline void expect_projection_in_stats(const annals_cli& cli) {
  auto r = cli({"stats"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "projections:\n  balances\tversion 2\tcheckpoint 3\tlag 2\tparked 0\n"));
}

}  // namespace tool_test