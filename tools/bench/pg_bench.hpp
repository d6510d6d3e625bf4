// annals-bench on PostgreSQL (--backend postgresql://...): the figures of issue 5, each beside
// raw libpq baselines measured in the same run (pg_bench.cpp).
#pragma once

#include "bench_common.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace annals_bench {

// True for a postgresql:// or postgres:// URI.
bool is_postgres_uri(std::string_view uri);

// The PostgreSQL scenarios, in the order a full run takes them.
const std::vector<std::string>& pg_scenario_names();

// Runs one of them against the server at c.backend. Each scenario works in databases of its
// own, created with unique names and dropped at its end (also on failure).
void run_pg_scenario(const std::string& name, const config& c);

}  // namespace annals_bench
