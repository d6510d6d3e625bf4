// Projections and their runner: catch-up filtered by event type, status, poison events parked
// then retried or skipped, wait_for, several runners (threads and processes) never applying an
// event twice, live follow across processes, zero-downtime rebuilds (version bumps, verify,
// killed halfway, with appends arriving), reset, and kill -9 of a runner mid catch-up.
//
// The test projection, `ledger`, keeps account balances and one row per applied event that
// counts its applications, so a double application shows as a count of 2. Expected models are
// folded here from the store's own events (read_all), independently of the runner.
#include <doctest/doctest.h>

#include <annals/event_store.hpp>
#include <annals/projection.hpp>
#include <annals/projection_runner.hpp>
#include <annals/read_model.hpp>
#include <annals/sql_database.hpp>

#include <boost/hana/define_struct.hpp>

#include "bank/v1/events.pb.h"
#include "support/support.hpp"
#include "support/bank_events.hpp"
#include "support/postgres.hpp"

#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using annals::errc;
using annals::projection_runner;
using annals::consumer_state;
using annals::recorded_event;
using annals::result;
using annals::sql_tx;
using annals::test::fork_child;
using annals::test::temp_dir;
using annals::test::wait_child;
using annals::test::write_all;
namespace v1 = bank::v1;
using namespace annals::test::bank_events;

// This file is compiled twice: projection_tests (SQLite, a file in the test's directory) and
// projection_pg_tests (PostgreSQL, a fresh database per test case on the server of
// ANNALS_TEST_PG, dropped at the end).
#ifdef ANNALS_PROJECTIONS_ON_POSTGRES
constexpr bool on_postgres = true;
#else
constexpr bool on_postgres = false;
#endif
using annals::test::pg::store_location;

// ---------------------------------------------------------------------------------------------
// The test projection

struct account_row {
  BOOST_HANA_DEFINE_STRUCT(account_row,
                           (std::string, account_id),
                           (std::string, owner),
                           (std::int64_t, balance_cents),
                           (std::int64_t, movements),
                           (std::int64_t, opened_at));
  static constexpr std::string_view table = "pt_accounts";
  static constexpr std::string_view key[] = {"account_id"};
  friend bool operator==(const account_row&, const account_row&) = default;
};

// One row per applied event, with the metadata the handler received.
struct applied_row {
  BOOST_HANA_DEFINE_STRUCT(applied_row,
                           (std::int64_t, position),
                           (std::string, type),
                           (std::string, stream_id),
                           (std::int64_t, stream_version),
                           (std::string, event_id),
                           (std::int64_t, recorded_at_us),
                           (std::int64_t, applications));
  static constexpr std::string_view table = "pt_applied";
  static constexpr std::string_view key[] = {"position"};
  friend bool operator==(const applied_row&, const applied_row&) = default;
};

constexpr std::int64_t poison_cents = 666;
enum class poison_mode { none, returns_error, throws, hostile_text };

// Shared between the test and the projection instance the runner holds.
struct control {
  std::atomic<poison_mode> mode{poison_mode::none};
  std::atomic<bool> healed{false};
  std::atomic<int> poison_calls{0};
};

// Version V multiplies every amount by V, so a rebuild with a bumped version is visible.
template <int V>
struct ledger_t {
  static constexpr std::string_view name = "ledger";
  static constexpr int version = V;
  using events = annals::event_list<v1::AccountOpened, v1::MoneyDeposited, v1::MoneyWithdrawn>;
  using tables = annals::table_list<account_row, applied_row>;

  std::shared_ptr<control> ctl = std::make_shared<control>();

  result<void> handle(const v1::AccountOpened& e, const recorded_event& m, sql_tx& tx) {
    if (auto r = tx.upsert(account_row{e.account_id(), e.owner(), 0, 0, m.position}); !r) {
      return r;
    }
    return note(m, tx);
  }
  result<void> handle(const v1::MoneyDeposited& e, const recorded_event& m, sql_tx& tx) {
    if (e.amount_cents() == poison_cents && ctl->mode != poison_mode::none && !ctl->healed) {
      ++ctl->poison_calls;
      if (ctl->mode == poison_mode::throws) {
        throw std::runtime_error("poison deposit of 666 cents (thrown)");
      }
      if (ctl->mode == poison_mode::hostile_text) {  // a NUL, a control byte, not UTF-8
        std::string text = "poison deposit of 666 cents (hostile) ";
        text += '\0';
        text += "\x01\xff\xfe end";
        return annals::error(errc::rejected, text);
      }
      return annals::error(errc::rejected, "poison deposit of 666 cents (returned)");
    }
    return move(e.account_id(), e.amount_cents() * V, m, tx);
  }
  result<void> handle(const v1::MoneyWithdrawn& e, const recorded_event& m, sql_tx& tx) {
    return move(e.account_id(), -e.amount_cents() * V, m, tx);
  }

  static result<void> move(const std::string& id, std::int64_t delta, const recorded_event& m,
                           sql_tx& tx) {
    auto found = tx.find<account_row>(id);
    if (!found) return std::move(found).error();
    account_row row = found->value_or(account_row{id, "", 0, 0, 0});
    row.balance_cents += delta;
    ++row.movements;
    if (auto r = tx.upsert(row); !r) return r;
    return note(m, tx);
  }
  static result<void> note(const recorded_event& m, sql_tx& tx) {
    auto found = tx.find<applied_row>(m.position);
    if (!found) return std::move(found).error();
    applied_row row = found->value_or(applied_row{m.position, m.type, m.stream_id,
                                                  m.stream_version, m.event_id,
                                                  m.recorded_at_us, 0});
    ++row.applications;
    return tx.upsert(row);
  }
};
using ledger = ledger_t<1>;

// A second projection with its own checkpoint: closures only (an event type ledger ignores).
struct closure_row {
  BOOST_HANA_DEFINE_STRUCT(closure_row, (std::string, account_id), (std::int64_t, position));
  static constexpr std::string_view table = "pt_closures";
  static constexpr std::string_view key[] = {"account_id"};
};
struct closures {
  static constexpr std::string_view name = "closures";
  static constexpr int version = 3;
  using events = annals::event_list<v1::AccountClosed>;
  using tables = annals::table_list<closure_row>;
  void handle(const v1::AccountClosed& e, const recorded_event& m, sql_tx& tx) {
    auto r = tx.upsert(closure_row{e.account_id(), m.position});
    if (!r) throw std::runtime_error(r.error().message());
  }
};

// ---------------------------------------------------------------------------------------------
// Models: read from the runner, or folded here from the store's events.

struct model {
  std::map<std::string, account_row> accounts;
  std::map<std::int64_t, applied_row> applied;
  friend bool operator==(const model&, const model&) = default;
};

std::string describe(const account_row& r) {
  std::ostringstream o;
  o << "{" << r.account_id << " owner=" << r.owner << " balance=" << r.balance_cents
    << " movements=" << r.movements << " opened_at=" << r.opened_at << "}";
  return o.str();
}
std::string describe(const applied_row& r) {
  std::ostringstream o;
  o << "{#" << r.position << " " << r.type << " " << r.stream_id << "@" << r.stream_version
    << " id=" << r.event_id << " at=" << r.recorded_at_us << " applications=" << r.applications
    << "}";
  return o.str();
}

// The first few differences between two models, for failure messages.
std::string diff(const model& got, const model& want) {
  std::ostringstream o;
  int n = 0;
  auto line = [&](const std::string& s) {
    if (n++ < 8) o << "\n  " << s;
  };
  auto compare = [&](const auto& g, const auto& w) {
    for (const auto& [k, row] : g) {
      auto it = w.find(k);
      if (it == w.end()) {
        line("unexpected " + describe(row));
      } else if (!(it->second == row)) {
        line("got " + describe(row) + " want " + describe(it->second));
      }
    }
    for (const auto& [k, row] : w) {
      if (!g.count(k)) line("missing " + describe(row));
    }
  };
  compare(got.accounts, want.accounts);
  compare(got.applied, want.applied);
  if (n > 8) o << "\n  ... " << n - 8 << " more";
  o << "\n  (" << got.accounts.size() << " accounts, " << got.applied.size()
    << " applied rows; want " << want.accounts.size() << ", " << want.applied.size() << ")";
  return o.str();
}

template <class T>
std::string message_of(const result<T>& r) {
  return r.ok() ? "ok" : std::string(annals::to_string(r.error().kind())) + ": " +
                             r.error().message();
}

