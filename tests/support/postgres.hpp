// Throwaway PostgreSQL databases for tests, on the server named by ANNALS_TEST_PG
// (tools/scripts/test.sh starts one and sets it). libpq stays in support/postgres.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace annals::test::pg {

// The server's URI from ANNALS_TEST_PG; empty when unset.
std::string server_uri();

// Database `name` of that server through PgBouncer: ANNALS_TEST_PGBOUNCER (test.sh starts one
// in session mode in front of the server) with its database replaced; empty when unset.
std::string pgbouncer_uri(const std::string& name);

// Creates a new, empty database with a unique name on the server. On success returns true and
// sets `name` and `uri` (the server URI with its database replaced); otherwise sets `why`.
bool create_database(std::string& name, std::string& uri, std::string& why);

// Drops it, closing any connection still open to it. Best effort.
void drop_database(const std::string& name);

// Where a test's store lives, for suites compiled once per backend: the SQLite file
// `sqlite_file`, or with `postgres` a fresh database (FAILs the test case when there is no
// server), dropped on destruction. `path` is what open_store and projection_runner::open take.
struct store_location {
  std::string path;
  std::string database;
  store_location(std::string sqlite_file, bool postgres);
  ~store_location();
  store_location(const store_location&) = delete;
  store_location& operator=(const store_location&) = delete;
};

// A plain libpq session for tests that need to act on the server beside a store (hold its
// locks, open competing transactions, kill backends). Parameters are text, bound.
class session {
 public:
  explicit session(const std::string& uri);  // FAILs the test case when it cannot connect
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  // Runs one statement; FAILs the test case on an error. Returns the first column of the first
  // row, or "" when there is none.
  std::string exec(const std::string& sql, const std::vector<std::string>& params = {});
  int backend_pid() const;

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace annals::test::pg
