// Catch-up subscriptions: checkpoints per subscriber, filters, live following, retries with
// backoff, dead letters (parked, retried, skipped), lag, one active instance per name (lease,
// takeover after kill -9), at-least-once across kill -9. Compiled once per backend
// (ANNALS_SUBSCRIPTIONS_ON_POSTGRES). Also the process-manager helpers: find_event,
// derived_event_id, caused_by.
#include <doctest/doctest.h>

#include <annals/admin.hpp>
#include <annals/command.hpp>
#include <annals/consumers.hpp>
#include <annals/projection_runner.hpp>
#include <annals/event_store.hpp>
#include <annals/sql.hpp>
#include <annals/subscription.hpp>

#include <fmt/format.h>

#include "support/postgres.hpp"
#include "support/support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <type_traits>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace {

using namespace std::chrono_literals;
using annals::errc;
using annals::recorded_event;
using annals::result;
using annals::subscription;
using annals::subscription_admin;
using annals::subscription_options;
using annals::test::fork_child;
using annals::test::pg::store_location;
using annals::test::temp_dir;
using annals::test::wait_child;

#ifdef ANNALS_SUBSCRIPTIONS_ON_POSTGRES
constexpr bool on_postgres = true;
#define SUITE_NAME "subscription_postgres"
#else
constexpr bool on_postgres = false;
#define SUITE_NAME "subscription"
#endif

template <class T>
std::string message_of(const result<T>& r) {
  return r.ok() ? "ok" : std::string(annals::to_string(r.error().kind())) + ": " +
                             r.error().message();
}

std::unique_ptr<annals::event_store> open(const std::string& path) {
  auto s = annals::open_store(path);
  REQUIRE_MESSAGE(s.ok(), message_of(s));
  return std::move(s).value();
}

annals::event_data ev(std::string type, std::string payload = "x") {
  annals::event_data e;
  e.type = std::move(type);
  e.payload = std::move(payload);
  return e;
}

// Appends `n` events, one per append, to `stream`; returns the last position.
std::int64_t append_n(annals::event_store& s, const std::string& stream, int n,
                      const std::string& type = "test.v1.Ping") {
  std::int64_t last = 0;
  for (int i = 0; i < n; ++i) {
    auto r = s.append(stream, annals::expected_version::any(), {ev(type, std::to_string(i))});
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    last = r->position;
  }
  return last;
}

// Records what a handler saw, thread-safely.
struct seen_log {
  std::mutex mu;
  std::vector<std::int64_t> positions;
  std::vector<std::string> streams;
  void add(const recorded_event& e) {
    std::lock_guard l(mu);
    positions.push_back(e.position);
    streams.push_back(e.stream_id);
  }
  std::vector<std::int64_t> snapshot() {
    std::lock_guard l(mu);
    return positions;
  }
};

subscription_options quiet(subscription_options o = {}) {
  o.log = [](std::string_view) {};
  o.retry_backoff = 1ms;
  o.max_backoff = 8ms;
  return o;
}

std::unique_ptr<subscription> open_sub(const std::string& path, const std::string& name,
                                       annals::subscription_handler h,
                                       subscription_options o = quiet()) {
  auto s = subscription::open(path, name, std::move(h), std::move(o));
  REQUIRE_MESSAGE(s.ok(), message_of(s));
  return std::move(s).value();
}

std::unique_ptr<subscription_admin> admin(const std::string& path) {
  auto a = subscription_admin::open(path);
  REQUIRE_MESSAGE(a.ok(), message_of(a));
  return std::move(a).value();
}

std::unique_ptr<subscription_admin> read_only_admin(const std::string& path) {
  auto a = subscription_admin::open_read_only(path);
  REQUIRE_MESSAGE(a.ok(), message_of(a));
  return std::move(a).value();
}

// Raw SQL on the store's database, beside the store: SQLite statements on the file, or one
// PostgreSQL statement with text parameters. Returns the first column of the first row.
std::string raw_sql(const store_location& loc, const std::string& sql,
                    const std::vector<std::string>& params = {}) {
  if (on_postgres) return annals::test::pg::session(loc.path).exec(sql, params);
  REQUIRE(params.empty());
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(loc.path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  std::string first;
  char* msg = nullptr;
  int rc = sqlite3_exec(
      db, sql.c_str(),
      [](void* out, int n, char** values, char**) {
        auto& s = *static_cast<std::string*>(out);
        if (s.empty() && n > 0 && values[0]) s = values[0];
        return 0;
      },
      &first, &msg);
  std::string why = msg ? msg : "";
  sqlite3_free(msg);
  sqlite3_close(db);
  INFO(sql << ": " << why);
  REQUIRE(rc == SQLITE_OK);
  return first;
}

bool has_table(const store_location& loc, const std::string& table) {
  return on_postgres
             ? raw_sql(loc, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = "
                            "current_schema() AND tablename = $1",
                       {table}) == "1"
             : raw_sql(loc, fmt::format("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                        "AND name = '{}'",
                                        table)) == "1";  // test-made names only
}

// Makes the store one written before the schema registry: without annals_schemas and
// annals_snapshots (and on SQLite storage format 1). Opened writable, it would be upgraded.
void make_older_store(const store_location& loc) {
  raw_sql(loc, on_postgres ? "DROP TABLE annals_schemas, annals_snapshots"
                           : "DROP TABLE annals_schemas; DROP TABLE annals_snapshots; "
                             "PRAGMA user_version = 1");
  REQUIRE_FALSE(has_table(loc, "annals_schemas"));
}

// Write-protects the store: the SQLite file 0444 (root bypasses it: the content checks below
// still see any write), the PostgreSQL database read-only by default for new sessions.
void write_protect(const store_location& loc) {
  if (!on_postgres) {
    REQUIRE(::chmod(loc.path.c_str(), 0444) == 0);
    return;
  }
  auto alter = raw_sql(loc, "SELECT format('ALTER DATABASE %I SET default_transaction_read_only "
                            "= on', current_database())");
  raw_sql(loc, alter);
}

// What a write would change: the SQLite file's bytes and modification time (empty on
// PostgreSQL, whose tables the callers check).
std::string file_state(const store_location& loc) {
  if (on_postgres) return {};
  std::ifstream f(loc.path, std::ios::binary);
  std::stringstream bytes;
  bytes << f.rdbuf();
  struct stat st {};
  REQUIRE(::stat(loc.path.c_str(), &st) == 0);
  return fmt::format("mtime {}.{}, {} bytes hashing to {:x}", st.st_mtim.tv_sec,
                     st.st_mtim.tv_nsec, bytes.str().size(), std::hash<std::string>{}(bytes.str()));
}

// Three events in s-1, and the subscription "picky" caught up with event 2 parked.
// One parked type for every consumer; parked_delivery is its old name.
static_assert(std::is_same_v<annals::parked_delivery, annals::parked_event>);

std::unique_ptr<subscription> picky_with_event_2_parked(const std::string& path) {
  append_n(*open(path), "s-1", 3);
  subscription_options o = quiet();
  o.max_attempts = 1;
  auto sub = open_sub(path, "picky", [](const recorded_event& e) -> result<void> {
    if (e.position == 2) return annals::error(errc::rejected, "not this one");
    return {};
  }, o);
  REQUIRE(sub->catch_up().ok());
  return sub;
}

}  // namespace