// The ledger model as of `upto`, folded from the events in the store; amounts times `factor`;
// positions in `skipped` left out.
model expected_model(const std::string& path, std::int64_t upto, int factor = 1,
                     const std::set<std::int64_t>& skipped = {}) {
  auto store = annals::open_store(path);
  REQUIRE_MESSAGE(store.ok(), message_of(store));
  model m;
  auto note = [&](const recorded_event& e) {
    m.applied[e.position] = applied_row{e.position,       e.type,     e.stream_id,
                                        e.stream_version, e.event_id, e.recorded_at_us,
                                        1};
  };
  auto move = [&](const std::string& id, std::int64_t delta, const recorded_event& e) {
    auto& a = m.accounts.try_emplace(id, account_row{id, "", 0, 0, 0}).first->second;
    a.balance_cents += delta;
    ++a.movements;
    note(e);
  };
  annals::read_all_options o;
  auto r = (*store)->read_all(o, [&](const recorded_event& e) {
    if (e.position > upto) return false;
    if (skipped.count(e.position)) return true;
    if (e.type == "bank.v1.AccountOpened") {
      v1::AccountOpened x;
      REQUIRE(x.ParseFromString(e.payload));
      m.accounts[x.account_id()] = account_row{x.account_id(), x.owner(), 0, 0, e.position};
      note(e);
    } else if (e.type == "bank.v1.MoneyDeposited") {
      v1::MoneyDeposited x;
      REQUIRE(x.ParseFromString(e.payload));
      move(x.account_id(), x.amount_cents() * factor, e);
    } else if (e.type == "bank.v1.MoneyWithdrawn") {
      v1::MoneyWithdrawn x;
      REQUIRE(x.ParseFromString(e.payload));
      move(x.account_id(), -x.amount_cents() * factor, e);
    }
    return true;
  });
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  return m;
}

std::int64_t listed_events(const std::string& path, std::int64_t upto) {
  return static_cast<std::int64_t>(expected_model(path, upto).applied.size());
}

model read_model(projection_runner& runner) {
  model m;
  auto r = runner.read([&](sql_tx& tx) -> result<void> {
    auto a = tx.select<account_row>("", {}, [&](const account_row& row) {
      m.accounts[row.account_id] = row;
      return true;
    });
    if (!a) return std::move(a).error();
    auto b = tx.select<applied_row>("", {}, [&](const applied_row& row) {
      m.applied[row.position] = row;
      return true;
    });
    if (!b) return std::move(b).error();
    return {};
  });
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  return m;
}

#define CHECK_MODEL(got, want)                                     \
  do {                                                             \
    const model& got_ = (got);                                     \
    const model& want_ = (want);                                   \
    CHECK_MESSAGE(got_ == want_, "model differs:" << diff(got_, want_)); \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Stores, events, runners


// Appends here need not survive a power loss (synchronous=NORMAL): the runner's own commits
// keep their default durability. This keeps populating stores fast.
std::unique_ptr<annals::event_store> open_store(const std::string& path,
                                                annals::sqlite_options o = {}) {
  o.sync = annals::durability::normal;
  auto s = annals::open_store(path, std::move(o));
  REQUIRE_MESSAGE(s.ok(), message_of(s));
  return std::move(s).value();
}

std::int64_t append(annals::event_store& s, const std::string& account,
                    std::vector<annals::event_data> events) {
  auto r = s.append("account-" + account, annals::expected_version::any(), std::move(events));
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  return r->position;
}

// Appends about `count` events over `accounts` accounts "acct-0".. in appends of 1-4 events:
// deposits and withdrawals (1-500 cents, never the poison amount) and, now and then, an
// AccountClosed that ledger does not list. With `open_accounts`, each account is opened first.
// Returns the head position.
std::int64_t populate(annals::event_store& s, int count, int accounts, unsigned seed,
                      bool open_accounts = true) {
  std::mt19937 rng(seed);
  std::int64_t head = 0;
  int n = 0;
  if (open_accounts) {
    for (int a = 0; a < accounts; ++a, ++n) {
      const auto id = "acct-" + std::to_string(a);
      head = append(s, id, {data_of(opened(id, "owner " + std::to_string(a)))});
    }
  }
  while (n < count) {
    const auto id = "acct-" + std::to_string(rng() % accounts);
    std::vector<annals::event_data> evs;
    const int k = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < k && n < count; ++i, ++n) {
      const auto cents = static_cast<std::int64_t>(1 + rng() % 500);
      switch (rng() % 10) {
        case 0:
          evs.push_back(data_of(closed(id)));
          break;
        case 1:
        case 2:
        case 3:
          evs.push_back(data_of(withdrawn(id, cents)));
          break;
        default:
          evs.push_back(data_of(deposited(id, cents == poison_cents ? 667 : cents)));
      }
    }
    head = append(s, id, std::move(evs));
  }
  return head;
}

annals::runner_options fast_options() {
  annals::runner_options o;
  o.retry_backoff = 1ms;
  o.poll_interval = 2ms;
  return o;
}

std::unique_ptr<projection_runner> open_runner(const std::string& path,
                                               annals::projection_list projections,
                                               annals::runner_options o = fast_options()) {
  auto r = projection_runner::open(path, std::move(projections), o);
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  return std::move(r).value();
}

annals::consumer_status status_of(projection_runner& r, std::string_view name) {
  auto st = r.status();
  REQUIRE_MESSAGE(st.ok(), message_of(st));
  for (const auto& s : *st) {
    if (s.name == name) return s;
  }
  FAIL("no status for projection " << name);
  return {};
}

std::int64_t catch_up(projection_runner& r) {
  auto n = r.catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  return n->events;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The physical (quoted) name of a live table, for tampering through SQLite directly.
std::string live_table(projection_runner& r, std::string_view logical) {
  std::string name;
  auto ok = r.read([&](sql_tx& tx) -> result<void> {
    name = tx.table(logical);
    return {};
  });
  REQUIRE(ok.ok());
  return name;
}

// Runs SQL on the store's database with a connection of our own; returns the rows changed.
int sqlite_exec(const std::string& path, const std::string& sql) {
  if (on_postgres) {
    annals::test::pg::session s(path);
    // WITH ... RETURNING 1, counted: the rows changed, as sqlite3_changes() gives them.
    return std::stoi(
        s.exec("WITH changed AS (" + sql + " RETURNING 1) SELECT count(*) FROM changed"));
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string message = err ? err : "";
  sqlite3_free(err);
  int changed = sqlite3_changes(db);
  sqlite3_close_v2(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << message);
  return changed;
}


}  // namespace

// ---------------------------------------------------------------------------------------------
// Catch-up and status

TEST_CASE("catch_up applies the listed event types only and moves the checkpoint past others") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  const std::int64_t an_hour_ago = now_us() - 3'600'000'000;
  annals::sqlite_options so;
  so.clock = [an_hour_ago] { return an_hour_ago; };
  auto store = open_store(path, so);

  // Positions: 1 opened, 2 deposited, 3 closed (not listed), 4 withdrawn, 5-6 closed.
  append(*store, "a", {data_of(opened("a", "Ann"))});
  append(*store, "a", {data_of(deposited("a", 100))});
  append(*store, "a", {data_of(closed("a"))});
  append(*store, "a", {data_of(withdrawn("a", 30))});
  append(*store, "x", {data_of(closed("x"))});
  const auto head = append(*store, "y", {data_of(closed("y"))});
  REQUIRE(head == 6);

  auto runner = open_runner(path, {annals::make_projection(ledger{}),
                                   annals::make_projection(closures{})});
  {
    auto st = status_of(*runner, "ledger");
    CHECK(st.version == 1);
    CHECK(st.checkpoint == 0);
    CHECK(st.head == 6);
    CHECK(st.lag_events == 6);
    CHECK(st.lag_seconds >= 3000);  // the oldest unapplied event is an hour old
    CHECK(st.parked == 0);
  }

  CHECK(catch_up(*runner) == 3 + 3);  // ledger: 1, 2, 4; closures: 3, 5, 6

  auto got = read_model(*runner);
  CHECK_MODEL(got, expected_model(path, head));
  REQUIRE(got.applied.size() == 3);
  CHECK(got.applied.count(1) == 1);
  CHECK(got.applied.count(2) == 1);
  CHECK(got.applied.count(4) == 1);
  // The handler received the event's metadata.
  const auto& w = got.applied.at(4);
  CHECK(w.type == "bank.v1.MoneyWithdrawn");
  CHECK(w.stream_id == "account-a");
  CHECK(w.stream_version == 3);
  CHECK(w.recorded_at_us == an_hour_ago);
  CHECK(w.event_id.size() == 36);
  REQUIRE(got.accounts.size() == 1);
  CHECK(got.accounts.at("a") == account_row{"a", "Ann", 70, 2, 1});

  auto st = status_of(*runner, "ledger");
  CHECK(st.name == "ledger");
  CHECK(st.version == 1);
  CHECK(st.stored_version == 1);
  CHECK(st.checkpoint == 6);  // past the closures at 5 and 6 it does not list
  CHECK(st.head == 6);
  CHECK(st.lag_events == 0);
  CHECK(st.lag_seconds == 0);
  CHECK(st.state == consumer_state::running);
  CHECK(st.parked == 0);
  CHECK(st.events_per_s > 0);
  auto cl = status_of(*runner, "closures");
  CHECK(cl.version == 3);
  CHECK(cl.stored_version == 3);
  CHECK(cl.checkpoint == 6);

  // Nothing new: nothing applied, nothing applied twice.
  CHECK(catch_up(*runner) == 0);
  CHECK_MODEL(read_model(*runner), expected_model(path, head));

  // Only an unlisted type arrives: ledger applies nothing but its checkpoint moves.
  append(*store, "a", {data_of(closed("a"))});  // 7
  auto only_unlisted = open_runner(path, {annals::make_projection(ledger{})});
  CHECK(catch_up(*only_unlisted) == 0);
  CHECK(status_of(*only_unlisted, "ledger").checkpoint == 7);

  // One listed event: lag 1 until the next catch-up.
  const auto eight = append(*store, "a", {data_of(deposited("a", 5))});
  st = status_of(*runner, "ledger");
  CHECK(st.head == eight);
  CHECK(st.checkpoint == 7);
  CHECK(st.lag_events == 1);
  CHECK(st.lag_seconds >= 3000);
  CHECK(catch_up(*runner) == 2);  // ledger: 8; closures: 7
  st = status_of(*runner, "ledger");
  CHECK(st.checkpoint == eight);
  CHECK(st.lag_events == 0);
  CHECK(status_of(*runner, "closures").checkpoint == eight);
  CHECK(read_model(*runner).accounts.at("a").balance_cents == 75);
}

