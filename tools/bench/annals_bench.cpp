// annals-bench — throughput of the Annals SQLite store, each figure beside a raw-SQLite
// baseline for the same work measured in the same run (DESIGN.md, "Targets").
//
// stdout: one JSON object per line per figure:
//   {"scenario","events","seconds","events_per_s","baseline_per_s","ratio","peak_rss_mb",...}
// stderr: progress and notes.
//
// The baseline is a hand-written prepared-statement loop on the SQLite C API, on a database
// with the store's table shape (streams + events, the same unique indexes), the same
// durability (WAL, synchronous=FULL) and the same payloads (serialized bank events).
//
// Noise: the machine's disk is shared, so write scenarios keep both sides open and alternate
// small blocks of work between them inside each rep (see paired()); read scenarios alternate
// whole loads / scans, and both sides read the same file. Every scenario is repeated
// (--reps, default 5): events_per_s and baseline_per_s are medians over reps and ratio is
// their quotient; rep_ratios lists the per-rep paired ratios, and for write scenarios
// block_ratio_median is the median over all pairs of adjacent blocks (the figure least
// disturbed by a disk stall). peak_rss_mb is ru_maxrss, reset before each scenario through
// /proc/self/clear_refs when the kernel allows it (peak_rss_scope).
//
// Read side (issue 3): `rebuild` rebuilds the bank sample's three read models over a store of
// 1M events with projection_runner::rebuild (the `projections rebuild NAME` command path) beside
// a hand-written scan + parse + the same read-model statements; `live_lag` measures the time
// from an acknowledged command to its visibility in the read models of a running
// projection_runner, and what the running runner costs the writers.
//
// Exit codes: 0 ok, 2 bad arguments, 4 storage error (annals::exit_code of a store error;
// a failed raw-SQLite call is 4 too), 1 when a result check fails (a fold that does not add up).
#include <annals/aggregate.hpp>
#include <annals/command.hpp>
#include <annals/event_store.hpp>
#include <annals/projection_runner.hpp>

#include "account.hpp"
#include "bench_common.hpp"
#include "pg_bench.hpp"
#include "raw_folder.hpp"
#include "read_side.hpp"
#include "relay_bench.hpp"
#include "sse_bench.hpp"
#include "projections.hpp"

#include <fmt/format.h>
#include <malloc.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using namespace annals_bench;
namespace fs = std::filesystem;

void remove_db(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(path + suffix, ec);
}

// A temp directory for the database files, removed on exit (also on failure).
class temp_dir {
 public:
  explicit temp_dir(const std::string& parent) {
    std::string base = parent;
    if (base.empty()) {
      const char* t = std::getenv("TMPDIR");
      base = t && *t ? t : "/tmp";
    }
    std::string templ = base + "/annals-bench-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
      throw bench_failure{4, fmt::format("cannot create a temp dir under '{}': {}", base,
                                         std::strerror(errno))};
    }
    path_ = buf.data();
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// ---- raw SQLite ---------------------------------------------------------------------------

class raw_db {
 public:
  raw_db(const std::string& path, bool read_only = false) {
    int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      storage_failure(fmt::format("baseline: cannot open '{}': {}", path, msg));
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, 10000);
  }
  ~raw_db() { sqlite3_close_v2(db_); }
  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;

  sqlite3* get() const { return db_; }
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      storage_failure(fmt::format("baseline: {}", msg));
    }
  }

 private:
  sqlite3* db_ = nullptr;
};

class raw_stmt {
 public:
  raw_stmt(raw_db& db, std::string_view sql) : db_(db.get()) {
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
      storage_failure(fmt::format("baseline: cannot prepare '{}': {}", sql, sqlite3_errmsg(db_)));
    }
  }
  ~raw_stmt() { sqlite3_finalize(s_); }
  raw_stmt(const raw_stmt&) = delete;
  raw_stmt& operator=(const raw_stmt&) = delete;

  void bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void bind_text(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  void bind_blob(int i, const void* p, std::size_t n) {
    sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_STATIC);
  }
  void bind_null(int i) { sqlite3_bind_null(s_, i); }

  // True on a row, false when done; throws on an error.
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    std::string msg = sqlite3_errmsg(db_);
    sqlite3_reset(s_);
    storage_failure(fmt::format("baseline: step failed: {}", msg));
  }
  void run() {
    step();
    reset();
  }
  void reset() { sqlite3_reset(s_); }

  std::int64_t int64(int i) const { return sqlite3_column_int64(s_, i); }
  bool is_null(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
  std::string_view text(int i) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i)))
             : std::string_view();
  }
  std::string_view blob(int i) const {
    auto p = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i)))
             : std::string_view();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

// The store's table shape (framework/src/backends/sqlite/sqlite_store.cpp), same durability.
constexpr const char* raw_schema = R"sql(
CREATE TABLE streams(
  id      INTEGER PRIMARY KEY,
  name    TEXT NOT NULL UNIQUE,
  version INTEGER NOT NULL
);
CREATE TABLE events(
  position       INTEGER PRIMARY KEY,
  stream         INTEGER NOT NULL,
  stream_version INTEGER NOT NULL,
  event_id       BLOB NOT NULL,
  type           TEXT NOT NULL,
  recorded_at    INTEGER NOT NULL,
  metadata       BLOB,
  payload        BLOB NOT NULL
);
CREATE UNIQUE INDEX events_by_stream ON events(stream, stream_version);
CREATE UNIQUE INDEX events_by_id ON events(event_id);
)sql";

void raw_open_durable(raw_db& db) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db.get(), "PRAGMA journal_mode=WAL", -1, &s, nullptr) != SQLITE_OK ||
      sqlite3_step(s) != SQLITE_ROW ||
      std::string_view(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) != "wal") {
    sqlite3_finalize(s);
    storage_failure("baseline: cannot switch to WAL");
  }
  sqlite3_finalize(s);
  db.exec("PRAGMA synchronous=FULL");
}

// The statements of a hand-written appender: check the stream's version, insert the events,
// move the stream row, commit.
struct raw_writer {
  raw_db& db;
  raw_stmt begin{db, "BEGIN IMMEDIATE"};
  raw_stmt commit{db, "COMMIT"};
  raw_stmt find_stream{db, "SELECT id, version FROM streams WHERE name = ?1"};
  raw_stmt insert_stream{db, "INSERT INTO streams(name, version) VALUES(?1, ?2)"};
  raw_stmt update_stream{db, "UPDATE streams SET version = ?2 WHERE id = ?1"};
  raw_stmt insert_event{db,
                        "INSERT INTO events(stream, stream_version, event_id, type, recorded_at, "
                        "metadata, payload) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"};
  raw_stmt read_stream{db,
                       "SELECT type, payload FROM events WHERE stream = ?1 "
                       "ORDER BY stream_version"};
  raw_ids ids;

  explicit raw_writer(raw_db& d) : db(d) {}

  // Inside a transaction: the stream's (id, version), or (0, -1).
  std::pair<std::int64_t, std::int64_t> stream(std::string_view name) {
    find_stream.bind_text(1, name);
    std::pair<std::int64_t, std::int64_t> out{0, -1};
    if (find_stream.step()) out = {find_stream.int64(0), find_stream.int64(1)};
    find_stream.reset();
    return out;
  }

  using event = history_event;

  // Inside a transaction: appends after a version check; returns the new version.
  // A new stream's row id is stored into `sid`.
  // recorded_at is `at`, or the clock when 0.
  std::int64_t append_in_tx(std::string_view name, std::int64_t& sid, std::int64_t current,
                            std::int64_t expected, const event* events, std::size_t n,
                            std::string_view metadata = {}, std::int64_t at = 0) {
    if (current != expected) {
      logic_failure(fmt::format("baseline: conflict on {}: {} != {}", name, current, expected));
    }
    std::int64_t last = current + static_cast<std::int64_t>(n);
    if (sid == 0) {
      insert_stream.bind_text(1, name);
      insert_stream.bind(2, last);
      insert_stream.run();
      sid = sqlite3_last_insert_rowid(db.get());
    } else {
      update_stream.bind(1, sid);
      update_stream.bind(2, last);
      update_stream.run();
    }
    if (at == 0) at = now_us();
    for (std::size_t i = 0; i < n; ++i) {
      auto id = ids.next();
      insert_event.bind(1, sid);
      insert_event.bind(2, current + 1 + static_cast<std::int64_t>(i));
      insert_event.bind_blob(3, id.data(), id.size());
      insert_event.bind_text(4, *events[i].type);
      insert_event.bind(5, at);
      if (metadata.empty()) {
        insert_event.bind_null(6);
      } else {
        insert_event.bind_blob(6, metadata.data(), metadata.size());
      }
      insert_event.bind_blob(7, events[i].payload->data(), events[i].payload->size());
      insert_event.run();
    }
    return last;
  }