TEST_SUITE(SUITE_NAME) {

TEST_CASE("catches up from its checkpoint, in order, and resumes where it stopped") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "order-1", 30);
  seen_log seen;
  {
    subscription_options o = quiet();
    o.batch_size = 7;  // several pages
    auto sub = open_sub(loc.path, "mailer", [&](const recorded_event& e) -> result<void> {
      seen.add(e);
      return {};
    }, o);
    auto n = sub->catch_up();
    REQUIRE_MESSAGE(n.ok(), message_of(n));
    CHECK(n->events == 30);
    auto st = sub->status();
    REQUIRE(st.ok());
    CHECK(st->checkpoint == 30);
    CHECK(st->lag_events == 0);
    CHECK(st->delivered == 30);
  }
  auto got = seen.snapshot();
  REQUIRE(got.size() == 30);
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == static_cast<std::int64_t>(i + 1));

  append_n(*store, "order-2", 5);
  auto sub = open_sub(loc.path, "mailer", [&](const recorded_event& e) -> result<void> {
    seen.add(e);
    return {};
  });
  auto n = sub->catch_up();
  REQUIRE(n.ok());
  CHECK(n->events == 5);  // only what came after the stored checkpoint
  got = seen.snapshot();
  REQUIRE(got.size() == 35);
  CHECK(got.back() == 35);

  // A second subscriber has its own checkpoint.
  int other = 0;
  auto sub2 = open_sub(loc.path, "audit", [&](const recorded_event&) -> result<void> {
    ++other;
    return {};
  });
  REQUIRE(sub2->catch_up().ok());
  CHECK(other == 35);
}

TEST_CASE("filters: one stream, a category, event types; a changed filter is refused") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "account-1", 3, "bank.v1.Deposited");
  append_n(*store, "account-10", 2, "bank.v1.Withdrawn");
  append_n(*store, "order-1", 4, "shop.v1.Ordered");
  append_n(*store, "account-1", 1, "bank.v1.Withdrawn");

  auto collect = [&](const std::string& name, annals::subscription_filter f) {
    seen_log seen;
    subscription_options o = quiet();
    o.filter = f;
    o.batch_size = 2;
    auto sub = open_sub(loc.path, name, [&](const recorded_event& e) -> result<void> {
      seen.add(e);
      return {};
    }, o);
    auto n = sub->catch_up();
    REQUIRE_MESSAGE(n.ok(), message_of(n));
    auto st = sub->status();
    REQUIRE(st.ok());
    CHECK(st->checkpoint == 10);  // passed over what it does not want
    std::lock_guard l(seen.mu);
    return std::make_pair(seen.positions, seen.streams);
  };
  auto [p1, s1] = collect("one-stream", {.stream = "account-1"});
  CHECK(p1 == std::vector<std::int64_t>{1, 2, 3, 10});
  auto [p2, s2] = collect("category", {.stream_prefix = "account-"});
  CHECK(p2 == std::vector<std::int64_t>{1, 2, 3, 4, 5, 10});
  auto [p3, s3] = collect("types", {.event_types = {"bank.v1.Withdrawn", "shop.v1.Ordered"}});
  CHECK(p3 == std::vector<std::int64_t>{4, 5, 6, 7, 8, 9, 10});
  auto [p4, s4] = collect("both", {.stream_prefix = "account-", .event_types = {"bank.v1.Withdrawn"}});
  CHECK(p4 == std::vector<std::int64_t>{4, 5, 10});

  subscription_options o = quiet();
  o.filter.stream_prefix = "order-";
  auto again = subscription::open(loc.path, "category",
                                  [](const recorded_event&) -> result<void> { return {}; }, o);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().kind() == errc::invalid_argument);
  CHECK(again.error().message().find("prefix:account-") != std::string::npos);
}

TEST_CASE("follows live appends, from this process and from another one") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  // The other process is forked now, before any thread runs, and appends once released.
  const std::string path = loc.path;
  annals::test::waiting_child child([&] {
    auto s = annals::open_store(path);
    if (!s) return 1;
    for (int i = 0; i < 5; ++i) {
      if (!s.value()->append("s-2", annals::expected_version::any(), {ev("test.v1.Ping")})) {
        return 2;
      }
    }
    return 0;
  });
  auto store = open(loc.path);
  append_n(*store, "s-1", 3);
  seen_log seen;
  auto sub = open_sub(loc.path, "live", [&](const recorded_event& e) -> result<void> {
    seen.add(e);
    return {};
  });
  REQUIRE(sub->start().ok());
  auto last = append_n(*store, "s-1", 4);
  REQUIRE_MESSAGE(sub->wait_for(last, 10s).ok(), "did not follow local appends");
  CHECK(seen.snapshot().size() == 7);
  child.release();
  REQUIRE(child.wait() == 0);
  REQUIRE_MESSAGE(sub->wait_for(12, 10s).ok(), "did not follow another process's appends");
  sub->stop();
  auto got = seen.snapshot();
  REQUIRE(got.size() == 12);
  CHECK(got.back() == 12);
}

TEST_CASE("a poison event is retried, parked with its error, and the others go on") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 10);
  std::atomic<int> attempts_on_5{0};
  std::atomic<bool> fixed{false};
  seen_log seen;
  std::vector<std::string> log_lines;
  subscription_options o = quiet();
  o.max_attempts = 3;
  o.batch_size = 4;
  o.log = [&](std::string_view line) { log_lines.emplace_back(line); };
  auto sub = open_sub(loc.path, "poisoned", [&](const recorded_event& e) -> result<void> {
    if (e.position == 5 && !fixed) {
      ++attempts_on_5;
      return annals::error(errc::invalid_argument, "cannot render the template for 5");
    }
    if (e.position == 8 && !fixed) throw std::runtime_error("handler blew up on 8");
    seen.add(e);
    return {};
  }, o);
  auto n = sub->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(n->events == 8);
  CHECK(attempts_on_5 == 3);
  CHECK(seen.snapshot() == std::vector<std::int64_t>{1, 2, 3, 4, 6, 7, 9, 10});
  CHECK_FALSE(log_lines.empty());

  auto a = admin(loc.path);
  auto parked = a->parked("poisoned");
  REQUIRE_MESSAGE(parked.ok(), message_of(parked));
  REQUIRE(parked->size() == 2);
  CHECK(parked->at(0).position == 5);
  CHECK(parked->at(0).state == "parked");
  CHECK(parked->at(0).attempts == 3);
  CHECK(parked->at(0).stream_id == "s-1");
  CHECK(parked->at(0).stream_version == 4);  // positions 1..10 are s-1 versions 0..9
  CHECK(parked->at(0).error.find("cannot render the template for 5") != std::string::npos);
  CHECK(parked->at(1).position == 8);
  CHECK(parked->at(1).error.find("handler blew up on 8") != std::string::npos);
  auto st = sub->status();
  REQUIRE(st.ok());
  CHECK(st->parked == 2);
  CHECK(st->checkpoint == 10);

  // Retry one, skip the other; the fixed handler gets only the retried one.
  fixed = true;
  auto r = a->retry("poisoned", 5);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  CHECK(r.value() == 1);
  auto k = a->skip("poisoned", 8);
  REQUIRE(k.ok());
  CHECK(a->retry("poisoned", 8).error().kind() == errc::not_found);  // skipped: not parked
  CHECK(a->retry("poisoned", 3).error().kind() == errc::not_found);
  n = sub->catch_up();
  REQUIRE(n.ok());
  CHECK(n->events == 1);
  auto got = seen.snapshot();
  CHECK(got.back() == 5);
  CHECK(std::count(got.begin(), got.end(), 8) == 0);
  parked = a->parked("poisoned");
  REQUIRE(parked.ok());
  CHECK(parked->at(0).state == "retried");
  CHECK(parked->at(1).state == "skipped");
  st = sub->status();
  REQUIRE(st.ok());
  CHECK(st->parked == 0);
  CHECK(st->delivered == 9);
}

