// The bank sample end to end, through its real executable: commands, rules, exit codes, demo.
#include <doctest/doctest.h>

#include <annals/store.hpp>

#include "support/bank_events.hpp"
#include "support/postgres.hpp"
#include "support/support.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

using annals::test::process_result;
using annals::test::temp_dir;

namespace {
// Compiled twice: bank_cli_tests (a SQLite file) and bank_cli_pg_tests (`--db postgresql://...`,
// a fresh database per case).
#ifdef ANNALS_BANK_ON_POSTGRES
constexpr bool on_postgres = true;
#else
constexpr bool on_postgres = false;
#endif

struct bank_cli {
  temp_dir dir;
  annals::test::pg::store_location loc{dir.file("bank.db"), on_postgres};
  std::string db = loc.path;
  process_result operator()(std::vector<std::string> args) const {
    args.insert(args.begin(), {BANK_EXE, "--db", db});
    return annals::test::run(args);
  }
};
using annals::test::contains;
}  // namespace

TEST_CASE("open, deposit, withdraw and balance work and print what happened") {
  bank_cli bank;
  auto r = bank({"open", "acc-1", "--owner", "Ann Smith"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "opened account 'acc-1' for Ann Smith"));
  CHECK(bank({"deposit", "acc-1", "12.50"}).exit_code == 0);
  CHECK(bank({"deposit", "acc-1", "100"}).exit_code == 0);
  CHECK(bank({"withdraw", "acc-1", "0.75"}).exit_code == 0);
  r = bank({"balance", "acc-1"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "111.75\n");
}

TEST_CASE("history lists every event with its version and running balance") {
  bank_cli bank;
  REQUIRE(bank({"open", "h", "--owner", "Bo"}).exit_code == 0);
  REQUIRE(bank({"deposit", "h", "5"}).exit_code == 0);
  REQUIRE(bank({"withdraw", "h", "2.25"}).exit_code == 0);
  auto r = bank({"history", "h"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "opened for Bo"));
  CHECK(contains(r.out, "deposit"));
  CHECK(contains(r.out, "withdrawal"));
  CHECK(contains(r.out, "2.75"));
  // One line per event, versions 0..2.
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 3);
}

TEST_CASE("malformed amounts are usage errors with exit 2 and write nothing") {
  bank_cli bank;
  REQUIRE(bank({"open", "a", "--owner", "Ann"}).exit_code == 0);
  for (const char* amount : {"-1", "1.234", "abc", "0", "", "1e3", "12.", ".5",
                             "92233720368547758.08", "99999999999999999999999"}) {
    CAPTURE(amount);
    auto r = bank({"deposit", "a", amount});
    CHECK(r.exit_code == 2);
    CHECK(!r.err.empty());
  }
  CHECK(bank({"balance", "a"}).out == "0.00\n");
  auto h = bank({"history", "a"});
  CHECK(std::count(h.out.begin(), h.out.end(), '\n') == 1);
}

TEST_CASE("withdrawing beyond the balance is rejected with exit 1 and says insufficient funds") {
  bank_cli bank;
  REQUIRE(bank({"open", "a", "--owner", "Ann"}).exit_code == 0);
  REQUIRE(bank({"deposit", "a", "10"}).exit_code == 0);
  auto r = bank({"withdraw", "a", "10.01"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "insufficient funds"));
  CHECK(bank({"balance", "a"}).out == "10.00\n");
}

TEST_CASE("unknown and closed accounts accept nothing") {
  bank_cli bank;
  auto r = bank({"deposit", "ghost", "1"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "does not exist"));
  CHECK(bank({"balance", "ghost"}).exit_code == 1);
  CHECK(bank({"history", "ghost"}).exit_code == 1);
  CHECK(bank({"close", "ghost"}).exit_code == 1);

  REQUIRE(bank({"open", "c", "--owner", "Cy"}).exit_code == 0);
  REQUIRE(bank({"close", "c"}).exit_code == 0);
  r = bank({"deposit", "c", "1"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "closed"));
  CHECK(bank({"withdraw", "c", "1"}).exit_code == 1);
  CHECK(bank({"close", "c"}).exit_code == 1);
  CHECK(bank({"open", "c", "--owner", "Cy"}).exit_code == 1);
}