  std::int64_t append(std::string_view name, std::int64_t expected, const event* events,
                      std::size_t n) {
    begin.run();
    auto [sid, current] = stream(name);
    auto v = append_in_tx(name, sid, current, expected, events, n);
    commit.run();
    return v;
  }
};

std::unique_ptr<raw_db> raw_create(const std::string& path) {
  remove_db(path);
  auto db = std::make_unique<raw_db>(path);
  raw_open_durable(*db);
  db->exec(raw_schema);
  return db;
}

std::unique_ptr<annals::event_store> annals_create(const std::string& path,
                                                   annals::durability sync =
                                                       annals::durability::full) {
  remove_db(path);
  annals::sqlite_options o;
  o.sync = sync;
  return check(annals::open_sqlite_store(path, std::move(o)), "cannot open the store");
}

// ---- append scenarios ---------------------------------------------------------------------

// make_annals_appender on a new SQLite file at `path`, removed when it finishes.
std::unique_ptr<worker> sqlite_appender(const std::string& path, const append_plan& plan,
                                        int threads, std::int64_t per_append) {
  return make_annals_appender(annals_create(path), plan, threads, per_append,
                              [path] { remove_db(path); });
}

// The hand-written appender: one thread, the same appends in the same order.
class raw_appender final : public worker {
 public:
  raw_appender(std::string path, const append_plan& plan, std::int64_t per_append)
      : path_(std::move(path)),
        plan_(plan),
        per_append_(per_append),
        versions_(plan.streams.size(), -1),
        db_(raw_create(path_)),
        w_(std::make_unique<raw_writer>(*db_)),
        events_(static_cast<std::size_t>(per_append)) {}

  void run(std::int64_t from, std::int64_t to) override {
    for (std::int64_t first = from; first < to; first += per_append_) {
      std::size_t s = next_++ % plan_.streams.size();
      std::int64_t n = std::min(per_append_, to - first);
      for (std::int64_t i = 0; i < n; ++i) {
        events_[static_cast<std::size_t>(i)] = {
            &type_deposited(), &plan_.payloads[static_cast<std::size_t>(first + i)]};
      }
      versions_[s] = w_->append(plan_.streams[s], versions_[s], events_.data(),
                                static_cast<std::size_t>(n));
    }
  }

  void finish() override {
    w_.reset();
    db_.reset();
    remove_db(path_);
  }

 private:
  std::string path_;
  const append_plan& plan_;
  std::int64_t per_append_;
  std::vector<std::int64_t> versions_;
  std::unique_ptr<raw_db> db_;
  std::unique_ptr<raw_writer> w_;
  std::vector<raw_writer::event> events_;
  std::size_t next_ = 0;
};

void scenario_append_single(const config& c, const temp_dir& dir) {
  auto plan = make_append_plan(c.single_events, c.single_streams, "single");
  figure f;
  f.scenario = "append_single";
  f.events = f.baseline_events = c.single_events;
  f.target = 0.7;
  f.note = fmt::format(
      "1 event per append, expected version exact, {} streams round-robin, durable "
      "(WAL, synchronous=FULL), no metadata; baseline: BEGIN IMMEDIATE, select stream row, "
      "insert event, update stream row, COMMIT per event, same schema in a separate file; "
      "{} alternating blocks per rep",
      c.single_streams, c.blocks);
  paired(
      c.reps, c.blocks, c.single_events, c.single_events,
      [&](int) { return sqlite_appender(dir.file("single-a.db"), plan, 1, 1); },
      [&](int) { return std::make_unique<raw_appender>(dir.file("single-b.db"), plan, 1); }, f);
  print_figure(f);
}

void scenario_append_batch(const config& c, const temp_dir& dir) {
  auto plan = make_append_plan(c.batch_events, 100, "batch");
  figure f;
  f.scenario = "append_batch";
  f.events = f.baseline_events = c.batch_events;
  f.target = 0.6;
  f.note = fmt::format(
      "{} events per append, expected version exact, 100 streams round-robin, durable, no "
      "metadata; baseline: the same {}-row transactions by hand; {} alternating blocks per rep",
      c.batch_size, c.batch_size, c.blocks);
  paired(
      c.reps, c.blocks, c.batch_events, c.batch_events,
      [&](int) {
        return sqlite_appender(dir.file("batch-a.db"), plan, 1, c.batch_size);
      },
      [&](int) {
        return std::make_unique<raw_appender>(dir.file("batch-b.db"), plan, c.batch_size);
      },
      f);
  print_figure(f);
}

void scenario_append_concurrent(const config& c, const temp_dir& dir) {
  auto plan = make_append_plan(c.concurrent_events, 8 * c.threads, "conc");
  auto single = make_append_plan(c.single_events, c.single_streams, "single");
  figure f;
  f.scenario = "append_concurrent";
  f.events = c.concurrent_events;
  f.baseline_events = c.single_events;
  f.target = 5.0;
  f.note = fmt::format(
      "{} threads on one store, 1 event per append, each thread on its own 8 streams, durable; "
      "baseline_per_s: annals append_single (1 appender, same kind of store) measured in "
      "alternating blocks in this scenario, so ratio = speedup from group commit",
      c.threads);
  paired(
      c.reps, c.blocks, c.concurrent_events, c.single_events,
      [&](int) {
        return sqlite_appender(dir.file("conc-a.db"), plan, c.threads, 1);
      },
      [&](int) { return sqlite_appender(dir.file("conc-1.db"), single, 1, 1); },
      f);
  print_figure(f);
}

// ---- command_throughput -------------------------------------------------------------------

struct command_plan {
  std::vector<std::string> ids;      // account ids
  std::vector<std::string> streams;  // account streams
  std::vector<std::pair<std::size_t, std::int64_t>> deposits;  // account index, cents
  std::int64_t total_cents = 0;
};

command_plan make_command_plan(const config& c) {
  command_plan p;
  for (std::int64_t i = 0; i < c.accounts; ++i) {
    p.ids.push_back(account_id(i));
    p.streams.push_back(bank::stream_for(p.ids.back()));
  }
  std::mt19937_64 rng(7);
  for (std::int64_t i = 0; i < c.commands; ++i) {
    auto cents = 1 + static_cast<std::int64_t>(rng() % 100000);
    p.deposits.emplace_back(
        static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(c.accounts)), cents);
    p.total_cents += cents;
  }
  return p;
}

// Deposit commands through annals::handle. A work item is a command.
class annals_commander final : public worker {
 public:
  annals_commander(std::string path, const command_plan& p) : path_(std::move(path)), p_(p) {
    {
      // Setup, untimed: open every account through the command handler; synchronous=NORMAL
      // and 4 threads so it is quick.
      auto setup = annals_create(path_, annals::durability::normal);
      std::vector<std::thread> pool;
      std::atomic<std::size_t> next{0};
      std::optional<bench_failure> failure;
      std::mutex mu;
      for (int t = 0; t < 4; ++t) {
        pool.emplace_back([&] {
          try {
            for (std::size_t i; (i = next++) < p.ids.size();) {
              (void)check(annals::handle<bank::account>(*setup, p.streams[i],
                                                        [&](const bank::account& a) {
                                                          return bank::open(
                                                              a, p.ids[i],
                                                              fmt::format("Owner Number {:06}", i));
                                                        }),
                          "open account");
            }
          } catch (bench_failure& e) {
            std::lock_guard lock(mu);
            failure = std::move(e);
          }
        });
      }
      for (auto& th : pool) th.join();
      if (failure) throw *failure;
    }
    store_ = check(annals::open_sqlite_store(path_), "cannot open the store");
  }

  void run(std::int64_t from, std::int64_t to) override {
    for (std::int64_t k = from; k < to; ++k) {
      // Plain variables, not a structured binding: clang 14 cannot capture one in a lambda.
      const std::size_t i = p_.deposits[static_cast<std::size_t>(k)].first;
      const std::int64_t cents = p_.deposits[static_cast<std::size_t>(k)].second;
      (void)check(annals::handle<bank::account>(*store_, p_.streams[i],
                                                [&](const bank::account& a) {
                                                  return bank::deposit(a, p_.ids[i], cents);
                                                }),
                  "deposit");
    }
  }

  void finish() override {
    std::int64_t total = 0;
    for (const auto& s : p_.streams) {
      total += check(annals::load<bank::account>(*store_, s), "load").state.balance_cents;
    }
    if (total != p_.total_cents) logic_failure("annals: the balances do not add up");
    store_.reset();
    remove_db(path_);
  }

 private:
  std::string path_;
  const command_plan& p_;
  std::unique_ptr<annals::event_store> store_;
};