TEST_CASE("a retried parked event that fails again is parked again") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 3);
  subscription_options o = quiet();
  o.max_attempts = 2;
  auto sub = open_sub(loc.path, "stubborn", [&](const recorded_event& e) -> result<void> {
    if (e.position == 2) return annals::error(errc::rejected, "still broken");
    return {};
  }, o);
  REQUIRE(sub->catch_up().ok());
  auto a = admin(loc.path);
  REQUIRE(a->retry("stubborn", 0).ok());
  REQUIRE(sub->catch_up().ok());
  auto parked = a->parked("stubborn");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->at(0).state == "parked");
  CHECK(parked->at(0).attempts == 4);
}

TEST_CASE("wait_for waits until the parked events asked to be retried are redelivered") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  const auto head = append_n(*store, "s-1", 3);
  std::atomic<bool> fixed{false};
  seen_log seen;
  subscription_options o = quiet();
  o.max_attempts = 1;
  // The live loop looks for work rarely: a wait_for that does not wait for the retry returns
  // long before the redelivery.
  o.poll_interval = 1500ms;
  auto sub = open_sub(loc.path, "patient", [&](const recorded_event& e) -> result<void> {
    if ((e.position == 2 || e.position == 5) && !fixed) {
      return annals::error(errc::rejected, "not yet");
    }
    seen.add(e);
    return {};
  }, o);
  REQUIRE(sub->start().ok());
  auto w = sub->wait_for(head, 5s);
  REQUIRE_MESSAGE(w.ok(), message_of(w));
  CHECK(seen.snapshot() == std::vector<std::int64_t>{1, 3});

  fixed = true;
  auto a = admin(loc.path);
  REQUIRE(a->retry("patient", 2).ok());
  w = sub->wait_for(head, 10s);
  REQUIRE_MESSAGE(w.ok(), message_of(w));
  CHECK(seen.snapshot() == std::vector<std::int64_t>{1, 3, 2});
  auto parked = a->parked("patient");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->at(0).state == "retried");
  // A retry asked for beyond the position waited for is not waited for.
  sub->stop();
  fixed = false;
  CHECK(append_n(*store, "s-1", 2) == 5);
  REQUIRE(sub->catch_up().ok());  // 4 delivered, 5 parked
  REQUIRE(a->retry("patient", 0).ok());
  fixed = true;
  w = sub->wait_for(head, 0ms);
  CHECK_MESSAGE(w.ok(), message_of(w));
  CHECK(seen.snapshot() == std::vector<std::int64_t>{1, 3, 2, 4});
}

TEST_CASE("errors that say try again are retried until they succeed, never parked") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 4);
  std::atomic<int> failures{0};
  seen_log seen;
  subscription_options o = quiet();
  o.max_attempts = 2;  // the outage lasts longer than that: it must not park
  auto sub = open_sub(loc.path, "outage", [&](const recorded_event& e) -> result<void> {
    if (e.position == 3 && failures < 6) {
      ++failures;
      return annals::error(errc::io, "broker unreachable");
    }
    seen.add(e);
    return {};
  }, o);
  // An explicit catch_up() gives up after max_attempts, keeping the checkpoint before it.
  auto n = sub->catch_up();
  REQUIRE_FALSE(n.ok());
  CHECK(n.error().kind() == errc::io);
  CHECK(failures == 2);
  CHECK(sub->status()->checkpoint == 2);
  CHECK(seen.snapshot() == std::vector<std::int64_t>{1, 2});
  // The live loop keeps trying through the outage.
  REQUIRE(sub->start().ok());
  REQUIRE(sub->wait_for(4, 10s).ok());
  sub->stop();
  CHECK(failures == 6);
  CHECK(seen.snapshot() == std::vector<std::int64_t>{1, 2, 3, 4});
  auto parked = admin(loc.path)->parked("outage");
  REQUIRE(parked.ok());
  CHECK(parked->empty());
}

TEST_CASE("lag in events and seconds; start_at_end; listing") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 6);
  auto idle = open_sub(loc.path, "idle", [](const recorded_event&) -> result<void> { return {}; });
  std::this_thread::sleep_for(50ms);
  auto st = idle->status();
  REQUIRE(st.ok());
  CHECK(st->lag_events == 6);
  CHECK(st->head == 6);
  CHECK(st->lag_seconds >= 0.04);
  CHECK(st->lag_seconds < 60);

  subscription_options o = quiet();
  o.start_at_end = true;
  int seen = 0;
  auto fresh = open_sub(loc.path, "fresh", [&](const recorded_event&) -> result<void> {
    ++seen;
    return {};
  }, o);
  REQUIRE(fresh->catch_up().ok());
  CHECK(seen == 0);
  append_n(*store, "s-1", 2);
  REQUIRE(fresh->catch_up().ok());
  CHECK(seen == 2);

  auto list = admin(loc.path)->list();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK(list->at(0).name == "fresh");
  CHECK(list->at(0).lag_events == 0);
  CHECK(list->at(0).lag_seconds == 0);
  CHECK(list->at(1).name == "idle");
  CHECK(list->at(1).lag_events == 8);
  CHECK(admin(loc.path)->parked("nobody").error().kind() == errc::not_found);
  REQUIRE(admin(loc.path)->remove("idle").ok());
  CHECK(admin(loc.path)->list()->size() == 1);
}

TEST_CASE("one active instance per name: the other stands by, then takes over") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 5);
  int first = 0, second = 0;
  subscription_options o = quiet();
  o.lease = 60s;
  auto a = open_sub(loc.path, "single", [&](const recorded_event&) -> result<void> {
    ++first;
    return {};
  }, o);
  auto b = open_sub(loc.path, "single", [&](const recorded_event&) -> result<void> {
    ++second;
    return {};
  }, o);
  REQUIRE(a->catch_up().ok());
  append_n(*store, "s-1", 3);
  auto n = b->catch_up();
  REQUIRE(n.ok());
  CHECK(n->events == 0);  // a holds the lease, and the report says so
  REQUIRE(n->held.size() == 1);
  CHECK(n->held[0].reason == annals::held_reason::led_elsewhere);
  CHECK(n->held[0].name == "single");
  CHECK_FALSE(n->complete());
  CHECK(second == 0);
  CHECK(b->status()->active);
  a.reset();  // releases
  n = b->catch_up();
  REQUIRE(n.ok());
  CHECK(n->events == 3);  // from a's checkpoint, nothing twice
  CHECK(n->complete());
  CHECK(first == 5);
  CHECK(second == 3);
}

