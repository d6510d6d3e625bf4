// Projections on PostgreSQL beyond the shared runner cases (projection_test.cpp, compiled for
// PostgreSQL too): one active runner per projection across processes with failover when the
// holder dies, live following woken by LISTEN/NOTIFY rather than polling, read-model values
// (extremes, NULLs, bytes, hostile text) and ?N placeholders in the PostgreSQL dialect. The
// failover and LISTEN cases run again through PgBouncer in session mode, beside pooled appends.
#include <doctest/doctest.h>

#include <annals/event_store.hpp>
#include <annals/projection.hpp>
#include <annals/projection_runner.hpp>
#include <annals/read_model.hpp>
#include <annals/store.hpp>

#include <boost/hana/define_struct.hpp>

#include "bank/v1/events.pb.h"
#include "support/bank_events.hpp"
#include "support/postgres.hpp"
#include "support/support.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using annals::recorded_event;
using annals::result;
using annals::sql_row;
using annals::sql_tx;
using annals::test::fork_child;
using annals::test::wait_child;
using annals::test::write_all;
namespace v1 = bank::v1;
using namespace annals::test::bank_events;

template <class T>
std::string message_of(const result<T>& r) {
  return r.ok() ? "ok" : std::string(annals::to_string(r.error().kind())) + ": " +
                             r.error().message();
}

// Visits every row of Row's table in one read transaction of the runner.
template <class Row, class F>
void for_rows(annals::projection_runner& r, F&& visit) {
  auto ok = r.read([&](sql_tx& tx) -> result<void> {
    auto q = tx.select<Row>("", {}, [&](const Row& row) {
      visit(row);
      return true;
    });
    if (!q) return std::move(q).error();
    return {};
  });
  REQUIRE_MESSAGE(ok.ok(), message_of(ok));
}

struct database {
  std::string name, uri;
  database() {
    std::string why;
    if (!annals::test::pg::create_database(name, uri, why)) FAIL("no PostgreSQL: " << why);
  }
  ~database() { annals::test::pg::drop_database(name); }
};

// Counts applications per position: a double application shows as 2.
struct seen_row {
  BOOST_HANA_DEFINE_STRUCT(seen_row, (std::int64_t, position), (std::int64_t, applications),
                           (std::int64_t, pid));
  static constexpr std::string_view table = "pg_seen";
  static constexpr std::string_view key[] = {"position"};
};

struct seen {
  static constexpr std::string_view name = "seen";
  static constexpr int version = 1;
  using events = annals::event_list<v1::AccountOpened, v1::MoneyDeposited>;
  using tables = annals::table_list<seen_row>;
  result<void> note(const recorded_event& m, sql_tx& tx) {
    auto found = tx.find<seen_row>(m.position);
    if (!found) return std::move(found).error();
    seen_row row = found->value_or(seen_row{m.position, 0, ::getpid()});
    ++row.applications;
    return tx.upsert(row);
  }
  result<void> handle(const v1::AccountOpened&, const recorded_event& m, sql_tx& tx) {
    return note(m, tx);
  }
  result<void> handle(const v1::MoneyDeposited&, const recorded_event& m, sql_tx& tx) {
    return note(m, tx);
  }
};

std::unique_ptr<annals::event_store> open_store(const std::string& uri) {
  auto s = annals::open_store(uri);
  REQUIRE_MESSAGE(s.ok(), message_of(s));
  return std::move(s).value();
}

std::unique_ptr<annals::projection_runner> open_runner(const std::string& uri,
                                                       annals::runner_options o = {}) {
  auto r = annals::projection_runner::open(uri, {annals::make_projection(seen{})}, o);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  return std::move(r).value();
}

std::int64_t deposit(annals::event_store& s, int i) {
  auto r = s.append("account-a", annals::expected_version::any(), {data_of(deposited("a", i))});
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  return r->position;
}