// The same commands by hand: lock, read the stream, fold, decide, append, commit.
class raw_commander final : public worker {
 public:
  raw_commander(std::string path, const command_plan& p)
      : path_(std::move(path)), p_(p), db_(raw_create(path_)), w_(std::make_unique<raw_writer>(*db_)) {
    // Setup, untimed: the same AccountOpened events in one transaction.
    w_->begin.run();
    for (std::size_t i = 0; i < p.ids.size(); ++i) {
      std::string payload = opened_payload(p.ids[i], static_cast<std::int64_t>(i));
      raw_writer::event e{&type_opened(), &payload};
      std::string cmd = w_->ids.text();
      std::int64_t sid = 0;
      w_->append_in_tx(p.streams[i], sid, -1, -1, &e, 1, raw_metadata(cmd, cmd));
    }
    w_->commit.run();
  }

  void run(std::int64_t from, std::int64_t to) override {
    raw_writer& w = *w_;
    for (std::int64_t k = from; k < to; ++k) {
      auto [i, cents] = p_.deposits[static_cast<std::size_t>(k)];
      std::string command_id = w.ids.text();
      std::string metadata = raw_metadata(command_id, command_id);
      w.begin.run();
      auto [sid, version] = w.stream(p_.streams[i]);
      bank::account a;
      w.read_stream.bind(1, sid);
      while (w.read_stream.step()) folder_.apply(a, w.read_stream.text(0), w.read_stream.blob(1));
      w.read_stream.reset();
      auto d = bank::deposit(a, p_.ids[i], cents);
      if (d.rejected() || d.events().size() != 1) logic_failure("baseline: deposit rejected");
      std::string type = d.events()[0]->GetDescriptor()->full_name();
      std::string payload = d.events()[0]->SerializeAsString();
      raw_writer::event e{&type, &payload};
      w.append_in_tx(p_.streams[i], sid, version, version, &e, 1, metadata);
      w.commit.run();
    }
  }

  void finish() override {
    w_.reset();
    db_.reset();
    remove_db(path_);
  }

 private:
  std::string path_;
  const command_plan& p_;
  std::unique_ptr<raw_db> db_;
  std::unique_ptr<raw_writer> w_;
  raw_folder folder_;
};

void scenario_command_throughput(const config& c, const temp_dir& dir) {
  auto plan = make_command_plan(c);
  figure f;
  f.scenario = "command_throughput";
  f.events = f.baseline_events = c.commands;
  f.note = fmt::format(
      "bank deposit commands via annals::handle<bank::account> on {} opened accounts, picked at "
      "random, 1 thread, durable; baseline by hand: BEGIN IMMEDIATE, select stream row, select "
      "the stream's events, parse + fold, bank::deposit, insert event (same metadata bytes), "
      "update stream row, COMMIT; {} alternating blocks per rep",
      c.accounts, c.blocks);
  paired(
      c.reps, c.blocks, c.commands, c.commands,
      [&](int) { return std::make_unique<annals_commander>(dir.file("cmd-a.db"), plan); },
      [&](int) { return std::make_unique<raw_commander>(dir.file("cmd-b.db"), plan); }, f);
  f.extra.emplace_back("unit", "\"commands\"");
  print_figure(f);
}

// Appends (inside the writer's open transaction) the stream's next random bank event: an
// opening first, then deposits and, one time in four, a withdrawal the balance covers.
void append_random_event(raw_writer& w, std::mt19937_64& rng, const std::string& id,
                         const std::string& stream, std::int64_t& sid, std::int64_t& version,
                         std::int64_t& balance) {
  std::string payload;
  const std::string* type;
  if (version < 0) {
    payload = opened_payload(id, static_cast<std::int64_t>(rng() % 1000000));
    type = &type_opened();
  } else if (rng() % 4 == 0 && balance > 0) {
    std::int64_t cents = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(balance));
    payload = withdrawn_payload(id, cents);
    type = &type_withdrawn();
    balance -= cents;
  } else {
    std::int64_t cents = 1 + static_cast<std::int64_t>(rng() % 100000);
    payload = deposited_payload(id, cents);
    type = &type_deposited();
    balance += cents;
  }
  std::string cmd = w.ids.text();
  raw_writer::event e{type, &payload};
  version = w.append_in_tx(stream, sid, version, version, &e, 1, raw_metadata(cmd, cmd));
}

// ---- read dataset: one long stream interleaved with other streams ------------------------

struct read_dataset {
  std::string path;
  std::string target_stream;
  std::int64_t target_events = 0;
  std::int64_t total_events = 0;
  std::int64_t target_balance = 0;
  std::int64_t total_balance = 0;
};

// Built once per run: an Annals store (created through the API, so the header is right),
// filled by hand in one transaction with the same rows the store would write: UUIDv7 ids,
// command metadata, bank payloads. The target stream gets one event in every 1+interleave.
const read_dataset& dataset(const config& c, const temp_dir& dir) {
  static std::optional<read_dataset> ds;
  if (ds) return *ds;
  read_dataset d;
  d.path = dir.file("interleaved.db");
  d.target_events = c.load_stream_events;
  note("building the read dataset: a {}-event stream, {} other events after each of its events",
       c.load_stream_events, c.interleave);
  auto t0 = clock_type::now();
  { auto created = annals_create(d.path); }
  raw_db db(d.path);
  db.exec("PRAGMA synchronous=OFF");  // setup only
  raw_writer w(db);
  std::string target_id = account_id(999999);
  d.target_stream = bank::stream_for(target_id);
  std::vector<std::string> other_ids, other_streams;
  std::vector<std::int64_t> other_version(static_cast<std::size_t>(c.other_streams), -1);
  std::vector<std::int64_t> other_sid(static_cast<std::size_t>(c.other_streams), 0);
  for (std::int64_t s = 0; s < c.other_streams; ++s) {
    other_ids.push_back(account_id(s));
    other_streams.push_back(bank::stream_for(other_ids.back()));
  }
  std::mt19937_64 rng(99);
  std::int64_t target_sid = 0, target_version = -1;
  auto one = [&](const std::string& id, const std::string& stream, std::int64_t& sid,
                 std::int64_t& version, std::int64_t& balance) {
    append_random_event(w, rng, id, stream, sid, version, balance);
    ++d.total_events;
  };
  std::vector<std::int64_t> other_balance(static_cast<std::size_t>(c.other_streams), 0);
  std::size_t k = 0;
  w.begin.run();
  for (std::int64_t i = 0; i < c.load_stream_events; ++i) {
    one(target_id, d.target_stream, target_sid, target_version, d.target_balance);
    for (std::int64_t j = 0; j < c.interleave; ++j, ++k) {
      std::size_t s = k % other_ids.size();
      one(other_ids[s], other_streams[s], other_sid[s], other_version[s], other_balance[s]);
    }
  }
  w.commit.run();
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  d.total_balance = d.target_balance;
  for (auto b : other_balance) d.total_balance += b;
  note("read dataset: {} events in {:.1f} s, {:.1f} MB", d.total_events, seconds_since(t0),
       static_cast<double>(fs::file_size(d.path)) / 1e6);
  ds = std::move(d);
  return *ds;
}

// A load that folds the whole stream: neither reads nor saves snapshots.
annals::load_options full_fold() {
  annals::load_options o;
  o.use_snapshots = false;
  return o;
}