TEST_CASE("kill -9 of the active instance: another takes over after the lease, nothing lost") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 400);
  const std::string path = loc.path;
  const std::string out = dir.file("child.log");
  // The child handles slowly and writes each position it handled to a file (O_APPEND, one
  // write per event), then is killed mid-way.
  pid_t child = fork_child([&] {
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return 1;
    subscription_options o = quiet();
    o.lease = 500ms;
    o.batch_size = 10;
    auto sub = subscription::open(path, "worker", [&](const recorded_event& e) -> result<void> {
      std::string line = std::to_string(e.position) + "\n";
      if (!annals::test::write_all(fd, line)) return annals::error(errc::io, "write");
      std::this_thread::sleep_for(2ms);
      return {};
    }, o);
    if (!sub) return 2;
    (void)sub.value()->catch_up();
    return 0;
  });
  // Wait until the child has handled some, then kill it.
  for (int i = 0; i < 2000; ++i) {
    std::ifstream f(out);
    std::string all((std::istreambuf_iterator<char>(f)), {});
    if (std::count(all.begin(), all.end(), '\n') >= 60) break;
    std::this_thread::sleep_for(5ms);
  }
  ::kill(child, SIGKILL);
  wait_child(child);

  std::map<std::int64_t, int> handled;
  {
    std::ifstream f(out);
    for (std::int64_t p; f >> p;) ++handled[p];
  }
  REQUIRE(handled.size() >= 60);
  REQUIRE(handled.size() < 400);
  subscription_options o = quiet();
  o.lease = 500ms;
  std::set<std::int64_t> redelivered;
  auto sub = open_sub(loc.path, "worker", [&](const recorded_event& e) -> result<void> {
    if (handled.count(e.position)) redelivered.insert(e.position);
    ++handled[e.position];
    return {};
  }, o);
  // Until the dead holder's lease runs out, this instance stands by.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (handled.size() < 400 && std::chrono::steady_clock::now() < deadline) {
    REQUIRE(sub->catch_up().ok());
    std::this_thread::sleep_for(20ms);
  }
  CHECK(handled.size() == 400);  // every event handled at least once
  for (std::int64_t p = 1; p <= 400; ++p) CHECK(handled[p] >= 1);
  // Redelivery is bounded by what was handled after the last stored checkpoint (one page).
  CHECK(redelivered.size() <= 10);
}

// The transactional handler (subscription_tx_handler) writes a ledger row per event in the
// checkpoint's transaction. The ledger has no key, so a duplicate delivery would show.
annals::subscription_tx_handler ledger_writer(std::chrono::milliseconds pause = 0ms) {
  return [pause](const recorded_event& e, annals::sql_tx& tx) -> result<void> {
    auto w = tx.exec("INSERT INTO ledger(position) VALUES (?1)",
                     {static_cast<long long>(e.position)});
    if (!w) return w.error();
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
    return {};
  };
}

TEST_CASE("a transactional handler's writes commit with the checkpoint: exactly once across kill -9") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 300);
  raw_sql(loc, "CREATE TABLE ledger(position BIGINT NOT NULL)");
  const std::string path = loc.path;
  pid_t child = fork_child([&] {
    subscription_options o = quiet();
    o.lease = 500ms;
    o.batch_size = 10;
    auto sub = subscription::open(path, "ledger", ledger_writer(1ms), o);
    if (!sub) return 2;
    (void)sub.value()->catch_up();
    return 0;
  });
  // Kill it once it has committed some pages (and is in the middle of another).
  for (int i = 0; i < 4000; ++i) {
    if (std::stoll("0" + raw_sql(loc, "SELECT count(*) FROM ledger")) >= 50) break;
    std::this_thread::sleep_for(2ms);
  }
  ::kill(child, SIGKILL);
  wait_child(child);
  const auto before = std::stoll(raw_sql(loc, "SELECT count(*) FROM ledger"));
  REQUIRE(before >= 50);
  REQUIRE(before < 300);
  CHECK(before % 10 == 0);  // whole pages only: a page's rows commit with its checkpoint

  subscription_options o = quiet();
  o.lease = 500ms;
  auto sub = subscription::open(loc.path, "ledger", ledger_writer(), o);
  REQUIRE_MESSAGE(sub.ok(), message_of(sub));
  auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    auto r = sub.value()->catch_up();
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    if (r->complete() && sub.value()->status()->checkpoint == 300) break;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(20ms);
  }
  CHECK(raw_sql(loc, "SELECT count(*) FROM ledger") == "300");
  CHECK(raw_sql(loc, "SELECT count(DISTINCT position) FROM ledger") == "300");
  CHECK(raw_sql(loc, "SELECT min(position) FROM ledger") == "1");
  CHECK(raw_sql(loc, "SELECT max(position) FROM ledger") == "300");
}

TEST_CASE("a transactional handler that fails has its writes undone, then is retried or parked") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  append_n(*open(loc.path), "s-1", 10);
  raw_sql(loc, "CREATE TABLE ledger(position BIGINT NOT NULL)");
  std::atomic<bool> fixed{false};
  std::atomic<int> busy_left{1};
  auto write = ledger_writer();
  subscription_options o = quiet();
  o.max_attempts = 2;
  o.batch_size = 4;
  auto sub = subscription::open(
      loc.path, "careful",
      [&](const recorded_event& e, annals::sql_tx& tx) -> result<void> {
        if (auto w = write(e, tx); !w) return w;  // written, then undone on failure
        if (e.position == 3 && busy_left-- > 0) return annals::error(errc::io, "try again");
        if (e.position == 5 && !fixed) return annals::error(errc::rejected, "not 5");
        if (e.position == 8 && !fixed) throw std::runtime_error("blew up on 8");
        return {};
      },
      o);
  REQUIRE_MESSAGE(sub.ok(), message_of(sub));
  auto n = sub.value()->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(n->events == 8);
  // 3 was retried until it went through; 5 and 8 parked, their rows undone.
  CHECK(raw_sql(loc, "SELECT count(*) FROM ledger") == "8");
  CHECK(raw_sql(loc, "SELECT count(*) FROM ledger WHERE position IN (5, 8)") == "0");
  CHECK(raw_sql(loc, "SELECT count(DISTINCT position) FROM ledger") == "8");
  auto a = admin(loc.path);
  auto parked = a->parked("careful");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 2);
  CHECK(parked->at(1).error.find("blew up on 8") != std::string::npos);
  CHECK(sub.value()->status()->checkpoint == 10);

  // Retried once fixed: written once each, in the transaction that marks them redelivered.
  fixed = true;
  REQUIRE(a->retry("careful", 0).ok());
  n = sub.value()->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(n->events == 2);
  CHECK(raw_sql(loc, "SELECT count(*) FROM ledger") == "10");
  CHECK(raw_sql(loc, "SELECT count(DISTINCT position) FROM ledger") == "10");
  parked = a->parked("careful");
  REQUIRE(parked.ok());
  CHECK(parked->at(0).state == "retried");
  CHECK(parked->at(1).state == "retried");
  CHECK(sub.value()->status()->delivered == 10);
}

TEST_CASE("a page slower than the lease keeps its lease: the standby never delivers meanwhile") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 12);
  subscription_options o = quiet();
  o.lease = 300ms;
  o.batch_size = 100;  // one page of 12 events taking ~1.2 s: four leases
  std::atomic<int> first{0}, second{0};
  auto a = open_sub(loc.path, "slow", [&](const recorded_event&) -> result<void> {
    std::this_thread::sleep_for(100ms);
    ++first;
    return {};
  }, o);
  auto b = open_sub(loc.path, "slow", [&](const recorded_event&) -> result<void> {
    ++second;
    return {};
  }, o);
  std::thread worker([&] { REQUIRE(a->catch_up().ok()); });
  while (first == 0) std::this_thread::sleep_for(5ms);
  while (first < 12) {
    auto n = b->catch_up();
    REQUIRE_MESSAGE(n.ok(), message_of(n));
    std::this_thread::sleep_for(50ms);
  }
  worker.join();
  CHECK(first == 12);
  CHECK(second == 0);
}

TEST_CASE("an instance whose subscription was removed says so instead of idling") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 2);
  auto sub = open_sub(loc.path, "doomed", [](const recorded_event&) -> result<void> { return {}; });
  REQUIRE(sub->catch_up().ok());
  REQUIRE(admin(loc.path)->remove("doomed").ok());
  append_n(*store, "s-1", 1);
  bool said = false;
  for (int i = 0; i < 3 && !said; ++i) {
    auto n = sub->catch_up();
    said = !n.ok() && n.error().kind() == errc::not_found &&
           n.error().message().find("was removed") != std::string::npos;
  }
  CHECK(said);
  CHECK(sub->status().error().kind() == errc::not_found);
}