TEST_CASE("catch_up on an empty store applies nothing, and states have distinct names") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  CHECK(catch_up(*runner) == 0);
  auto st = status_of(*runner, "ledger");
  CHECK(st.checkpoint == 0);
  CHECK(st.head == 0);
  CHECK(st.lag_events == 0);
  CHECK(read_model(*runner) == model{});

  std::set<std::string> names;
  for (auto s : {consumer_state::running, consumer_state::catching_up,
                 consumer_state::rebuilding, consumer_state::stuck}) {
    CHECK_FALSE(annals::to_string(s).empty());
    names.insert(std::string(annals::to_string(s)));
  }
  CHECK(names.size() == 4);
}

TEST_CASE("catch_up commits in batches: a big backlog is applied whole with a small batch") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 700, 9, 11);
  auto o = fast_options();
  o.batch_size = 13;
  auto runner = open_runner(path, {annals::make_projection(ledger{})}, o);
  CHECK(catch_up(*runner) == listed_events(path, head));
  CHECK_MODEL(read_model(*runner), expected_model(path, head));
  CHECK(status_of(*runner, "ledger").checkpoint == head);
}

// ---------------------------------------------------------------------------------------------
// Typed rows beside the handler's own SQL in one batch. On PostgreSQL a batch keeps the rows
// it found and wrote (no round trip for the next find of one): the handler's own exec, write
// and query, and erase, must leave find exact.

namespace {

struct tally_row {
  BOOST_HANA_DEFINE_STRUCT(tally_row, (std::string, id), (std::int64_t, total),
                           (std::int64_t, touches));
  static constexpr std::string_view table = "pt_tally";
  static constexpr std::string_view key[] = {"id"};
};

// Per deposit, by amount % 5: 0 adds 1000 to the account's row by hand (exec), 1 erases it and
// checks that find no longer sees it, 2 adds 100 touches by hand (write), 3 reads the row by
// hand (query) before the find; then find, add, upsert.
struct mixer {
  static constexpr std::string_view name = "mixer";
  static constexpr int version = 1;
  using events = annals::event_list<v1::MoneyDeposited>;
  using tables = annals::table_list<tally_row>;
  result<void> handle(const v1::MoneyDeposited& e, const recorded_event&, sql_tx& tx) {
    const std::string& id = e.account_id();
    const std::string t = tx.table("pt_tally");
    switch (e.amount_cents() % 5) {
      case 0:
        if (auto r = tx.exec("UPDATE " + t + " SET total = total + 1000 WHERE id = ?1", {id}); !r) {
          return std::move(r).error();
        }
        break;
      case 1: {
        if (auto r = tx.erase<tally_row>(id); !r) return std::move(r).error();
        auto gone = tx.find<tally_row>(id);
        if (!gone) return std::move(gone).error();
        if (*gone) return annals::error(errc::corruption, "find sees an erased row");
        break;
      }
      case 2:
        if (auto r = tx.write("UPDATE " + t + " SET touches = touches + 100 WHERE id = ?1", {id});
            !r) {
          return r;
        }
        break;
      case 3: {
        auto r = tx.query("SELECT total FROM " + t + " WHERE id = ?1", {id},
                          [](const annals::sql_row&) { return true; });
        if (!r) return std::move(r).error();
        break;
      }
      default: break;
    }
    auto found = tx.find<tally_row>(id);
    if (!found) return std::move(found).error();
    tally_row row = found->value_or(tally_row{id, 0, 0});
    row.total += e.amount_cents();
    ++row.touches;
    return tx.upsert(row);
  }
};

std::map<std::string, std::pair<std::int64_t, std::int64_t>> tallies(projection_runner& r) {
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> out;
  auto ok = r.read([&](sql_tx& tx) -> result<void> {
    auto q = tx.select<tally_row>("", {}, [&](const tally_row& row) {
      out[row.id] = {row.total, row.touches};
      return true;
    });
    if (!q) return std::move(q).error();
    return {};
  });
  REQUIRE_MESSAGE(ok.ok(), message_of(ok));
  return out;
}

}  // namespace

TEST_CASE("typed finds stay exact beside the handler's own SQL and erases within one batch") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  // Folded here in the same order as the handler: id -> (total, touches).
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> want;
  std::vector<annals::event_data> events;
  for (int i = 1; i <= 400; ++i) {
    const std::string id = "t" + std::to_string(i % 3);
    const std::int64_t amount = (i * 7919) % 97 + 1;
    events.push_back(data_of(deposited(id, amount)));
    auto it = want.find(id);
    switch (amount % 5) {
      case 0: if (it != want.end()) it->second.first += 1000; break;
      case 1: want.erase(id); break;
      case 2: if (it != want.end()) it->second.second += 100; break;
      default: break;
    }
    auto& w = want[id];
    w.first += amount;
    ++w.second;
  }
  REQUIRE(store->append("tallies", annals::expected_version::any(), events).ok());

  auto one_batch = open_runner(path, {annals::make_projection(mixer{})});
  REQUIRE(one_batch->catch_up().ok());
  CHECK(status_of(*one_batch, "mixer").parked == 0);
  CHECK(tallies(*one_batch) == want);

  // Many small batches, and a rebuild (one batch of every event), come to the same rows.
  auto rb = one_batch->rebuild("mixer");
  REQUIRE_MESSAGE(rb.ok(), message_of(rb));
  CHECK(tallies(*one_batch) == want);
  REQUIRE(one_batch->reset("mixer").ok());
  auto o = fast_options();
  o.batch_size = 7;
  auto small = open_runner(path, {annals::make_projection(mixer{})}, o);
  REQUIRE(small->catch_up().ok());
  CHECK(tallies(*small) == want);
}

namespace {

struct level_row {
  BOOST_HANA_DEFINE_STRUCT(level_row, (double, price), (std::int64_t, quantity));
  static constexpr std::string_view table = "pt_levels";
  static constexpr std::string_view key[] = {"price"};
};

// Writes a row keyed by a double, then finds it by a key the database finds equal but of
// another form: an integer for the same number, 0.0 for -0.0.
struct levels {
  static constexpr std::string_view name = "levels";
  static constexpr int version = 1;
  using events = annals::event_list<v1::MoneyDeposited>;
  using tables = annals::table_list<level_row>;
  result<void> handle(const v1::MoneyDeposited& e, const recorded_event&, sql_tx& tx) {
    const std::int64_t n = e.amount_cents();
    if (auto u = tx.upsert(level_row{static_cast<double>(n), n}); !u) return u;
    auto by_int = tx.find<level_row>(n);
    if (!by_int) return std::move(by_int).error();
    if (!*by_int || (*by_int)->quantity != n) {
      return annals::error(errc::corruption, "find by an integer key missed the row just written");
    }
    if (auto u = tx.upsert(level_row{-0.0, n}); !u) return u;
    auto zero = tx.find<level_row>(0.0);
    if (!zero) return std::move(zero).error();
    if (!*zero || (*zero)->quantity != n) {
      return annals::error(errc::corruption, "find of 0.0 missed the row written as -0.0");
    }
    return {};
  }
};

}  // namespace