void scenario_aggregate_load(const config& c, const temp_dir& dir) {
  const auto& d = dataset(c, dir);
  auto annals_once = [&] {
    auto t0 = clock_type::now();
    auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
    auto l = check(annals::load<bank::account>(*store, d.target_stream, full_fold()), "load");
    store.reset();
    double secs = seconds_since(t0);
    if (l.version + 1 != d.target_events || l.state.balance_cents != d.target_balance) {
      logic_failure(fmt::format("annals load: version {} balance {}, expected {} and {}",
                                l.version, l.state.balance_cents, d.target_events - 1,
                                d.target_balance));
    }
    return secs;
  };
  auto raw_once = [&] {
    auto t0 = clock_type::now();
    raw_db db(d.path, true);
    raw_stmt sid(db, "SELECT id FROM streams WHERE name = ?1");
    raw_stmt rows(db,
                  "SELECT type, payload FROM events WHERE stream = ?1 ORDER BY stream_version");
    raw_folder folder;
    bank::account a;
    std::int64_t n = 0;
    sid.bind_text(1, d.target_stream);
    if (!sid.step()) storage_failure("baseline: no target stream");
    rows.bind(1, sid.int64(0));
    sid.reset();
    while (rows.step()) {
      folder.apply(a, rows.text(0), rows.blob(1));
      ++n;
    }
    rows.reset();
    double secs = seconds_since(t0);
    if (n != d.target_events || a.balance_cents != d.target_balance) {
      logic_failure("baseline load: wrong fold");
    }
    return secs;
  };
  figure f;
  f.scenario = "aggregate_load";
  f.events = f.baseline_events = d.target_events;
  // One sample per load; loads alternate sides.
  alternate(c.reps * c.loads_per_rep, annals_once, raw_once, f.annals_seconds,
            f.baseline_seconds);
  // Where the time goes: opening + closing the store alone, and a load on a store that is
  // already open (its reader connection and page cache warm, as in a long-running service).
  std::vector<double> open_close, warm;
  {
    auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
    (void)check(annals::load<bank::account>(*store, d.target_stream, full_fold()), "load");
    for (int i = 0; i < c.reps * c.loads_per_rep; ++i) {
      auto t0 = clock_type::now();
      auto l = check(annals::load<bank::account>(*store, d.target_stream, full_fold()), "load");
      warm.push_back(seconds_since(t0));
      if (l.state.balance_cents != d.target_balance) logic_failure("annals load: wrong fold");
    }
  }
  for (int i = 0; i < c.reps * c.loads_per_rep; ++i) {
    auto t0 = clock_type::now();
    auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
    store.reset();
    open_close.push_back(seconds_since(t0));
  }
  f.extra.emplace_back("ms_per_load", num(median(f.annals_seconds) * 1e3, 3));
  f.extra.emplace_back("baseline_ms_per_load", num(median(f.baseline_seconds) * 1e3, 3));
  f.extra.emplace_back("open_close_ms", num(median(open_close) * 1e3, 3));
  f.extra.emplace_back("ms_per_load_store_already_open", num(median(warm) * 1e3, 3));
  f.extra.emplace_back("store_events", std::to_string(d.total_events));
  f.note = fmt::format(
      "annals::load<bank::account> (snapshots off: the whole stream) of a {}-event stream, {} "
      "other streams' events after each of "
      "its events; store opened (open_sqlite_store) and closed inside each timed load; OS page "
      "cache warm; baseline: new read-only connection, select type+payload by stream ordered "
      "by version, protobuf parse, fold with the same bank::account; both read the same file",
      d.target_events, c.interleave);
  print_figure(f);
}

// ---- aggregate_load by stream length, with and without a snapshot --------------------------

// One store holding one stream per length, each written in one piece (by hand, as dataset()).
struct length_dataset {
  std::string path;
  std::vector<std::int64_t> lengths;
  std::vector<std::string> streams;
  std::vector<std::int64_t> balances;
};

constexpr std::int64_t snapshot_tail = 99;

const length_dataset& lengths_dataset(const config& c, const temp_dir& dir) {
  static std::optional<length_dataset> ds;
  if (ds) return *ds;
  length_dataset d;
  d.path = dir.file("lengths.db");
  d.lengths = c.snapshot_lengths;
  auto t0 = clock_type::now();
  { auto created = annals_create(d.path); }
  // Each stream gets all but its last snapshot_tail events, then a snapshot, then the tail:
  // a load folds the snapshot plus snapshot_tail events, the worst case of saving every
  // snapshot_tail + 1 events (the default, 100).
  std::vector<std::int64_t> sids(d.lengths.size(), 0), versions(d.lengths.size(), -1);
  std::vector<std::string> ids;
  d.balances.assign(d.lengths.size(), 0);
  std::mt19937_64 rng(7);
  auto write = [&](bool tail) {
    raw_db db(d.path);
    db.exec("PRAGMA synchronous=OFF");  // setup only
    raw_writer w(db);
    w.begin.run();
    for (std::size_t k = 0; k < d.lengths.size(); ++k) {
      const std::int64_t head = d.lengths[k] - snapshot_tail;
      for (std::int64_t i = tail ? head : 0; i < (tail ? d.lengths[k] : head); ++i) {
        append_random_event(w, rng, ids[k], d.streams[k], sids[k], versions[k], d.balances[k]);
      }
    }
    w.commit.run();
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  };
  for (std::size_t k = 0; k < d.lengths.size(); ++k) {
    ids.push_back(account_id(500000 + static_cast<std::int64_t>(k)));
    d.streams.push_back(bank::stream_for(ids.back()));
  }
  write(false);
  {
    // Destroying the store flushes its snapshot saves.
    auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
    for (const auto& s : d.streams) {
      (void)check(annals::save_snapshot<bank::account>(*store, s, full_fold()), "save_snapshot");
    }
  }
  write(true);
  note("length dataset: streams of {} events in {:.1f} s, {:.1f} MB",
       fmt::join(d.lengths, ", "), seconds_since(t0),
       static_cast<double>(fs::file_size(d.path)) / 1e6);
  ds = std::move(d);
  return *ds;
}

std::string length_label(std::int64_t n) {
  if (n % 1000000 == 0) return fmt::format("{}M", n / 1000000);
  if (n % 1000 == 0) return fmt::format("{}k", n / 1000);
  return std::to_string(n);
}

void scenario_aggregate_load_snapshot(const config& c, const temp_dir& dir) {
  const auto& d = lengths_dataset(c, dir);
  // Both sides keep their connection open between loads (a service's steady state).
  auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
  raw_db db(d.path, true);
  for (std::size_t k = 0; k < d.lengths.size(); ++k) {
    const std::int64_t n = d.lengths[k];
    const std::string& stream = d.streams[k];
    auto raw_once = [&] {
      auto t0 = clock_type::now();
      raw_stmt sid(db, "SELECT id FROM streams WHERE name = ?1");
      raw_stmt rows(db, "SELECT type, payload FROM events WHERE stream = ?1 ORDER BY "
                        "stream_version");
      raw_folder folder;
      bank::account a;
      std::int64_t seen = 0;
      sid.bind_text(1, stream);
      if (!sid.step()) storage_failure("baseline: no stream");
      rows.bind(1, sid.int64(0));
      sid.reset();
      while (rows.step()) {
        folder.apply(a, rows.text(0), rows.blob(1));
        ++seen;
      }
      rows.reset();
      double secs = seconds_since(t0);
      if (seen != n || a.balance_cents != d.balances[k]) logic_failure("baseline: wrong fold");
      return secs;
    };
    auto annals_once = [&](bool snapshot) {
      annals::load_options o;
      o.use_snapshots = snapshot;
      o.snapshot_every = -1;  // measure loads only: no saves
      auto t0 = clock_type::now();
      auto l = check(annals::load<bank::account>(*store, stream, o), "load");
      double secs = seconds_since(t0);
      if (l.version + 1 != n || l.state.balance_cents != d.balances[k]) {
        logic_failure("annals load: wrong fold");
      }
      if (snapshot != (l.snapshot_version == n - 1 - snapshot_tail)) {
        logic_failure(fmt::format("annals load: snapshot version {}", l.snapshot_version));
      }
      return secs;
    };
    // Full loads: reps per side, alternating; a 1M-event fold takes about a second.
    int full_reps = n >= 1000000 ? c.reps : c.reps * 2;
    figure full;
    full.scenario = "aggregate_load_full";
    full.events = full.baseline_events = n;
    alternate(full_reps, [&] { return annals_once(false); }, raw_once, full.annals_seconds,
              full.baseline_seconds);
    full.extra.emplace_back("stream_events", std::to_string(n));
    full.extra.emplace_back("label", fmt::format("\"{}\"", length_label(n)));
    full.extra.emplace_back("ms_per_load", num(median(full.annals_seconds) * 1e3, 3));
    full.extra.emplace_back("baseline_ms_per_load", num(median(full.baseline_seconds) * 1e3, 3));
    full.note = fmt::format(
        "annals::load<bank::account> with snapshots off: the whole {}-event stream (contiguous), "
        "store already open; baseline: the same rows by a prepared SELECT type, payload ... "
        "ORDER BY stream_version on an open read-only connection, protobuf parse, the same fold",
        n);
    print_figure(full);

    // With a snapshot snapshot_tail events behind the head: many short loads, the median.
    figure snap;
    snap.scenario = "aggregate_load_snapshot";
    snap.events = snap.baseline_events = n;
    int snapshot_loads = c.quick ? 50 : 400;
    for (int i = 0; i < snapshot_loads; ++i) snap.annals_seconds.push_back(annals_once(true));
    snap.baseline_seconds = full.baseline_seconds;
    std::sort(snap.annals_seconds.begin(), snap.annals_seconds.end());
    double ms = median(snap.annals_seconds) * 1e3;
    snap.extra.emplace_back("stream_events", std::to_string(n));
    snap.extra.emplace_back("tail_events", std::to_string(snapshot_tail));
    snap.extra.emplace_back("label", fmt::format("\"{}\"", length_label(n)));
    snap.extra.emplace_back("ms_per_load", num(ms, 4));
    snap.extra.emplace_back("ms_per_load_p90", num(quantile(snap.annals_seconds, 0.9) * 1e3, 4));
    snap.extra.emplace_back("baseline_ms_per_load", num(median(full.baseline_seconds) * 1e3, 3));
    snap.extra.emplace_back("target_ms_per_load", "1");
    snap.extra.emplace_back("target_ms_met", ms < 1 ? "true" : "false");
    snap.note = fmt::format(
        "annals::load<bank::account> of the same {}-event stream from its snapshot plus the {} "
        "events after it (the worst case of the default snapshot_every, 100), store already "
        "open, median of {} loads; events_per_s counts the stream's events; baseline: the full "
        "raw read above, so ratio = speed-up",
        n, snapshot_tail, snapshot_loads);
    print_figure(snap);
  }
}

