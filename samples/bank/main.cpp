// bank — the bank-account sample's command line. See README.md for the commands and exit codes.
#include "account.hpp"
#include "cli.hpp"
#include "http.hpp"
#include "integration.hpp"
#include "projections.hpp"

#include <annals/admin.hpp>
#include <annals/projection_cli.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <ctime>
#include <unistd.h>
#include <iostream>

namespace bank::cli {

int report(const annals::error& e) {
  fmt::print(stderr, "bank: {}\n", e.message());
  return annals::exit_code(e.kind());
}

}  // namespace bank::cli

namespace {

using namespace bank;

struct common {
  std::string db = "bank.db";
  int max_retries = 10;
};

annals::result<std::unique_ptr<annals::event_store>> open_db(const common& c) {
  return bank::open_store(c.db);
}

// Commands that only read must not create a store for a mistyped path or database.
annals::result<void> require_store(const common& c) {
  if (c.db.find("://") != std::string::npos) {
    annals::sqlite_options o;
    o.create_if_missing = false;
    o.read_only = true;
    auto s = annals::open_store(c.db, o);
    if (!s && s.error().kind() == annals::errc::not_found) {
      return annals::error(annals::errc::invalid_argument,
                           fmt::format("there is no store in '{}' (the first 'open' creates it)",
                                       c.db));
    }
    if (!s) return s.error();
    return {};
  }
  std::string path = c.db.rfind("sqlite:", 0) == 0 ? c.db.substr(7) : c.db;
  if (access(path.c_str(), F_OK) != 0) {
    return annals::error(annals::errc::invalid_argument,
                         fmt::format("there is no store at '{}' (the first 'open' creates it)",
                                     path));
  }
  return {};
}

// Account ids become part of a stream id; refuse here what the store would refuse.
annals::result<std::string> account_stream(const std::string& id) {
  if (id.empty()) return annals::error(annals::errc::invalid_argument, "the account id is empty");
  if (id.size() > 200) {
    return annals::error(annals::errc::invalid_argument,
                         "the account id is longer than 200 bytes");
  }
  auto stream = stream_for(id);
  if (auto r = annals::validate_stream_id(stream); !r) {
    return annals::error(annals::errc::invalid_argument,
                         fmt::format("invalid account id: {}", r.error().message()));
  }
  return stream;
}

// Owner names are printed one per line: valid UTF-8, no control characters.
annals::result<void> check_owner(const std::string& owner) {
  if (!annals::is_valid_utf8(owner)) {
    return annals::error(annals::errc::invalid_argument, "the owner's name is not valid UTF-8");
  }
  for (unsigned char ch : owner) {
    if (ch < 0x20 || ch == 0x7f) {
      return annals::error(annals::errc::invalid_argument,
                           "the owner's name contains a control character");
    }
  }
  if (owner.size() > 200) {
    return annals::error(annals::errc::invalid_argument, "the owner's name is over 200 bytes");
  }
  return {};
}

template <class Decide>
int run_command(const common& c, const std::string& id, Decide&& decide,
                const std::function<void(const annals::command_result&)>& done) {
  auto stream = account_stream(id);
  if (!stream) return cli::report(stream.error());
  auto store = open_db(c);
  if (!store) return cli::report(store.error());
  annals::command_options o;
  o.max_retries = c.max_retries;
  auto r = annals::handle<account>(**store, *stream, decide, o);
  if (!r) return cli::report(r.error());
  done(*r);
  return 0;
}

int with_amount(const std::string& text, const std::function<int(std::int64_t)>& next) {
  auto cents = parse_amount(text);
  if (!cents) return cli::report(cents.error());
  return next(*cents);
}

std::string format_time(std::int64_t us) {
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:06}Z", buf, us % 1000000);
}

// Opens the read models and brings them up to date with the store (so a balance read right
// after a command sees it), then runs `body` on them.
int with_read_models(const common& c,
                     const std::function<int(annals::projection_runner&)>& body) {
  if (auto r = require_store(c); !r) return cli::report(r.error());
  auto runner = bank::open_read_models(c.db);
  if (!runner) return cli::report(runner.error());
  if (auto r = (*runner)->catch_up(); !r) return cli::report(r.error());
  // A stuck projection does not fail the read, but the user must know the model is stale.
  if (auto st = (*runner)->status(); st) {
    for (const auto& p : *st) {
      if (p.state == annals::consumer_state::stuck) {
        fmt::print(stderr,
                   "bank: warning: read model '{}' is stuck at position {} and may be stale "
                   "(see 'bank projections parked {}')\n",
                   p.name, p.stuck_position.value_or(0), p.name);
      }
    }
  }
  return body(**runner);
}

int no_such_account(const std::string& id) {
  return cli::report(
      annals::error(annals::errc::not_found, fmt::format("account '{}' does not exist", id)));
}

int show_balance(const common& c, const std::string& id) {
  if (auto s = account_stream(id); !s) return cli::report(s.error());
  return with_read_models(c, [&](annals::projection_runner& runner) {
    auto row = bank::find_balance(runner, id);
    if (!row) return cli::report(row.error());
    if (!*row) return no_such_account(id);
    fmt::print("{}\n", format_cents((*row)->balance_cents));
    return 0;
  });
}

