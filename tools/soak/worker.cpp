// `annals-soak worker`: one load process. It deposits, withdraws and opens accounts until
// SIGTERM, and reports each command on stdout, flushed before the next one begins: the parent
// takes an "ack" line as the promise that the command's events are stored.
#include <fmt/format.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "account.hpp"
#include "soak.hpp"

namespace soak {
namespace {

std::atomic<bool> stop_requested{false};

void on_stop(int) { stop_requested = true; }

void say(const std::string& line) {
  fmt::print("{}\n", line);
  std::fflush(stdout);
}

}  // namespace

int run_worker(const worker_options& o) {
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  auto store = bank::open_store(o.db);
  if (!store) {
    fmt::print(stderr, "annals-soak worker: {}\n", store.error().message());
    return 4;
  }
  std::mt19937_64 rng(o.seed);
  std::vector<std::string> own;  // accounts this process opened
  annals::command_options co;
  co.max_retries = o.max_retries;
  int failures = 0;
  while (!stop_requested) {
    const auto dice = rng() % 100;
    std::string kind, id;
    std::int64_t cents = 0;
    if (dice < 4) {
      kind = "open";
      id = fmt::format("{}-{}", o.name, own.size());
    } else {
      kind = dice < 52 ? "deposit" : "withdraw";
      const bool pick_own = !own.empty() && rng() % 5 == 0;
      id = pick_own ? own[rng() % own.size()]
                    : shared_account(static_cast<int>(rng() % static_cast<unsigned>(o.accounts)));
      cents = static_cast<std::int64_t>(1'00 + rng() % (kind == "deposit" ? 200'00 : 250'00));
    }
    auto r = annals::handle<bank::account>(
        **store, bank::stream_for(id),
        [&](const bank::account& a) {
          if (kind == "open") return bank::open(a, id, "Soak " + id);
          return kind == "deposit" ? bank::deposit(a, id, cents) : bank::withdraw(a, id, cents);
        },
        co);
    if (r) {
      // ack KIND STREAM VERSION POSITION CONFLICTS_RETRIED
      say(fmt::format("ack {} {} {} {} {}", kind, bank::stream_for(id), r->stream_version,
                      r->position, r->conflicts_retried));
      if (kind == "open") own.push_back(id);
      failures = 0;
    } else if (r.error().kind() == annals::errc::rejected) {
      say(fmt::format("rejected {}", kind));  // insufficient funds: nothing written
    } else if (r.error().kind() == annals::errc::concurrency_conflict) {
      say(fmt::format("gave_up {} {}", kind, o.max_retries));
    } else {
      say(fmt::format("error {} {}", annals::to_string(r.error().kind()), r.error().message()));
      fmt::print(stderr, "annals-soak worker: {}\n", r.error().message());
      if (++failures >= 20) return 4;
    }
    if (o.pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.pause_ms));
  }
  return 0;
}

}  // namespace soak