TEST_CASE("find sees the batch's rows by keys of another form that the database finds equal") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  std::vector<annals::event_data> events;
  for (int i = 1; i <= 50; ++i) events.push_back(data_of(deposited("l", i)));
  REQUIRE(store->append("levels", annals::expected_version::any(), events).ok());
  annals::runner_options o = fast_options();
  o.max_attempts = 1;
  auto runner = open_runner(path, {annals::make_projection(levels{})}, o);
  REQUIRE(runner->catch_up().ok());
  const auto st = status_of(*runner, "levels");
  CHECK_MESSAGE(st.parked == 0, st.error);
  std::int64_t rows = 0;
  auto ok = runner->read([&](sql_tx& tx) -> result<void> {
    auto q = tx.select<level_row>("", {}, [&](const level_row&) { return ++rows, true; });
    if (!q) return std::move(q).error();
    return {};
  });
  REQUIRE(ok.ok());
  CHECK(rows == 51);  // 1..50, and 0
}

// ---------------------------------------------------------------------------------------------
// Poison events: retried with backoff, parked, then retried or skipped on purpose

namespace {

enum class resolution { retry, skip };

void poison_scenario(poison_mode mode, resolution how) {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto poison_id = annals::new_uuid_v7();
  append(*store, "a", {data_of(opened("a", "Ann"))});                 // 1
  append(*store, "a", {data_of(deposited("a", 100))});                // 2
  const auto poison = append(*store, "a", {data_of(deposited("a", poison_cents), poison_id)});
  append(*store, "a", {data_of(deposited("a", 5)), data_of(withdrawn("a", 1))});  // 4, 5
  const auto head = append(*store, "a", {data_of(closed("a"))});                  // 6
  REQUIRE(poison == 3);

  ledger proj;
  proj.ctl->mode = mode;
  auto o = fast_options();
  o.max_attempts = 3;
  o.retry_backoff = 10ms;  // pauses of 10 and 20 ms between the three attempts
  auto runner = open_runner(path, {annals::make_projection(proj)}, o);

  const auto before_us = now_us();
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(catch_up(*runner) == 2);  // 1 and 2; then stuck at 3
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  const auto after_us = now_us();
  CHECK(proj.ctl->poison_calls == 3);
  CHECK(elapsed >= 30ms);  // backoff between attempts

  auto st = status_of(*runner, "ledger");
  CHECK(st.state == consumer_state::stuck);
  CHECK(st.stuck_position == poison);
  CHECK(st.checkpoint == poison - 1);
  CHECK(st.lag_events == head - (poison - 1));
  CHECK(st.parked == 1);
  CHECK_MESSAGE(st.error.find("poison deposit of 666 cents") != std::string::npos, st.error);
  CHECK_MODEL(read_model(*runner), expected_model(path, poison - 1));

  auto parked = runner->parked("ledger");
  REQUIRE_MESSAGE(parked.ok(), message_of(parked));
  REQUIRE(parked->size() == 1);
  const auto& p = parked->front();
  CHECK(p.position == poison);
  CHECK(p.stream_id == "account-a");
  CHECK(p.stream_version == 2);
  CHECK(p.event_id == poison_id);
  CHECK(p.type == "bank.v1.MoneyDeposited");
  CHECK_MESSAGE(p.error.find(mode == poison_mode::throws ? "(thrown)" : "(returned)") !=
                    std::string::npos,
                p.error);
  CHECK(p.attempts == 3);
  CHECK(p.state == "parked");
  CHECK(p.parked_at_us >= before_us - 1'000'000);
  CHECK(p.parked_at_us <= after_us + 1'000'000);

  // Stuck means stuck: catching up again does not move past the parked event, and says why;
  // a read-your-writes wait beyond it gives up.
  {
    auto again = runner->catch_up();
    REQUIRE_MESSAGE(again.ok(), message_of(again));
    CHECK(again->events == 0);
    CHECK_FALSE(again->complete());
    REQUIRE(again->held.size() == 1);
    CHECK(again->held[0].name == "ledger");
    CHECK(again->held[0].reason == annals::held_reason::stuck);
    CHECK_MESSAGE(again->held[0].detail.find(std::to_string(poison)) != std::string::npos,
                  again->held[0].detail);
  }
  st = status_of(*runner, "ledger");
  CHECK(st.state == consumer_state::stuck);
  CHECK(st.checkpoint == poison - 1);
  CHECK_MODEL(read_model(*runner), expected_model(path, poison - 1));
  auto wait = runner->wait_for("ledger", head, 100ms);
  REQUIRE_FALSE(wait.ok());
  CHECK(wait.error().kind() == errc::stuck);
  // Another runner on the file sees the same: the state is in the file.
  {
    auto other = open_runner(path, {annals::make_projection(ledger{})});
    auto ost = status_of(*other, "ledger");
    CHECK(ost.state == consumer_state::stuck);
    CHECK(ost.stuck_position == poison);
    CHECK(ost.parked == 1);
  }

  const int calls_when_parked = proj.ctl->poison_calls;
  if (how == resolution::retry) {
    proj.ctl->healed = true;
    auto r = runner->retry("ledger");
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    CHECK(catch_up(*runner) == 3);  // 3, 4, 5
    CHECK_MODEL(read_model(*runner), expected_model(path, head));
    CHECK(read_model(*runner).accounts.at("a").balance_cents == 100 + 666 + 5 - 1);
    auto after = runner->parked("ledger");
    REQUIRE(after.ok());
    REQUIRE(after->size() == 1);
    CHECK(after->front().position == poison);
    CHECK(after->front().state == "retried");
  } else {
    auto wrong = runner->skip("ledger", poison + 1);  // not a parked event
    CHECK_FALSE(wrong.ok());
    CHECK(status_of(*runner, "ledger").state == consumer_state::stuck);
    auto unknown = runner->skip("no such projection", poison);
    CHECK_FALSE(unknown.ok());
    auto r = runner->skip("ledger", poison);
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    CHECK(catch_up(*runner) == 2);  // 4, 5
    CHECK_MODEL(read_model(*runner), expected_model(path, head, 1, {poison}));
    CHECK(read_model(*runner).accounts.at("a").balance_cents == 100 + 5 - 1);
    CHECK(proj.ctl->poison_calls == calls_when_parked);  // the skipped event was not applied
    auto after = runner->parked("ledger");
    REQUIRE(after.ok());
    REQUIRE(after->size() == 1);
    CHECK(after->front().position == poison);
    CHECK(after->front().state == "skipped");
  }
  st = status_of(*runner, "ledger");
  CHECK(st.state == consumer_state::running);
  CHECK(st.checkpoint == head);
  CHECK(st.parked == 0);
  CHECK(st.lag_events == 0);
  auto wait_ok = runner->wait_for("ledger", head, 1s);
  CHECK_MESSAGE(wait_ok.ok(), message_of(wait_ok));
}

}  // namespace

TEST_CASE("a handler returning an error is retried, parked, and applied again after retry()") {
  poison_scenario(poison_mode::returns_error, resolution::retry);
}
TEST_CASE("a handler returning an error is retried, parked, and skipped on purpose") {
  poison_scenario(poison_mode::returns_error, resolution::skip);
}
TEST_CASE("a throwing handler is retried, parked, and applied again after retry()") {
  poison_scenario(poison_mode::throws, resolution::retry);
}
TEST_CASE("a throwing handler is retried, parked, and skipped on purpose") {
  poison_scenario(poison_mode::throws, resolution::skip);
}

