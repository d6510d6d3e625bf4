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
// Exit codes: 0 ok, 2 bad arguments, 4 storage error (annals::exit_code of a store error;
// a failed raw-SQLite call is 4 too), 1 when a result check fails (a fold that does not add up).
#include <annals/aggregate.hpp>
#include <annals/command.hpp>
#include <annals/event_store.hpp>

#include "account.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
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

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

// ---- failures -----------------------------------------------------------------------------

struct bench_failure {
  int code;
  std::string message;
};

template <class T>
T check(annals::result<T> r, std::string_view what) {
  if (!r) {
    throw bench_failure{annals::exit_code(r.error().kind()),
                        fmt::format("{}: {}", what, r.error().message())};
  }
  return std::move(r).value();
}

[[noreturn]] void storage_failure(std::string message) { throw bench_failure{4, std::move(message)}; }
[[noreturn]] void logic_failure(std::string message) { throw bench_failure{1, std::move(message)}; }

template <class... Args>
void note(fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(stderr, "annals-bench: {}\n", fmt::format(f, std::forward<Args>(args)...));
  std::fflush(stderr);
}

// ---- configuration ------------------------------------------------------------------------

struct config {
  bool quick = false;
  int reps = 5;
  std::string scenario;  // empty: all
  std::string dir;       // parent of the temp dir; empty: $TMPDIR or /tmp

  // append_single / the 1-appender reference of append_concurrent
  std::int64_t single_events = 3000;
  std::int64_t single_streams = 100;
  // append_batch
  std::int64_t batch_events = 100000;
  std::int64_t batch_size = 100;
  // append_concurrent
  int threads = 8;
  std::int64_t concurrent_events = 16000;
  // command_throughput
  std::int64_t accounts = 1000;
  std::int64_t commands = 2000;
  // aggregate_load / replay dataset: target stream length and other events per target event
  std::int64_t load_stream_events = 10000;
  std::int64_t interleave = 19;
  std::int64_t other_streams = 1000;
  int loads_per_rep = 6;
  int blocks = 20;  // alternating blocks per rep in the write scenarios

  void make_quick() {
    quick = true;
    reps = 3;
    single_events = 600;
    batch_events = 20000;
    concurrent_events = 4000;
    accounts = 200;
    commands = 500;
    load_stream_events = 2000;
    other_streams = 200;
    loads_per_rep = 4;
    blocks = 6;
  }
};

// ---- small utilities ----------------------------------------------------------------------

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Linux resets the peak RSS (VmHWM, and so ru_maxrss) when "5" is written to clear_refs.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string num(double v, int digits = 1) { return fmt::format("{:.{}f}", v, digits); }

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

// ---- bank data ------------------------------------------------------------------------------

// Account ids look like UUIDs (36 characters), so payloads are 40-60 bytes.
std::string account_id(std::int64_t i) {
  return fmt::format("0190a1b2-7c3d-7e4f-8a9b-{:012x}", static_cast<std::uint64_t>(i));
}

const std::string& type_opened() {
  static const std::string t = bank::v1::AccountOpened::descriptor()->full_name();
  return t;
}
const std::string& type_deposited() {
  static const std::string t = bank::v1::MoneyDeposited::descriptor()->full_name();
  return t;
}
const std::string& type_withdrawn() {
  static const std::string t = bank::v1::MoneyWithdrawn::descriptor()->full_name();
  return t;
}

std::string opened_payload(const std::string& id, std::int64_t i) {
  bank::v1::AccountOpened e;
  e.set_account_id(id);
  e.set_owner(fmt::format("Owner Number {:06}", i));
  return e.SerializeAsString();
}
std::string deposited_payload(const std::string& id, std::int64_t cents) {
  bank::v1::MoneyDeposited e;
  e.set_account_id(id);
  e.set_amount_cents(cents);
  return e.SerializeAsString();
}
std::string withdrawn_payload(const std::string& id, std::int64_t cents) {
  bank::v1::MoneyWithdrawn e;
  e.set_account_id(id);
  e.set_amount_cents(cents);
  return e.SerializeAsString();
}

