// annals-soak: the bank sample under mixed load, random kills and injected crashes, for a
// given time, with invariant checks while it runs and at the end. See docs/soak.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace soak {

// Exit codes (docs/soak.md).
constexpr int exit_ok = 0;               // every invariant check passed
constexpr int exit_invariant = 1;        // an invariant check failed
constexpr int exit_usage = 2;            // bad options
constexpr int exit_unexpected_child = 3; // a child ended in a way no kill or fault explains
constexpr int exit_setup = 4;            // store, broker or executables unusable

struct options {
  double seconds = 60;         // how long the load runs (the final checks come after)
  std::string db;              // store path or postgresql://...; empty: a temporary directory
  std::uint64_t seed = 0;      // 0: random (the report names the seed used)
  int processes = 3;           // `annals-soak worker` processes
  int sagas = 2;               // `bank saga` processes (one active, the others standing by)
  int accounts = 8;            // shared accounts the workers and transfers use
  int transfers_at_once = 2;   // `bank transfer` processes running at a time
  int readers_at_once = 1;     // `bank balance` / `bank statement` processes at a time
  double rebuild_every_s = 15; // a `bank projections rebuild` this often
  double kill_every_ms = 1500; // a `kill -9` of a random child about this often; 0: none
  double fault_scale = 1;      // multiplies every fault probability; 0: no injected faults
  double check_every_s = 20;   // invariant checks while the load runs; 0: only at the end
  int pause_ms = 2;            // workers' pause between commands
  int max_retries = 10;        // conflict retries per command
  std::string nats;            // NATS URL (default: $ANNALS_TEST_NATS); empty: no relay
  std::string bank_exe;        // default: `bank` beside this executable
  std::string annals_exe;      // default: `annals` beside this executable
  bool keep = false;           // keep the temporary directory
};

struct worker_options {
  std::string db;
  std::string name;  // prefix of the accounts it opens
  int accounts = 8;
  std::uint64_t seed = 1;
  int max_retries = 10;
  int pause_ms = 2;
};

inline std::string shared_account(int i) { return "soak-" + std::to_string(i); }

int run_worker(const worker_options& o);
int run_soak(options o, const std::string& self_exe);

}  // namespace soak