// position -> (applications, applying pid)
std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> seen_rows(
    annals::projection_runner& r) {
  std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> out;
  for_rows<seen_row>(r, [&](const seen_row& row) { out[row.position] = {row.applications, row.pid}; });
  return out;
}

std::int64_t checkpoint_of(annals::projection_runner& r) {
  auto st = r.status();
  REQUIRE_MESSAGE(st.ok(), message_of(st));
  return st->front().checkpoint;
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

// Store and runners on `uri` (the database directly, or through PgBouncer).
void leader_failover(const std::string& uri) {
  auto store = open_store(uri);
  std::int64_t head = 0;
  for (int i = 1; i <= 50; ++i) head = deposit(*store, i);

  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t leader = fork_child([&]() -> int {
    ::close(ready[0]);
    auto r = annals::projection_runner::open(uri, {annals::make_projection(seen{})});
    if (!r) return 3;
    if (!(*r)->start()) return 4;
    if (!(*r)->wait_for("seen", head, 20s)) return 5;
    if (!write_all(ready[1], "r")) return 6;
    for (;;) ::pause();  // follows live until killed
  });
  ::close(ready[1]);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  ::close(ready[0]);

  // The standby sees the leader's work, and cannot apply while the leader lives.
  auto standby = open_runner(uri);
  CHECK(checkpoint_of(*standby) == head);
  for (int i = 51; i <= 60; ++i) head = deposit(*store, i);
  CHECK(wait_until([&] { return checkpoint_of(*standby) == head; }, 10s));
  for (const auto& [pos, row] : seen_rows(*standby)) {
    CHECK(row.first == 1);
    CHECK(row.second == leader);
  }
  // With the leader alive and ahead, an explicit catch-up here leads nothing.
  for (int i = 61; i <= 70; ++i) head = deposit(*store, i);
  auto n = standby->catch_up();
  REQUIRE(n.ok());
  CHECK(n->events == 0);
  // It says why: the live runner leads the projection.
  REQUIRE(n->held.size() == 1);
  CHECK(n->held[0].reason == annals::held_reason::led_elsewhere);
  CHECK_FALSE(n->complete());
  CHECK(wait_until([&] { return checkpoint_of(*standby) == head; }, 10s));

  // The leader dies: its connection ends, the server releases its lead, the standby takes it.
  ::kill(leader, SIGKILL);
  CHECK(wait_child(leader) == 128 + SIGKILL);
  REQUIRE(standby->start().ok());
  for (int i = 71; i <= 100; ++i) head = deposit(*store, i);
  auto w = standby->wait_for("seen", head, 20s);
  REQUIRE_MESSAGE(w.ok(), message_of(w));
  auto rows = seen_rows(*standby);
  CHECK(rows.size() == 100);
  std::size_t taken_over = 0;
  for (const auto& [pos, row] : rows) {
    CHECK(row.first == 1);  // never applied twice across the failover
    if (row.second == ::getpid()) ++taken_over;
  }
  CHECK(taken_over == 30);
  standby->stop();
}

void listen_wakeup(const std::string& uri) {
  // The writer is forked now, before any thread runs, and appends once released.
  annals::test::waiting_child writer([&]() -> int {
    auto s = annals::open_store(uri);
    if (!s) return 3;
    for (int i = 1; i <= 5; ++i) {
      if (!(*s)->append("account-b", annals::expected_version::any(), {data_of(deposited("b", i))})) {
        return 4;
      }
    }
    return 0;
  });
  open_store(uri).reset();
  annals::runner_options o;
  o.poll_interval = 60s;  // polling alone would take a minute
  auto runner = open_runner(uri, o);
  REQUIRE(runner->start().ok());
  // Let the runner go idle in its wait first.
  CHECK(runner->wait_for("seen", 0, 5s).ok());
  std::this_thread::sleep_for(200ms);

  writer.release();
  REQUIRE(writer.wait() == 0);
  const auto started = std::chrono::steady_clock::now();
  CHECK(wait_until([&] { return seen_rows(*runner).size() == 5; }, 20s));
  CHECK(std::chrono::steady_clock::now() - started < 20s);
  runner->stop();
}

// The database's URI through PgBouncer in session mode (ANNALS_TEST_PGBOUNCER, which
// tools/scripts/test.sh sets); FAILs the case when it is not set, as the other PostgreSQL
// cases do without ANNALS_TEST_PG.
std::string through_pgbouncer(const database& db) {
  auto uri = annals::test::pg::pgbouncer_uri(db.name);
  if (uri.empty()) {
    FAIL("ANNALS_TEST_PGBOUNCER is not set: run tools/scripts/test.sh (it starts PgBouncer in "
         "front of its PostgreSQL), or point it at a PgBouncer in session mode");
  }
  return uri;
}

}  // namespace