void scenario_replay(const config& c, const temp_dir& dir) {
  const auto& d = dataset(c, dir);
  auto annals_once = [&] {
    auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
    auto t0 = clock_type::now();
    annals::dispatcher<bank::account> dispatch;
    std::unordered_map<std::string, bank::account> accounts;
    std::optional<annals::error> failed;
    auto n = check(store->read_all({}, [&](const annals::recorded_event& e) {
                     auto r = dispatch.apply(accounts[e.stream_id], e);
                     if (!r) {
                       failed = r.error();
                       return false;
                     }
                     return true;
                   }),
                   "read_all");
    double secs = seconds_since(t0);
    if (failed) throw bench_failure{4, failed->message()};
    std::int64_t total = 0;
    for (auto& [_, a] : accounts) total += a.balance_cents;
    if (n != d.total_events || total != d.total_balance) logic_failure("annals replay: wrong fold");
    return secs;
  };
  auto raw_once = [&] {
    raw_db db(d.path, true);
    auto t0 = clock_type::now();
    raw_stmt rows(db, "SELECT stream, type, payload FROM events ORDER BY position");
    raw_folder folder;
    std::unordered_map<std::int64_t, bank::account> accounts;
    std::int64_t n = 0;
    while (rows.step()) {
      folder.apply(accounts[rows.int64(0)], rows.text(1), rows.blob(2));
      ++n;
    }
    rows.reset();
    double secs = seconds_since(t0);
    std::int64_t total = 0;
    for (auto& [_, a] : accounts) total += a.balance_cents;
    if (n != d.total_events || total != d.total_balance) logic_failure("baseline replay: wrong fold");
    return secs;
  };
  figure f;
  f.scenario = "replay";
  f.events = f.baseline_events = d.total_events;
  f.target = 0.5;
  f.note =
      "read_all from position 1, every event folded into a per-stream bank::account "
      "(annals::dispatcher), page cache warm; baseline: one SELECT stream, type, payload "
      "ORDER BY position on a read-only connection, protobuf parse, the same fold keyed by "
      "the integer stream id; both read the same file";
  alternate(c.reps, annals_once, raw_once, f.annals_seconds, f.baseline_seconds);

  // Where the time goes: reading without folding on both sides, and the store's own query
  // (join for the stream name, every column, pages of 512) run by hand without decoding.
  std::vector<double> annals_read, raw_scan, raw_store_query;
  for (int r = 0; r < c.reps; ++r) {
    {
      auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
      auto t0 = clock_type::now();
      auto n = check(store->read_all({}, [](const annals::recorded_event&) { return true; }),
                     "read_all");
      annals_read.push_back(seconds_since(t0));
      if (n != d.total_events) logic_failure("annals read_all: wrong count");
    }
    {
      raw_db db(d.path, true);
      auto t0 = clock_type::now();
      raw_stmt rows(db, "SELECT stream, type, payload FROM events ORDER BY position");
      std::size_t bytes = 0;
      while (rows.step()) bytes += rows.text(1).size() + rows.blob(2).size() + rows.int64(0);
      raw_scan.push_back(seconds_since(t0));
      if (bytes == 0) logic_failure("baseline scan: empty");
    }
    {
      raw_db db(d.path, true);
      auto t0 = clock_type::now();
      raw_stmt page(db,
                    "SELECT e.position, e.event_id, e.type, e.recorded_at, e.metadata, e.payload, "
                    "e.stream_version, s.name FROM events e JOIN streams s ON s.id = e.stream "
                    "WHERE e.position >= ?1 ORDER BY e.position LIMIT ?2");
      std::int64_t next = 1, n = 0;
      std::size_t bytes = 0;
      for (;;) {
        page.bind(1, next);
        page.bind(2, 512);
        std::int64_t rows = 0;
        while (page.step()) {
          ++rows;
          next = page.int64(0) + 1;
          bytes += page.blob(1).size() + page.text(2).size() + page.blob(4).size() +
                   page.blob(5).size() + page.text(7).size() +
                   static_cast<std::size_t>(page.int64(3) + page.int64(6));
        }
        page.reset();
        n += rows;
        if (rows < 512) break;
      }
      raw_store_query.push_back(seconds_since(t0));
      if (n != d.total_events || bytes == 0) logic_failure("baseline store query: wrong count");
    }
  }
  auto rate = [&](const std::vector<double>& v) {
    return num(static_cast<double>(d.total_events) / median(v), 0);
  };
  f.extra.emplace_back("annals_read_all_no_fold_per_s", rate(annals_read));
  f.extra.emplace_back("baseline_scan_no_parse_per_s", rate(raw_scan));
  f.extra.emplace_back("baseline_store_query_no_decode_per_s", rate(raw_store_query));
  print_figure(f);
}

// ---- rebuild: the bank read models over a large store ----------------------------------------

struct rebuild_dataset {
  std::string path;
  std::int64_t events = 0;
  std::int64_t accounts = 0;
  std::int64_t appends = 0;
  std::int64_t money_events = 0;  // deposits + withdrawals
  std::int64_t total_balance = 0;
  double build_seconds = 0;
};