TEST_CASE("the admin reads a store where no subscription was ever opened") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "s-1", 1);
  auto a = admin(loc.path);
  auto list = a->list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  CHECK(list->empty());
  CHECK(a->parked("x").error().kind() == errc::not_found);
  CHECK(a->retry("x", 0).error().kind() == errc::not_found);
  auto ro = read_only_admin(loc.path);
  list = ro->list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  CHECK(list->empty());
  CHECK(ro->parked("x").error().kind() == errc::not_found);
  CHECK(ro->retry("x", 0).error().kind() == errc::read_only);
  // Neither admin creates the tables: only a subscription does.
  CHECK_FALSE(has_table(loc, "annals_consumers"));
  CHECK_FALSE(has_table(loc, "annals_consumer_parked"));
}

TEST_CASE("a read-only admin lists and shows parked events, and refuses retry, skip and remove") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto sub = picky_with_event_2_parked(loc.path);
  auto ro = read_only_admin(loc.path);
  auto list = ro->list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  REQUIRE(list->size() == 1);
  CHECK(list->at(0).name == "picky");
  CHECK(list->at(0).checkpoint == 3);
  CHECK(list->at(0).parked == 1);
  auto parked = ro->parked("picky");
  REQUIRE_MESSAGE(parked.ok(), message_of(parked));
  REQUIRE(parked->size() == 1);
  CHECK(parked->at(0).position == 2);
  CHECK(ro->parked("nobody").error().kind() == errc::not_found);

  auto refused = [](const auto& r) {
    INFO(message_of(r));
    CHECK_FALSE(r.ok());
    CHECK((!r.ok() && r.error().kind() == errc::read_only &&
           r.error().message().find("read-only") != std::string::npos));
  };
  refused(ro->retry("picky", 2));
  refused(ro->retry("picky", 0));
  refused(ro->skip("picky", 2));
  refused(ro->skip("picky", 0));
  refused(ro->remove("picky"));
  // Nothing changed: the event is still parked, the subscription still there.
  parked = admin(loc.path)->parked("picky");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->at(0).state == "parked");
  // The writable admin may.
  CHECK(admin(loc.path)->retry("picky", 2).ok());
  CHECK(ro->parked("picky")->at(0).state == "retry");
}

TEST_CASE("a read-only admin reads an older, write-protected store and writes nothing to it") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  picky_with_event_2_parked(loc.path);  // then closed
  make_older_store(loc);
  write_protect(loc);
  const std::string before = file_state(loc);
  {
    auto ro = read_only_admin(loc.path);
    auto list = ro->list();
    REQUIRE_MESSAGE(list.ok(), message_of(list));
    REQUIRE(list->size() == 1);
    CHECK(list->at(0).head == 3);
    CHECK(list->at(0).parked == 1);
    auto parked = ro->parked("picky");
    REQUIRE_MESSAGE(parked.ok(), message_of(parked));
    CHECK(parked->size() == 1);
    CHECK(ro->skip("picky", 0).error().kind() == errc::read_only);
  }
  CHECK(file_state(loc) == before);  // SQLite: not a byte, not the modification time
  CHECK_FALSE(has_table(loc, "annals_schemas"));  // not upgraded
  CHECK_FALSE(has_table(loc, "annals_snapshots"));
  if (!on_postgres) {
    CHECK(raw_sql(loc, "PRAGMA user_version") == "1");
    REQUIRE(::chmod(loc.path.c_str(), 0644) == 0);
  }
}

TEST_CASE("parked rows keep Unicode stream ids and errors; control characters are masked") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  append_n(*store, "account-Jos\xc3\xa9", 1);
  subscription_options o = quiet();
  o.max_attempts = 1;
  auto sub = open_sub(loc.path, "unicode", [](const recorded_event&) -> result<void> {
    return annals::error(errc::rejected, "caf\xc3\xa9 \x01" "closed");
  }, o);
  REQUIRE(sub->catch_up().ok());
  auto parked = admin(loc.path)->parked("unicode");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->at(0).stream_id == "account-Jos\xc3\xa9");
  CHECK(parked->at(0).error.find("caf\xc3\xa9 ?closed") != std::string::npos);
}

TEST_CASE("bad names and options are refused") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  auto ok = [](const recorded_event&) -> result<void> { return {}; };
  for (std::string bad : {std::string(), std::string(201, 'x'), std::string("a\nb"),
                          std::string("\xff\xfe"), std::string("nul\0x", 5)}) {
    auto s = subscription::open(loc.path, bad, ok, quiet());
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().kind() == errc::invalid_argument);
  }
  subscription_options o = quiet();
  o.batch_size = 0;
  CHECK(subscription::open(loc.path, "x", ok, o).error().kind() == errc::invalid_argument);
  o = quiet();
  o.filter.stream = std::string("bad\0stream", 10);
  CHECK(subscription::open(loc.path, "x", ok, o).error().kind() == errc::invalid_argument);
  CHECK_FALSE(subscription::open(dir.file("missing.db"), "x", ok, quiet()).ok());
  // Hostile but valid names are data, not SQL.
  const std::string hostile = "x'); DROP TABLE annals_subscriptions; --";
  auto s = subscription::open(loc.path, hostile, ok, quiet());
  REQUIRE_MESSAGE(s.ok(), message_of(s));
  REQUIRE(s.value()->catch_up().ok());
  auto list = admin(loc.path)->list();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  CHECK(list->at(0).name == hostile);
}

TEST_CASE("find_event, derived_event_id and caused_by for process managers") {
  temp_dir dir;
  const store_location loc(dir.file("s.db"), on_postgres);
  auto store = open(loc.path);
  annals::event_data e = ev("test.v1.Ping", "payload");
  e.metadata.correlation_id = "conversation-1";
  e.metadata.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  auto r = store->append("s-1", annals::expected_version::any(), {e});
  REQUIRE(r.ok());
  std::string id;
  REQUIRE(store->read_stream("s-1", {}, [&](const recorded_event& x) {
    id = x.event_id;
    return true;
  }).ok());
  auto found = store->find_event(id);
  REQUIRE_MESSAGE(found.ok(), message_of(found));
  REQUIRE(found->has_value());
  CHECK((*found)->position == r->position);
  CHECK((*found)->payload == "payload");
  std::string upper = id;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(store->find_event(upper)->has_value());
  auto none = store->find_event(annals::new_uuid_v7());
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  CHECK(store->find_event("not-a-uuid").error().kind() == errc::invalid_argument);

  const std::string d1 = annals::derived_event_id(id, "withdraw");
  CHECK(d1 == annals::derived_event_id(id, "withdraw"));
  CHECK(d1 != annals::derived_event_id(id, "deposit"));
  CHECK(annals::derived_event_id("ab", "c") != annals::derived_event_id("a", "bc"));
  CHECK(d1.size() == 36);
  CHECK(d1[14] == '8');  // version 8
  // A derived id is a valid event id: an append with it is found, and a repeat is recognised.
  annals::event_data step = ev("test.v1.Step");
  step.event_id = d1;
  REQUIRE(store->append("s-2", annals::expected_version::no_stream(), {step}).ok());
  CHECK(store->find_event(d1)->has_value());
  auto again = store->append("s-2", annals::expected_version::no_stream(), {step});
  REQUIRE(again.ok());
  CHECK(again->already_appended);

  const annals::command_options o = annals::caused_by(**found);
  CHECK(o.correlation_id == "conversation-1");
  CHECK(o.causation_id == id);
  CHECK(o.traceparent == e.metadata.traceparent);
  recorded_event bare = **found;
  bare.metadata.correlation_id.clear();
  CHECK(annals::caused_by(bare).correlation_id == id);
}