TEST_CASE("only a zero balance can be closed") {
  bank_cli bank;
  REQUIRE(bank({"open", "z", "--owner", "Zo"}).exit_code == 0);
  REQUIRE(bank({"deposit", "z", "3"}).exit_code == 0);
  auto r = bank({"close", "z"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "zero balance"));
  REQUIRE(bank({"withdraw", "z", "3"}).exit_code == 0);
  CHECK(bank({"close", "z"}).exit_code == 0);
}

TEST_CASE("opening an account twice is rejected") {
  bank_cli bank;
  REQUIRE(bank({"open", "d", "--owner", "Di"}).exit_code == 0);
  auto r = bank({"open", "d", "--owner", "Di"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "already exists"));
}

TEST_CASE("usage errors exit 2") {
  bank_cli bank;
  CHECK(bank({}).exit_code == 2);
  CHECK(bank({"frobnicate"}).exit_code == 2);
  CHECK(bank({"open", "x"}).exit_code == 2);  // --owner missing
  CHECK(bank({"deposit", "x"}).exit_code == 2);
  CHECK(bank({"open", "", "--owner", "N"}).exit_code == 2);
  CHECK(bank({"open", "bad\nid", "--owner", "N"}).exit_code == 2);
  CHECK(bank({"--retries", "-4", "balance", "x"}).exit_code == 2);
}

TEST_CASE("account ids with quotes, SQL and Unicode round-trip") {
  bank_cli bank;
  for (std::string id : {"o'brien", "x\"; DROP TABLE events; --", "kontō-日本-💶", "a%b_c"}) {
    CAPTURE(id);
    REQUIRE(bank({"open", id, "--owner", "Q"}).exit_code == 0);
    REQUIRE(bank({"deposit", id, "1.01"}).exit_code == 0);
    CHECK(bank({"balance", id}).out == "1.01\n");
  }
}

TEST_CASE("a store file that is not an Annals store is a storage error, exit 4") {
  bank_cli bank;
  if (on_postgres) {
    // The PostgreSQL counterpart: a server that is not there.
    auto r = annals::test::run({BANK_EXE, "--db", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
                                "balance", "a"});
    CHECK(r.exit_code == 4);
    CHECK(contains(r.err, "cannot connect to PostgreSQL"));
    return;
  }
  {
    std::ofstream f(bank.db, std::ios::binary);
    f << std::string(8192, '\x5a');
  }
  auto r = bank({"balance", "a"});
  CHECK(r.exit_code == 4);
  CHECK(!r.err.empty());
  CHECK(!contains(r.err, "SELECT"));
}

TEST_CASE("demo runs several processes and threads and every balance checks out") {
  bank_cli bank;
  auto r = bank({"demo", "--processes", "2", "--threads", "3", "--operations", "40"});
  INFO(r.out);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "no update was lost"));
  CHECK(contains(r.out, "Concurrency conflicts detected and retried"));
  CHECK(contains(r.out, "through the upcasters): no problems"));
  CHECK(!contains(r.out, "MISMATCH"));
  // The transfer phase: every transfer over, one refunded, money conserved.
  CHECK(contains(r.out, "1 refunded (unknown target)"));
  CHECK(contains(r.out, " 0 unfinished"));
  CHECK(contains(r.out, "after: ok"));
}

TEST_CASE("read commands on a missing store exit 2 and create no file") {
  bank_cli bank;
  for (const char* cmd : {"balance", "history", "statement"}) {
    CAPTURE(cmd);
    auto r = bank({cmd, "a"});
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "no store"));
  }
  if (on_postgres) {
    annals::sqlite_options o;
    o.create_if_missing = false;
    auto s = annals::open_store(bank.db, o);
    CHECK((!s && s.error().kind() == annals::errc::not_found));  // no tables were created
  } else {
    CHECK(access(bank.db.c_str(), F_OK) != 0);
  }
}

TEST_CASE("an owner name with invalid UTF-8 or a control character is bad input") {
  bank_cli bank;
  CHECK(bank({"open", "a", "--owner", "\xff"}).exit_code == 2);
  CHECK(bank({"open", "a", "--owner", "Bob\nEvil"}).exit_code == 2);
  CHECK(bank({"open", "a", "--owner", "Zoë"}).exit_code == 0);
}