// Applies one stored bank event (type + payload) to an account, as hand-written code would.
struct raw_folder {
  bank::v1::AccountOpened opened;
  bank::v1::MoneyDeposited deposited;
  bank::v1::MoneyWithdrawn withdrawn;
  bank::v1::AccountClosed closed;

  void apply(bank::account& a, std::string_view type, std::string_view payload) {
    auto parse = [&](google::protobuf::Message& m) {
      if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        storage_failure(fmt::format("baseline: undecodable {} payload", type));
      }
    };
    if (type == type_deposited()) {
      parse(deposited);
      a.apply(std::as_const(deposited));
    } else if (type == type_withdrawn()) {
      parse(withdrawn);
      a.apply(std::as_const(withdrawn));
    } else if (type == type_opened()) {
      parse(opened);
      a.apply(std::as_const(opened));
    } else if (type == bank::v1::AccountClosed::descriptor()->full_name()) {
      parse(closed);
      a.apply(std::as_const(closed));
    } else {
      storage_failure(fmt::format("baseline: unknown event type '{}'", type));
    }
  }
};

// UUIDv7 bytes for the baseline (the store generates the same kind of id: time-ordered, so
// both sides insert into the event_id index the same way).
class raw_ids {
 public:
  raw_ids() : rng_(std::random_device{}()) {}
  std::array<unsigned char, 16> next() {
    auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
    if (ms > last_ms_) {
      last_ms_ = ms;
      counter_ = static_cast<std::uint32_t>(rng_() & 0x7ff);
    } else if (++counter_ > 0xfff) {
      ++last_ms_;
      counter_ = static_cast<std::uint32_t>(rng_() & 0x7ff);
    }
    std::array<unsigned char, 16> b{};
    for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(last_ms_ >> (40 - 8 * i));
    b[6] = static_cast<unsigned char>(0x70 | ((counter_ >> 8) & 0x0f));
    b[7] = static_cast<unsigned char>(counter_ & 0xff);
    std::uint64_t r = rng_();
    for (int i = 8; i < 16; ++i) b[i] = static_cast<unsigned char>(r >> (8 * (i - 8)));
    b[8] = static_cast<unsigned char>(0x80 | (b[8] & 0x3f));
    return b;
  }
  std::string text() {
    auto b = next();
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (int i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
      s.push_back(digits[b[i] >> 4]);
      s.push_back(digits[b[i] & 15]);
    }
    return s;
  }

 private:
  std::mt19937_64 rng_;
  std::uint64_t last_ms_ = 0;
  std::uint32_t counter_ = 0;
};

