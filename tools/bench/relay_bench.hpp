// The relay scenario (issue 6): the NATS JetStream relay's throughput beside raw nats.c async
// publishing of the same messages, and the latency from an append to a JetStream consumer.
#pragma once

#include "bench_common.hpp"

#include <string>

namespace annals_bench {

// Needs a NATS server with JetStream at c.nats. Streams it creates are named ANNALS_BENCH_*
// and deleted afterwards. Store files go under `dir`.
void run_relay(const config& c, const std::string& dir);

}  // namespace annals_bench