TEST_CASE("--db may follow the subcommand") {
  bank_cli bank;
  auto r = annals::test::run({BANK_EXE, "open", "a", "--owner", "Ann", "--db", bank.db});
  CHECK(r.exit_code == 0);
  CHECK(bank({"balance", "a"}).out == "0.00\n");
}

TEST_CASE("statement reads the read model with running balances; projections status works") {
  bank_cli bank;
  REQUIRE(bank({"open", "s", "--owner", "Sam"}).exit_code == 0);
  REQUIRE(bank({"deposit", "s", "10"}).exit_code == 0);
  REQUIRE(bank({"withdraw", "s", "4.50"}).exit_code == 0);
  auto r = bank({"statement", "s"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "10.00"));
  CHECK(contains(r.out, "5.50"));
  CHECK(contains(r.out, "2 movement(s)"));
  auto st = bank({"projections", "status"});
  CHECK(st.exit_code == 0);
  CHECK(contains(st.out, "account_balances"));
  CHECK(contains(st.out, "running"));
  auto rb = bank({"projections", "rebuild", "account_statement", "--verify"});
  CHECK(rb.exit_code == 0);
  CHECK(contains(rb.out, "0 difference(s)"));
  CHECK(bank({"projections", "rebuild", "nope"}).exit_code == 2);
}

TEST_CASE("a store written before bank.v2.AccountOpened keeps working: commands, history, rebuild") {
  bank_cli bank;
  {
    // What an older bank wrote: v1 AccountOpened with the owner as one string, no registry.
    namespace ev = annals::test::bank_events;
    auto store = annals::open_store(bank.db);
    REQUIRE(store.ok());
    std::vector<annals::event_data> old;
    old.push_back(ev::data_of(ev::opened("old", "Grace Brewster Hopper")));
    old.push_back(ev::data_of(ev::deposited("old", 2500)));
    REQUIRE((*store)->append("account-old", annals::expected_version::no_stream(), std::move(old)).ok());
  }
  CHECK(bank({"deposit", "old", "1.50"}).exit_code == 0);  // the aggregate reads v1 as v2
  auto history = bank({"history", "old"});
  CHECK(history.exit_code == 0);
  CHECK(contains(history.out, "Grace Brewster Hopper"));
  CHECK(bank({"balance", "old"}).out == "26.50\n");
  // The projection commands read v1 events through the bank's upcasters too: nothing parked.
  auto rb = bank({"projections", "rebuild", "account_balances", "--verify"});
  CHECK(rb.exit_code == 0);
  CHECK(contains(rb.out, "0 difference(s)"));
  auto parked = bank({"projections", "parked", "account_balances"});
  CHECK(parked.exit_code == 0);
  CHECK_FALSE(contains(parked.out, "never opened"));
  CHECK(bank({"balance", "old"}).out == "26.50\n");
  // The old type stays registered, so tools without the bank's code decode those events.
  auto store = annals::open_store(bank.db);
  REQUIRE(store.ok());
  auto old_schema = (*store)->read_schemas("bank.v1.AccountOpened");
  REQUIRE(old_schema.ok());
  CHECK(old_schema->size() == 1);
}

TEST_CASE("bank verify checks the store and every event through the bank's upcasters") {
  bank_cli bank;
  REQUIRE(bank({"open", "v", "--owner", "Vera Rubin"}).exit_code == 0);
  REQUIRE(bank({"deposit", "v", "3"}).exit_code == 0);
  auto ok = bank({"verify"});
  CHECK(ok.exit_code == 0);
  CHECK_MESSAGE(contains(ok.out, "ok: no problems found"), ok.out);
  {
    // An old v1 AccountOpened whose bytes do not decode, written without a schema version:
    // the stored descriptors can only guess (a warning), but the upcaster cannot read it.
    auto store = annals::open_store(bank.db);
    REQUIRE(store.ok());
    annals::event_data bad;
    bad.type = "bank.v1.AccountOpened";
    bad.payload = std::string("\x0a\xff", 2);
    REQUIRE((*store)->append("account-broken", annals::expected_version::no_stream(), {bad}).ok());
  }
  auto r = bank({"verify"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(contains(r.out, "position 3: upcast:"), r.out);
  CHECK(contains(r.out, "1 problem(s) found"));
  CHECK(bank({"verify", "--db", bank.dir.file("missing.db")}).exit_code == 2);
}