// The store the rebuild replays: every account opened, then deposits and withdrawals (a
// withdrawal only when the balance covers it) on random accounts, 1-4 events per append (a
// command's worth), each append with a command's correlation and causation ids. Like the read
// dataset: created through the API, then filled by hand (synchronous=OFF, 100k events per
// transaction) with the rows the store writes (UUIDv7 ids, metadata, bank payloads), which is
// several times faster than appending 1M events through the store. recorded_at moves from
// 2025-01-01 over 365 days as the events are written, so daily_totals gets one row per day, as
// in a store written over a year.
rebuild_dataset make_rebuild_dataset(const config& c, const temp_dir& dir) {
  rebuild_dataset d;
  d.path = dir.file("rebuild.db");
  d.accounts = std::max<std::int64_t>(1, std::min(c.rebuild_accounts, c.rebuild_events));
  note("building the rebuild dataset: {} events on {} accounts", c.rebuild_events, d.accounts);
  auto t0 = clock_type::now();
  { auto created = annals_create(d.path); }
  {
    raw_db db(d.path);
    db.exec("PRAGMA synchronous=OFF");  // setup only
    raw_writer w(db);
    auto n = static_cast<std::size_t>(d.accounts);
    std::vector<std::int64_t> sid(n, 0), version(n, -1);
    w.begin.run();
    auto h = generate_bank_history(
        c.rebuild_events, d.accounts,
        [&](std::size_t i, const std::string& stream, const history_event* e, std::size_t k,
            std::int64_t at, std::int64_t appends) {
          std::string cmd = w.ids.text();
          version[i] = w.append_in_tx(stream, sid[i], version[i], version[i], e, k,
                                      raw_metadata(cmd, cmd), at);
          if (appends % 40000 == 0) {  // about 100k events per transaction
            w.commit.run();
            w.begin.run();
          }
        });
    w.commit.run();
    d.events = h.events;
    d.appends = h.appends;
    d.money_events = h.money_events;
    d.total_balance = h.total_balance;
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  d.build_seconds = seconds_since(t0);
  note("rebuild dataset: {} events in {} appends, {:.1f} s, {:.1f} MB", d.events, d.appends,
       d.build_seconds, static_cast<double>(fs::file_size(d.path)) / 1e6);
  return d;
}

// The bank read models written by hand: the same three tables (columns, types, NOT NULL,
// primary keys, WITHOUT ROWID: what read_model.cpp's create_table_sql generates), under other
// names in the same file, and the same statements per event as the bank projections run
// (samples/bank/projections.cpp): account_balances reads the account's row and upserts it
// whole; account_statement reads the movement of the version before (else selects the latest
// one before) for the running balance and upserts the movement;
// daily_totals runs one INSERT ... ON CONFLICT DO UPDATE that adds to the day's row.
struct raw_model_names {
  std::string balances, statement, daily;
};

std::string raw_models_ddl(const raw_model_names& t) {
  return fmt::format(
      "CREATE TABLE {} (\"account_id\" TEXT NOT NULL, \"owner\" TEXT NOT NULL, "
      "\"balance_cents\" INTEGER NOT NULL, \"transaction_count\" INTEGER NOT NULL, "
      "\"opened\" INTEGER NOT NULL, \"closed\" INTEGER NOT NULL, \"opened_at_us\" INTEGER NOT "
      "NULL, \"last_activity_us\" INTEGER NOT NULL, \"closed_at_us\" INTEGER, "
      "PRIMARY KEY (\"account_id\")) WITHOUT ROWID;\n"
      "CREATE TABLE {} (\"account_id\" TEXT NOT NULL, \"stream_version\" INTEGER NOT NULL, "
      "\"recorded_at_us\" INTEGER NOT NULL, \"kind\" TEXT NOT NULL, \"amount_cents\" INTEGER NOT "
      "NULL, \"balance_after_cents\" INTEGER NOT NULL, \"memo\" TEXT NOT NULL, "
      "PRIMARY KEY (\"account_id\", \"stream_version\")) WITHOUT ROWID;\n"
      "CREATE TABLE {} (\"day\" TEXT NOT NULL, \"deposits_cents\" INTEGER NOT NULL, "
      "\"withdrawals_cents\" INTEGER NOT NULL, \"deposit_count\" INTEGER NOT NULL, "
      "\"withdrawal_count\" INTEGER NOT NULL, PRIMARY KEY (\"day\")) WITHOUT ROWID;\n",
      t.balances, t.statement, t.daily);
}

class raw_read_models {
 public:
  raw_read_models(raw_db& db, const raw_model_names& t)
      : find_balance_(db, fmt::format("SELECT account_id, owner, balance_cents, transaction_count, "
                                      "opened, closed, opened_at_us, last_activity_us, "
                                      "closed_at_us FROM {} WHERE account_id = ?1",
                                      t.balances)),
        upsert_balance_(
            db, fmt::format("INSERT INTO {} (account_id, owner, balance_cents, transaction_count, "
                            "opened, closed, opened_at_us, last_activity_us, closed_at_us) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                            "ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, "
                            "balance_cents = excluded.balance_cents, "
                            "transaction_count = excluded.transaction_count, "
                            "opened = excluded.opened, closed = excluded.closed, "
                            "opened_at_us = excluded.opened_at_us, "
                            "last_activity_us = excluded.last_activity_us, "
                            "closed_at_us = excluded.closed_at_us",
                            t.balances)),
        find_movement_(db, fmt::format("SELECT balance_after_cents FROM {} "
                                       "WHERE account_id = ?1 AND stream_version = ?2",
                                       t.statement)),
        previous_balance_(db, fmt::format("SELECT balance_after_cents FROM {} "
                                          "WHERE account_id = ?1 AND stream_version < ?2 "
                                          "ORDER BY stream_version DESC LIMIT 1",
                                          t.statement)),
        upsert_movement_(
            db, fmt::format("INSERT INTO {} (account_id, stream_version, recorded_at_us, kind, "
                            "amount_cents, balance_after_cents, memo) VALUES (?1, ?2, ?3, ?4, ?5, "
                            "?6, ?7) ON CONFLICT (account_id, stream_version) DO UPDATE SET "
                            "recorded_at_us = excluded.recorded_at_us, kind = excluded.kind, "
                            "amount_cents = excluded.amount_cents, "
                            "balance_after_cents = excluded.balance_after_cents, "
                            "memo = excluded.memo",
                            t.statement)),
        add_to_day_(db, fmt::format("INSERT INTO {} (day, deposits_cents, withdrawals_cents, "
                                    "deposit_count, withdrawal_count) VALUES (?1, ?2, ?3, ?4, ?5) "
                                    "ON CONFLICT (day) DO UPDATE SET "
                                    "deposits_cents = deposits_cents + excluded.deposits_cents, "
                                    "withdrawals_cents = withdrawals_cents + "
                                    "excluded.withdrawals_cents, "
                                    "deposit_count = deposit_count + excluded.deposit_count, "
                                    "withdrawal_count = withdrawal_count + "
                                    "excluded.withdrawal_count",
                                    t.daily)) {}

  // One stored event (the columns the models need), parsed and applied to all three models.
  void apply(std::string_view type, std::int64_t at, std::int64_t stream_version,
             std::string_view payload) {
    auto parse = [&](google::protobuf::Message& m) {
      if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        storage_failure(fmt::format("baseline: undecodable {} payload", type));
      }
    };
    if (type == type_deposited()) {
      parse(deposited_);
      money(deposited_.account_id(), at, stream_version, "deposit", deposited_.amount_cents(),
            deposited_.amount_cents());
    } else if (type == type_withdrawn()) {
      parse(withdrawn_);
      money(withdrawn_.account_id(), at, stream_version, "withdrawal", withdrawn_.amount_cents(),
            -withdrawn_.amount_cents());
    } else if (type == type_opened()) {
      parse(opened_);
      balance b;
      b.account_id = opened_.account_id();
      b.owner = bank::full_name(opened_.owner());
      b.opened = true;
      b.opened_at_us = at;
      b.last_activity_us = at;
      put(b);
    } else if (type == bank::v1::AccountClosed::descriptor()->full_name()) {
      parse(closed_);
      balance b;
      get(closed_.account_id(), b);
      b.closed = true;
      b.closed_at_us = at;
      b.last_activity_us = at;
      put(b);
    } else {
      storage_failure(fmt::format("baseline: unknown event type '{}'", type));
    }
  }

 private:
  struct balance {
    std::string account_id, owner;
    std::int64_t balance_cents = 0, transaction_count = 0;
    bool opened = false, closed = false;
    std::int64_t opened_at_us = 0, last_activity_us = 0;
    std::optional<std::int64_t> closed_at_us;
  };

  void get(const std::string& account, balance& b) {
    raw_stmt& s = find_balance_;
    s.bind_text(1, account);
    if (!s.step()) {
      s.reset();
      logic_failure(fmt::format("baseline: account '{}' was never opened", account));
    }
    b.account_id = s.text(0);
    b.owner = s.text(1);
    b.balance_cents = s.int64(2);
    b.transaction_count = s.int64(3);
    b.opened = s.int64(4) != 0;
    b.closed = s.int64(5) != 0;
    b.opened_at_us = s.int64(6);
    b.last_activity_us = s.int64(7);
    if (s.is_null(8)) {
      b.closed_at_us.reset();
    } else {
      b.closed_at_us = s.int64(8);
    }
    s.reset();
  }

  void put(const balance& b) {
    raw_stmt& s = upsert_balance_;
    s.bind_text(1, b.account_id);
    s.bind_text(2, b.owner);
    s.bind(3, b.balance_cents);
    s.bind(4, b.transaction_count);
    s.bind(5, b.opened);
    s.bind(6, b.closed);
    s.bind(7, b.opened_at_us);
    s.bind(8, b.last_activity_us);
    if (b.closed_at_us) {
      s.bind(9, *b.closed_at_us);
    } else {
      s.bind_null(9);
    }
    s.run();
  }

  void money(const std::string& account, std::int64_t at, std::int64_t stream_version,
             std::string_view kind, std::int64_t amount, std::int64_t signed_amount) {
    // account_balances
    get(account, row_);
    row_.balance_cents += signed_amount;
    ++row_.transaction_count;
    row_.last_activity_us = at;
    put(row_);
    // account_statement: the running balance
    std::int64_t before = 0;
    find_movement_.bind_text(1, account);
    find_movement_.bind(2, stream_version - 1);
    if (find_movement_.step()) {
      before = find_movement_.int64(0);
    } else {
      previous_balance_.bind_text(1, account);
      previous_balance_.bind(2, stream_version);
      if (previous_balance_.step()) before = previous_balance_.int64(0);
      previous_balance_.reset();
    }
    find_movement_.reset();
    upsert_movement_.bind_text(1, account);
    upsert_movement_.bind(2, stream_version);
    upsert_movement_.bind(3, at);
    upsert_movement_.bind_text(4, kind);
    upsert_movement_.bind(5, amount);
    upsert_movement_.bind(6, before + signed_amount);
    upsert_movement_.bind_text(7, "");  // plain deposits and withdrawals carry no memo
    upsert_movement_.run();
    // daily_totals: one statement that creates the day's row or adds to it
    std::string day = bank::utc_day(at);
    bool deposit = signed_amount >= 0;
    add_to_day_.bind_text(1, day);
    add_to_day_.bind(2, deposit ? amount : 0);
    add_to_day_.bind(3, deposit ? 0 : amount);
    add_to_day_.bind(4, deposit ? 1 : 0);
    add_to_day_.bind(5, deposit ? 0 : 1);
    add_to_day_.run();
  }

  raw_stmt find_balance_, upsert_balance_, find_movement_, previous_balance_, upsert_movement_,
      add_to_day_;
  bank::v2::AccountOpened opened_;
  bank::v1::MoneyDeposited deposited_;
  bank::v1::MoneyWithdrawn withdrawn_;
  bank::v1::AccountClosed closed_;
  balance row_;
};

const raw_model_names& raw_live_names() {
  static const raw_model_names n{"bl_account_balances", "bl_account_statement", "bl_daily_totals"};
  return n;
}