// annals.v1.EventMetadata{correlation_id = 1, causation_id = 2} in protobuf wire format,
// written by hand (what the store writes for a command's events).
std::string raw_metadata(std::string_view correlation, std::string_view causation) {
  std::string out;
  auto field = [&](char tag, std::string_view v) {
    if (v.empty()) return;
    out.push_back(tag);
    out.push_back(static_cast<char>(v.size()));  // < 128 bytes here
    out.append(v);
  };
  field('\x0a', correlation);
  field('\x12', causation);
  return out;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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

// The store's table shape (framework/src/store/sqlite/sqlite_store.cpp), same durability.
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

  struct event {
    const std::string* type;
    const std::string* payload;
  };

  // Inside a transaction: appends after a version check; returns the new version.
  // A new stream's row id is stored into `sid`.
  std::int64_t append_in_tx(std::string_view name, std::int64_t& sid, std::int64_t current,
                            std::int64_t expected, const event* events, std::size_t n,
                            std::string_view metadata = {}) {
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
    std::int64_t at = now_us();
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

// ---- figures ------------------------------------------------------------------------------

struct figure {
  std::string scenario;
  std::int64_t events = 0;  // per annals run
  std::vector<double> annals_seconds;
  std::int64_t baseline_events = 0;  // per baseline run
  std::vector<double> baseline_seconds;
  std::optional<double> target;  // minimum ratio
  std::string note;
  std::vector<std::pair<std::string, std::string>> extra;  // name -> raw JSON value
  // Paired write scenarios: annals rate / baseline rate of each pair of adjacent blocks.
  std::vector<double> block_ratios;
};

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

bool peak_rss_per_scenario = false;

void print_figure(const figure& f) {
  double secs = median(f.annals_seconds);
  double bsecs = median(f.baseline_seconds);
  double per_s = secs > 0 ? static_cast<double>(f.events) / secs : 0;
  double base_per_s = bsecs > 0 ? static_cast<double>(f.baseline_events) / bsecs : 0;
  double ratio = base_per_s > 0 ? per_s / base_per_s : 0;
  auto samples = [](const std::vector<double>& secs, std::int64_t events) {
    std::string s = "[";
    for (std::size_t i = 0; i < secs.size(); ++i) {
      s += fmt::format("{}{:.0f}", i ? "," : "", secs[i] > 0 ? events / secs[i] : 0.0);
    }
    return s + "]";
  };
  std::string line = fmt::format(
      R"({{"scenario":"{}","events":{},"seconds":{:.6f},"events_per_s":{:.1f},)"
      R"("baseline_per_s":{:.1f},"ratio":{:.3f},"peak_rss_mb":{:.1f},"median_of":{})",
      f.scenario, f.events, secs, per_s, base_per_s, ratio, peak_rss_mb(),
      std::min(f.annals_seconds.size(), f.baseline_seconds.size()));
  if (f.target) {
    line += fmt::format(R"(,"target":{},"target_met":{})", *f.target,
                        ratio >= *f.target ? "true" : "false");
  }
  line += fmt::format(R"(,"samples_per_s":{},"baseline_samples_per_s":{})",
                      samples(f.annals_seconds, f.events),
                      samples(f.baseline_seconds, f.baseline_events));
  {
    // Per rep (paired: measured side by side), annals rate / baseline rate.
    std::string r = "[";
    for (std::size_t i = 0; i < std::min(f.annals_seconds.size(), f.baseline_seconds.size()); ++i) {
      double a = static_cast<double>(f.events) / f.annals_seconds[i];
      double b = static_cast<double>(f.baseline_events) / f.baseline_seconds[i];
      r += fmt::format("{}{:.3f}", i ? "," : "", a / b);
    }
    line += fmt::format(R"(,"rep_ratios":{}])", r);
  }
  if (!f.block_ratios.empty()) {
    // Robust to disk stalls: a stall hits one block, not a whole side of a rep.
    line += fmt::format(R"(,"block_ratio_median":{:.3f},"block_ratio_p25_p75":[{:.3f},{:.3f}],)"
                        R"("blocks":{})",
                        median(f.block_ratios), quantile(f.block_ratios, 0.25),
                        quantile(f.block_ratios, 0.75), f.block_ratios.size());
  }
  for (const auto& [k, v] : f.extra) line += fmt::format(R"(,"{}":{})", k, v);
  line += fmt::format(R"(,"peak_rss_scope":"{}")",
                      peak_rss_per_scenario ? "scenario" : "process");
  if (!f.note.empty()) line += fmt::format(R"(,"note":"{}")", json_escape(f.note));
  line += "}\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  note("{}: {:.0f}/s vs baseline {:.0f}/s, ratio {:.3f}", f.scenario, per_s, base_per_s, ratio);
}

// Runs `a` and `b` reps times each, alternating which goes first. Each returns seconds.
void alternate(int reps, const std::function<double()>& a, const std::function<double()>& b,
               std::vector<double>& as, std::vector<double>& bs) {
  for (int r = 0; r < reps; ++r) {
    if (r % 2 == 0) {
      as.push_back(a());
      bs.push_back(b());
    } else {
      bs.push_back(b());
      as.push_back(a());
    }
  }
}

// ---- paired runs --------------------------------------------------------------------------
//
// Write scenarios are fsync-bound, and the disk is shared with other work: a run of a few
// seconds can be twice as slow as the next one. So both sides are open at once and the work
// is cut into blocks that alternate between them (a b, b a, a b, ...); each side's time is
// the sum of its blocks, so both sides see the same disk weather. A rep uses fresh files.

// A side of a paired write scenario: does work items [from, to) when asked.
class worker {
 public:
  virtual ~worker() = default;
  virtual void run(std::int64_t from, std::int64_t to) = 0;
  virtual void finish() {}  // checks the result, closes; untimed
};

void paired(int reps, int blocks, std::int64_t total_a, std::int64_t total_b,
            const std::function<std::unique_ptr<worker>(int rep)>& make_a,
            const std::function<std::unique_ptr<worker>(int rep)>& make_b, figure& f) {
  for (int rep = 0; rep < reps; ++rep) {
    auto a = make_a(rep);
    auto b = make_b(rep);
    double ta = 0, tb = 0;
    for (int k = 0; k < blocks; ++k) {
      auto block = [&](worker& w, std::int64_t total, double& t) {
        std::int64_t from = total * k / blocks, to = total * (k + 1) / blocks;
        auto t0 = clock_type::now();
        w.run(from, to);
        double secs = seconds_since(t0);
        t += secs;
        return static_cast<double>(to - from) / secs;
      };
      double ra, rb;
      if ((k + rep) % 2 == 0) {
        ra = block(*a, total_a, ta);
        rb = block(*b, total_b, tb);
      } else {
        rb = block(*b, total_b, tb);
        ra = block(*a, total_a, ta);
      }
      f.block_ratios.push_back(ra / rb);
    }
    a->finish();
    b->finish();
    f.annals_seconds.push_back(ta);
    f.baseline_seconds.push_back(tb);
    note("  rep {}: {:.0f}/s vs {:.0f}/s", rep + 1, static_cast<double>(total_a) / ta,
         static_cast<double>(total_b) / tb);
  }
}

// ---- append scenarios ---------------------------------------------------------------------

struct append_plan {
  std::vector<std::string> streams;
  std::vector<std::string> payloads;  // one per event
};

append_plan make_append_plan(std::int64_t events, std::int64_t streams, std::string_view prefix) {
  append_plan p;
  for (std::int64_t s = 0; s < streams; ++s) {
    p.streams.push_back(fmt::format("{}-{}", prefix, account_id(s)));
  }
  std::mt19937_64 rng(42);
  for (std::int64_t i = 0; i < events; ++i) {
    p.payloads.push_back(deposited_payload(account_id(i % streams), 1 + rng() % 100000));
  }
  return p;
}

// `threads` appenders on one store, each on its own streams (thread t owns the streams
// s % threads == t, round-robin), `per_append` events per call, expected version exact
// (optimistic concurrency, as a command handler appends). A work item is an event.
class annals_appender final : public worker {
 public:
  annals_appender(std::string path, const append_plan& plan, int threads,
                  std::int64_t per_append)
      : path_(std::move(path)),
        plan_(plan),
        threads_(threads),
        per_append_(per_append),
        versions_(plan.streams.size(), -1),
        next_stream_(static_cast<std::size_t>(threads), 0) {
    store_ = annals_create(path_);
  }

  void run(std::int64_t from, std::int64_t to) override {
    if (threads_ == 1) {
      append_range(0, from, to);
      return;
    }
    // Append j of the block (events from + j*per_append ...) goes to thread j % threads.
    std::latch start(threads_);
    std::optional<bench_failure> failure;
    std::mutex mu;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads_; ++t) {
      pool.emplace_back([&, t] {
        start.arrive_and_wait();
        try {
          std::int64_t step = per_append_ * threads_;
          for (std::int64_t first = from + t * per_append_; first < to; first += step) {
            append_range(t, first, std::min(to, first + per_append_));
          }
        } catch (bench_failure& e) {
          std::lock_guard lock(mu);
          if (!failure) failure = std::move(e);
        }
      });
    }
    for (auto& th : pool) th.join();
    if (failure) throw *failure;
  }

  void finish() override {
    auto head = check(store_->head_position(), "head_position");
    auto want = static_cast<std::int64_t>(plan_.payloads.size());
    if (head != want) logic_failure(fmt::format("store holds {} events, {} appended", head, want));
    store_.reset();
    remove_db(path_);
  }

 private:
  // One thread's appends of events [from, to), per_append_ at a time.
  void append_range(int t, std::int64_t from, std::int64_t to) {
    auto streams = static_cast<std::int64_t>(plan_.streams.size());
    for (std::int64_t first = from; first < to; first += per_append_) {
      std::int64_t owned = (streams - t + threads_ - 1) / threads_;  // streams of thread t
      auto& k = next_stream_[static_cast<std::size_t>(t)];
      auto s = static_cast<std::size_t>(t + threads_ * (k++ % owned));
      std::int64_t n = std::min(per_append_, to - first);
      std::vector<annals::event_data> batch;
      batch.reserve(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) {
        annals::event_data e;
        e.type = type_deposited();
        e.payload = plan_.payloads[static_cast<std::size_t>(first + i)];
        batch.push_back(std::move(e));
      }
      auto& v = versions_[s];
      auto expected =
          v < 0 ? annals::expected_version::no_stream() : annals::expected_version::exact(v);
      v = check(store_->append(plan_.streams[s], expected, std::move(batch)), "append")
              .stream_version;
    }
  }

  std::string path_;
  const append_plan& plan_;
  int threads_;
  std::int64_t per_append_;
  std::vector<std::int64_t> versions_;       // per stream; written only by its owner thread
  std::vector<std::int64_t> next_stream_;    // per thread
  std::unique_ptr<annals::event_store> store_;
};

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
      [&](int) { return std::make_unique<annals_appender>(dir.file("single-a.db"), plan, 1, 1); },
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
        return std::make_unique<annals_appender>(dir.file("batch-a.db"), plan, 1, c.batch_size);
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
        return std::make_unique<annals_appender>(dir.file("conc-a.db"), plan, c.threads, 1);
      },
      [&](int) { return std::make_unique<annals_appender>(dir.file("conc-1.db"), single, 1, 1); },
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
      auto [i, cents] = p_.deposits[static_cast<std::size_t>(k)];
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

