// live_lag on any backend (read_side.hpp).
#include "read_side.hpp"

#include <annals/command.hpp>
#include <annals/projection_runner.hpp>

#include "account.hpp"
#include "projections.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace annals_bench {
namespace {


struct live_plan {
  std::vector<std::string> ids, streams;
  int threads = 1;
  // Command k: thread k % threads, on one of that thread's own accounts (no conflicts between
  // appender threads), depositing 1 + k % 1000 cents.
  std::size_t account(std::int64_t k) const {
    auto t = static_cast<std::int64_t>(k % threads);
    auto n = static_cast<std::int64_t>(ids.size());
    std::int64_t owned = (n - t + threads - 1) / threads;
    return static_cast<std::size_t>(t + threads * ((k / threads) % owned));
  }
  static std::int64_t cents(std::int64_t k) { return 1 + k % 1000; }
};

live_plan make_live_plan(const config& c) {
  live_plan p;
  p.threads = c.live_threads;
  for (std::int64_t i = 0; i < std::max<std::int64_t>(c.live_accounts, c.live_threads); ++i) {
    p.ids.push_back(account_id(i));
    p.streams.push_back(bank::stream_for(p.ids.back()));
  }
  return p;
}

// Setup, untimed: a new store at `uri` with every account opened (AccountOpened appended
// through the store, durability normal).
void open_live_accounts(const std::string& uri, const live_plan& p) {
  annals::sqlite_options o;
  o.sync = annals::durability::normal;
  auto store = check(annals::open_store(uri, std::move(o)), "cannot open the store");
  for (std::size_t i = 0; i < p.ids.size(); ++i) {
    std::vector<annals::event_data> e(1);
    e[0].type = type_opened();
    e[0].payload = opened_payload(p.ids[i], static_cast<std::int64_t>(i));
    (void)check(store->append(p.streams[i], annals::expected_version::no_stream(), std::move(e)),
                "open account");
  }
}

annals::command_result live_deposit(annals::event_store& store, const live_plan& p,
                                    std::int64_t k) {
  auto i = p.account(k);
  return check(annals::handle<bank::account>(store, p.streams[i],
                                             [&](const bank::account& a) {
                                               return bank::deposit(a, p.ids[i],
                                                                    live_plan::cents(k));
                                             }),
               "deposit");
}

// Runs fn(k) for k in [from, to) on p.threads threads (thread t: k % threads == t).
void on_appender_threads(const live_plan& p, std::int64_t from, std::int64_t to,
                         const std::function<void(std::int64_t)>& fn) {
  run_on_threads(p.threads, [&](int t) {
    std::int64_t first = from + ((t - from % p.threads) + p.threads) % p.threads;
    for (std::int64_t k = first; k < to; k += p.threads) fn(k);
  });
}

// The read model must hold every deposit: the balances add up to the commands' cents.
void check_live_model(annals::projection_runner& runner, std::int64_t commands) {
  std::int64_t want = 0;
  for (std::int64_t k = 0; k < commands; ++k) want += live_plan::cents(k);
  std::int64_t total = 0;
  (void)check(bank::read_balances(runner,
                                  [&](const bank::balance_row& r) {
                                    total += r.balance_cents;
                                    return true;
                                  }),
              "read_balances");
  if (total != want) {
    logic_failure(fmt::format("live read model: balances sum to {}, expected {}", total, want));
  }
}

struct lag_run {
  std::vector<double> ms;  // per command: acknowledged -> visible in all three models
  double achieved_per_s = 0;
};

// Commands at a steady rate (scheduled times k / rate, all threads together) on a store whose
// runner follows live. An observer thread waits (runner.wait_for, the read-your-writes call)
// for the oldest acknowledged position in each of the three projections, then probes the
// following ones (wait_for with a zero timeout): an event's lag is the time from its command's
// acknowledgement to the observer seeing it applied in all three read models.
lag_run measure_lag(const config& c, const store_source& stores, const live_plan& p) {
  const std::string path = stores.create("lag");
  open_live_accounts(path, p);
  auto store = check(annals::open_store(path), "cannot open the store");
  auto runner = check(bank::open_read_models(path), "cannot open the projection runner");
  (void)check(runner->catch_up(), "catch_up");
  std::vector<std::string> names;
  for (const auto& d : bank::projections()) names.push_back(d->name);
  check(runner->start(), "start");

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::int64_t, clock_type::time_point> pending;  // position -> acknowledged at
  bool done = false;
  lag_run out;
  out.ms.reserve(static_cast<std::size_t>(c.lag_events));
  std::optional<bench_failure> observer_failure;
  std::thread observer([&] {
    try {
      auto visible = [&](std::int64_t position, std::chrono::milliseconds timeout) {
        for (const auto& n : names) {
          auto r = runner->wait_for(n, position, timeout);
          if (!r) {
            if (timeout.count() == 0 && r.error().kind() == annals::errc::timed_out) return false;
            check(std::move(r), "wait_for");
          }
        }
        return true;
      };
      for (;;) {
        std::int64_t oldest;
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return done || !pending.empty(); });
          if (pending.empty()) return;
          oldest = pending.begin()->first;
        }
        (void)visible(oldest, std::chrono::seconds(60));
        auto at = clock_type::now();
        std::unique_lock lock(mu);
        for (auto it = pending.begin(); it != pending.end();) {
          if (it->first != oldest) {
            std::int64_t pos = it->first;
            lock.unlock();
            bool seen = visible(pos, std::chrono::milliseconds(0));
            at = clock_type::now();
            lock.lock();
            it = pending.find(pos);
            if (!seen) break;
          }
          out.ms.push_back(std::chrono::duration<double, std::milli>(at - it->second).count());
          it = pending.erase(it);
        }
      }
    } catch (bench_failure& e) {
      std::lock_guard lock(mu);
      observer_failure = std::move(e);
    }
  });

  auto interval = std::chrono::duration<double>(1.0 / c.lag_rate);
  auto t0 = clock_type::now() + std::chrono::milliseconds(20);
  std::atomic<std::int64_t> last_ack_ns{0};
  std::optional<bench_failure> appender_failure;
  try {
    on_appender_threads(p, 0, c.lag_events, [&](std::int64_t k) {
      std::this_thread::sleep_until(
          t0 + std::chrono::duration_cast<clock_type::duration>(interval * static_cast<double>(k)));
      auto r = live_deposit(*store, p, k);
      auto ack = clock_type::now();
      {
        std::lock_guard lock(mu);
        pending.emplace(r.position, ack);
      }
      cv.notify_one();
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(ack - t0).count();
      auto prev = last_ack_ns.load();
      while (prev < ns && !last_ack_ns.compare_exchange_weak(prev, ns)) {
      }
    });
  } catch (bench_failure& e) {
    appender_failure = std::move(e);
  }
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_one();
  observer.join();
  runner->stop();
  if (appender_failure) throw *appender_failure;
  if (observer_failure) throw *observer_failure;
  if (static_cast<std::int64_t>(out.ms.size()) != c.lag_events) {
    logic_failure(fmt::format("live_lag: {} of {} events seen", out.ms.size(), c.lag_events));
  }
  check_live_model(*runner, c.lag_events);
  out.achieved_per_s = static_cast<double>(c.lag_events) / (static_cast<double>(last_ack_ns) / 1e9);
  runner.reset();
  store.reset();
  stores.remove(path);
  return out;
}

