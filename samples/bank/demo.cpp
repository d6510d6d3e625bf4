// `bank demo`: several processes and threads deposit and withdraw on shared accounts, then the
// demo checks that every balance equals the sum of the operations that were acknowledged.
#include "account.hpp"
#include "cli.hpp"
#include "projections.hpp"
#include "transfers.hpp"

#include <annals/admin.hpp>

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

namespace bank::cli {
namespace {

constexpr std::int64_t opening_deposit = 1000'00;

std::string account_name(const std::string& run_id, int i) {
  return fmt::format("demo-{}-{}", run_id, i);
}

struct tally {
  std::mutex mu;
  std::map<std::string, std::int64_t> net;  // acknowledged deposits minus withdrawals, cents
  std::atomic<long> ok{0}, rejected{0}, retried{0}, gave_up{0}, failed{0};
};

// Runs `threads` x `operations` random deposits and withdrawals against the shared accounts.
void run_load(annals::event_store& store, const std::string& run_id, int accounts, int threads,
              int operations, int max_retries, std::uint64_t seed, tally& t) {
  std::vector<std::thread> pool;
  for (int th = 0; th < threads; ++th) {
    pool.emplace_back([&, th] {
      std::mt19937_64 rng(seed * 1000003u + static_cast<std::uint64_t>(th));
      std::uniform_int_distribution<int> pick(1, accounts);
      std::uniform_int_distribution<std::int64_t> cents(1'00, 400'00);
      std::map<std::string, std::int64_t> mine;
      annals::command_options o;
      o.max_retries = max_retries;
      for (int i = 0; i < operations; ++i) {
        std::string id = account_name(run_id, pick(rng));
        std::int64_t amount = cents(rng);
        bool is_deposit = rng() % 2 == 0;
        auto r = annals::handle<account>(
            store, stream_for(id),
            [&](const account& a) {
              return is_deposit ? bank::deposit(a, id, amount) : bank::withdraw(a, id, amount);
            },
            o);
        if (r) {
          t.ok++;
          t.retried += r->conflicts_retried;
          mine[id] += is_deposit ? amount : -amount;
        } else if (r.error().kind() == annals::errc::rejected) {
          t.rejected++;  // insufficient funds: nothing written
        } else if (r.error().kind() == annals::errc::concurrency_conflict) {
          t.gave_up++;  // still conflicting after max_retries: nothing written
          t.retried += max_retries;
        } else {
          t.failed++;
          fmt::print(stderr, "bank demo: {}\n", r.error().message());
        }
      }
      std::lock_guard lock(t.mu);
      for (auto& [k, v] : mine) t.net[k] += v;
    });
  }
  for (auto& th : pool) th.join();
}

struct child {
  pid_t pid = -1;
  int out_fd = -1;
};

child spawn_worker(const std::string& exe, std::vector<std::string> args) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  // Built before fork(): a child of a process with threads must not allocate before exec.
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

std::string read_all_fd(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

// Transfers between the demo accounts, carried out by the process manager (the saga): some to
// an account that does not exist (refunded), some too large (refused, nothing moved). Money
// must be conserved: the accounts' total is the same before and after. true if it is.
annals::result<bool> run_transfers(annals::event_store& store, const std::string& db,
                                   const std::string& run_id, int accounts, std::uint64_t seed) {
  auto total = [&]() -> annals::result<std::int64_t> {
    std::int64_t sum = 0;
    for (int i = 1; i <= accounts; ++i) {
      auto a = annals::load<account>(store, stream_for(account_name(run_id, i)));
      if (!a) return a.error();
      sum += a->state.balance_cents;
    }
    return sum;
  };
  auto before = total();
  if (!before) return before.error();
  // The transfer to an unknown target goes first, from the richest account, for an amount it
  // holds: it must reach the target (and be refunded) whatever the random load left.
  int richest = 1;
  std::int64_t richest_cents = -1;
  for (int i = 1; i <= accounts; ++i) {
    auto a = annals::load<account>(store, stream_for(account_name(run_id, i)));
    if (!a) return a.error();
    if (a->state.balance_cents > richest_cents) {
      richest = i;
      richest_cents = a->state.balance_cents;
    }
  }
  std::mt19937_64 rng(seed ^ 0x7472616e73666572ull);
  const int count = std::max(4, accounts * 3);
  std::vector<std::string> ids;
  for (int k = 0; k < count; ++k) {
    const int from = 1 + static_cast<int>(rng() % static_cast<unsigned>(accounts));
    int to = 1 + static_cast<int>(rng() % static_cast<unsigned>(accounts));
    if (to == from) to = to % accounts + 1;
    std::string target = account_name(run_id, to);
    std::int64_t cents = 100 + static_cast<std::int64_t>(rng() % 20000);
    int source = from;
    if (k == 0) {  // refused by the target, then refunded
      target = account_name(run_id, 0) + "-nobody";
      source = richest;
      cents = std::max<std::int64_t>(1, std::min(cents, richest_cents));
    }
    if (k % 7 == 5) cents = 1000000000;  // refused by the source
    if (accounts < 2 && k != 0) continue;
    std::string id = fmt::format("t-{}-{}", run_id, k);
    auto r = annals::handle<transfer>(store, transfer_stream(id), [&](const transfer& t) {
      return request(t, id, account_name(run_id, source), target, cents);
    });
    if (!r) return r.error();
    ids.push_back(id);
  }
  auto saga = open_transfer_saga(db, store);
  if (!saga) return saga.error();
  int completed = 0, refunded = 0, refused = 0, open = 0;
  for (int round = 0; round < 100; ++round) {
    if (auto r = (*saga)->catch_up(); !r) return r.error();
    completed = refunded = refused = open = 0;
    for (const auto& id : ids) {
      auto t = load_transfer(store, id);
      if (!t) return t.error();
      if (t->state == transfer_state::completed) {
        ++completed;
      } else if (t->state == transfer_state::failed) {
        ++(t->refunded ? refunded : refused);
      } else {
        ++open;
      }
    }
    if (open == 0) break;
  }
  auto after = total();
  if (!after) return after.error();
  fmt::print("\nTransfers, carried out by the process manager (request, withdraw, deposit, "
             "complete; a refund when the target refuses):\n");
  fmt::print("  {} requested: {} completed, {} refunded (unknown target), {} refused by the "
             "source (insufficient funds), {} unfinished\n",
             ids.size(), completed, refunded, refused, open);
  fmt::print("  money conserved: accounts' total {} before, {} after: {}\n",
             format_cents(*before), format_cents(*after), *before == *after ? "ok" : "DIFFERENT");
  return *before == *after && open == 0;
}

int run_demo_worker(const worker_options& o) {
  auto store = bank::open_store(o.db);
  if (!store) return report(store.error());
  tally t;
  run_load(**store, o.run_id, o.accounts, o.threads, o.operations, o.max_retries, o.seed, t);
  // The parent reads these lines: only acknowledged operations are counted.
  for (auto& [id, net] : t.net) fmt::print("ack {} {}\n", id, net);
  fmt::print("stats {} {} {} {} {}\n", t.ok.load(), t.rejected.load(), t.retried.load(),
             t.gave_up.load(), t.failed.load());
  return t.failed ? 4 : 0;
}

int run_demo(const demo_options& o, const std::string& self_exe) {
  std::string db = o.db;
  if (db.empty()) {
    std::string dir = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
    dir += "/bank-demo-XXXXXX";
    if (!mkdtemp(dir.data())) {
      return report(annals::error(annals::errc::io, "cannot create a temporary directory"));
    }
    db = dir + "/bank.db";
  }
  auto opened = bank::open_store(db);
  if (!opened) return report(opened.error());
  // One handle: the commands below and the read models are built on it.
  std::shared_ptr<annals::event_store> handle = std::move(opened).value();
  auto& store = *handle;
  std::uint64_t seed = o.seed ? o.seed : std::random_device{}();
  std::string run_id = annals::new_uuid_v7().substr(24, 8);

  fmt::print("Annals bank demo\n");
  const bool on_postgres = db.find("://") != std::string::npos;
  fmt::print("  store:    {} ({})\n", db,
             on_postgres ? "PostgreSQL" : "SQLite, WAL, synchronous=FULL");
  fmt::print("  accounts: {} shared accounts, each opened with {}\n", o.accounts,
             format_cents(opening_deposit));
  fmt::print("  load:     {} worker processes + this one, {} threads each, {} commands per "
             "thread (random deposits and withdrawals of 1.00 to 400.00)\n\n",
             o.processes, o.threads, o.operations);

  for (int i = 1; i <= o.accounts; ++i) {
    std::string id = account_name(run_id, i);
    auto r = annals::handle<account>(store, stream_for(id), [&](const account& a) {
      return bank::open(a, id, fmt::format("Demo owner {}", i));
    });
    if (!r) return report(r.error());
    auto d = annals::handle<account>(store, stream_for(id), [&](const account& a) {
      return bank::deposit(a, id, opening_deposit);
    });
    if (!d) return report(d.error());
  }

  auto started = std::chrono::steady_clock::now();
  std::vector<child> children;
  for (int p = 0; p < o.processes; ++p) {
    children.push_back(spawn_worker(
        self_exe, {"--db", db, "--retries", std::to_string(o.max_retries), "demo-worker", "--run",
                   run_id, "--accounts", std::to_string(o.accounts), "--threads",
                   std::to_string(o.threads), "--operations", std::to_string(o.operations),
                   "--seed", std::to_string(seed + 1 + static_cast<std::uint64_t>(p))}));
    if (children.back().pid < 0) {
      return report(annals::error(annals::errc::io, "cannot start a demo worker process"));
    }
  }
  // The read models follow the appends live, in a background thread of this process; appends
  // from the worker processes are picked up by polling the store.
  auto read_models = bank::open_read_models(handle);
  if (!read_models) return report(read_models.error());
  auto& runner = **read_models;
  if (auto r = runner.start(); !r) return report(r.error());
  std::atomic<bool> load_done{false};
  std::thread monitor([&] {
    while (!load_done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      auto st = runner.status();
      if (!st || load_done) continue;
      std::string line = "  read models:";
      for (const auto& p : *st) {
        line += fmt::format("  {} {}/{} (lag {})", p.name, p.checkpoint, p.head, p.lag_events);
      }
      fmt::print("{}\n", line);
    }
  });
  tally t;
  run_load(store, run_id, o.accounts, o.threads, o.operations, o.max_retries, seed, t);

  bool workers_ok = true;
  for (auto& c : children) {
    std::istringstream lines(read_all_fd(c.out_fd));
    int status = 0;
    waitpid(c.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) workers_ok = false;
    std::string kind;
    while (lines >> kind) {
      if (kind == "ack") {
        std::string id;
        std::int64_t net = 0;
        lines >> id >> net;
        t.net[id] += net;
      } else if (kind == "stats") {
        long ok, rej, ret, gave, fail;
        lines >> ok >> rej >> ret >> gave >> fail;
        t.ok += ok, t.rejected += rej, t.retried += ret, t.gave_up += gave, t.failed += fail;
      }
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  load_done = true;
  monitor.join();

  fmt::print("Commands: {} acknowledged, {} rejected by a rule (insufficient funds), {} gave up "
             "after {} retries, {} failed\n",
             t.ok.load(), t.rejected.load(), t.gave_up.load(), o.max_retries, t.failed.load());
  fmt::print("Concurrency conflicts detected and retried: {} (each one reloaded the account and "
             "decided again)\n",
             t.retried.load());
  fmt::print("Elapsed: {:.2f} s, {:.0f} commands/s across {} processes\n\n", secs,
             static_cast<double>(t.ok + t.rejected + t.gave_up) / secs, o.processes + 1);

  // Read-your-writes for the asynchronous read models: wait until they reach the head.
  auto head_now = store.head_position();
  if (!head_now) return report(head_now.error());
  for (const auto* name : {"account_balances", "account_statement", "daily_totals"}) {
    if (auto w = runner.wait_for(name, *head_now, std::chrono::seconds(60)); !w) {
      return report(w.error());
    }
  }
  fmt::print("Read models caught up with position {}.\n\n", *head_now);

  fmt::print("{:<24} {:>14} {:>14} {:>14} {:>8}  {}\n", "account", "expected", "aggregate",
             "read model", "events", "check");
  bool all_match = true;
  auto check_accounts = [&](bool print) -> annals::result<bool> {
    bool ok = true;
    for (int i = 1; i <= o.accounts; ++i) {
      std::string id = account_name(run_id, i);
      std::int64_t expected = opening_deposit + t.net[id];
      auto a = annals::load<account>(store, stream_for(id));
      if (!a) return a.error();
      auto row = bank::find_balance(runner, id);
      if (!row) return row.error();
      std::int64_t projected = *row ? (*row)->balance_cents : -1;
      bool match = a->state.balance_cents == expected && projected == expected && expected >= 0;
      ok = ok && match;
      if (print) {
        fmt::print("{:<24} {:>14} {:>14} {:>14} {:>8}  {}\n", id, format_cents(expected),
                   format_cents(a->state.balance_cents), format_cents(projected), a->version + 1,
                   match ? "ok" : "MISMATCH");
      }
    }
    return ok;
  };
  auto checked = check_accounts(true);
  if (!checked) return report(checked.error());
  all_match = *checked;

  // A zero-downtime rebuild of one read model: shadow tables, then an atomic swap.
  fmt::print("\nRebuilding account_balances from the log (readers keep the old model until the "
             "swap):\n");
  annals::rebuild_options ro;
  ro.batch_size = 1000;
  ro.progress = [](const annals::rebuild_progress& p) {
    fmt::print("  replayed to position {}/{}, {} events, {:.0f} events/s\n", p.position, p.head,
               p.events, p.events_per_s);
  };
  auto rebuilt = runner.rebuild("account_balances", ro);
  if (!rebuilt) return report(rebuilt.error());
  fmt::print("  swapped in: {} events in {:.2f} s, checkpoint {}\n", rebuilt->events,
             rebuilt->seconds, rebuilt->position);
  auto rechecked = check_accounts(false);
  if (!rechecked) return report(rechecked.error());
  fmt::print("  balances after the rebuild: {}\n", *rechecked ? "identical" : "DIFFERENT");
  all_match = all_match && *rechecked;
  auto transfers_ok = run_transfers(store, db, run_id, o.accounts, seed);
  if (!transfers_ok) return report(transfers_ok.error());
  runner.stop();
  auto head = store.head_position();
  fmt::print("\nStore head position: {}\n", head ? *head : -1);
  // The whole log checked row by row, as `bank verify` / `annals verify` do.
  std::int64_t problems = -1;
  if (auto admin = annals::open_admin(db)) {
    auto v = (*admin)->verify(
        [](const annals::store_problem& p) {
          fmt::print("  verify: position {}: {}{}: {}\n", p.position,
                     p.warning ? "warning: " : "", p.check, p.detail);
        },
        event_upcasters().get());
    if (v) problems = *v;
  }
  fmt::print("Verify (positions, versions, ids, metadata, every payload against its stored schema "
             "and through the upcasters): {}\n",
             problems == 0 ? "no problems" : problems < 0 ? "could not run" : "PROBLEMS FOUND");

  if (!workers_ok || t.failed) {
    fmt::print(stderr, "bank demo: a worker process failed\n");
    return 4;
  }
  if (!all_match) {
    fmt::print(stderr, "bank demo: a balance differs from its acknowledged operations\n");
    return 4;
  }
  if (problems != 0) {
    fmt::print(stderr, "bank demo: verify did not pass\n");
    return 4;
  }
  if (!*transfers_ok) {
    fmt::print(stderr, "bank demo: transfers did not conserve money or did not finish\n");
    return 4;
  }
  fmt::print("Every balance, in the aggregate and in the read model, equals its opening deposit "
             "plus the sum of its acknowledged operations: no update was lost.\n");
  fmt::print("Look closer: bank --db {} statement {}\n", db, account_name(run_id, 1));
  fmt::print("             bank --db {} projections status\n", db);
  fmt::print("             bank --db {} transfers\n", db);
  fmt::print("             annals --db {} stats\n", db);
  return 0;
}

}  // namespace bank::cli