TEST_CASE("an event parked again after retry() adds its attempts; hostile error text is cleaned") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  append(*store, "a", {data_of(opened("a", "Ann"))});                              // 1
  const auto poison = append(*store, "a", {data_of(deposited("a", poison_cents))});  // 2
  ledger proj;
  proj.ctl->mode = poison_mode::hostile_text;
  auto o = fast_options();
  o.max_attempts = 3;
  o.retry_backoff = 1ms;
  auto runner = open_runner(path, {annals::make_projection(proj)}, o);
  CHECK(catch_up(*runner) == 1);
  // PostgreSQL refuses NUL and invalid UTF-8 in TEXT: the texts are stored with '?' for them.
  const auto clean = [](const std::string& text) {
    CHECK_MESSAGE(text.find("(hostile) ??? end") != std::string::npos, text);
    CHECK(text.find('\0') == std::string::npos);
    CHECK(annals::is_valid_utf8(text));
  };
  auto parked = runner->parked("ledger");
  REQUIRE_MESSAGE(parked.ok(), message_of(parked));
  REQUIRE(parked->size() == 1);
  CHECK(parked->front().attempts == 3);
  clean(parked->front().error);
  auto st = status_of(*runner, "ledger");
  CHECK(st.stuck_position == poison);
  clean(st.error);

  // Retried while still failing: parked again, its attempts counted on (3 + 3).
  REQUIRE(runner->retry("ledger").ok());
  CHECK(catch_up(*runner) == 0);
  parked = runner->parked("ledger");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->front().attempts == 6);
  CHECK(parked->front().state == "parked");
  CHECK(status_of(*runner, "ledger").stuck_position == poison);

  proj.ctl->healed = true;
  REQUIRE(runner->retry("ledger").ok());
  CHECK(catch_up(*runner) == 1);
  parked = runner->parked("ledger");
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK(parked->front().state == "retried");
  CHECK(status_of(*runner, "ledger").state == consumer_state::running);
}

TEST_CASE("stop() cuts a retry pause short without parking, and the next catch-up retries") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  append(*store, "a", {data_of(opened("a", "Ann"))});
  const auto poison = append(*store, "a", {data_of(deposited("a", poison_cents))});

  {  // a negative pause is refused
    auto o = fast_options();
    o.retry_backoff = -1ms;
    auto bad = projection_runner::open(path, {annals::make_projection(ledger{})}, o);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().kind() == errc::invalid_argument);
    CHECK(message_of(bad).find("retry_backoff") != std::string::npos);
  }

  ledger proj;
  proj.ctl->mode = poison_mode::returns_error;
  auto o = fast_options();
  o.max_attempts = 3;
  o.retry_backoff = 60s;  // without stop() cutting it short, the first pause alone is a minute
  o.max_backoff = 120s;
  auto runner = open_runner(path, {annals::make_projection(proj)}, o);
  REQUIRE(runner->start().ok());
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (proj.ctl->poison_calls == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(proj.ctl->poison_calls == 1);
  std::this_thread::sleep_for(50ms);  // into the pause
  const auto t0 = std::chrono::steady_clock::now();
  runner->stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  CHECK(proj.ctl->poison_calls == 1);
  // Stopped mid-retry: nothing parked, the event still ahead of the checkpoint.
  auto st = status_of(*runner, "ledger");
  CHECK(st.parked == 0);
  CHECK(st.state != consumer_state::stuck);
  CHECK(st.checkpoint == poison - 1);

  // A later catch-up tries the event again; the healed handler applies it.
  proj.ctl->mode = poison_mode::none;
  CHECK(catch_up(*runner) == 1);
  CHECK(status_of(*runner, "ledger").checkpoint == poison);
}

TEST_CASE("admin calls on an unknown projection are not_found") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  auto w = runner->wait_for("nope", 0, 10ms);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().kind() == errc::not_found);
  auto rb = runner->rebuild("nope");
  REQUIRE_FALSE(rb.ok());
  CHECK(rb.error().kind() == errc::not_found);
  auto rs = runner->reset("nope");
  REQUIRE_FALSE(rs.ok());
  CHECK(rs.error().kind() == errc::not_found);
  auto pk = runner->parked("nope");
  REQUIRE_FALSE(pk.ok());
  CHECK(pk.error().kind() == errc::not_found);
}

// ---------------------------------------------------------------------------------------------
// wait_for and live follow

TEST_CASE("wait_for returns once the checkpoint passes the position, timed_out on timeout") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});

  // Not started: wait_for catches up itself.
  append(*store, "a", {data_of(opened("a", "Ann"))});
  const auto pos = append(*store, "a", {data_of(deposited("a", 40))});
  auto w = runner->wait_for("ledger", pos, 2s);
  REQUIRE_MESSAGE(w.ok(), message_of(w));
  CHECK(status_of(*runner, "ledger").checkpoint >= pos);
  CHECK(read_model(*runner).accounts.at("a").balance_cents == 40);

  // A position nobody has appended yet: gives up after the timeout.
  const auto t0 = std::chrono::steady_clock::now();
  auto late = runner->wait_for("ledger", pos + 10, 80ms);
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().kind() == errc::timed_out);
  CHECK(waited >= 70ms);
  CHECK(waited < 5s);

  // Started: the background thread follows appends of this process.
  REQUIRE(runner->start().ok());
  for (int i = 0; i < 20; ++i) {
    const auto p = append(*store, "a", {data_of(deposited("a", 1))});
    auto r = runner->wait_for("ledger", p, 2s);
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    CHECK(read_model(*runner).accounts.at("a").balance_cents == 41 + i);
  }
  // Without wait_for: the row shows up by itself.
  const auto last = append(*store, "a", {data_of(withdrawn("a", 60))});
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (status_of(*runner, "ledger").checkpoint < last &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  CHECK(status_of(*runner, "ledger").checkpoint == last);
  CHECK(read_model(*runner).accounts.at("a").balance_cents == 0);
  runner->stop();
  CHECK_MODEL(read_model(*runner), expected_model(path, last));
}

TEST_CASE("a started runner follows appends made by another process") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  open_store(path).reset();  // create the file, then close it before forking

  int go[2];
  REQUIRE(::pipe(go) == 0);
  constexpr int events = 60;
  pid_t child = fork_child([&]() -> int {
    ::close(go[1]);
    char c;
    if (::read(go[0], &c, 1) != 1) return 2;
    auto s = annals::open_store(path);
    if (!s) return 3;
    for (int i = 0; i < events; ++i) {
      auto e = i == 0 ? data_of(opened("remote", "Rémi")) : data_of(deposited("remote", i));
      if (!(*s)->append("account-remote", annals::expected_version::any(), {e})) return 4;
      if (i % 10 == 0) std::this_thread::sleep_for(2ms);
    }
    return 0;
  });
  ::close(go[0]);

  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  REQUIRE(runner->start().ok());
  REQUIRE(write_all(go[1], "g"));
  ::close(go[1]);
  CHECK(wait_child(child) == 0);

  const auto deadline = std::chrono::steady_clock::now() + 5s;
  model got;
  while (std::chrono::steady_clock::now() < deadline) {
    got = read_model(*runner);
    if (got.applied.size() == static_cast<std::size_t>(events)) break;
    std::this_thread::sleep_for(2ms);
  }
  runner->stop();
  CHECK(got.applied.size() == static_cast<std::size_t>(events));
  CHECK_MODEL(got, expected_model(path, events));
  CHECK(got.accounts.at("remote").balance_cents == (events - 1) * events / 2);
}

// ---------------------------------------------------------------------------------------------
// Several runners: never apply an event twice

TEST_CASE("two runners in one process catching up the same projection apply each event once") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  populate(*store, 300, 7, 21);
  auto o = fast_options();
  o.batch_size = 5;
  auto a = open_runner(path, {annals::make_projection(ledger{})}, o);
  auto b = open_runner(path, {annals::make_projection(ledger{})}, o);

  std::atomic<bool> appending{true};
  std::atomic<std::int64_t> applied{0};
  std::atomic<int> failures{0};
  auto work = [&](projection_runner& r) {
    for (;;) {
      const bool last_round = !appending;
      auto n = r.catch_up();
      if (!n) {
        ++failures;
        return;
      }
      applied += n->events;
      if (last_round) return;
    }
  };
  std::thread ta(work, std::ref(*a));
  std::thread tb(work, std::ref(*b));
  auto more = open_store(path);
  const auto head = populate(*more, 300, 7, 22, false);
  appending = false;
  ta.join();
  tb.join();
  REQUIRE(failures == 0);
  // Both saw the final head on their last round.
  CHECK(status_of(*a, "ledger").checkpoint == head);
  CHECK(status_of(*b, "ledger").checkpoint == head);
  CHECK_MODEL(read_model(*a), expected_model(path, head));
  CHECK(applied == listed_events(path, head));  // the runners' counts add up: no double work
}