int show_statement(const common& c, const std::string& id) {
  if (auto s = account_stream(id); !s) return cli::report(s.error());
  return with_read_models(c, [&](annals::projection_runner& runner) {
    auto row = bank::find_balance(runner, id);
    if (!row) return cli::report(row.error());
    if (!*row) return no_such_account(id);
    fmt::print("Statement of '{}' ({}{})\n", id, (*row)->owner, (*row)->closed ? ", closed" : "");
    auto n = bank::read_statement(runner, id, [](const bank::statement_row& r) {
      fmt::print("{:>6}  {}  {:<12} {:>12}  balance {:>12}{}{}\n", r.stream_version,
                 format_time(r.recorded_at_us), r.kind, format_cents(r.amount_cents),
                 format_cents(r.balance_after_cents), r.memo.empty() ? "" : "  ", r.memo);
      return true;
    });
    if (!n) return cli::report(n.error());
    fmt::print("{} movement(s); balance {}\n", *n, format_cents((*row)->balance_cents));
    return 0;
  });
}

int show_history(const common& c, const std::string& id) {
  auto stream = account_stream(id);
  if (!stream) return cli::report(stream.error());
  if (auto r = require_store(c); !r) return cli::report(r.error());
  auto store = open_db(c);
  if (!store) return cli::report(store.error());
  // Fold and print in one pass: the history is streamed, never held whole.
  account state;
  annals::dispatcher<account> d;
  std::optional<annals::error> failed;
  auto r = (*store)->read_stream(*stream, {}, [&](const annals::recorded_event& e) {
    if (auto s = d.apply(state, e); !s) {
      failed = s.error();
      return false;
    }
    std::string what;
    if (e.type == v2::AccountOpened::descriptor()->full_name()) {
      what = fmt::format("opened for {}", state.owner);
    } else if (e.type == v1::MoneyDeposited::descriptor()->full_name()) {
      v1::MoneyDeposited m;
      m.ParseFromString(e.payload);
      const char* kind = m.refund() ? "refund" : m.transfer_id().empty() ? "deposit" : "transfer in";
      what = fmt::format("{:<12}{:>12}", kind, format_cents(m.amount_cents()));
      if (!m.transfer_id().empty()) what += fmt::format("  ({})", m.transfer_id());
    } else if (e.type == v1::MoneyWithdrawn::descriptor()->full_name()) {
      v1::MoneyWithdrawn m;
      m.ParseFromString(e.payload);
      const char* kind = m.transfer_id().empty() ? "withdrawal" : "transfer out";
      what = fmt::format("{:<12}{:>12}", kind, format_cents(m.amount_cents()));
      if (!m.transfer_id().empty()) what += fmt::format("  ({})", m.transfer_id());
    } else {
      what = "closed";
    }
    fmt::print("{:>6}  {}  {:<40} balance {:>12}\n", e.stream_version,
               format_time(e.recorded_at_us), what, format_cents(state.balance_cents));
    return true;
  });
  if (!r) return cli::report(r.error());
  if (failed) return cli::report(*failed);
  if (*r == 0) {
    return cli::report(annals::error(annals::errc::not_found,
                                     fmt::format("account '{}' does not exist", id)));
  }
  return 0;
}