// A side of the writer-cost comparison: deposit commands at full speed on p.threads threads,
// with a projection_runner on the same store following them (started for the side's block,
// stopped after it, so it does not wake for the other side's commits: the store's commit
// signal is process-wide) or without one.
class live_commander final : public worker {
 public:
  // With a runner, `backlogs` receives, per rep, the events the runner had not applied when
  // the last block ended (status().lag_events, the most behind projection).
  live_commander(const store_source& stores, const live_plan& p, bool with_runner,
                 std::vector<std::int64_t>* backlogs = nullptr)
      : stores_(stores),
        path_(stores.create(with_runner ? "live_a" : "live_b")),
        p_(p),
        backlogs_(backlogs) {
    open_live_accounts(path_, p_);
    store_ = check(annals::open_store(path_), "cannot open the store");
    if (with_runner) {
      runner_ = check(bank::open_read_models(path_), "cannot open the projection runner");
      (void)check(runner_->catch_up(), "catch_up");
    }
  }

  void run(std::int64_t from, std::int64_t to) override {
    if (runner_) check(runner_->start(), "start");
    on_appender_threads(p_, from, to, [&](std::int64_t k) { (void)live_deposit(*store_, p_, k); });
    if (runner_) runner_->stop();
    commands_ = std::max(commands_, to);
  }

