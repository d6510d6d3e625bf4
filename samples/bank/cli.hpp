// The `bank` command line: shared between main.cpp (argument parsing) and demo.cpp.
#pragma once

#include <annals/result.hpp>

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace bank::cli {

struct demo_options {
  std::string db;          // empty: a new store in a temporary directory
  int processes = 2;       // worker processes besides this one
  int threads = 4;         // threads in each process
  int operations = 150;    // commands per thread
  int accounts = 3;        // shared accounts
  int max_retries = 10;    // conflict retries per command
  std::uint64_t seed = 0;  // 0: random
};

struct worker_options {
  std::string db;
  std::string run_id;
  int accounts = 3;
  int threads = 4;
  int operations = 150;
  int max_retries = 10;
  std::uint64_t seed = 1;
};

int run_demo(const demo_options& o, const std::string& self_exe);
int run_demo_worker(const worker_options& o);

// Adds `transfer`, `transfers` and `saga` (transfer_cli.cpp). `db` and `max_retries` are read
// when a command runs (after parsing); `code` receives its exit code.
void add_transfer_commands(CLI::App& app, const std::string& db, const int& max_retries,
                           int& code);

// Prints "bank: <message>" to stderr and returns the exit code for the error's kind.
int report(const annals::error& e);

}  // namespace bank::cli
