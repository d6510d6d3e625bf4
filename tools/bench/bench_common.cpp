// The scaffolding every annals-bench backend shares (bench_common.hpp).
#include "bench_common.hpp"

#include "account.hpp"

#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <latch>
#include <mutex>
#include <thread>

namespace annals_bench {

// ---- failures -----------------------------------------------------------------------------

void check(annals::result<void> r, std::string_view what) {
  if (!r) {
    throw bench_failure{annals::exit_code(r.error().kind()),
                        fmt::format("{}: {}", what, r.error().message())};
  }
}

void storage_failure(std::string message) { throw bench_failure{4, std::move(message)}; }
void logic_failure(std::string message) { throw bench_failure{1, std::move(message)}; }

// ---- configuration ------------------------------------------------------------------------

void config::make_quick() {
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
  snapshot_lengths = {1000, 5000, 20000};
  blocks = 6;
  rebuild_events = 20000;
  rebuild_accounts = 200;
  rebuild_catch_up = true;
  live_accounts = 200;
  lag_events = 200;
  live_events = 400;
  relay_events = 3000;
  relay_latency_events = 200;
  pg_single_events = 200;
  pg_batch_events = 5000;
  pg_concurrent_events = 400;
  scale_events = 20000;
  scale_steps = 2;
}

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

double current_rss_mb() {
  std::ifstream f("/proc/self/statm");
  long long pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1048576.0;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

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

std::string num(double v, int digits) { return fmt::format("{:.{}f}", v, digits); }

// ---- bank data ------------------------------------------------------------------------------

std::string account_id(std::int64_t i) {
  return fmt::format("0190a1b2-7c3d-7e4f-8a9b-{:012x}", static_cast<std::uint64_t>(i));
}

const std::string& type_opened() {
  static const std::string t = bank::v2::AccountOpened::descriptor()->full_name();
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
const std::string& type_closed() {
  static const std::string t = bank::v1::AccountClosed::descriptor()->full_name();
  return t;
}

std::string opened_payload(const std::string& id, std::int64_t i) {
  bank::v2::AccountOpened e;
  e.set_account_id(id);
  *e.mutable_owner() = bank::split_name(fmt::format("Owner Number {:06}", i));
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

std::array<unsigned char, 16> raw_ids::next() {
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

std::string raw_ids::text() {
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

bank_history generate_bank_history(std::int64_t total, std::int64_t accounts,
                                   const history_sink& append) {
  constexpr std::int64_t start_us = 1735689600LL * 1000000;  // 2025-01-01T00:00:00Z
  constexpr double span_us = 365.0 * 86400 * 1000000;
  bank_history h;
  auto n = static_cast<std::size_t>(accounts);
  std::vector<std::string> ids, streams;
  std::vector<std::int64_t> balance(n, 0);
  auto emit = [&](std::size_t i, const history_event* e, std::size_t k) {
    auto at = start_us + static_cast<std::int64_t>(span_us * static_cast<double>(h.events) /
                                                   static_cast<double>(total));
    h.events += static_cast<std::int64_t>(k);
    ++h.appends;
    append(i, streams[i], e, k, at, h.appends);
  };
  for (std::size_t i = 0; i < n; ++i) {
    ids.push_back(account_id(static_cast<std::int64_t>(i)));
    streams.push_back(bank::stream_for(ids.back()));
    std::string payload = opened_payload(ids[i], static_cast<std::int64_t>(i));
    history_event e{&type_opened(), &payload};
    emit(i, &e, 1);
  }
  std::mt19937_64 rng(2024);
  std::array<std::string, 4> payloads;
  std::array<history_event, 4> events{};
  while (h.events < total) {
    auto i = static_cast<std::size_t>(rng() % n);
    auto k = static_cast<std::size_t>(
        std::min<std::int64_t>(1 + static_cast<std::int64_t>(rng() % 4), total - h.events));
    for (std::size_t j = 0; j < k; ++j) {
      if (rng() % 4 == 0 && balance[i] > 0) {
        auto cents = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(balance[i]));
        payloads[j] = withdrawn_payload(ids[i], cents);
        events[j] = {&type_withdrawn(), &payloads[j]};
        balance[i] -= cents;
      } else {
        auto cents = 1 + static_cast<std::int64_t>(rng() % 100000);
        payloads[j] = deposited_payload(ids[i], cents);
        events[j] = {&type_deposited(), &payloads[j]};
        balance[i] += cents;
      }
    }
    emit(i, events.data(), k);
    h.money_events += static_cast<std::int64_t>(k);
  }
  for (auto b : balance) h.total_balance += b;
  return h;
}

// ---- figures ------------------------------------------------------------------------------

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

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
      f.scenario, f.events, secs, per_s, base_per_s, ratio,
      f.peak_rss ? *f.peak_rss : peak_rss_mb(),
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
                      !f.peak_rss_scope.empty() ? f.peak_rss_scope
                      : peak_rss_per_scenario   ? "scenario"
                                                : "process");
  if (!f.note.empty()) line += fmt::format(R"(,"note":"{}")", json_escape(f.note));
  line += "}\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  note("{}: {:.0f}/s vs baseline {:.0f}/s, ratio {:.3f}", f.scenario, per_s, base_per_s, ratio);
}

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

paired_result paired_sides(int reps, int blocks, const std::vector<side>& sides) {
  const auto n = sides.size();
  paired_result out;
  out.seconds.resize(n);
  out.block_ratios.resize(n > 0 ? n - 1 : 0);
  for (int rep = 0; rep < reps; ++rep) {
    std::vector<std::unique_ptr<worker>> w;
    for (const auto& s : sides) w.push_back(s.make(rep));
    std::vector<double> t(n, 0), rate(n, 0);
    for (int k = 0; k < blocks; ++k) {
      auto first = static_cast<std::size_t>(k + rep) % n;
      for (std::size_t j = 0; j < n; ++j) {
        auto i = (first + j) % n;
        std::int64_t total = sides[i].total;
        std::int64_t from = total * k / blocks, to = total * (k + 1) / blocks;
        auto t0 = clock_type::now();
        w[i]->run(from, to);
        double secs = seconds_since(t0);
        t[i] += secs;
        rate[i] = static_cast<double>(to - from) / secs;
      }
      for (std::size_t i = 1; i < n; ++i) out.block_ratios[i - 1].push_back(rate[0] / rate[i]);
    }
    for (auto& x : w) x->finish();
    std::string rates;
    for (std::size_t i = 0; i < n; ++i) {
      out.seconds[i].push_back(t[i]);
      rates += fmt::format("{}{:.0f}/s", i ? " vs " : "", static_cast<double>(sides[i].total) / t[i]);
    }
    note("  rep {}: {}", rep + 1, rates);
  }
  return out;
}

void paired(int reps, int blocks, std::int64_t total_a, std::int64_t total_b,
            const worker_factory& make_a, const worker_factory& make_b, figure& f) {
  auto r = paired_sides(reps, blocks, {{total_a, make_a}, {total_b, make_b}});
  f.annals_seconds.insert(f.annals_seconds.end(), r.seconds[0].begin(), r.seconds[0].end());
  f.baseline_seconds.insert(f.baseline_seconds.end(), r.seconds[1].begin(), r.seconds[1].end());
  f.block_ratios.insert(f.block_ratios.end(), r.block_ratios[0].begin(), r.block_ratios[0].end());
}

// ---- append scenarios ---------------------------------------------------------------------

void run_on_threads(int threads, const std::function<void(int)>& fn) {
  if (threads == 1) {
    fn(0);
    return;
  }
  std::latch start(threads);
  std::optional<bench_failure> failure;
  std::mutex mu;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      try {
        fn(t);
      } catch (bench_failure& e) {
        std::lock_guard lock(mu);
        if (!failure) failure = std::move(e);
      }
    });
  }
  for (auto& th : pool) th.join();
  if (failure) throw *failure;
}

