// The scaffolding every annals-bench backend shares: failures, configuration, the bank
// payloads both sides append, figures in the JSON-lines format (DESIGN.md, "Targets") and the
// paired / alternating-blocks runs that share the machine's noise between the sides.
#pragma once

#include <annals/event_store.hpp>
#include <annals/result.hpp>

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace annals_bench {

using clock_type = std::chrono::steady_clock;

// ---- failures -----------------------------------------------------------------------------

// Thrown to main: the exit code and the message.
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

void check(annals::result<void> r, std::string_view what);

[[noreturn]] void storage_failure(std::string message);  // exit 4
[[noreturn]] void logic_failure(std::string message);    // exit 1: a result that does not add up

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
  std::string backend;   // empty: SQLite files under dir; else a postgresql:// URI

  // append_single / the 1-appender reference of append_concurrent
  std::int64_t single_events = 3000;
  std::int64_t single_streams = 100;
  // append_batch
  std::int64_t batch_events = 100000;
  std::int64_t batch_size = 100;
  // append_concurrent
  int threads = 8;
  std::int64_t concurrent_events = 16000;
  // PostgreSQL (a commit costs more there: smaller counts keep a full run near 5 minutes):
  // events per side per rep of append_single, append_batch (batch_size per append) and of
  // each append_concurrent run, one run per connection count
  std::int64_t pg_single_events = 1000;
  std::int64_t pg_batch_events = 20000;
  std::int64_t pg_concurrent_events = 1500;
  std::vector<int> pg_connections{1, 4, 16};
  // command_throughput
  std::int64_t accounts = 1000;
  std::int64_t commands = 2000;
  // aggregate_load / replay dataset: target stream length and other events per target event
  std::int64_t load_stream_events = 10000;
  std::int64_t interleave = 19;
  std::int64_t other_streams = 1000;
  int loads_per_rep = 6;
  // aggregate_load_snapshot: one stream per length, loaded whole and from a snapshot
  std::vector<std::int64_t> snapshot_lengths{10000, 100000, 1000000};
  int blocks = 20;  // alternating blocks per rep in the write scenarios
  bool reps_given = false;  // --reps on the command line
  // rebuild: store size, accounts, reps (fewer than the other scenarios: 1M events per run)
  std::int64_t rebuild_events = 1000000;
  std::int64_t rebuild_accounts = 2000;
  int rebuild_max_reps = 3;
  bool rebuild_catch_up = false;  // also time a runner's catch_up() from 0 (slow at 1M events)
  // live_lag: accounts, appender threads, commands measured for lag at a steady rate, and
  // commands per side per rep at full speed (with / without a running runner)
  std::int64_t live_accounts = 1000;
  int live_threads = 2;
  std::int64_t lag_events = 2000;
  double lag_rate = 250;  // commands/s, all appender threads together
  std::int64_t live_events = 2000;
  // relay (only with --nats URL): events published per side per rep; events appended at
  // relay_rate per second for the latency figures
  std::string nats;
  std::int64_t relay_events = 50000;
  std::int64_t relay_latency_events = 2000;
  double relay_rate = 500;
  // scale (PostgreSQL): the store grows to scale_events in scale_steps steps, probed at the
  // start and after each step. A full run takes it only with --quick or when named: at 10M
  // events it takes about half an hour.
  std::int64_t scale_events = 10000000;
  int scale_steps = 10;

  int rebuild_reps() const { return reps_given ? reps : std::min(reps, rebuild_max_reps); }

  void make_quick();
};

// ---- small utilities ----------------------------------------------------------------------

double seconds_since(clock_type::time_point t0);
double median(std::vector<double> v);
double quantile(std::vector<double> v, double q);
double current_rss_mb();  // resident set now (/proc/self/statm)
double peak_rss_mb();     // ru_maxrss
// Linux resets the peak RSS (VmHWM, and so ru_maxrss) when "5" is written to clear_refs.
bool reset_peak_rss();
std::string json_escape(std::string_view s);
std::string num(double v, int digits = 1);
std::int64_t now_us();  // system clock, UTC microseconds

// ---- bank data ----------------------------------------------------------------------------

// Account ids look like UUIDs (36 characters), so payloads are 40-60 bytes.
std::string account_id(std::int64_t i);
const std::string& type_opened();
const std::string& type_deposited();
const std::string& type_withdrawn();
const std::string& type_closed();
std::string opened_payload(const std::string& id, std::int64_t i);
std::string deposited_payload(const std::string& id, std::int64_t cents);
std::string withdrawn_payload(const std::string& id, std::int64_t cents);

// UUIDv7 bytes for the baselines (the store generates the same kind of id: time-ordered, so
// both sides insert into the event_id index the same way).
class raw_ids {
 public:
  raw_ids() : rng_(std::random_device{}()) {}
  std::array<unsigned char, 16> next();
  std::string text();

 private:
  std::mt19937_64 rng_;
  std::uint64_t last_ms_ = 0;
  std::uint32_t counter_ = 0;
};