void scenario_aggregate_load(const config& c, const temp_dir& dir) {
  const auto& d = dataset(c, dir);
  auto annals_once = [&] {
    auto t0 = clock_type::now();
    auto store = check(annals::open_sqlite_store(d.path), "cannot open the store");
    auto l = check(annals::load<bank::account>(*store, d.target_stream), "load");
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
    (void)check(annals::load<bank::account>(*store, d.target_stream), "load");
    for (int i = 0; i < c.reps * c.loads_per_rep; ++i) {
      auto t0 = clock_type::now();
      auto l = check(annals::load<bank::account>(*store, d.target_stream), "load");
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
      "annals::load<bank::account> of a {}-event stream, {} other streams' events after each of "
      "its events; store opened (open_sqlite_store) and closed inside each timed load; OS page "
      "cache warm; baseline: new read-only connection, select type+payload by stream ordered "
      "by version, protobuf parse, fold with the same bank::account; both read the same file",
      d.target_events, c.interleave);
  print_figure(f);
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

// ---- main ---------------------------------------------------------------------------------

const std::vector<std::pair<std::string, void (*)(const config&, const temp_dir&)>>& scenarios() {
  static const std::vector<std::pair<std::string, void (*)(const config&, const temp_dir&)>> s = {
      {"append_single", scenario_append_single},
      {"append_batch", scenario_append_batch},
      {"append_concurrent", scenario_append_concurrent},
      {"command_throughput", scenario_command_throughput},
      {"aggregate_load", scenario_aggregate_load},
      {"replay", scenario_replay},
  };
  return s;
}

void usage(std::FILE* out) {
  std::string names;
  for (auto& [n, _] : scenarios()) names += (names.empty() ? "" : ", ") + n;
  fmt::print(out,
             "usage: annals-bench [--quick] [--scenario NAME] [--dir DIR] [--reps N]\n"
             "  --quick          small counts (whole run well under 20 s)\n"
             "  --scenario NAME  run one scenario: {}\n"
             "  --dir DIR        put the temporary database files under DIR (default $TMPDIR "
             "or /tmp)\n"
             "  --reps N         runs per side per scenario, medians reported (default 5, "
             "quick 3)\n"
             "Prints one JSON line per figure on stdout. Exit: 0 ok, 2 bad arguments, 4 storage "
             "error.\n",
             names);
}

}  // namespace

int main(int argc, char** argv) {
  config c;
  std::optional<int> reps;
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
    } else if (is("--dir")) {
      c.dir = value("--dir");
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
  if (reps) c.reps = *reps;
  if (!c.scenario.empty()) {
    bool known = false;
    for (auto& [n, _] : scenarios()) known = known || n == c.scenario;
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