TEST_CASE("two processes catching up the same projection apply each event once") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  std::int64_t head = 0;
  {
    auto store = open_store(path);
    head = populate(*store, 800, 11, 31);
  }  // closed before forking: children open their own connections
  // Both children open their runner, say so, and start catching up at the same signal.
  int go[2], ready[2], out[2];
  REQUIRE(::pipe(go) == 0);
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(out) == 0);
  std::vector<pid_t> children;
  for (int c = 0; c < 2; ++c) {
    children.push_back(fork_child([&]() -> int {
      ::close(go[1]);
      ::close(ready[0]);
      ::close(out[0]);
      annals::runner_options o;
      o.batch_size = 7;
      auto r = projection_runner::open(path, {annals::make_projection(ledger{})}, o);
      if (!r) return 3;
      if (!write_all(ready[1], "r")) return 6;
      char x;
      if (::read(go[0], &x, 1) != 1) return 2;
      std::int64_t total = 0;
      for (;;) {
        auto n = (*r)->catch_up();
        if (!n) return 4;
        total += n->events;
        if (n->events == 0) break;
      }
      return write_all(out[1], std::to_string(total) + "\n") ? 0 : 5;
    }));
  }
  ::close(go[0]);
  ::close(ready[1]);
  ::close(out[1]);
  char r2[2];
  for (std::size_t got = 0; got < 2;) {
    ssize_t k = ::read(ready[0], r2 + got, 2 - got);
    REQUIRE(k > 0);
    got += static_cast<std::size_t>(k);
  }
  ::close(ready[0]);
  REQUIRE(write_all(go[1], "gg"));
  ::close(go[1]);
  for (auto pid : children) CHECK(wait_child(pid) == 0);
  std::istringstream counts(annals::test::read_to_eof(out[0]));  // closes out[0]
  std::int64_t total = 0, n = 0;
  int lines = 0;
  while (counts >> n) total += n, ++lines;
  CHECK(lines == 2);
  CHECK(total == listed_events(path, head));

  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  CHECK(status_of(*runner, "ledger").checkpoint == head);
  CHECK_MODEL(read_model(*runner), expected_model(path, head));
}

// ---------------------------------------------------------------------------------------------
// Rebuild

TEST_CASE("rebuild replays into shadow tables and swaps in the same rows as the live model") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 400, 8, 41);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);
  const auto live = read_model(*runner);
  CHECK_MODEL(live, expected_model(path, head));

  std::vector<annals::rebuild_progress> progress;
  annals::rebuild_options ro;
  ro.batch_size = 16;
  ro.progress = [&](const annals::rebuild_progress& p) { progress.push_back(p); };
  auto rep = runner->rebuild("ledger", ro);
  REQUIRE_MESSAGE(rep.ok(), message_of(rep));
  CHECK(rep->swapped);
  CHECK(rep->differences == 0);
  CHECK(rep->position == head);
  CHECK(rep->events == listed_events(path, head));
  CHECK(rep->seconds >= 0);

  REQUIRE(progress.size() >= 2);  // more than one batch of 16
  for (std::size_t i = 1; i < progress.size(); ++i) {
    CHECK(progress[i].position >= progress[i - 1].position);
    CHECK(progress[i].events >= progress[i - 1].events);
  }
  CHECK(progress.front().position > 0);
  CHECK(progress.back().position <= head);
  CHECK(progress.back().head == head);
  CHECK(progress.back().events <= rep->events);

  CHECK_MODEL(read_model(*runner), live);
  auto st = status_of(*runner, "ledger");
  CHECK(st.stored_version == 1);
  CHECK(st.checkpoint == head);
  CHECK(st.state == consumer_state::running);

  // The rebuilt model is live: it keeps going from its new checkpoint.
  const auto more = append(*store, "acct-1", {data_of(deposited("acct-1", 9))});
  CHECK(catch_up(*runner) == 1);
  CHECK_MODEL(read_model(*runner), expected_model(path, more));
}

TEST_CASE("a bumped version is rebuilt on demand and readers see the old model until the swap") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto first_head = populate(*store, 300, 6, 51);
  {
    auto v1_runner = open_runner(path, {annals::make_projection(ledger{})});
    catch_up(*v1_runner);
  }
  const auto v1_model = expected_model(path, first_head, 1);

  auto o = fast_options();
  o.rebuild_on_version_change = false;
  auto runner = open_runner(path, {annals::make_projection(ledger_t<2>{})}, o);
  auto st = status_of(*runner, "ledger");
  CHECK(st.version == 2);
  CHECK(st.stored_version == 1);
  // A stale projection is not run: new events leave it where it was.
  const auto head = append(*store, "acct-2", {data_of(deposited("acct-2", 10))});
  auto n = runner->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  CHECK(n->events == 0);
  REQUIRE(n->held.size() == 1);  // and the report says so
  CHECK(n->held[0].reason == annals::held_reason::stale);
  CHECK_MESSAGE(n->held[0].detail.find("version 1 stored, 2 in the code") != std::string::npos,
                n->held[0].detail);
  CHECK(status_of(*runner, "ledger").checkpoint == first_head);
  CHECK_MODEL(read_model(*runner), v1_model);

  // A second reader on the file, checking the live model during the rebuild.
  auto reader = open_runner(path, {annals::make_projection(ledger_t<2>{})}, o);
  int batches = 0;
  bool old_model_seen_throughout = true;
  annals::rebuild_options ro;
  ro.batch_size = 25;
  ro.progress = [&](const annals::rebuild_progress&) {
    ++batches;
    if (!(read_model(*reader) == v1_model)) old_model_seen_throughout = false;
  };
  auto rep = runner->rebuild("ledger", ro);
  REQUIRE_MESSAGE(rep.ok(), message_of(rep));
  CHECK(rep->swapped);
  CHECK(rep->position == head);
  CHECK(batches >= 2);
  CHECK(old_model_seen_throughout);

  const auto v2_model = expected_model(path, head, 2);
  CHECK_MODEL(read_model(*runner), v2_model);
  CHECK_MODEL(read_model(*reader), v2_model);
  st = status_of(*runner, "ledger");
  CHECK(st.version == 2);
  CHECK(st.stored_version == 2);
  CHECK(st.checkpoint == head);
  CHECK(status_of(*reader, "ledger").stored_version == 2);

  // Now current, it runs again.
  const auto later = append(*store, "acct-3", {data_of(withdrawn("acct-3", 4))});
  CHECK(catch_up(*runner) == 1);
  CHECK_MODEL(read_model(*runner), expected_model(path, later, 2));
}

TEST_CASE("with rebuild_on_version_change, catch_up rebuilds a bumped version by itself") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 200, 5, 61);
  {
    auto v1_runner = open_runner(path, {annals::make_projection(ledger{})});
    catch_up(*v1_runner);
    CHECK_MODEL(read_model(*v1_runner), expected_model(path, head, 1));
  }
  auto runner = open_runner(path, {annals::make_projection(ledger_t<2>{})});
  auto n = runner->catch_up();
  REQUIRE_MESSAGE(n.ok(), message_of(n));
  auto st = status_of(*runner, "ledger");
  CHECK(st.stored_version == 2);
  CHECK(st.checkpoint == head);
  CHECK_MODEL(read_model(*runner), expected_model(path, head, 2));
}

TEST_CASE("a projection whose automatic rebuild fails keeps its live model and holds back no "
          "other projection") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  append(*store, "a", {data_of(opened("a", "Ann"))});
  append(*store, "a", {data_of(deposited("a", 100))});
  append(*store, "a", {data_of(deposited("a", poison_cents))});  // fine for version 1
  auto first_head = append(*store, "a", {data_of(closed("a"))});
  {
    auto v1_runner = open_runner(path, {annals::make_projection(ledger{}),
                                        annals::make_projection(closures{})});
    catch_up(*v1_runner);
    CHECK_MODEL(read_model(*v1_runner), expected_model(path, first_head));
  }
  const auto head = append(*store, "b", {data_of(closed("b"))});

  // Version 2 fails on the 666 deposit: its rebuild cannot finish.
  ledger_t<2> v2;
  v2.ctl->mode = poison_mode::returns_error;
  auto o = fast_options();
  o.max_attempts = 2;
  auto runner =
      open_runner(path, {annals::make_projection(v2), annals::make_projection(closures{})}, o);
  auto n = runner->catch_up();
  MESSAGE("catch_up: " << message_of(n));
  CHECK(v2.ctl->poison_calls >= 1);

  // The version-1 model is still live, untouched.
  CHECK_MODEL(read_model(*runner), expected_model(path, first_head, 1));
  CHECK(status_of(*runner, "ledger").stored_version == 1);
  // The other projection of the runner went on to the head.
  CHECK(status_of(*runner, "closures").checkpoint == head);
  bool b_closed = false;
  auto r = runner->read([&](sql_tx& tx) -> result<void> {
    auto f = tx.find<closure_row>(std::string("b"));
    if (!f) return std::move(f).error();
    b_closed = f->has_value();
    return {};
  });
  REQUIRE(r.ok());
  CHECK(b_closed);
}