  void finish() override {
    if (runner_) {
      std::int64_t backlog = 0;
      for (const auto& s : check(runner_->status(), "status")) {
        backlog = std::max(backlog, s.lag_events);
      }
      if (backlogs_) backlogs_->push_back(backlog);
      (void)check(runner_->catch_up(), "catch_up");
      check_live_model(*runner_, commands_);
    }
    runner_.reset();
    store_.reset();
    stores_.remove(path_);
  }

 private:
  const store_source& stores_;
  std::string path_;  // the store's URI
  const live_plan& p_;
  std::unique_ptr<annals::event_store> store_;
  std::unique_ptr<annals::projection_runner> runner_;
  std::vector<std::int64_t>* backlogs_;
  std::int64_t commands_ = 0;
};

}  // namespace

void run_live_lag(const config& c, const store_source& stores,
                  const std::function<void(figure&)>& describe) {
  auto p = make_live_plan(c);
  auto lag = measure_lag(c, stores, p);
  note("live_lag: {} events at {:.0f}/s: p50 {:.2f} ms, p99 {:.2f} ms", lag.ms.size(),
       lag.achieved_per_s, quantile(lag.ms, 0.5), quantile(lag.ms, 0.99));

  figure f;
  f.scenario = "live_lag";
  f.events = f.baseline_events = c.live_events;
  std::vector<std::int64_t> backlogs;
  paired(
      c.reps, c.blocks, c.live_events, c.live_events,
      [&](int) {
        return std::make_unique<live_commander>(stores, p, true, &backlogs);
      },
      [&](int) { return std::make_unique<live_commander>(stores, p, false); }, f);
  double sum = 0;
  for (double v : lag.ms) sum += v;
  f.extra.emplace_back("p50_ms", num(quantile(lag.ms, 0.5), 3));
  f.extra.emplace_back("p99_ms", num(quantile(lag.ms, 0.99), 3));
  double max_ms = lag.ms.empty() ? 0 : *std::max_element(lag.ms.begin(), lag.ms.end());
  double mean_ms = lag.ms.empty() ? 0 : sum / static_cast<double>(lag.ms.size());
  f.extra.emplace_back("max_ms", num(max_ms, 3));
  f.extra.emplace_back("mean_ms", num(mean_ms, 3));
  f.extra.emplace_back("lag_events_measured", std::to_string(lag.ms.size()));
  f.extra.emplace_back("lag_rate_target_per_s", num(c.lag_rate, 0));
  f.extra.emplace_back("lag_rate_achieved_per_s", num(lag.achieved_per_s, 1));
  f.extra.emplace_back("appender_threads", std::to_string(c.live_threads));
  f.extra.emplace_back(
      "runner_backlog_at_end_max",
      std::to_string(backlogs.empty() ? 0 : *std::max_element(backlogs.begin(), backlogs.end())));
  f.extra.emplace_back("unit", "\"commands (1 event each)\"");
  f.note = fmt::format(
      "lag: bank deposit commands (annals::handle, durable) at a steady {:.0f}/s from {} "
      "threads on {} accounts, bank::open_read_models runner start()ed on the same file; per "
      "event, time from the command's acknowledgement to an observer thread seeing it applied in "
      "all three read models (runner.wait_for on the oldest unseen position, zero-timeout "
      "wait_for probes for the next ones; p50/p99 over lag_events_measured). events_per_s: the "
      "same commands at full speed with that runner following (started and stopped around each "
      "block); baseline_per_s: the same without a runner, separate store; ratio = the writers' "
      "rate with a runner / without; {} alternating blocks per rep; runner_backlog_at_end_max: "
      "events not yet applied when a rep's last block ended (applied untimed, then the model "
      "is checked)",
      c.lag_rate, c.live_threads, p.ids.size(), c.blocks);
  if (describe) describe(f);
  print_figure(f);
}

}  // namespace annals_bench
