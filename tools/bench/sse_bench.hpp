// The sse_fanout scenario (issue 8): events/s delivered over Server-Sent Events to N clients
// of an annals::http_server, and what N connected subscribers cost the appender.
#pragma once

#include "bench_common.hpp"

#include <string>

namespace annals_bench {

// Store files go under `dir`.
void run_sse_fanout(const config& c, const std::string& dir);

}  // namespace annals_bench