TEST_CASE("rebuild --verify reports each tampered row and swaps nothing") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 300, 6, 71);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);
  const auto clean = expected_model(path, head);
  CHECK_MODEL(read_model(*runner), clean);

  std::vector<std::string> lines;
  auto verify = [&](std::int64_t max_lines = 100) {
    lines.clear();
    annals::rebuild_options ro;
    ro.verify = true;
    ro.batch_size = 64;
    ro.max_differences = max_lines;
    ro.difference = [&](std::string_view l) { lines.emplace_back(l); };
    auto rep = runner->rebuild("ledger", ro);
    REQUIRE_MESSAGE(rep.ok(), message_of(rep));
    CHECK_FALSE(rep->swapped);
    CHECK(rep->position == head);
    return rep->differences;
  };

  CHECK(verify() == 0);
  CHECK(lines.empty());

  const auto accounts = live_table(*runner, "pt_accounts");
  const auto applied = live_table(*runner, "pt_applied");
  // A changed row.
  REQUIRE(sqlite_exec(path, "UPDATE " + accounts +
                                " SET balance_cents = balance_cents + 1 "
                                "WHERE account_id = 'acct-3'") == 1);
  const auto changed = verify();
  CHECK(changed >= 1);
  REQUIRE_FALSE(lines.empty());
  bool named = false;
  for (const auto& l : lines) named = named || l.find("acct-3") != std::string::npos;
  CHECK_MESSAGE(named, "no difference line names acct-3: " << lines.front());
  // Not swapped: the tampered value is still live, the version and checkpoint unchanged.
  auto tampered = read_model(*runner);
  CHECK(tampered.accounts.at("acct-3").balance_cents ==
        clean.accounts.at("acct-3").balance_cents + 1);
  auto st = status_of(*runner, "ledger");
  CHECK(st.stored_version == 1);
  CHECK(st.checkpoint == head);

  // A live row missing: one more difference.
  const auto some_position = clean.applied.begin()->first;
  REQUIRE(sqlite_exec(path, "DELETE FROM " + applied +
                                " WHERE position = " + std::to_string(some_position)) == 1);
  const auto with_missing = verify();
  CHECK(with_missing == changed + 1);
  // A live row that the rebuild does not produce: one more.
  REQUIRE(sqlite_exec(path, "INSERT INTO " + applied +
                                " (position, type, stream_id, stream_version, event_id, "
                                "recorded_at_us, applications) "
                                "VALUES (999999, 'x', 'y', 0, 'z', 0, 1)") == 1);
  const auto with_extra = verify();
  CHECK(with_extra == with_missing + 1);
  // Ten more missing rows, at most three lines reported, all ten counted.
  REQUIRE(sqlite_exec(path, "DELETE FROM " + applied + " WHERE position IN (SELECT position FROM " +
                                applied + " WHERE position < 999999 ORDER BY position DESC "
                                          "LIMIT 10)") == 10);
  CHECK(verify(3) == with_extra + 10);
  CHECK(lines.size() == 3);

  // A real rebuild repairs it all.
  auto rep = runner->rebuild("ledger");
  REQUIRE_MESSAGE(rep.ok(), message_of(rep));
  CHECK(rep->swapped);
  CHECK_MODEL(read_model(*runner), clean);
  CHECK(verify() == 0);
}

TEST_CASE("reset drops the model and its checkpoint, and the next catch_up rebuilds it") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 250, 5, 81);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);
  const auto before = read_model(*runner);
  CHECK_MODEL(before, expected_model(path, head));

  auto r = runner->reset("ledger");
  REQUIRE_MESSAGE(r.ok(), message_of(r));
  auto st = status_of(*runner, "ledger");
  CHECK(st.checkpoint == 0);
  CHECK(st.lag_events == head);
  // The rows are gone (the tables may be gone too).
  std::int64_t rows_left = 0;
  auto rd = runner->read([&](sql_tx& tx) -> result<void> {
    auto a = tx.select<account_row>("", {}, [&](const account_row&) { return ++rows_left, true; });
    auto b = tx.select<applied_row>("", {}, [&](const applied_row&) { return ++rows_left, true; });
    (void)a;
    (void)b;
    return {};
  });
  CHECK(rd.ok());
  CHECK(rows_left == 0);

  CHECK(catch_up(*runner) == listed_events(path, head));
  CHECK_MODEL(read_model(*runner), before);
  st = status_of(*runner, "ledger");
  CHECK(st.checkpoint == head);
  CHECK(st.stored_version == 1);
}

TEST_CASE("a rebuild killed halfway leaves the live model untouched and the next one succeeds") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  std::int64_t head = 0;
  model live;
  {
    auto store = open_store(path);
    head = populate(*store, 500, 7, 91);
    auto runner = open_runner(path, {annals::make_projection(ledger{})});
    catch_up(*runner);
    live = read_model(*runner);
  }  // everything closed before forking
  CHECK_MODEL(live, expected_model(path, head));

  // Round 0: the child _exit()s after the first batch; round 1: SIGKILL after the third.
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    pid_t child = fork_child([&]() -> int {
      auto r = projection_runner::open(path, {annals::make_projection(ledger_t<2>{})}, [] {
        annals::runner_options o;
        o.rebuild_on_version_change = false;
        return o;
      }());
      if (!r) return 3;
      int batches = 0;
      annals::rebuild_options ro;
      ro.batch_size = 10;
      ro.progress = [&](const annals::rebuild_progress&) {
        ++batches;
        if (round == 0 && batches == 1) _exit(42);
        if (round == 1 && batches == 3) ::kill(::getpid(), SIGKILL);
      };
      auto rep = (*r)->rebuild("ledger", ro);
      return rep ? 7 : 8;  // not expected: the callback ends the process first
    });
    CHECK(wait_child(child) == (round == 0 ? 42 : 128 + SIGKILL));

    auto runner = open_runner(path, {annals::make_projection(ledger{})});
    CHECK_MODEL(read_model(*runner), live);
    auto st = status_of(*runner, "ledger");
    CHECK(st.stored_version == 1);
    CHECK(st.checkpoint == head);
  }

  // A new rebuild (version 2 this time) starts cleanly: nothing left over from the dead ones.
  auto o = fast_options();
  o.rebuild_on_version_change = false;
  auto runner = open_runner(path, {annals::make_projection(ledger_t<2>{})}, o);
  annals::rebuild_options ro;
  ro.batch_size = 10;
  auto rep = runner->rebuild("ledger", ro);
  REQUIRE_MESSAGE(rep.ok(), message_of(rep));
  CHECK(rep->swapped);
  CHECK(rep->events == listed_events(path, head));
  CHECK_MODEL(read_model(*runner), expected_model(path, head, 2));
  CHECK(status_of(*runner, "ledger").stored_version == 2);
  annals::rebuild_options verify;
  verify.verify = true;
  auto v = runner->rebuild("ledger", verify);
  REQUIRE(v.ok());
  CHECK(v->differences == 0);
}

TEST_CASE("a rebuild while appends keep arriving ends with every event applied once") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  populate(*store, 400, 6, 101);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);

  std::atomic<bool> stop{false};
  std::atomic<int> appended{0};
  std::thread appender([&] {
    auto s = annals::open_store(path);
    if (!s) return;
    std::mt19937 rng(7);
    while (!stop || appended < 50) {
      const auto id = "acct-" + std::to_string(rng() % 6);
      auto r = (*s)->append("account-" + id, annals::expected_version::any(),
                            {data_of(deposited(id, 1 + rng() % 100))});
      if (!r) return;
      ++appended;
      std::this_thread::sleep_for(1ms);
    }
  });
  annals::rebuild_options ro;
  ro.batch_size = 20;
  auto rep = runner->rebuild("ledger", ro);
  stop = true;
  appender.join();
  REQUIRE_MESSAGE(rep.ok(), message_of(rep));
  CHECK(rep->swapped);
  CHECK(appended >= 50);

  // The swap happened at some checkpoint; a catch-up takes it to the head, each event once.
  catch_up(*runner);
  auto head_r = store->head_position();
  REQUIRE(head_r.ok());
  const auto head = *head_r;
  CHECK(rep->position <= head);
  CHECK(status_of(*runner, "ledger").checkpoint == head);
  CHECK_MODEL(read_model(*runner), expected_model(path, head));
}

