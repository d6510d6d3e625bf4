#include "checks.hpp"

#include <fmt/format.h>

#include <annals/projection_runner.hpp>
#include <annals/relay.hpp>
#include <annals/subscription.hpp>
#include <set>
#include <thread>
#include <unordered_map>

#include "account.hpp"
#include "processes.hpp"
#include "projections.hpp"
#include "transfers.hpp"

namespace soak {
namespace {

const std::string deposited_type = bank::v1::MoneyDeposited::descriptor()->full_name();
const std::string withdrawn_type = bank::v1::MoneyWithdrawn::descriptor()->full_name();
constexpr std::string_view account_prefix = "account-";

check_result pass(std::string name, std::string detail = {}) {
  return {std::move(name), true, std::move(detail)};
}
check_result fail(std::string name, std::string detail) {
  return {std::move(name), false, std::move(detail)};
}

std::int64_t sum(const std::map<std::string, std::int64_t>& m) {
  std::int64_t s = 0;
  for (const auto& [k, v] : m) s += v;
  return s;
}

}  // namespace

std::int64_t ledger::total_balances() const { return sum(balance); }
std::int64_t ledger::total_in_flight() const { return sum(in_flight); }

annals::result<ledger> read_ledger(annals::event_store& store, std::int64_t upto) {
  ledger l;
  std::int64_t balances = 0, flying = 0;  // running sums: the check is O(1) per event
  std::optional<annals::error> bad;
  annals::read_all_options o;
  o.stream_prefix = std::string(account_prefix);
  auto r = store.read_all(o, [&](const annals::recorded_event& e) {
    if (e.position > upto) return false;
    l.head = e.position;
    ++l.events;
    if (e.type == deposited_type) {
      bank::v1::MoneyDeposited d;
      if (!d.ParseFromString(e.payload)) {
        bad = annals::error(annals::errc::corruption, fmt::format("position {}", e.position));
        return false;
      }
      l.balance[d.account_id()] += d.amount_cents();
      balances += d.amount_cents();
      if (d.transfer_id().empty()) {
        l.outside += d.amount_cents();
      } else {
        l.in_flight[d.transfer_id()] -= d.amount_cents();
        flying -= d.amount_cents();
        ++l.credits[d.transfer_id()];
      }
    } else if (e.type == withdrawn_type) {
      bank::v1::MoneyWithdrawn w;
      if (!w.ParseFromString(e.payload)) {
        bad = annals::error(annals::errc::corruption, fmt::format("position {}", e.position));
        return false;
      }
      l.balance[w.account_id()] -= w.amount_cents();
      balances -= w.amount_cents();
      if (w.transfer_id().empty()) {
        l.outside -= w.amount_cents();
      } else {
        l.in_flight[w.transfer_id()] += w.amount_cents();
        flying += w.amount_cents();
        ++l.debits[w.transfer_id()];
      }
    } else {
      l.balance.try_emplace(e.stream_id.substr(account_prefix.size()), 0);
    }
    if (balances + flying != l.outside && l.violations++ == 0) l.first_violation = e.position;
    return true;
  });
  if (!r) return r.error();
  if (bad) return *bad;
  return l;
}

check_result check_acks(annals::event_store& store, const std::vector<ack>& acks,
                        const std::vector<std::string>& transfer_ids) {
  const std::string name = "acknowledged_present";
  std::unordered_map<std::int64_t, const ack*> by_position;
  std::int64_t last = 0;
  for (const auto& a : acks) {
    by_position[a.position] = &a;
    last = std::max(last, a.position);
  }
  std::size_t found = 0;
  std::string first_wrong;
  annals::read_all_options o;
  auto r = store.read_all(o, [&](const annals::recorded_event& e) {
    if (e.position > last) return false;
    auto it = by_position.find(e.position);
    if (it == by_position.end()) return true;
    if (e.stream_id == it->second->stream && e.stream_version == it->second->version) {
      ++found;
    } else if (first_wrong.empty()) {
      first_wrong = fmt::format("position {} holds {}@{}, acknowledged as {}@{}", e.position,
                                e.stream_id, e.stream_version, it->second->stream,
                                it->second->version);
    }
    return true;
  });
  if (!r) return fail(name, r.error().message());
  if (found != by_position.size()) {
    return fail(name, fmt::format("{} of {} acknowledged commands found in the log; {}", found,
                                  by_position.size(),
                                  first_wrong.empty() ? "some positions are missing"
                                                      : first_wrong));
  }
  std::size_t transfers = 0;
  for (const auto& id : transfer_ids) {
    std::int64_t n = 0;
    auto c = store.read_stream(bank::transfer_stream(id), {}, [&](const annals::recorded_event&) {
      ++n;
      return false;
    });
    if (!c) return fail(name, c.error().message());
    if (n == 0) return fail(name, fmt::format("acknowledged transfer '{}' is not in the log", id));
    ++transfers;
  }
  return pass(name, fmt::format("{} commands, {} transfer requests", found, transfers));
}

check_result check_money(const ledger& l, bool finished) {
  const std::string name = finished ? "money_conserved_final" : "money_conserved";
  if (l.violations) {
    return fail(name, fmt::format("balances + in flight != deposits - withdrawals at {} "
                                  "position(s), the first {}",
                                  l.violations, l.first_violation));
  }
  if (l.total_balances() + l.total_in_flight() != l.outside) {
    return fail(name, "balances + in flight != deposits - withdrawals at the head");
  }
  if (finished) {
    for (const auto& [id, cents] : l.in_flight) {
      if (cents != 0) return fail(name, fmt::format("transfer '{}' still has {} cents in flight", id, cents));
    }
    for (const auto& [id, n] : l.debits) {
      if (n > 1) return fail(name, fmt::format("transfer '{}' debited {} times", id, n));
    }
    for (const auto& [id, n] : l.credits) {
      if (n > 1) return fail(name, fmt::format("transfer '{}' credited {} times", id, n));
    }
  }
  return pass(name, fmt::format("{} account events up to position {}, {} cents in the accounts",
                                l.events, l.head, l.total_balances()));
}

check_result check_balance_model(const std::string& db, annals::event_store& store) {
  const std::string name = "balance_model_equals_log";
  auto runner = bank::open_read_models(db);
  if (!runner) return fail(name, runner.error().message());
  auto checkpoint = [&]() -> std::int64_t {
    auto st = (*runner)->status();
    if (!st) return -1;
    for (const auto& s : *st) {
      if (s.name == "account_balances") return s.checkpoint;
    }
    return -1;
  };
  // Other processes move the model on: read the checkpoint, the rows, the checkpoint again,
  // and compare only a consistent pair.
  for (int attempt = 0; attempt < 50; ++attempt) {
    const auto before = checkpoint();
    std::map<std::string, std::int64_t> rows;
    auto n = bank::read_balances(**runner, [&](const bank::balance_row& r) {
      rows[r.account_id] = r.balance_cents;
      return true;
    });
    if (!n) return fail(name, n.error().message());
    if (before < 0 || checkpoint() != before) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    auto l = read_ledger(store, before);
    if (!l) return fail(name, l.error().message());
    if (rows.size() != l->balance.size()) {
      return fail(name, fmt::format("{} rows at checkpoint {}, the log has {} accounts",
                                    rows.size(), before, l->balance.size()));
    }
    for (const auto& [id, cents] : l->balance) {
      if (rows[id] != cents) {
        return fail(name, fmt::format("'{}': {} cents in the model at checkpoint {}, {} in the log",
                                      id, rows[id], before, cents));
      }
    }
    return pass(name, fmt::format("{} accounts at checkpoint {}", rows.size(), before));
  }
  return fail(name, "the checkpoint never stood still long enough to compare");
}

check_result check_verify(const std::string& annals_exe, const std::string& db) {
  auto r = run({annals_exe, "verify", "--db", db});
  if (r.exit_code != 0) {
    return fail("annals_verify", fmt::format("exit {}: {}", r.exit_code, r.out.substr(0, 2000)));
  }
  return pass("annals_verify");
}

check_result check_rebuild(const std::string& bank_exe, const std::string& db,
                           const std::string& projection) {
  const std::string name = "rebuild_equals_model:" + projection;
  auto r = run({bank_exe, "--db", db, "projections", "rebuild", projection, "--verify"});
  if (r.exit_code != 0 || r.out.find(" 0 difference(s)") == std::string::npos) {
    return fail(name, fmt::format("exit {}: {}", r.exit_code, r.out.substr(0, 2000)));
  }
  return pass(name);
}

check_result check_transfers_finished(annals::event_store& store) {
  const std::string name = "transfers_finished";
  // Every transfer stream, acknowledged or not (a request killed before its answer counts).
  const std::string prefix = bank::transfer_stream("");
  std::set<std::string> ids;
  annals::read_all_options o;
  o.stream_prefix = prefix;
  auto all = store.read_all(o, [&](const annals::recorded_event& e) {
    ids.insert(e.stream_id.substr(prefix.size()));
    return true;
  });
  if (!all) return fail(name, all.error().message());
  int completed = 0, failed = 0;
  for (const auto& id : ids) {
    auto t = bank::load_transfer(store, id);
    if (!t) return fail(name, t.error().message());
    if (!t->finished()) {
      return fail(name, fmt::format("transfer '{}' is still {}", id, bank::to_string(t->state)));
    }
    (t->state == bank::transfer_state::completed ? completed : failed)++;
  }
  return pass(name, fmt::format("{} completed, {} failed", completed, failed));
}

check_result check_aggregates(const std::string& db, annals::event_store& store, const ledger& l) {
  const std::string name = "aggregates_and_model_equal_log";
  auto runner = bank::open_read_models(db);
  if (!runner) return fail(name, runner.error().message());
  if (auto c = (*runner)->catch_up(); !c) return fail(name, c.error().message());
  std::map<std::string, std::int64_t> rows;
  auto n = bank::read_balances(**runner, [&](const bank::balance_row& r) {
    rows[r.account_id] = r.balance_cents;
    return true;
  });
  if (!n) return fail(name, n.error().message());
  if (rows.size() != l.balance.size()) {
    return fail(name, fmt::format("{} rows, {} accounts in the log", rows.size(), l.balance.size()));
  }
  for (const auto& [id, cents] : l.balance) {
    auto a = annals::load<bank::account>(store, bank::stream_for(id));
    if (!a) return fail(name, a.error().message());
    if (a->state.balance_cents != cents || rows[id] != cents) {
      return fail(name, fmt::format("'{}': log {}, aggregate {}, read model {}", id, cents,
                                    a->state.balance_cents, rows[id]));
    }
  }
  return pass(name, fmt::format("{} accounts", rows.size()));
}

std::int64_t relay_checkpoint(const std::string& db) {
  auto admin = annals::subscription_admin::open(db);
  if (!admin) return -1;
  auto list = (*admin)->list();
  if (!list) return -1;
  for (const auto& s : *list) {
    if (s.name == "relay:bank") return s.checkpoint;
  }
  return 0;
}

check_result check_relay(const std::string& url, const std::string& stream,
                         const std::string& prefix, const std::string& db,
                         annals::event_store& store, bool finished) {
  const std::string name = finished ? "jetstream_one_message_per_event" : "jetstream_no_loss";
  const auto cp = relay_checkpoint(db);  // before the broker's count: the count only grows
  auto info = annals::read_jetstream_stream(url, stream);
  if (!info) {
    if (!finished && info.error().kind() == annals::errc::not_found && cp <= 0) {
      return pass(name, "nothing relayed yet");
    }
    return fail(name, info.error().message());
  }
  const auto messages = static_cast<std::int64_t>(info->messages);
  if (!finished) {
    if (messages < cp) {
      return fail(name, fmt::format("the relay's checkpoint is {}, the broker holds {} messages",
                                    cp, messages));
    }
    return pass(name, fmt::format("checkpoint {}, {} messages", cp, messages));
  }
  auto head = store.head_position();
  if (!head) return fail(name, head.error().message());
  if (messages != *head || cp != *head) {
    return fail(name, fmt::format("head {}, relay checkpoint {}, {} messages in the broker", *head,
                                  cp, messages));
  }
  // Each event id once, through a fresh consumer.
  auto c = annals::jetstream_consumer::open(url, stream, "soak-check", prefix + ".>");
  if (!c) return fail(name, c.error().message());
  std::unordered_map<std::string, int> seen;
  for (;;) {
    auto n = (*c)->poll(
        [&](const annals::relayed_message& m) {
          ++seen[m.event_id];
          return annals::result<void>();
        },
        1000, std::chrono::milliseconds(500));
    if (!n) return fail(name, n.error().message());
    if (*n == 0) break;
  }
  std::int64_t events = 0, once = 0;
  auto r = store.read_all({}, [&](const annals::recorded_event& e) {
    ++events;
    auto it = seen.find(e.event_id);
    once += it != seen.end() && it->second == 1;
    return true;
  });
  if (!r) return fail(name, r.error().message());
  if (once != events || static_cast<std::int64_t>(seen.size()) != events) {
    return fail(name, fmt::format("{} events, {} seen exactly once, {} distinct ids in the broker",
                                  events, once, seen.size()));
  }
  return pass(name, fmt::format("{} events, each once", events));
}

}  // namespace soak
