#include "support/postgres.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <libpq-fe.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <random>

namespace annals::test::pg {
namespace {

struct conn_closer {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_closer>;

// Runs parameterless SQL on the server's maintenance database.
bool run(const std::string& sql, std::string& why) {
  conn_ptr c(PQconnectdb(server_uri().c_str()));
  if (!c || PQstatus(c.get()) != CONNECTION_OK) {
    why = fmt::format("cannot connect to ANNALS_TEST_PG ({}): {}", server_uri(),
                      c ? PQerrorMessage(c.get()) : "out of memory");
    return false;
  }
  PGresult* r = PQexec(c.get(), sql.c_str());
  bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) why = fmt::format("{}: {}", sql, PQerrorMessage(c.get()));
  PQclear(r);
  return ok;
}

// The URI with its database path replaced by `db`.
std::string with_database(const std::string& uri, const std::string& db) {
  auto scheme = uri.find("://");
  std::size_t authority = scheme == std::string::npos ? 0 : scheme + 3;
  auto query = uri.find('?', authority);
  std::string tail = query == std::string::npos ? "" : uri.substr(query);
  std::string head = uri.substr(0, query);
  auto slash = head.find('/', authority);
  if (slash != std::string::npos) head.resize(slash);
  return head + "/" + db + tail;
}

}  // namespace

std::string server_uri() {
  const char* v = std::getenv("ANNALS_TEST_PG");
  return v ? v : "";
}

std::string pgbouncer_uri(const std::string& name) {
  const char* v = std::getenv("ANNALS_TEST_PGBOUNCER");
  return v && *v ? with_database(v, name) : "";
}

bool create_database(std::string& name, std::string& uri, std::string& why) {
  if (server_uri().empty()) {
    why = "ANNALS_TEST_PG is not set. Run tools/scripts/test.sh (it starts a throwaway "
          "PostgreSQL), or set ANNALS_TEST_PG=postgresql://user@host:port/postgres, or "
          "configure with -DANNALS_TEST_POSTGRES=OFF to build the tests without the "
          "PostgreSQL cases";
    return false;
  }
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  // Only digits and lower-case letters we generate: safe as an identifier (DDL takes no
  // bound parameters).
  name = fmt::format("annals_test_{}_{}_{:08x}", static_cast<long>(::getpid()), counter++,
                     rd());
  uri = with_database(server_uri(), name);
  return run(fmt::format("CREATE DATABASE \"{}\"", name), why);
}

void drop_database(const std::string& name) {
  std::string why;
  (void)run(fmt::format("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name), why);
}

struct session::impl {
  conn_ptr conn;
};

session::session(const std::string& uri) : p_(std::make_unique<impl>()) {
  p_->conn.reset(PQconnectdb(uri.c_str()));
  if (!p_->conn || PQstatus(p_->conn.get()) != CONNECTION_OK) {
    FAIL("cannot connect to " << uri << ": "
                              << (p_->conn ? PQerrorMessage(p_->conn.get()) : "out of memory"));
  }
}

session::~session() = default;

std::string session::exec(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const auto& v : params) values.push_back(v.c_str());
  PGresult* r = PQexecParams(p_->conn.get(), sql.c_str(), static_cast<int>(values.size()),
                             nullptr, values.data(), nullptr, nullptr, 0);
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string why = PQerrorMessage(p_->conn.get());
    PQclear(r);
    FAIL("test SQL failed: " << sql << ": " << why);
  }
  std::string out;
  if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) out = PQgetvalue(r, 0, 0);
  PQclear(r);
  return out;
}

int session::backend_pid() const { return PQbackendPID(p_->conn.get()); }

store_location::store_location(std::string sqlite_file, bool postgres) {
  if (!postgres) {
    path = std::move(sqlite_file);
    return;
  }
  std::string why;
  if (!create_database(database, path, why)) FAIL("no PostgreSQL for the test: " << why);
}

store_location::~store_location() {
  if (!database.empty()) drop_database(database);
}

}  // namespace annals::test::pg
