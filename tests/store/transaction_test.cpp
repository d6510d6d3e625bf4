// The database layer's RAII transaction (framework/src/db/transaction.hpp): whatever way a
// scope is left before commit() (an early return, an error, an exception), nothing it wrote
// stays. An internal contract, so this file includes the framework's private headers.
#include "db/transaction.hpp"
#include "backends/sqlite/sqlite.hpp"
#include "support/support.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <stdexcept>
#include <string>

namespace {

using annals::sqlite::connection;
using tx_t = annals::db::transaction<connection>;

connection open_db(const std::string& path) {
  auto c = connection::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, 1000);
  REQUIRE(c.ok());
  auto made = c->exec("CREATE TABLE IF NOT EXISTS t (v INTEGER)", "create");
  REQUIRE(made.ok());
  return std::move(c).value();
}

int rows(connection& c) {
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(c.get(), "SELECT count(*) FROM t", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return n;
}

}  // namespace

TEST_CASE("an RAII transaction keeps its writes only when committed") {
  annals::test::temp_dir dir;
  auto c = open_db(dir.file("t.db"));

  {  // left without commit: rolled back
    auto tx = tx_t::begin(c, annals::db::begin_sqlite_write, "begin");
    REQUIRE(tx.ok());
    REQUIRE(c.exec("INSERT INTO t VALUES (1)", "insert").ok());
  }
  CHECK(rows(c) == 0);
  CHECK(sqlite3_get_autocommit(c.get()) != 0);  // no transaction left open

  // An exception out of the body: rolled back, and the exception reaches the caller.
  CHECK_THROWS_AS(annals::db::in_transaction(c, annals::db::begin_sqlite_write, "tx",
                                             [&]() -> annals::result<void> {
                                               (void)c.exec("INSERT INTO t VALUES (2)", "insert");
                                               throw std::runtime_error("boom");
                                             }),
                  std::runtime_error);
  CHECK(rows(c) == 0);
  CHECK(sqlite3_get_autocommit(c.get()) != 0);

  // An error from the body: rolled back, the error returned.
  auto failed = annals::db::in_transaction(c, annals::db::begin_sqlite_write, "tx", [&] {
    (void)c.exec("INSERT INTO t VALUES (3)", "insert");
    return c.exec("INSERT INTO no_such_table VALUES (3)", "insert elsewhere");
  });
  CHECK_FALSE(failed.ok());
  CHECK(rows(c) == 0);

  // Committed: kept, and the destructor then does nothing.
  {
    auto tx = tx_t::begin(c, annals::db::begin_sqlite_write, "begin");
    REQUIRE(tx.ok());
    REQUIRE(c.exec("INSERT INTO t VALUES (4)", "insert").ok());
    REQUIRE(tx->commit("commit").ok());
  }
  CHECK(rows(c) == 1);

  // A BEGIN that fails (the write lock held by another connection) opens nothing.
  auto other = open_db(dir.file("t.db"));
  auto held = tx_t::begin(other, annals::db::begin_sqlite_write, "begin");
  REQUIRE(held.ok());
  auto c2 = connection::open(dir.file("t.db"), SQLITE_OPEN_READWRITE, 0);
  REQUIRE(c2.ok());
  auto refused = tx_t::begin(*c2, annals::db::begin_sqlite_write, "begin");
  CHECK_FALSE(refused.ok());
  CHECK(sqlite3_get_autocommit(c2->get()) != 0);
}
