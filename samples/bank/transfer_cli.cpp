// `bank transfer`, `bank transfers` and `bank saga`: money transfers from the command line.
#include <fmt/format.h>
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cli.hpp"
#include "transfers.hpp"

namespace bank::cli {
namespace {

// Transfers need accounts, so a store that is not there is a mistake (a mistyped path), never
// created here. Shared: the saga is built on the same handle (its reads, its upcasters).
annals::result<std::shared_ptr<annals::event_store>> open_existing(const std::string& db) {
  auto options = store_options();
  options.create_if_missing = false;
  auto store = bank::open_store(db, options);
  if (!store && store.error().kind() == annals::errc::not_found) {
    return annals::error(
        annals::errc::invalid_argument,
        fmt::format("there is no store at '{}' (the first 'open' creates it)", db));
  }
  if (!store) return std::move(store).error();
  return std::shared_ptr<annals::event_store>(std::move(store).value());
}

std::string describe(const transfer& t) {
  const std::string what =
      fmt::format("{} from '{}' to '{}'", format_cents(t.amount_cents), t.from, t.to);
  switch (t.state) {
    case transfer_state::completed:
      return fmt::format("transfer '{}' completed: {}", t.id, what);
    case transfer_state::failed:
      return t.refunded ? fmt::format("transfer '{}' failed and was refunded to '{}': {}", t.id,
                                      t.from, t.reason)
                        : fmt::format("transfer '{}' failed, nothing moved: {}", t.id, t.reason);
    default:
      return fmt::format("transfer '{}' is {}: {}", t.id, to_string(t.state), what);
  }
}

struct transfer_args {
  std::string from, to, amount, id;
  bool no_wait = false;
  double timeout_s = 60;
};

// Requests the transfer, then (unless no_wait) drives the process manager until the transfer
// is over: this process runs the "bank-transfers" subscription while no other instance holds
// its lease, and otherwise waits for the instance that does.
int request_transfer(const std::string& db, int max_retries, transfer_args a) {
  if (a.id.empty()) a.id = annals::new_uuid_v7();
  if (auto ok = validate_transfer_id(a.id); !ok) return report(ok.error());
  if (auto ok = validate_account_id(a.from); !ok) return report(ok.error());
  if (auto ok = validate_account_id(a.to); !ok) return report(ok.error());
  auto cents = parse_amount(a.amount);
  if (!cents) return report(cents.error());
  auto store = open_existing(db);
  if (!store) return report(store.error());

  annals::command_options o;
  o.max_retries = max_retries;
  auto r = annals::handle<transfer>(
      **store, transfer_stream(a.id),
      [&](const transfer& t) { return request(t, a.id, a.from, a.to, *cents); }, o);
  if (!r) return report(r.error());
  if (a.no_wait) {
    fmt::print("requested transfer '{}': {} from '{}' to '{}' (position {})\n", a.id,
               format_cents(*cents), a.from, a.to, r->position);
    return 0;
  }

  annals::command_options base;
  base.max_retries = max_retries;
  auto saga = open_transfer_saga(*store, **store, transfer_saga_options(), base);
  if (!saga) return report(saga.error());
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<std::int64_t>(a.timeout_s * 1000));
  for (;;) {
    if (auto n = (*saga)->catch_up(); !n) return report(n.error());
    auto t = load_transfer(**store, a.id);
    if (!t) return report(t.error());
    if (t->finished()) {
      fmt::print("{}\n", describe(*t));
      return t->state == transfer_state::completed ? 0 : 1;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return report(annals::error(
          annals::errc::timed_out,
          fmt::format("{} after {} s; a process manager ('bank saga') carries it on ('annals "
                      "subscriptions list' shows subscription '{}')",
                      describe(*t), a.timeout_s, transfer_saga_name)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Every transfer in request order (from the transfer streams: the log is the read model here;
// one entry per transfer is held in memory).
int list_transfers(const std::string& db, const std::string& state_filter) {
  std::optional<transfer_state> wanted;
  if (!state_filter.empty()) {
    auto s = parse_transfer_state(state_filter);
    if (!s) return report(s.error());
    wanted = *s;
  }
  auto store = open_existing(db);
  if (!store) return report(store.error());
  std::vector<transfer> transfers;
  std::unordered_map<std::string, std::size_t> index;  // stream id -> transfers[i]
  annals::dispatcher<transfer> d;
  std::optional<annals::error> failed;
  annals::read_all_options o;
  o.stream_prefix = transfer_stream("");
  auto r = (*store)->read_all(o, [&](const annals::recorded_event& e) {
    auto [it, added] = index.try_emplace(e.stream_id, transfers.size());
    if (added) transfers.emplace_back();
    if (auto ok = d.apply(transfers[it->second], e); !ok) {
      failed = ok.error();
      return false;
    }
    return true;
  });
  if (!r) return report(r.error());
  if (failed) return report(*failed);
  std::size_t shown = 0;
  for (const auto& t : transfers) {
    if (wanted && t.state != *wanted) continue;
    ++shown;
    fmt::print("{}  {:<9}  {:>12}  {} -> {}{}{}\n", t.id, to_string(t.state),
               format_cents(t.amount_cents), t.from, t.to, t.refunded ? "  refunded" : "",
               t.reason.empty() ? "" : "  (" + t.reason + ")");
  }
  fmt::print("{} transfer(s)\n", shown);
  return 0;
}

void print_status(annals::subscription& saga) {
  auto st = saga.status();
  if (!st) return;
  fmt::print("{}: checkpoint {} of {}, {} event(s) handled in all, {} parked{}\n", st->name,
             st->checkpoint, st->head, st->delivered, st->parked,
             st->error.empty() ? "" : ", last error: " + st->error);
}

// Runs the process manager: once (catch up, then exit), or live until SIGINT or SIGTERM.
int run_saga(const std::string& db, int max_retries, bool once, double lease_s) {
  // Before any thread starts, so that only sigwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (!once) pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto store = open_existing(db);
  if (!store) return report(store.error());
  auto options = transfer_saga_options();
  options.lease = std::chrono::milliseconds(static_cast<std::int64_t>(lease_s * 1000));
  annals::command_options base;
  base.max_retries = max_retries;
  auto saga = open_transfer_saga(*store, **store, options, base);
  if (!saga) return report(saga.error());
  if (once) {
    // Every step pending now, and the steps they lead to (a step appends the event that
    // triggers the next one, after the head seen before it). Another instance may hold the
    // lease (a live one, or one that died: its lease runs out): wait_for() waits for it, a few
    // lease periods at most, then this exits 4.
    const auto patience = 3 * options.lease + std::chrono::seconds(1);
    for (;;) {
      auto head = (*store)->head_position();
      if (!head) return report(head.error());
      if (auto w = (*saga)->wait_for(*head, patience); !w) {
        return report(annals::error(
            w.error().kind(),
            fmt::format("{} (another `bank saga` may hold the lease of '{}': see `annals "
                        "subscriptions list`)",
                        w.error().message(), transfer_saga_name)));
      }
      auto after = (*store)->head_position();
      if (!after) return report(after.error());
      if (*after == *head) break;  // the steps appended nothing more: all done
    }
    print_status(**saga);
    return 0;
  }
  if (auto ok = (*saga)->start(); !ok) return report(ok.error());
  fmt::print(stderr, "bank saga: running the transfer process manager; stop with Ctrl-C\n");
  int sig = 0;
  sigwait(&stop_signals, &sig);
  (*saga)->stop();
  print_status(**saga);
  return 0;
}

}  // namespace

void add_transfer_commands(CLI::App& app, const std::string& db, const int& max_retries,
                           int& code) {
  auto args = std::make_shared<transfer_args>();
  auto* transfer_cmd = app.add_subcommand(
      "transfer",
      "Transfer AMOUNT from one account to another, then wait until it is completed or failed "
      "(exit 1 if it failed)");
  transfer_cmd->add_option("FROM", args->from, "Source account")->required();
  transfer_cmd->add_option("TO", args->to, "Target account")->required();
  transfer_cmd->add_option("AMOUNT", args->amount, "Amount, at most two decimals")->required();
  transfer_cmd->add_option("--id", args->id,
                           "Transfer id (default: a new UUID); asking again with the same id, "
                           "accounts and amount does not transfer twice");
  transfer_cmd->add_flag("--no-wait", args->no_wait,
                         "Only request it; a process manager ('bank saga') carries it out");
  transfer_cmd->add_option("--timeout", args->timeout_s, "Seconds to wait for the outcome")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  transfer_cmd->callback(
      [&db, &max_retries, &code, args] { code = request_transfer(db, max_retries, *args); });

  auto state = std::make_shared<std::string>();
  auto* list_cmd =
      app.add_subcommand("transfers", "List transfers in request order with their state");
  list_cmd->add_option("--state", *state,
                       "Only this state: requested, debited, refunding, completed, failed");
  list_cmd->callback([&db, &code, state] { code = list_transfers(db, *state); });

  auto once = std::make_shared<bool>(false);
  auto lease = std::make_shared<double>(10);
  auto* saga_cmd = app.add_subcommand(
      "saga",
      "Run the transfer process manager until SIGINT or SIGTERM (one instance is active "
      "per store; others wait and take over)");
  saga_cmd->add_flag(
      "--once", *once,
      "Carry out every pending step (unless another instance holds the lease), then exit");
  saga_cmd
      ->add_option("--lease", *lease,
                   "Seconds after which another instance takes over from one that died")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  saga_cmd->callback(
      [&db, &max_retries, &code, once, lease] { code = run_saga(db, max_retries, *once, *lease); });
}

}  // namespace bank::cli