// annals.v1.EventMetadata{correlation_id = 1, causation_id = 2} in protobuf wire format,
// written by hand (what the store writes for a command's events).
std::string raw_metadata(std::string_view correlation, std::string_view causation);

// Payloads of deposits for the append scenarios: stream s's name, event i's payload.
struct append_plan {
  std::vector<std::string> streams;
  std::vector<std::string> payloads;  // one per event
};
append_plan make_append_plan(std::int64_t events, std::int64_t streams, std::string_view prefix);

// The rebuild scenario's history: every account opened, then deposits and withdrawals (a
// withdrawal only when the balance covers it) on random accounts (seeded: the same history on
// every backend), 1-4 events per append (a command's worth); recorded_at moves from 2025-01-01
// over 365 days as the events are written, so daily_totals gets one row per day. For each
// append in order, `append` gets the account index, its stream, the events, their count,
// recorded_at and the number of appends so far (this one included).
struct history_event {
  const std::string* type;
  const std::string* payload;
};
struct bank_history {
  std::int64_t events = 0;
  std::int64_t appends = 0;
  std::int64_t money_events = 0;  // deposits + withdrawals
  std::int64_t total_balance = 0;
};
using history_sink = std::function<void(std::size_t account, const std::string& stream,
                                        const history_event* events, std::size_t count,
                                        std::int64_t recorded_at, std::int64_t appends)>;
bank_history generate_bank_history(std::int64_t total, std::int64_t accounts,
                                   const history_sink& append);

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
  // Set when the scenario measures the peak RSS of one part itself (e.g. the rebuild alone).
  std::optional<double> peak_rss;
  std::string peak_rss_scope;
};

// True when the peak RSS was reset at the start of the running scenario (set by main).
inline bool peak_rss_per_scenario = false;

// One JSON line on stdout (and a summary on stderr).
void print_figure(const figure& f);

// Runs `a` and `b` reps times each, alternating which goes first. Each returns seconds.
void alternate(int reps, const std::function<double()>& a, const std::function<double()>& b,
               std::vector<double>& as, std::vector<double>& bs);

// ---- paired runs --------------------------------------------------------------------------
//
// Write scenarios are fsync-bound, and the disk is shared with other work: a run of a few
// seconds can be twice as slow as the next one. So the sides are open at once and the work
// is cut into blocks that alternate between them (a b, b a, a b, ...); each side's time is
// the sum of its blocks, so the sides see the same disk weather. A rep uses fresh stores.

// A side of a paired write scenario: does work items [from, to) when asked.
class worker {
 public:
  virtual ~worker() = default;
  virtual void run(std::int64_t from, std::int64_t to) = 0;
  virtual void finish() {}  // checks the result, closes; untimed
};

using worker_factory = std::function<std::unique_ptr<worker>(int rep)>;

struct side {
  std::int64_t total;  // work items per rep
  worker_factory make;
};

struct paired_result {
  std::vector<std::vector<double>> seconds;       // [side][rep]
  std::vector<std::vector<double>> block_ratios;  // [side - 1][block]: side 0 / side i
};

// Any number of sides; in each block the side that starts rotates (two sides: a b, b a, ...).
paired_result paired_sides(int reps, int blocks, const std::vector<side>& sides);

// Two sides: `a` is Annals, `b` the baseline; fills f's seconds and block ratios.
void paired(int reps, int blocks, std::int64_t total_a, std::int64_t total_b,
            const worker_factory& make_a, const worker_factory& make_b, figure& f);


// ---- append scenarios ---------------------------------------------------------------------

// Runs fn(t) for t in [0, threads) on threads started together (on this thread when
// threads == 1); rethrows the first bench_failure.
void run_on_threads(int threads, const std::function<void(int)>& fn);

// The append scenarios' schedule, whatever does the appending: `threads` threads, thread t
// owning the streams s % threads == t (round-robin), `per_append` events per append, expected
// version exact (optimistic concurrency, as a command handler appends). A work item is an
// event.
class plan_appender : public worker {
 public:
  plan_appender(const append_plan& plan, int threads, std::int64_t per_append);
  void run(std::int64_t from, std::int64_t to) final;

 protected:
  // Appends the plan's events [first, first + n) to stream s, whose version is `version`
  // (-1: none yet), on thread t; returns the stream's new version.
  virtual std::int64_t append(int t, std::size_t s, std::int64_t version, std::int64_t first,
                              std::int64_t n) = 0;
  const append_plan& plan_;

 private:
  int threads_;
  std::int64_t per_append_;
  std::vector<std::int64_t> versions_;     // per stream; written only by its owner thread
  std::vector<std::int64_t> next_stream_;  // per thread
};

// The Annals side: appends through `store`; finish() checks the head position, closes the
// store, then runs `on_close` (e.g. removes its file).
std::unique_ptr<worker> make_annals_appender(std::unique_ptr<annals::event_store> store,
                                             const append_plan& plan, int threads,
                                             std::int64_t per_append,
                                             std::function<void()> on_close = {});

}  // namespace annals_bench