TEST_CASE("one live runner leads a projection; when its process is killed another takes over") {
  database db;
  leader_failover(db.uri);
}

TEST_CASE("a live runner is woken by another process's append through LISTEN/NOTIFY") {
  database db;
  listen_wakeup(db.uri);
}

// PgBouncer in session mode gives each client one server connection for its whole session, so
// what Annals keeps per connection holds: prepared statements, session settings, the runner's
// session advisory lock (released by the reset query when a client dies) and LISTEN.
TEST_CASE("through PgBouncer in session mode: a runner leads, and one takes over when it is killed") {
  database db;
  leader_failover(through_pgbouncer(db));
}

TEST_CASE("through PgBouncer in session mode: a live runner is woken through LISTEN/NOTIFY") {
  database db;
  listen_wakeup(through_pgbouncer(db));
}

TEST_CASE("through PgBouncer in session mode: pooled appends from threads keep $all gap-free") {
  database db;
  annals::postgres_options o;
  o.pool_size = 4;
  auto opened = annals::open_postgres_store(through_pgbouncer(db), std::move(o));
  REQUIRE_MESSAGE(opened.ok(), message_of(opened));
  auto& store = **opened;
  constexpr int threads = 4, per_thread = 60;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::string stream = "account-t" + std::to_string(t);
      for (int i = 0; i < per_thread; ++i) {  // each append its own transaction
        auto expected = i == 0 ? annals::expected_version::no_stream()
                               : annals::expected_version::exact(i - 1);
        auto r = store.append(stream, expected, {data_of(deposited("t" + std::to_string(t), i + 1))});
        if (!r || r->stream_version != i) ++failures;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(failures.load() == 0);
  // Read back directly from the server: every position once, in order, none missing.
  auto direct = open_store(db.uri);
  std::int64_t expect = 1;
  std::map<std::string, std::int64_t> per_stream;
  annals::read_all_options ro;
  auto n = direct->read_all(ro, [&](const recorded_event& e) {
    CHECK(e.position == expect++);
    CHECK(e.stream_version == per_stream[e.stream_id]++);
    return true;
  });
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(*n == threads * per_thread);
  CHECK(per_stream.size() == threads);
}

// ---- read-model values and SQL on PostgreSQL -------------------------------------------------

struct value_row {
  BOOST_HANA_DEFINE_STRUCT(value_row,
                           (std::string, id),
                           (bool, flag),
                           (std::int64_t, i64),
                           (std::int32_t, i32),
                           (std::uint32_t, u32),
                           (double, f64),
                           (std::string, text),
                           (annals::blob, bytes),
                           (std::optional<std::int64_t>, maybe));
  static constexpr std::string_view table = "pg_values";
  static constexpr std::string_view key[] = {"id"};
  friend bool operator==(const value_row&, const value_row&) = default;
};

struct values_projection {
  static constexpr std::string_view name = "values";
  static constexpr int version = 1;
  using events = annals::event_list<v1::AccountOpened>;
  using tables = annals::table_list<value_row>;
  std::shared_ptr<std::function<result<void>(sql_tx&)>> script =
      std::make_shared<std::function<result<void>(sql_tx&)>>();
  result<void> handle(const v1::AccountOpened&, const recorded_event&, sql_tx& tx) {
    return (*script)(tx);
  }
};

TEST_CASE("read-model values round-trip exactly on PostgreSQL, and ? in quotes is not a parameter") {
  database db;
  auto store = open_store(db.uri);
  values_projection p;
  auto script = p.script;
  auto r = annals::projection_runner::open(db.uri, {annals::make_projection(p)});
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  auto& runner = **r;

  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes += static_cast<char>(b);
  const std::vector<value_row> rows = {
      {"min", false, std::numeric_limits<std::int64_t>::min(),
       std::numeric_limits<std::int32_t>::min(), 0, -std::numeric_limits<double>::max(), "",
       annals::blob{""}, std::nullopt},
      {"max", true, std::numeric_limits<std::int64_t>::max(),
       std::numeric_limits<std::int32_t>::max(), std::numeric_limits<std::uint32_t>::max(),
       std::numeric_limits<double>::denorm_min(), "héllo ✓ 'quoted' \"dq\" ?1 $1 -- /*",
       annals::blob{all_bytes}, std::int64_t{-1}},
      {"x'); DROP TABLE pg_values; --", true, 0, 0, 0, 0.1, "?", annals::blob{"\\x00"},
       std::int64_t{0}},
  };
  *script = [&](sql_tx& tx) -> result<void> {
    for (const auto& row : rows) {
      if (auto u = tx.upsert(row); !u) return u;
    }
    return {};
  };
  REQUIRE(store->append("account-v", annals::expected_version::any(), {data_of(opened("v", "V"))}).ok());
  auto n = runner.catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  auto st = runner.status();
  REQUIRE(st.ok());
  REQUIRE_MESSAGE(st->front().parked == 0, st->front().error);

  auto ok = runner.read([&](sql_tx& tx) -> result<void> {
    for (const auto& want : rows) {
      CAPTURE(want.id);
      auto got = tx.find<value_row>(want.id);
      REQUIRE_MESSAGE(got.ok(), message_of(got));
      REQUIRE(got->has_value());
      CHECK(**got == want);
    }
    // Text compares bytewise, as on SQLite: "max" < "min" < "x'..."
    std::vector<std::string> order;
    auto q = tx.select<value_row>("", {}, [&](const value_row& row) {
      order.push_back(row.id);
      return true;
    });
    REQUIRE(q.ok());
    CHECK(order == std::vector<std::string>{"max", "min", "x'); DROP TABLE pg_values; --"});
    // ? inside a string literal, a quoted identifier or a comment stays as it is; ?N and bare ?
    // outside are parameters.
    std::string literal, param, second;
    auto s = tx.query("SELECT '?1 it''s ?', ?2 /* ?3 */, ? -- ?4\n", {"one", "two", "three"},
                      [&](const sql_row& row) {
                        literal = row.text(0);
                        param = row.text(1);
                        second = row.text(2);
                        return false;
                      });
    REQUIRE_MESSAGE(s.ok(), message_of(s));
    CHECK(literal == "?1 it's ?");
    CHECK(param == "two");
    CHECK(second == "three");
    CHECK(tx.dialect() == "postgresql");
    return {};
  });
  REQUIRE_MESSAGE(ok.ok(), message_of(ok));
}

namespace {

// One row per deposit, written by a plain INSERT through sql_tx::write (pipelined in a batch).
// The deposit of `bad_amount` reuses the key of the first row: a unique violation that the
// server reports only when the pipeline is synced, events later.
struct piped_row {
  BOOST_HANA_DEFINE_STRUCT(piped_row, (std::int64_t, id), (std::int64_t, amount));
  static constexpr std::string_view table = "pg_piped";
  static constexpr std::string_view key[] = {"id"};
};

struct piped_projection {
  static constexpr std::string_view name = "piped";
  static constexpr int version = 1;
  using events = annals::event_list<v1::MoneyDeposited>;
  using tables = annals::table_list<piped_row>;
  std::int64_t bad_amount = -1;
  // What write() returned for the bad deposit, attempt by attempt.
  std::shared_ptr<std::vector<bool>> bad_writes = std::make_shared<std::vector<bool>>();
  result<void> handle(const v1::MoneyDeposited& e, const recorded_event& m, sql_tx& tx) {
    const bool bad = e.amount_cents() == bad_amount;
    auto w = tx.write("INSERT INTO " + tx.table("pg_piped") + " (id, amount) VALUES (?1, ?2)",
                      {bad ? std::int64_t{1} : m.position, e.amount_cents()});
    if (bad) bad_writes->push_back(w.ok());
    return w;
  }
};

}  // namespace

TEST_CASE("pipelined writes on PostgreSQL: a statement failing mid-batch parks its own event") {
  database db;
  auto store = open_store(db.uri);
  constexpr int events = 600, bad = 400;  // more writes than one pipeline holds (256)
  std::vector<annals::event_data> batch;
  for (int i = 1; i <= events; ++i) batch.push_back(data_of(deposited("a", i)));
  auto appended = store->append("account-a", annals::expected_version::any(), batch);
  REQUIRE_MESSAGE(appended.ok(), message_of(appended));
  const std::int64_t first = appended->position - events + 1;
  const std::int64_t bad_position = first + bad - 1;

  piped_projection p;
  p.bad_amount = bad;
  auto bad_writes = p.bad_writes;
  annals::runner_options o;
  o.max_attempts = 1;
  auto r = annals::projection_runner::open(db.uri, {annals::make_projection(p)}, o);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  auto& runner = **r;
  (void)runner.catch_up();

  auto st = runner.status();
  REQUIRE(st.ok());
  const auto& s = st->front();
  CHECK(s.parked == 1);
  CHECK(s.checkpoint == bad_position - 1);
  CHECK_MESSAGE(s.error.find("position " + std::to_string(bad_position)) != std::string::npos,
                s.error);
  CHECK_MESSAGE(s.error.find("duplicate key") != std::string::npos, s.error);
  // The batch's write of the bad row was accepted unsent (pipelined), then failed on its own
  // when the batch was applied again without pipelining.
  REQUIRE(bad_writes->size() >= 2);
  CHECK(bad_writes->front());
  CHECK_FALSE(bad_writes->back());
  auto parked = runner.parked("piped");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->front().position == bad_position);

  // Every event before the bad one is applied, none after it.
  std::int64_t rows = 0, low = INT64_MAX, high = 0;
  for_rows<piped_row>(runner, [&](const piped_row& row) {
    ++rows;
    low = std::min(low, row.id);
    high = std::max(high, row.id);
  });
  CHECK(rows == bad - 1);
  CHECK(low == first);
  CHECK(high == bad_position - 1);

  // A rebuild replays pipelined too, and names the same event when it fails.
  auto rb = runner.rebuild("piped");
  REQUIRE_FALSE(rb.ok());
  CHECK_MESSAGE(rb.error().message().find("position " + std::to_string(bad_position)) !=
                    std::string::npos,
                rb.error().message());
  std::int64_t after = 0;
  for_rows<piped_row>(runner, [&](const piped_row&) { ++after; });
  CHECK(after == rows);  // the live model is unchanged

  // Without the bad event, the whole log applies through the pipeline.
  REQUIRE(runner.skip("piped", bad_position).ok());
  REQUIRE(runner.catch_up().ok());
  CHECK(checkpoint_of(runner) == appended->position);
  after = 0;
  for_rows<piped_row>(runner, [&](const piped_row&) { ++after; });
  CHECK(after == events - 1);
}