// The hand-written rebuild: fresh tables, then per transaction of `batch` events: select the
// next rows of the events table by position, parse, apply to the three models, commit; then
// swap the new tables in (drop the old ones, rename), as the framework's rebuild does.
// One connection, WAL, synchronous=FULL (what the runner's writer connection sets).
double raw_rebuild_once(const rebuild_dataset& d, std::int64_t batch) {
  const raw_model_names& live = raw_live_names();
  raw_model_names fresh{live.balances + "__new", live.statement + "__new", live.daily + "__new"};
  auto t0 = clock_type::now();
  raw_db db(d.path);
  db.exec("PRAGMA synchronous=FULL");
  db.exec(fmt::format("BEGIN IMMEDIATE; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; "
                      "DROP TABLE IF EXISTS {}; {} COMMIT;",
                      fresh.balances, fresh.statement, fresh.daily, raw_models_ddl(fresh))
              .c_str());
  {
    raw_read_models models(db, fresh);
    raw_stmt begin(db, "BEGIN IMMEDIATE");
    raw_stmt commit(db, "COMMIT");
    raw_stmt scan(db,
                  "SELECT position, type, recorded_at, stream_version, payload FROM events "
                  "WHERE position > ?1 ORDER BY position LIMIT ?2");
    std::int64_t after = 0, n = 0;
    for (;;) {
      begin.run();
      scan.bind(1, after);
      scan.bind(2, batch);
      std::int64_t rows = 0;
      while (scan.step()) {
        ++rows;
        after = scan.int64(0);
        models.apply(scan.text(1), scan.int64(2), scan.int64(3), scan.blob(4));
      }
      scan.reset();
      commit.run();
      n += rows;
      if (rows < batch) break;
    }
    if (n != d.events) {
      logic_failure(fmt::format("baseline rebuild: {} events, not {}", n, d.events));
    }
  }
  std::string swap = "BEGIN IMMEDIATE; ";
  for (auto [old_name, new_name] : {std::pair{live.balances, fresh.balances},
                                    std::pair{live.statement, fresh.statement},
                                    std::pair{live.daily, fresh.daily}}) {
    swap += fmt::format("DROP TABLE IF EXISTS {}; ALTER TABLE {} RENAME TO {}; ", old_name,
                        new_name, old_name);
  }
  db.exec((swap + "COMMIT;").c_str());
  return seconds_since(t0);
}

// Rows that differ between the framework's model and the baseline's (both directions).
std::int64_t model_differences(const std::string& path) {
  raw_db db(path, true);
  const raw_model_names& b = raw_live_names();
  std::int64_t total = 0;
  for (auto [ours, theirs] : {std::pair<std::string, std::string>{"account_balances", b.balances},
                              {"account_statement", b.statement},
                              {"daily_totals", b.daily}}) {
    for (auto [x, y] : {std::pair{ours, theirs}, std::pair{theirs, ours}}) {
      raw_stmt q(db, fmt::format("SELECT count(*) FROM (SELECT * FROM {} EXCEPT SELECT * FROM {})",
                                 x, y));
      if (q.step()) total += q.int64(0);
      q.reset();
    }
  }
  return total;
}

std::int64_t model_total_balance(const std::string& path, const std::string& table) {
  raw_db db(path, true);
  raw_stmt q(db, fmt::format("SELECT coalesce(sum(balance_cents), 0) FROM {}", table));
  std::int64_t v = q.step() ? q.int64(0) : 0;
  q.reset();
  return v;
}

void scenario_rebuild(const config& c, const temp_dir& dir) {
  auto d = make_rebuild_dataset(c, dir);
  const std::int64_t batch = annals::rebuild_options{}.batch_size;
  std::vector<std::string> names;
  for (const auto& p : bank::projections()) names.push_back(p->name);
  std::map<std::string, std::vector<double>> per_projection;
  double peak = 0, rss_before = 0;
  bool scoped = true;
  auto annals_once = [&] {
    malloc_trim(0);  // give freed heap back, so the peak below is the rebuild's own
    scoped = reset_peak_rss() && scoped;
    rss_before = std::max(rss_before, current_rss_mb());
    auto t0 = clock_type::now();
    {
      // What `bank --db FILE projections rebuild NAME` does, for each of the three.
      auto runner = check(bank::open_read_models(d.path), "cannot open the projection runner");
      for (const auto& name : names) {
        auto rep = check(runner->rebuild(name), "rebuild");
        std::int64_t want = name == "account_balances" ? d.events : d.money_events;
        if (!rep.swapped || rep.events != want) {
          logic_failure(fmt::format("rebuild {}: {} events applied, {} expected", name,
                                    rep.events, want));
        }
        per_projection[name].push_back(rep.seconds);
      }
    }
    double secs = seconds_since(t0);
    peak = std::max(peak, peak_rss_mb());
    return secs;
  };
  auto raw_once = [&] { return raw_rebuild_once(d, batch); };
  figure f;
  f.scenario = "rebuild";
  f.events = f.baseline_events = d.events;
  f.target = 0.7;
  alternate(c.rebuild_reps(), annals_once, raw_once, f.annals_seconds, f.baseline_seconds);

  // Both models must be the same rows, and add up.
  auto check_models = [&](std::string_view what) {
    auto diff = model_differences(d.path);
    auto total = model_total_balance(d.path, "account_balances");
    if (diff != 0 || total != d.total_balance ||
        model_total_balance(d.path, raw_live_names().balances) != d.total_balance) {
      logic_failure(fmt::format("{}: {} rows differ from the baseline's; balances sum to {}, "
                                "expected {}",
                                what, diff, total, d.total_balance));
    }
  };
  auto tc = clock_type::now();
  check_models("rebuild");
  double check_secs = seconds_since(tc);

  // The other path to a full model: a runner catching up from checkpoint 0 (a new projection
  // in a running app), default runner_options (1,000 events per transaction). Measured once,
  // with --catch-up or --quick: at 1M events it takes longer than the three rebuild reps.
  double catch_up_secs = 0, catch_up_peak = 0;
  if (c.rebuild_catch_up) {
    auto runner = check(bank::open_read_models(d.path), "cannot open the projection runner");
    for (const auto& name : names) check(runner->reset(name), "reset");
    malloc_trim(0);
    bool s = reset_peak_rss();
    auto t0 = clock_type::now();
    auto n = check(runner->catch_up(), "catch_up").events;
    catch_up_secs = seconds_since(t0);
    catch_up_peak = s ? peak_rss_mb() : 0;
    if (n != d.events + 2 * d.money_events) {
      logic_failure(fmt::format("catch_up applied {} events, expected {}", n,
                                d.events + 2 * d.money_events));
    }
  }
  if (c.rebuild_catch_up) check_models("catch_up");

  f.peak_rss = peak;
  f.peak_rss_scope = scoped ? "rebuild" : "process";
  f.extra.emplace_back("peak_rss_target_mb", "64");
  f.extra.emplace_back("peak_rss_target_met", peak < 64 ? "true" : "false");
  f.extra.emplace_back("rss_before_rebuild_mb", num(rss_before, 1));
  for (const auto& name : names) {
    f.extra.emplace_back(name + "_s", num(median(per_projection[name]), 3));
  }
  if (c.rebuild_catch_up) {
    f.extra.emplace_back("catch_up_from_0_s", num(catch_up_secs, 3));
    f.extra.emplace_back("catch_up_from_0_per_s",
                         num(static_cast<double>(d.events) / catch_up_secs, 1));
    // The catch-up rate beside the same run's baseline median.
    f.extra.emplace_back("catch_up_ratio", num(median(f.baseline_seconds) / catch_up_secs, 3));
    f.extra.emplace_back("catch_up_peak_rss_mb", num(catch_up_peak, 1));
  }
  f.extra.emplace_back("accounts", std::to_string(d.accounts));
  f.extra.emplace_back("money_events", std::to_string(d.money_events));
  f.extra.emplace_back("store_mb", num(static_cast<double>(fs::file_size(d.path)) / 1e6, 1));
  f.extra.emplace_back("dataset_build_s", num(d.build_seconds, 1));
  f.extra.emplace_back("model_check_s", num(check_secs, 1));
  f.note = fmt::format(
      "bank::open_read_models + projection_runner::rebuild of account_balances, "
      "account_statement and daily_totals in turn (the `projections rebuild NAME` path: shadow "
      "tables, {}-event transactions, swap; 3 filtered passes over the log), store of {} "
      "events on {} accounts (opens, then deposits/withdrawals, 1-4 per append, recorded_at over "
      "365 days); baseline: one connection, per {}-event transaction select the next events by "
      "position, protobuf parse, the same statements per event on the same three table shapes "
      "(find + upsert balance row, previous running balance + upsert statement row, one "
      "additive upsert of the day row), then drop + rename, WAL synchronous=FULL, same file; "
      "models compared row by row after the reps; {} reps per side (at most 3 unless --reps "
      "is given: 1M events per run); peak_rss_mb: max over the rebuild reps, peak reset "
      "before each{}",
      batch, d.events, d.accounts, batch, c.rebuild_reps(),
      c.rebuild_catch_up ? "; catch_up_from_0: one runner catch_up() after reset(), default "
                           "1000-event transactions, run once"
                         : "");
  print_figure(f);
}