TEST_CASE("status() polled by other runners neither fails a rebuild nor reports a phantom one") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 20, 2, 121);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);
  std::vector<std::unique_ptr<projection_runner>> watchers;
  for (int i = 0; i < 3; ++i) {
    watchers.push_back(open_runner(path, {annals::make_projection(ledger{})}));
  }

  std::atomic<bool> done{false};
  std::atomic<bool> rebuilding{false};
  std::atomic<int> polls{0}, status_failures{0}, phantom_rebuilds{0};
  std::vector<std::thread> pollers;
  for (auto& w : watchers) {
    pollers.emplace_back([&, &w = *w] {
      while (!done) {
        ++polls;
        auto st = w.status();
        if (!st) {
          ++status_failures;
        } else if (!rebuilding && st->front().state == consumer_state::rebuilding) {
          ++phantom_rebuilds;
        }
      }
    });
  }

  // No rebuild runs: nobody may report one.
  std::this_thread::sleep_for(200ms);
  // Rebuilds, for a second and a half, while the others poll status(): none may fail.
  rebuilding = true;
  int rebuilds = 0, failed = 0;
  std::string first_error;
  const auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until) {
    ++rebuilds;
    auto rep = runner->rebuild("ledger");
    if (!rep && failed++ == 0) first_error = message_of(rep);
  }
  done = true;
  for (auto& t : pollers) t.join();
  CHECK_MESSAGE(failed == 0, failed << " of " << rebuilds << " rebuilds failed, the first with: "
                                    << first_error);
  CHECK_MESSAGE(phantom_rebuilds == 0, phantom_rebuilds.load() << " of " << polls.load()
                                           << " status() calls reported a rebuild before any ran");
  CHECK(status_failures == 0);
  CHECK_MODEL(read_model(*runner), expected_model(path, head));
}

// The rebuild lock files beside a SQLite store (none on PostgreSQL, whose locks are advisory).
std::vector<std::string> rebuild_lock_files(const temp_dir& dir) {
  std::vector<std::string> out;
  for (const auto& f : std::filesystem::directory_iterator(dir.path())) {
    const auto name = f.path().filename().string();
    if (name.find("-annals-rebuild-") != std::string::npos) out.push_back(name);
  }
  return out;
}

TEST_CASE("a rebuild removes its lock file, and another rebuild meanwhile is busy") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  auto store = open_store(path);
  const auto head = populate(*store, 200, 4, 131);
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  auto other = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);

  int batches = 0;
  annals::rebuild_options ro;
  ro.batch_size = 10;
  ro.progress = [&](const annals::rebuild_progress&) {
    if (batches++ > 0) return;
    auto second = other->rebuild("ledger");
    REQUIRE_FALSE(second.ok());
    CHECK_MESSAGE(second.error().kind() == errc::busy, message_of(second));
    CHECK(status_of(*other, "ledger").state == consumer_state::rebuilding);
    CHECK(rebuild_lock_files(dir).size() == (on_postgres ? 0 : 1));
  };
  auto rep = runner->rebuild("ledger", ro);
  REQUIRE_MESSAGE(rep.ok(), message_of(rep));
  CHECK(batches >= 2);
  CHECK(rebuild_lock_files(dir).empty());
  CHECK(status_of(*other, "ledger").state == consumer_state::running);

  annals::rebuild_options verify;
  verify.verify = true;
  auto v = other->rebuild("ledger", verify);
  REQUIRE_MESSAGE(v.ok(), message_of(v));
  CHECK(v->differences == 0);
  CHECK(rebuild_lock_files(dir).empty());

  // Two runners rebuilding over and over: the spans of their progress calls (inside the time
  // each holds the lock) never overlap, whichever one deletes and recreates the lock file.
  using clock_type = std::chrono::steady_clock;
  std::mutex mu;
  std::vector<std::pair<clock_type::time_point, clock_type::time_point>> spans;
  std::atomic<int> failures{0};
  std::string first_failure;
  const auto until = clock_type::now() + 1s;
  auto loop = [&](projection_runner& r) {
    while (clock_type::now() < until) {
      std::optional<clock_type::time_point> first, last;
      annals::rebuild_options o;
      o.batch_size = 20;
      o.progress = [&](const annals::rebuild_progress&) {
        if (!first) first = clock_type::now();
        last = clock_type::now();
      };
      auto x = r.rebuild("ledger", o);
      std::lock_guard l(mu);
      if (x && first) spans.emplace_back(*first, *last);
      if (!x && x.error().kind() != errc::busy && failures++ == 0) first_failure = message_of(x);
    }
  };
  std::thread t([&] { loop(*other); });
  loop(*runner);
  t.join();
  CHECK_MESSAGE(failures == 0, first_failure);
  CHECK(spans.size() >= 2);
  std::sort(spans.begin(), spans.end());
  int overlaps = 0;
  for (std::size_t i = 1; i < spans.size(); ++i) overlaps += spans[i - 1].second >= spans[i].first;
  CHECK_MESSAGE(overlaps == 0, overlaps << " of " << spans.size() << " rebuilds overlapped");
  CHECK(rebuild_lock_files(dir).empty());
  CHECK_MODEL(read_model(*runner), expected_model(path, head));
}

// ---------------------------------------------------------------------------------------------
// kill -9 mid catch-up

TEST_CASE("kill -9 of a runner mid catch-up leaves the model exactly as of its checkpoint") {
  temp_dir dir;
  const store_location loc(dir.file("p.db"), on_postgres);
  const auto& path = loc.path;
  {
    auto store = open_store(path);
    populate(*store, 300, 9, 111);
  }
  std::mt19937 rng(2025);
  constexpr int rounds = 5;
  int killed_mid_catch_up = 0;
  std::int64_t head = 0;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    {
      auto store = open_store(path);
      head = populate(*store, 1500, 9, 200 + round, false);
    }  // closed before forking
    std::int64_t start_checkpoint = 0;
    {
      auto peek = open_runner(path, {annals::make_projection(ledger{})});
      start_checkpoint = status_of(*peek, "ledger").checkpoint;
    }
    pid_t child = fork_child([&]() -> int {
      annals::runner_options o;
      o.batch_size = 10;
      auto r = projection_runner::open(path, {annals::make_projection(ledger{})}, o);
      if (!r) return 3;
      for (;;) {
        auto n = (*r)->catch_up();
        if (!n) return 4;
        if (n->events == 0) return 0;
      }
    });
    auto watcher = open_runner(path, {annals::make_projection(ledger{})});
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (status_of(*watcher, "ledger").checkpoint == start_checkpoint &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(200us);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    ::kill(child, SIGKILL);
    const int code = wait_child(child);
    CHECK((code == 128 + SIGKILL || code == 0));

    const auto st = status_of(*watcher, "ledger");
    CHECK(st.checkpoint > start_checkpoint);
    CHECK(st.checkpoint <= head);
    if (st.checkpoint < head) ++killed_mid_catch_up;
    MESSAGE("round " << round << ": killed at checkpoint " << st.checkpoint << " of " << head
                     << std::string(code == 0 ? " (the child had finished)" : ""));
    CHECK_MODEL(read_model(*watcher), expected_model(path, st.checkpoint));
  }
  CHECK(killed_mid_catch_up >= 1);

  // Finished by a clean runner: equal to a clean rebuild.
  auto runner = open_runner(path, {annals::make_projection(ledger{})});
  catch_up(*runner);
  CHECK(status_of(*runner, "ledger").checkpoint == head);
  CHECK_MODEL(read_model(*runner), expected_model(path, head));
  annals::rebuild_options verify;
  verify.verify = true;
  auto v = runner->rebuild("ledger", verify);
  REQUIRE_MESSAGE(v.ok(), message_of(v));
  CHECK(v->differences == 0);
}

// ---------------------------------------------------------------------------------------------
// The store's database for an application's own tables

TEST_CASE("sql_database: a write function that throws is handler_failed and writes nothing") {
  temp_dir dir;
  const store_location loc(dir.file("app.db"), on_postgres);
  auto store = open_store(loc.path);
  auto db = annals::sql_database::open(loc.path);
  REQUIRE_MESSAGE(db.ok(), message_of(db));
  auto created = (*db)->write([](sql_tx& tx) -> result<void> {
    auto r = tx.exec("CREATE TABLE app_seen (id TEXT PRIMARY KEY)");
    if (!r) return r.error();
    return {};
  });
  REQUIRE_MESSAGE(created.ok(), message_of(created));
  auto w = (*db)->write([](sql_tx& tx) -> result<void> {
    auto r = tx.exec("INSERT INTO app_seen (id) VALUES (?1)", {std::string("a")});
    if (!r) return r.error();
    throw std::runtime_error("the mail server said no");
  });
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().kind() == errc::handler_failed);
  CHECK(w.error().message().find("the mail server said no") != std::string::npos);
  std::int64_t rows = -1;
  auto counted = (*db)->write([&](sql_tx& tx) -> result<void> {
    auto r = tx.query("SELECT count(*) FROM app_seen", {}, [&](const annals::sql_row& row) {
      rows = row.int64(0);
      return false;
    });
    if (!r) return r.error();
    return {};
  });
  REQUIRE_MESSAGE(counted.ok(), message_of(counted));
  CHECK(rows == 0);  // the insert before the throw was rolled back
}