namespace {

struct named_row {
  BOOST_HANA_DEFINE_STRUCT(named_row, (std::string, id), (std::string, name));
  static constexpr std::string_view table = "pg_named";
  static constexpr std::string_view key[] = {"id"};
};

struct named_projection {
  static constexpr std::string_view name = "named";
  static constexpr int version = 1;
  using events = annals::event_list<v1::AccountOpened>;
  using tables = annals::table_list<named_row>;
  // What find returned after the upsert, attempt by attempt: the name, or the error.
  std::shared_ptr<std::vector<std::string>> finds = std::make_shared<std::vector<std::string>>();
  result<void> handle(const v1::AccountOpened&, const recorded_event&, sql_tx& tx) {
    // Not UTF-8: the server refuses the text, but only when it receives the statement.
    if (auto u = tx.upsert(named_row{"x", "bad \xff name"}); !u) return u;
    auto found = tx.find<named_row>(std::string("x"));
    finds->push_back(!found ? "error: " + found.error().message()
                            : *found ? (*found)->name : "absent");
    if (!found) return std::move(found).error();
    return {};
  }
};

}  // namespace

TEST_CASE("a pipelined batch finds the rows it wrote without a round trip, and a refused one parks") {
  database db;
  auto store = open_store(db.uri);
  REQUIRE(store->append("account-x", annals::expected_version::any(), {data_of(opened("x", "X"))})
              .ok());
  named_projection p;
  auto finds = p.finds;
  annals::runner_options o;
  o.max_attempts = 1;
  auto r = annals::projection_runner::open(db.uri, {annals::make_projection(p)}, o);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  (void)(*r)->catch_up();
  // Pipelined: the upsert is queued, and find answers from the rows the batch wrote, without
  // waiting for the server (which would have reported the bad text). The batch then fails at
  // commit, is applied again without pipelining, and the upsert fails on its own.
  REQUIRE(finds->size() == 1);
  CHECK(finds->front() == "bad \xff name");
  auto st = (*r)->status();
  REQUIRE(st.ok());
  CHECK(st->front().parked == 1);
  CHECK_MESSAGE(st->front().error.find("UTF8") != std::string::npos, st->front().error);
}