// ---- live_lag (read_side.cpp): on SQLite files in the temp dir -----------------------------

void scenario_live_lag(const config& c, const temp_dir& dir) {
  store_source files;
  files.create = [&dir](std::string_view label) {
    auto path = dir.file(fmt::format("{}.db", label));
    remove_db(path);
    return path;
  };
  files.remove = [](const std::string& path) { remove_db(path); };
  run_live_lag(c, files, {});
}

void scenario_relay(const config& c, const temp_dir& dir) { run_relay(c, dir.path()); }

void scenario_sse_fanout(const config& c, const temp_dir& dir) { run_sse_fanout(c, dir.path()); }

// ---- main ---------------------------------------------------------------------------------

const std::vector<std::pair<std::string, void (*)(const config&, const temp_dir&)>>& scenarios() {
  static const std::vector<std::pair<std::string, void (*)(const config&, const temp_dir&)>> s = {
      {"append_single", scenario_append_single},
      {"append_batch", scenario_append_batch},
      {"append_concurrent", scenario_append_concurrent},
      {"command_throughput", scenario_command_throughput},
      {"aggregate_load", scenario_aggregate_load},
      {"aggregate_load_snapshot", scenario_aggregate_load_snapshot},
      {"replay", scenario_replay},
      {"rebuild", scenario_rebuild},
      {"live_lag", scenario_live_lag},
      {"relay", scenario_relay},  // only with --nats
      {"sse_fanout", scenario_sse_fanout},
  };
  return s;
}

void usage(std::FILE* out) {
  std::string names, pg_names;
  for (auto& [n, _] : scenarios()) names += (names.empty() ? "" : ", ") + n;
  for (auto& n : pg_scenario_names()) pg_names += (pg_names.empty() ? "" : ", ") + n;
  fmt::print(out,
             "usage: annals-bench [--quick] [--scenario NAME] [--dir DIR] [--reps N]\n"
             "                    [--rebuild-events N] [--catch-up] [--backend URI] [--nats URL]\n"
             "  --quick          small counts (whole run well under 20 s)\n"
             "  --scenario NAME  run one scenario: {}\n"
             "                   (PostgreSQL: {})\n"
             "  --backend URI    postgresql://... : the PostgreSQL figures, each scenario in "
             "databases of\n"
             "                   its own created on that server (and dropped); default: SQLite "
             "files\n"
             "  --nats URL       a NATS server with JetStream: runs the relay scenario (skipped "
             "without)\n"
             "  --dir DIR        put the temporary database files under DIR (default $TMPDIR "
             "or /tmp)\n"
             "  --reps N         runs per side per scenario, medians reported (default 5, "
             "quick 3;\n"
             "                   rebuild: at most 3 unless --reps is given)\n"
             "  --rebuild-events N  events in the rebuild scenario's store (default 1000000, "
             "quick 20000)\n"
             "  --catch-up       rebuild: also time a runner's catch_up() from position 0 (always "
             "with --quick)\n"
             "  --scale-events N  PostgreSQL scale: the store's final size (default 10000000, "
             "quick 20000;\n"
             "                   runs only when named or with --quick)\n"
             "  --scale-steps N  PostgreSQL scale: probes after each of N steps (default 10, "
             "quick 2)\n"
             "Prints one JSON line per figure on stdout. Exit: 0 ok, 2 bad arguments, 4 storage "
             "error.\n",
             names, pg_names);
}

}  // namespace

int main(int argc, char** argv) {
  config c;
  std::optional<int> reps;
  std::optional<std::int64_t> rebuild_events, scale_events, scale_steps;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    auto a = args[i];
    auto value = [&](std::string_view name) -> std::string {
      if (auto eq = a.find('='); eq != std::string_view::npos) return std::string(a.substr(eq + 1));
      if (i + 1 >= args.size()) {
        fmt::print(stderr, "annals-bench: {} needs a value\n", name);
        usage(stderr);
        std::exit(2);
      }
      return std::string(args[++i]);
    };
    auto is = [&](std::string_view name) {
      return a == name || (a.size() > name.size() && a.substr(0, name.size()) == name &&
                           a[name.size()] == '=');
    };
    if (a == "--quick") {
      c.make_quick();
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else if (is("--scenario")) {
      c.scenario = value("--scenario");
    } else if (is("--backend")) {
      c.backend = value("--backend");
      if (!is_postgres_uri(c.backend)) {
        fmt::print(stderr, "annals-bench: --backend takes a postgresql:// URI, not '{}'\n",
                   c.backend);
        return 2;
      }
    } else if (is("--nats")) {
      c.nats = value("--nats");
    } else if (is("--dir")) {
      c.dir = value("--dir");
    } else if (a == "--catch-up") {
      c.rebuild_catch_up = true;
    } else if (is("--rebuild-events")) {
      std::string v = value("--rebuild-events");
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1000 || n > 100000000) {
        fmt::print(stderr,
                   "annals-bench: --rebuild-events must be a number from 1000 to 100000000, "
                   "not '{}'\n",
                   v);
        return 2;
      }
      rebuild_events = n;
    } else if (is("--scale-events") || is("--scale-steps")) {
      bool events = is("--scale-events");
      std::string v = value(events ? "--scale-events" : "--scale-steps");
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      long long lo = events ? 1000 : 1, hi = events ? 1000000000 : 100;
      if (v.empty() || *end != '\0' || n < lo || n > hi) {
        fmt::print(stderr, "annals-bench: {} must be a number from {} to {}, not '{}'\n",
                   events ? "--scale-events" : "--scale-steps", lo, hi, v);
        return 2;
      }
      (events ? scale_events : scale_steps) = n;
    } else if (is("--reps")) {
      std::string v = value("--reps");
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 100) {
        fmt::print(stderr, "annals-bench: --reps must be a number from 1 to 100, not '{}'\n", v);
        return 2;
      }
      reps = static_cast<int>(n);
    } else {
      fmt::print(stderr, "annals-bench: unknown argument '{}'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (rebuild_events) c.rebuild_events = *rebuild_events;
  if (scale_events) c.scale_events = *scale_events;
  if (scale_steps) c.scale_steps = static_cast<int>(*scale_steps);
  if (reps) {
    c.reps = *reps;
    c.reps_given = true;
  }
  if (!c.scenario.empty()) {
    bool known = false;
    if (c.backend.empty()) {
      for (auto& [n, _] : scenarios()) known = known || n == c.scenario;
    } else {
      for (auto& n : pg_scenario_names()) known = known || n == c.scenario;
    }
    if (!known) {
      fmt::print(stderr, "annals-bench: unknown scenario '{}'\n", c.scenario);
      usage(stderr);
      return 2;
    }
  }
  if (!c.dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(c.dir, ec)) {
      fmt::print(stderr, "annals-bench: --dir '{}' is not a directory\n", c.dir);
      return 2;
    }
  }

  try {
    if (!c.backend.empty()) {
      note("PostgreSQL figures; {} runs per side{}", c.reps, c.quick ? " (quick)" : "");
      auto t0 = clock_type::now();
      for (auto& name : pg_scenario_names()) {
        if (!c.scenario.empty() && c.scenario != name) continue;
        if (c.scenario.empty() && name == "scale" && !c.quick) {
          note("scenario scale skipped: it runs when named (--scenario scale) or with --quick");
          continue;
        }
        note("scenario {} ...", name);
        peak_rss_per_scenario = reset_peak_rss();
        auto s0 = clock_type::now();
        run_pg_scenario(name, c);
        note("scenario {} took {:.1f} s", name, seconds_since(s0));
      }
      note("done in {:.1f} s", seconds_since(t0));
      return 0;
    }
    temp_dir dir(c.dir);
    note("databases under {}; {} runs per side{}", dir.path(), c.reps, c.quick ? " (quick)" : "");
    auto t0 = clock_type::now();
    for (auto& [name, run] : scenarios()) {
      if (!c.scenario.empty() && c.scenario != name) continue;
      note("scenario {} ...", name);
      peak_rss_per_scenario = reset_peak_rss();
      auto s0 = clock_type::now();
      run(c, dir);
      note("scenario {} took {:.1f} s", name, seconds_since(s0));
    }
    note("done in {:.1f} s", seconds_since(t0));
  } catch (const bench_failure& f) {
    fmt::print(stderr, "annals-bench: {}\n", f.message);
    return f.code;
  } catch (const std::exception& e) {
    fmt::print(stderr, "annals-bench: {}\n", e.what());
    return 4;
  }
  return 0;
}