// ---------------------------------------------------------------------------------------------
// consumer_admin: projections and subscriptions in one list, parked events retried or skipped
// on either, by name.

TEST_CASE("consumer_admin lists projections and subscriptions, and retries and skips either") {
  temp_dir dir;
  const store_location loc(dir.file("c.db"), on_postgres);
  auto store = open(loc.path);
  // ok, poison (2), ok, poison (4), ok
  for (const char* payload : {"ok", "poison", "ok", "poison", "ok"}) {
    auto r = store->append("s-1", annals::expected_version::any(), {ev("test.v1.Ping", payload)});
    REQUIRE_MESSAGE(r.ok(), message_of(r));
  }
  std::atomic<bool> failing{true};
  auto poisoned = [&](const recorded_event& e) -> result<void> {
    if (failing && e.payload == "poison") return annals::error(errc::rejected, "poisoned");
    return {};
  };

  auto def = std::make_shared<annals::projection_def>();
  def->name = "ledger";
  def->event_types = {"test.v1.Ping"};
  def->apply = [&](const recorded_event& e, annals::sql_tx&) { return poisoned(e); };
  annals::runner_options ro;
  ro.max_attempts = 1;
  auto runner = annals::projection_runner::open(loc.path, {def}, ro);
  REQUIRE_MESSAGE(runner.ok(), message_of(runner));
  REQUIRE((*runner)->catch_up().ok());  // stuck at 2

  subscription_options so = quiet();
  so.max_attempts = 1;
  auto sub = open_sub(loc.path, "mailer", poisoned, so);
  REQUIRE(sub->catch_up().ok());  // parks 2 and 4, goes on to 5

  {  // Read-only: lists and shows, writes nothing.
    auto ro_admin = annals::consumer_admin::open_read_only(loc.path);
    REQUIRE_MESSAGE(ro_admin.ok(), message_of(ro_admin));
    auto list = (*ro_admin)->list();
    REQUIRE_MESSAGE(list.ok(), message_of(list));
    REQUIRE(list->size() == 2);
    const auto& p = (*list)[0];
    CHECK(p.kind == annals::consumer_kind::projection);
    CHECK(p.name == "ledger");
    CHECK(p.checkpoint == 1);
    CHECK(p.head == 5);
    CHECK(p.lag_events == 4);
    CHECK(p.lag_seconds >= 0);
    CHECK(p.parked == 1);
    CHECK(p.state == annals::consumer_state::stuck);
    CHECK(p.stuck_position == 2);
    CHECK(p.stored_version == 1);
    // The store admin (stats, metrics, `annals stats`) reports the same status.
    auto store_admin = annals::open_admin(loc.path);
    REQUIRE_MESSAGE(store_admin.ok(), message_of(store_admin));
    auto seen = (*store_admin)->projections();
    REQUIRE_MESSAGE(seen.ok(), message_of(seen));
    REQUIRE(seen->size() == 1);
    CHECK(seen->front().kind == annals::consumer_kind::projection);
    CHECK(seen->front().state == annals::consumer_state::stuck);
    CHECK(seen->front().head == 5);
    CHECK(seen->front().lag_events == 4);
    CHECK(seen->front().stuck_position == 2);
    CHECK(seen->front().detail == p.detail);
    // The rate of the last batch, as stored: the runner, both admins and stats agree.
    auto mine = (*runner)->status();
    REQUIRE_MESSAGE(mine.ok(), message_of(mine));
    CHECK(mine->front().events_per_s > 0);  // the prefix before the poisoned event
    CHECK(p.events_per_s == mine->front().events_per_s);
    CHECK(seen->front().events_per_s == mine->front().events_per_s);
    auto stats = (*store_admin)->stats(1);
    REQUIRE_MESSAGE(stats.ok(), message_of(stats));
    REQUIRE(stats->projections.size() == 1);
    CHECK(stats->projections.front().lag_events == 4);
    CHECK(stats->projections.front().events_per_s == mine->front().events_per_s);
    CHECK_MESSAGE(p.error.find("poisoned") != std::string::npos, p.error);
    CHECK(p.detail == "version 1");
    const auto& m = (*list)[1];
    CHECK(m.kind == annals::consumer_kind::subscription);
    CHECK(m.name == "mailer");
    CHECK(m.checkpoint == 5);
    CHECK(m.lag_events == 0);
    CHECK(m.parked == 2);
    CHECK_FALSE(m.stuck_position);
    // The same status type as the subscription's own: state, delivered and lease included.
    auto own = sub->status();
    REQUIRE_MESSAGE(own.ok(), message_of(own));
    CHECK(m.state == annals::consumer_state::running);
    CHECK(own->state == m.state);
    CHECK(own->kind == annals::consumer_kind::subscription);
    CHECK(m.delivered == own->delivered);
    CHECK(m.delivered > 0);
    CHECK(m.detail == own->detail);
    CHECK(m.active == own->active);

    for (auto refused : {(*ro_admin)->retry("mailer", 0), (*ro_admin)->skip("ledger", 2),
                         (*ro_admin)->retry("ledger", 2)}) {
      REQUIRE_FALSE(refused.ok());
      CHECK(refused.error().kind() == errc::read_only);
    }
    auto parked = (*ro_admin)->parked("ledger");
    REQUIRE_MESSAGE(parked.ok(), message_of(parked));
    REQUIRE(parked->size() == 1);
    CHECK(parked->front().position == 2);
    CHECK(parked->front().stream_version == 1);
    CHECK(parked->front().state == "parked");
    parked = (*ro_admin)->parked("mailer");
    REQUIRE_MESSAGE(parked.ok(), message_of(parked));
    REQUIRE(parked->size() == 2);
    CHECK(parked->back().position == 4);
    CHECK(parked->back().stream_version == 3);  // recorded for a subscription's too
  }

  auto admin = annals::consumer_admin::open(loc.path);
  REQUIRE_MESSAGE(admin.ok(), message_of(admin));
  auto& a = **admin;
  auto missing = a.parked("nobody");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().kind() == errc::not_found);

  // Nothing was written by the read-only admin: still stuck at 2 with it parked.
  auto still = a.parked("ledger");
  REQUIRE_MESSAGE(still.ok(), message_of(still));
  REQUIRE(still->size() == 1);
  CHECK(still->front().state == "parked");

  // A projection skips only the event it is stuck at (no position: invalid; another: none).
  auto no_position = a.skip("ledger", 0);
  REQUIRE_FALSE(no_position.ok());
  CHECK(no_position.error().kind() == errc::invalid_argument);
  auto elsewhere = a.skip("ledger", 3);
  REQUIRE_FALSE(elsewhere.ok());
  CHECK(elsewhere.error().kind() == errc::not_found);
  auto skipped = a.skip("ledger", 2);
  REQUIRE_MESSAGE(skipped.ok(), message_of(skipped));
  CHECK(skipped.value() == 1);
  REQUIRE((*runner)->catch_up().ok());  // past 2, then stuck at 4
  auto st = (*runner)->status();
  REQUIRE(st.ok());
  CHECK(st->front().stuck_position == 4);

  // Retried once the handler is mended: the runner applies 4 and 5; the subscription gets both
  // of its parked events again.
  failing = false;
  auto wrong = a.retry("ledger", 2);
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().kind() == errc::not_found);
  auto retried = a.retry("ledger", 4);
  REQUIRE_MESSAGE(retried.ok(), message_of(retried));
  CHECK(retried.value() == 1);
  retried = a.retry("mailer", 0);
  REQUIRE_MESSAGE(retried.ok(), message_of(retried));
  CHECK(retried.value() == 2);
  REQUIRE((*runner)->catch_up().ok());
  REQUIRE(sub->catch_up().ok());

  auto list = a.list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  REQUIRE(list->size() == 2);
  CHECK((*list)[0].state == annals::consumer_state::running);
  CHECK((*list)[0].checkpoint == 5);
  CHECK((*list)[0].parked == 0);
  CHECK((*list)[1].parked == 0);
  auto parked = a.parked("projection:ledger");  // the qualified name works too
  REQUIRE_MESSAGE(parked.ok(), message_of(parked));
  REQUIRE(parked->size() == 2);
  CHECK((*parked)[0].state == "skipped");
  CHECK((*parked)[1].state == "retried");
  auto again = a.retry("mailer", 0);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().kind() == errc::not_found);
  auto nothing = a.retry("ledger", 0);  // nothing waits on the caught-up projection
  REQUIRE_FALSE(nothing.ok());
  CHECK(nothing.error().kind() == errc::not_found);

  // A name both kinds have must be qualified.
  auto twin = open_sub(loc.path, "ledger", poisoned, so);
  REQUIRE(twin->catch_up().ok());
  auto ambiguous = a.parked("ledger");
  REQUIRE_FALSE(ambiguous.ok());
  CHECK(ambiguous.error().kind() == errc::invalid_argument);
  CHECK_MESSAGE(ambiguous.error().message().find("subscription:ledger") != std::string::npos,
                ambiguous.error().message());
  auto sub_parked = a.parked("subscription:ledger");
  REQUIRE_MESSAGE(sub_parked.ok(), message_of(sub_parked));
  CHECK(sub_parked->empty());
  auto proj_parked = a.parked("projection:ledger");
  REQUIRE_MESSAGE(proj_parked.ok(), message_of(proj_parked));
  CHECK(proj_parked->size() == 2);
  auto qualified = a.retry("projection:ledger", 0);  // resolved, but nothing waits
  REQUIRE_FALSE(qualified.ok());
  CHECK(qualified.error().kind() == errc::not_found);
}