// `annals verify` plus what only the bank's code knows: every event through its upcasters.
int verify_store(const common& c) {
  if (auto r = require_store(c); !r) return cli::report(r.error());
  auto admin = annals::open_admin(c.db);
  if (!admin) return cli::report(admin.error());
  std::int64_t warnings = 0;
  auto problems = (*admin)->verify(
      [&](const annals::store_problem& p) {
        if (p.warning) ++warnings;
        std::string where = p.position ? fmt::format("position {}", p.position) : "store";
        fmt::print("{}: {}{}: {}\n", where, p.warning ? "warning: " : "", p.check, p.detail);
      },
      bank::event_upcasters().get());
  if (!problems) return cli::report(problems.error());
  if (*problems == 0) {
    fmt::print("ok: no problems found, {} warning(s)\n", warnings);
    return 0;
  }
  fmt::print("{} problem(s) found, {} warning(s)\n", *problems, warnings);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bank: the Annals bank-account sample (event-sourced accounts in a SQLite store)"};
  app.require_subcommand(1);
  app.fallthrough();  // `bank open x --owner y --db f` works like `bank --db f open x ...`
  common c;
  app.add_option("--db", c.db,
                 "Store: a file path, sqlite:PATH, or postgresql://USER@HOST:PORT/DBNAME")->capture_default_str();
  app.add_option("--retries", c.max_retries, "Conflict retries per command")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.footer(
      "Exit codes: 0 ok, 1 rejected (a rule refused it, or no such account), 2 usage or bad "
      "input, 3 conflict after retries, 4 storage error.");

  std::string id, owner, amount;
  int code = 0;

  auto* open_cmd = app.add_subcommand("open", "Open an account");
  open_cmd->add_option("ACCOUNT", id, "Account id")->required();
  open_cmd->add_option("--owner", owner, "Owner's name")->required();
  open_cmd->callback([&] {
    if (auto ok = check_owner(owner); !ok) {
      code = cli::report(ok.error());
      return;
    }
    code = run_command(
        c, id, [&](const account& a) { return bank::open(a, id, owner); },
        [&](const annals::command_result& r) {
          fmt::print("opened account '{}' for {} (position {})\n", id, owner, r.position);
        });
  });

  // deposit and withdraw: same shape, different decider and wording.
  using money_decider = annals::decision<account> (*)(const account&, std::string_view,
                                                       std::int64_t);
  auto add_money_command = [&](const char* name, const char* help, money_decider decider,
                               const char* done_verb, const char* preposition) {
    auto* cmd = app.add_subcommand(name, help);
    cmd->add_option("ACCOUNT", id, "Account id")->required();
    cmd->add_option("AMOUNT", amount, "Amount, at most two decimals")->required();
    cmd->callback([&, decider, done_verb, preposition] {
      code = with_amount(amount, [&](std::int64_t cents) {
        return run_command(
            c, id, [&](const account& a) { return decider(a, id, cents); },
            [&](const annals::command_result& r) {
              fmt::print("{} {} {} '{}' (version {}, position {})\n", done_verb,
                         format_cents(cents), preposition, id, r.stream_version, r.position);
            });
      });
    });
  };
  add_money_command("deposit", "Deposit AMOUNT (e.g. 12.50)", &bank::deposit, "deposited", "to");
  add_money_command("withdraw", "Withdraw AMOUNT (e.g. 12.50)", &bank::withdraw, "withdrew",
                    "from");

  auto* close_cmd = app.add_subcommand("close", "Close an account (its balance must be zero)");
  close_cmd->add_option("ACCOUNT", id, "Account id")->required();
  close_cmd->callback([&] {
    code = run_command(
        c, id, [&](const account& a) { return bank::close(a, id); },
        [&](const annals::command_result&) { fmt::print("closed account '{}'\n", id); });
  });

  auto* balance_cmd =
      app.add_subcommand("balance", "Print an account's balance (from the read model)");
  balance_cmd->add_option("ACCOUNT", id, "Account id")->required();
  balance_cmd->callback([&] { code = show_balance(c, id); });

  auto* statement_cmd = app.add_subcommand(
      "statement", "Print an account's money movements with running balances (read model)");
  statement_cmd->add_option("ACCOUNT", id, "Account id")->required();
  statement_cmd->callback([&] { code = show_statement(c, id); });

  // The store opened with the bank's upcasters: old stored events read as today's.
  annals::add_projection_commands(app, c.db, &bank::projections, code, {},
                                  bank::store_options());

  bank::cli::add_integration_commands(app, c.db, code);  // relay, notify (NATS JetStream)

  auto* history_cmd = app.add_subcommand("history", "Print an account's events");
  history_cmd->add_option("ACCOUNT", id, "Account id")->required();
  history_cmd->callback([&] { code = show_history(c, id); });

  auto* verify_cmd = app.add_subcommand(
      "verify", "Check the whole store (as `annals verify`) and every event through the bank's "
                "upcasters; exit 1 if anything is wrong");
  verify_cmd->callback([&] { code = verify_store(c); });

  bank::cli::add_transfer_commands(app, c.db, c.max_retries, code);
  bank::cli::add_http_commands(app, c.db, c.max_retries, code);  // serve (HTTP, dashboard)

  bank::cli::demo_options demo;
  auto* demo_cmd = app.add_subcommand(
      "demo", "Concurrent deposits and withdrawals from several processes and threads, then a "
              "check that every balance equals its acknowledged operations");
  demo_cmd->add_option("--processes", demo.processes, "Worker processes besides this one")
      ->capture_default_str()
      ->check(CLI::Range(1, 32));
  demo_cmd->add_option("--threads", demo.threads, "Threads per process")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  demo_cmd->add_option("--operations", demo.operations, "Commands per thread")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  demo_cmd->add_option("--accounts", demo.accounts, "Shared accounts")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  demo_cmd->add_option("--seed", demo.seed, "Random seed (0: random)");
  demo_cmd->callback([&] {
    demo.db = app.get_option("--db")->count() ? c.db : std::string();
    demo.max_retries = c.max_retries;
    code = bank::cli::run_demo(demo, "/proc/self/exe");
  });

  bank::cli::worker_options worker;
  auto* worker_cmd = app.add_subcommand("demo-worker", "");  // internal: one demo process
  worker_cmd->group("");
  worker_cmd->add_option("--run", worker.run_id)->required();
  worker_cmd->add_option("--accounts", worker.accounts)->required();
  worker_cmd->add_option("--threads", worker.threads)->required();
  worker_cmd->add_option("--operations", worker.operations)->required();
  worker_cmd->add_option("--seed", worker.seed)->required();
  worker_cmd->callback([&] {
    worker.db = c.db;
    worker.max_retries = c.max_retries;
    code = bank::cli::run_demo_worker(worker);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "bank: {}\nRun 'bank --help' for usage.\n", e.what());
    return 2;
  }
  return code;
}
