// Throwaway PostgreSQL databases for tests, on the server named by ANNALS_TEST_PG
// (tools/scripts/test.sh starts one and sets it). libpq stays in support/postgres.cpp.
#pragma once

#include <string>

namespace annals::test::pg {

// The server's URI from ANNALS_TEST_PG; empty when unset.
std::string server_uri();

// Creates a new, empty database with a unique name on the server. On success returns true and
// sets `name` and `uri` (the server URI with its database replaced); otherwise sets `why`.
bool create_database(std::string& name, std::string& uri, std::string& why);

// Drops it, closing any connection still open to it. Best effort.
void drop_database(const std::string& name);

}  // namespace annals::test::pg