plan_appender::plan_appender(const append_plan& plan, int threads, std::int64_t per_append)
    : plan_(plan),
      threads_(threads),
      per_append_(per_append),
      versions_(plan.streams.size(), -1),
      next_stream_(static_cast<std::size_t>(threads), 0) {}

void plan_appender::run(std::int64_t from, std::int64_t to) {
  // Append j of the block (events from + j*per_append ...) goes to thread j % threads.
  run_on_threads(threads_, [&](int t) {
    std::int64_t step = per_append_ * threads_;
    for (std::int64_t first = from + t * per_append_; first < to; first += step) {
      auto streams = static_cast<std::int64_t>(plan_.streams.size());
      std::int64_t owned = (streams - t + threads_ - 1) / threads_;  // streams of thread t
      auto& k = next_stream_[static_cast<std::size_t>(t)];
      auto s = static_cast<std::size_t>(t + threads_ * (k++ % owned));
      auto& v = versions_[s];
      v = append(t, s, v, first, std::min(per_append_, to - first));
    }
  });
}

namespace {

class annals_appender final : public plan_appender {
 public:
  annals_appender(std::unique_ptr<annals::event_store> store, const append_plan& plan,
                  int threads, std::int64_t per_append, std::function<void()> on_close)
      : plan_appender(plan, threads, per_append),
        store_(std::move(store)),
        on_close_(std::move(on_close)) {}

  void finish() override {
    auto head = check(store_->head_position(), "head_position");
    auto want = static_cast<std::int64_t>(plan_.payloads.size());
    if (head != want) logic_failure(fmt::format("store holds {} events, {} appended", head, want));
    store_.reset();
    if (on_close_) on_close_();
  }

 private:
  std::int64_t append(int, std::size_t s, std::int64_t version, std::int64_t first,
                      std::int64_t n) override {
    std::vector<annals::event_data> batch;
    batch.reserve(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      annals::event_data e;
      e.type = type_deposited();
      e.payload = plan_.payloads[static_cast<std::size_t>(first + i)];
      batch.push_back(std::move(e));
    }
    auto expected = version < 0 ? annals::expected_version::no_stream()
                                : annals::expected_version::exact(version);
    return check(store_->append(plan_.streams[s], expected, std::move(batch)), "append")
        .stream_version;
  }

  std::unique_ptr<annals::event_store> store_;
  std::function<void()> on_close_;  // after the store is closed
};

}  // namespace

std::unique_ptr<worker> make_annals_appender(std::unique_ptr<annals::event_store> store,
                                             const append_plan& plan, int threads,
                                             std::int64_t per_append,
                                             std::function<void()> on_close) {
  return std::make_unique<annals_appender>(std::move(store), plan, threads, per_append,
                                           std::move(on_close));
}

}  // namespace annals_bench