// The two sets of consumer tables of a store written before format 4 (PostgreSQL: 3), with a
// stuck projection and a subscription, each with a parked event.
void make_format3_consumers(const store_location& loc) {
  for (const char* sql : {
           "CREATE TABLE annals_projections(name TEXT PRIMARY KEY, version BIGINT NOT NULL, "
           "checkpoint BIGINT NOT NULL, stuck_position BIGINT, error TEXT, "
           "events_per_s DOUBLE PRECISION NOT NULL DEFAULT 0, updated_at BIGINT NOT NULL)",
           "CREATE TABLE annals_parked(projection TEXT NOT NULL, position BIGINT NOT NULL, "
           "stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL, event_id TEXT NOT NULL, "
           "type TEXT NOT NULL, error TEXT NOT NULL, attempts BIGINT NOT NULL, "
           "parked_at BIGINT NOT NULL, state TEXT NOT NULL, resolved_at BIGINT, "
           "PRIMARY KEY(projection, position))",
           "CREATE TABLE annals_subscriptions(name TEXT PRIMARY KEY, filter TEXT NOT NULL, "
           "checkpoint BIGINT NOT NULL, delivered BIGINT NOT NULL DEFAULT 0, owner TEXT, "
           "lease_until BIGINT NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '', "
           "updated_at BIGINT NOT NULL)",
           "CREATE TABLE annals_sub_parked(subscription TEXT NOT NULL, position BIGINT NOT NULL, "
           "stream_id TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, "
           "error TEXT NOT NULL, attempts BIGINT NOT NULL, parked_at BIGINT NOT NULL, "
           "state TEXT NOT NULL, resolved_at BIGINT, PRIMARY KEY(subscription, position))",
           "INSERT INTO annals_projections VALUES('ledger', 2, 6, 7, 'boom', 0, 0)",
           "INSERT INTO annals_parked VALUES('ledger', 7, 's-1', 6, 'e7', 't.E', 'boom', 3, 0, "
           "'parked', NULL)",
           "INSERT INTO annals_subscriptions VALUES('mailer', 'all', 4, 3, NULL, 0, 'bad', 0)",
           "INSERT INTO annals_subscriptions VALUES('ledger', 'all', 10, 9, NULL, 0, '', 0)",
           "INSERT INTO annals_sub_parked VALUES('mailer', 2, 's-1', 'e2', 't.E', 'bad', 5, 0, "
           "'parked', NULL)",
           "INSERT INTO annals_sub_parked VALUES('ledger', 3, 's-1', 'e3', 't.E', 'x', 5, 0, "
           "'skipped', 1)",
       }) {
    raw_sql(loc, sql);
  }
  raw_sql(loc, on_postgres ? "UPDATE annals_meta SET value = 2 WHERE key = 'format'"
                           : "PRAGMA user_version = 3");
}

void check_format3_consumers(annals::consumer_admin& a) {
  auto list = a.list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  REQUIRE(list->size() == 3);
  CHECK(list->at(0).kind == annals::consumer_kind::projection);
  CHECK(list->at(0).name == "ledger");
  CHECK(list->at(0).checkpoint == 6);
  CHECK(list->at(0).stuck_position == std::optional<std::int64_t>(7));
  CHECK(list->at(0).error == "boom");
  CHECK(list->at(0).parked == 1);
  CHECK(list->at(0).detail == "version 2");
  CHECK(list->at(1).kind == annals::consumer_kind::subscription);
  CHECK(list->at(1).name == "ledger");  // a subscription of the same name: the skip is its own
  CHECK(list->at(2).name == "mailer");
  CHECK(list->at(2).checkpoint == 4);
  CHECK(list->at(2).parked == 1);
  CHECK(list->at(2).error == "bad");
  auto parked = a.parked("mailer");
  REQUIRE_MESSAGE(parked.ok(), message_of(parked));
  REQUIRE(parked->size() == 1);
  CHECK(parked->at(0).position == 2);
  CHECK(parked->at(0).stream_version == -1);  // not recorded before format 4
  CHECK(parked->at(0).attempts == 5);
  CHECK(parked->at(0).state == "parked");
  auto stuck = a.parked("projection:ledger");
  REQUIRE_MESSAGE(stuck.ok(), message_of(stuck));
  REQUIRE(stuck->size() == 1);
  CHECK(stuck->at(0).position == 7);
  CHECK(stuck->at(0).stream_version == 6);
}

