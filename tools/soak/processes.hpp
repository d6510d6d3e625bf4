// Child processes of a soak run: started with a pipe on stdout, stderr to a file, an optional
// ANNALS_FAULTS spec in their environment; reaped with wait4 for their exit status and rusage.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace soak {

// One started process. Not copyable (it owns its pipe).
struct child {
  std::string role;               // "worker", "saga", "relay", "transfer", "reader", "rebuild"
  std::vector<std::string> argv;  // argv[0] is a path
  std::string faults;             // ANNALS_FAULTS, empty: none
  std::string err_path;           // its stderr
  std::string tag;                // what the caller needs to recognise it (a transfer id, ...)
  pid_t pid = -1;
  int out_fd = -1;        // non-blocking read end of its stdout
  std::string out;        // stdout read so far, not yet consumed as whole lines
  bool killed_by_us = false;
  std::chrono::steady_clock::time_point started;

  child() = default;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  child(child&&) = default;
  child& operator=(child&&) = default;
};

// How a child ended: exit_code is its exit status, or 128 + signal number.
struct ended {
  pid_t pid = -1;
  int exit_code = -1;
  long max_rss_kb = 0;  // ru_maxrss from wait4
};

// Starts c.argv with stdout to a pipe and stderr appended to c.err_path; ANNALS_FAULTS and
// ANNALS_FAULT_SEED set (or removed) in its environment. false if it could not be started.
bool start(child& c, std::uint64_t fault_seed);
// Appends what the child's pipe holds now to c.out (never blocks).
void drain(child& c);
// Takes the next whole line out of c.out; false if there is none.
bool next_line(child& c, std::string& line);
// If the child has ended, reaps it (reading the rest of its stdout) and returns true.
bool reap(child& c, ended& e, bool block);

// Runs argv to completion (stdout and stderr together), for the checks.
struct ran {
  int exit_code = -1;
  std::string out;
};
ran run(const std::vector<std::string>& argv);

// The file's size in bytes, 0 if it does not exist.
std::int64_t file_size(const std::string& path);

}  // namespace soak