namespace {

// One held upsert per deposit, each its own row.
struct held_projection {
  static constexpr std::string_view name = "held";
  static constexpr int version = 1;
  using events = annals::event_list<v1::MoneyDeposited>;
  using tables = annals::table_list<piped_row>;
  result<void> handle(const v1::MoneyDeposited& e, const recorded_event& m, sql_tx& tx) {
    return tx.upsert(piped_row{m.position, e.amount_cents()});
  }
};

}  // namespace

TEST_CASE("a batch holding more rows than its cache keeps writes them all") {
  database db;
  auto store = open_store(db.uri);
  // More rows in one batch than the row cache holds (row_cache::max_rows, 20,000).
  constexpr int appends = 25, per_append = 1000;
  std::int64_t want_sum = 0;
  for (int a = 0; a < appends; ++a) {
    std::vector<annals::event_data> batch;
    for (int i = 1; i <= per_append; ++i) {
      batch.push_back(data_of(deposited("h", a * per_append + i)));
      want_sum += a * per_append + i;
    }
    REQUIRE(store->append("account-h", annals::expected_version::any(), batch).ok());
  }
  annals::runner_options o;
  o.batch_size = appends * per_append;  // one batch
  auto r = annals::projection_runner::open(db.uri, {annals::make_projection(held_projection{})},
                                           o);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  auto& runner = **r;
  auto totals = [&] {
    std::int64_t rows = 0, sum = 0;
    for_rows<piped_row>(runner, [&](const piped_row& row) {
      ++rows;
      sum += row.amount;
    });
    return std::pair{rows, sum};
  };
  auto n = runner.catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(n->events == appends * per_append);
  CHECK(totals() == std::pair<std::int64_t, std::int64_t>{appends * per_append, want_sum});
  auto rb = runner.rebuild("held");
  REQUIRE_MESSAGE(rb.ok(), message_of(rb));
  CHECK(totals() == std::pair<std::int64_t, std::int64_t>{appends * per_append, want_sum});
}