TEST_CASE("a store of the two consumer-table sets is read as it is read-only, and moved on a "
          "writable open") {
  temp_dir dir;
  const store_location loc(dir.file("f3.db"), on_postgres);
  append_n(*open(loc.path), "s-1", 10);  // writable: the store itself is at today's format
  make_format3_consumers(loc);

  {  // Read-only: everything listed from the old tables, nothing written.
    auto ro = annals::consumer_admin::open_read_only(loc.path);
    REQUIRE_MESSAGE(ro.ok(), message_of(ro));
    check_format3_consumers(**ro);
    auto subs = read_only_admin(loc.path)->list();
    REQUIRE_MESSAGE(subs.ok(), message_of(subs));
    REQUIRE(subs->size() == 2);
    CHECK(subs->at(1).name == "mailer");
    CHECK(subs->at(1).delivered == 3);
    CHECK(has_table(loc, "annals_projections"));
    CHECK_FALSE(has_table(loc, "annals_consumers"));
  }

  // The subscription opened writable moves every row, then resumes at its checkpoint.
  seen_log seen;
  auto sub = open_sub(loc.path, "mailer", [&](const recorded_event& e) -> result<void> {
    seen.add(e);
    return {};
  });
  for (const char* table :
       {"annals_projections", "annals_parked", "annals_subscriptions", "annals_sub_parked"}) {
    CHECK_MESSAGE(!has_table(loc, table), table);
  }
  CHECK(has_table(loc, "annals_consumers"));
  CHECK(has_table(loc, "annals_consumer_parked"));
  auto n = sub->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(seen.snapshot() == std::vector<std::int64_t>{5, 6, 7, 8, 9, 10});

  auto a = annals::consumer_admin::open(loc.path);
  REQUIRE_MESSAGE(a.ok(), message_of(a));
  auto list = (*a)->list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  REQUIRE(list->size() == 3);
  CHECK(list->at(0).stuck_position == std::optional<std::int64_t>(7));
  CHECK(list->at(2).checkpoint == 10);
  CHECK(list->at(2).parked == 1);
  // The moved parked event is retried like any other: redelivered by the subscription.
  auto r = (*a)->retry("mailer", 2);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  n = sub->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(seen.snapshot() == std::vector<std::int64_t>{5, 6, 7, 8, 9, 10, 2});
  // A later build reads the format: the store is at today's.
  CHECK(raw_sql(loc, on_postgres ? "SELECT value FROM annals_meta WHERE key = 'format'"
                                 : "PRAGMA user_version") == (on_postgres ? "3" : "4"));
}

TEST_CASE("four processes opening consumers at once on a store of the two sets move its rows "
          "once") {
  temp_dir dir;
  const store_location loc(dir.file("f3r.db"), on_postgres);
  append_n(*open(loc.path), "s-1", 10);
  make_format3_consumers(loc);
  std::vector<std::unique_ptr<annals::test::waiting_child>> racers;
  for (int i = 0; i < 4; ++i) {
    racers.push_back(std::make_unique<annals::test::waiting_child>([&loc, i] {
      if (i % 2 == 0) {  // an admin moves the rows as well as a subscription does
        auto a = annals::consumer_admin::open(loc.path);
        return a.ok() && (*a)->list().ok() ? 0 : 1;
      }
      auto sub = subscription::open(
          loc.path, fmt::format("racer-{}", i),
          annals::subscription_handler([](const recorded_event&) { return result<void>{}; }),
          quiet());
      return sub.ok() && (*sub)->catch_up().ok() ? 0 : 2;
    }));
  }
  for (auto& r : racers) r->release();
  for (auto& r : racers) CHECK(r->wait() == 0);
  for (const char* table :
       {"annals_projections", "annals_parked", "annals_subscriptions", "annals_sub_parked"}) {
    CHECK_MESSAGE(!has_table(loc, table), table);
  }
  // Every old row once, beside the two racers' own.
  CHECK(raw_sql(loc, "SELECT count(*) FROM annals_consumers") == "5");
  CHECK(raw_sql(loc, "SELECT count(*) FROM annals_consumer_parked") == "3");
  auto ro = annals::consumer_admin::open_read_only(loc.path);
  REQUIRE_MESSAGE(ro.ok(), message_of(ro));
  auto list = (*ro)->list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  REQUIRE(list->size() == 5);
  CHECK(list->at(0).checkpoint == 6);        // projection ledger, as it was
  CHECK(list->at(2).name == "mailer");
  CHECK(list->at(2).checkpoint == 4);        // never delivered by a racer
  CHECK(list->at(3).name == "racer-1");
  CHECK(list->at(3).checkpoint == 10);
}

TEST_CASE("moving the consumer tables on an adopted database sets the format; an older format "
          "and both sets at once are refused") {
  temp_dir dir;
  const store_location loc(dir.file("f3a.db"), on_postgres);
  append_n(*open(loc.path), "s-1", 10);
  make_format3_consumers(loc);
  // Read through a read-only handle: the store itself is never opened writable, so only the
  // move can set the format.
  annals::sqlite_options ro;
  ro.read_only = true;
  ro.create_if_missing = false;
  auto opened = annals::open_store(loc.path, ro);
  REQUIRE_MESSAGE(opened.ok(), message_of(opened));
  std::shared_ptr<annals::event_store> reader = std::move(opened).value();
  const auto format_sql = on_postgres ? "SELECT value FROM annals_meta WHERE key = 'format'"
                                      : "PRAGMA user_version";
  auto handler = [](const recorded_event&) -> result<void> { return {}; };

  // Two formats back (SQLite 2, PostgreSQL 1): refused, nothing moved.
  raw_sql(loc, on_postgres ? "UPDATE annals_meta SET value = 1 WHERE key = 'format'"
                           : "PRAGMA user_version = 2");
  auto old = subscription::open(annals::store_ref::adopt(reader, loc.path), "mailer", handler,
                                quiet());
  REQUIRE_FALSE(old.ok());
  CHECK(old.error().kind() == errc::invalid_argument);
  CHECK_MESSAGE(old.error().message().find("open_store") != std::string::npos,
                old.error().message());
  CHECK(has_table(loc, "annals_subscriptions"));
  CHECK_FALSE(has_table(loc, "annals_consumers"));

  // The format just before: moved, and the format set with it.
  raw_sql(loc, on_postgres ? "UPDATE annals_meta SET value = 2 WHERE key = 'format'"
                           : "PRAGMA user_version = 3");
  {
    auto sub = subscription::open(annals::store_ref::adopt(reader, loc.path), "mailer", handler,
                                  quiet());
    REQUIRE_MESSAGE(sub.ok(), message_of(sub));
    auto st = (*sub)->status();
    REQUIRE_MESSAGE(st.ok(), message_of(st));
    CHECK(st->checkpoint == 4);
  }
  CHECK(raw_sql(loc, format_sql) == (on_postgres ? "3" : "4"));
  CHECK_FALSE(has_table(loc, "annals_subscriptions"));

  // An older build, still running, recreates an old table: both sets are refused by name.
  raw_sql(loc, "CREATE TABLE annals_subscriptions(name TEXT PRIMARY KEY, filter TEXT NOT NULL, "
               "checkpoint BIGINT NOT NULL, delivered BIGINT NOT NULL DEFAULT 0, owner TEXT, "
               "lease_until BIGINT NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '', "
               "updated_at BIGINT NOT NULL)");
  auto both = subscription::open(loc.path, "mailer", handler, quiet());
  REQUIRE_FALSE(both.ok());
  CHECK(both.error().kind() == errc::corruption);
  CHECK_MESSAGE(both.error().message().find("annals_consumers") != std::string::npos,
                both.error().message());
  CHECK(has_table(loc, "annals_subscriptions"));  // nothing dropped
}

TEST_CASE("consumer_admin on a store without consumers lists nothing and adds no table") {
  temp_dir dir;
  const store_location loc(dir.file("e.db"), on_postgres);
  append_n(*open(loc.path), "s-1", 2);
  auto admin = annals::consumer_admin::open(loc.path);
  REQUIRE_MESSAGE(admin.ok(), message_of(admin));
  auto list = (*admin)->list();
  REQUIRE_MESSAGE(list.ok(), message_of(list));
  CHECK(list->empty());
  auto r = (*admin)->retry("ledger", 0);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind() == errc::not_found);
  for (const char* table : {"annals_consumers", "annals_consumer_parked", "annals_projections",
                            "annals_parked", "annals_subscriptions", "annals_sub_parked"}) {
    CHECK_MESSAGE(!has_table(loc, table), table);
  }
}

}  // TEST_SUITE
