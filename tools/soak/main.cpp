// annals-soak: runs the bank sample under mixed load, random kills and injected crashes for a
// given time, checks the invariants while it runs and at the end, and reports. docs/soak.md.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <cstdlib>

#include "soak.hpp"

namespace {

std::string self_path() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "annals-soak";
  return std::string(buf, static_cast<std::size_t>(n));
}

std::string beside(const std::string& self, const std::string& name) {
  auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/" + name;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "annals-soak: the bank sample under mixed load (worker processes, transfers, sagas, "
      "read-model readers and rebuilds, a relay to NATS JetStream) with random kill -9s and "
      "crashes injected at the framework's fault points; invariant checks while it runs and at "
      "the end; a JSON line on stdout, a summary on stderr"};
  app.footer(
      "Exit codes: 0 every invariant check passed, 1 an invariant check failed, 2 usage, 3 a "
      "child ended in a way no kill or injected fault explains (or no operation was done), 4 "
      "setup (store, broker, executables). See docs/soak.md.");
  soak::options o;
  app.add_option("--seconds", o.seconds, "Seconds of load (the final checks come after)")
      ->capture_default_str()->check(CLI::Range(1.0, 30.0 * 24 * 3600));
  app.add_option("--db", o.db,
                 "Store: a file path or postgresql://... (default: bank.db in a new temporary "
                 "directory, removed if every check passed)");
  app.add_option("--seed", o.seed, "Random seed for the load, the kills and the faults (0: random)");
  app.add_option("--processes", o.processes, "Worker processes (deposits, withdrawals, opens)")
      ->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--sagas", o.sagas, "`bank saga` processes (one active, the others standing by)")
      ->capture_default_str()->check(CLI::Range(1, 16));
  app.add_option("--accounts", o.accounts, "Shared accounts")
      ->capture_default_str()->check(CLI::Range(2, 10000));
  app.add_option("--transfers", o.transfers_at_once, "`bank transfer` processes at a time")
      ->capture_default_str()->check(CLI::Range(0, 64));
  app.add_option("--readers", o.readers_at_once, "`bank balance`/`statement` processes at a time")
      ->capture_default_str()->check(CLI::Range(0, 64));
  app.add_option("--rebuild-every-s", o.rebuild_every_s,
                 "A `bank projections rebuild` this often (0: never)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e6));
  app.add_option("--kill-every-ms", o.kill_every_ms,
                 "Mean time between kill -9s of a random child (0: none)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e9));
  app.add_option("--fault-scale", o.fault_scale,
                 "Multiplies every fault-point crash probability (0: no injected faults)")
      ->capture_default_str()->check(CLI::Range(0.0, 1000.0));
  app.add_option("--check-every-s", o.check_every_s,
                 "Invariant checks while the load runs, this often (0: only at the end)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e6));
  app.add_option("--pause-ms", o.pause_ms, "Workers' pause between commands")
      ->capture_default_str()->check(CLI::Range(0, 10000));
  app.add_option("--retries", o.max_retries, "Conflict retries per command")
      ->capture_default_str()->check(CLI::Range(0, 1000));
  app.add_option("--nats", o.nats,
                 "NATS server with JetStream: run `bank relay` and check the stream at the end "
                 "(default: $ANNALS_TEST_NATS; none: no relay)");
  bool no_nats = false;
  app.add_flag("--no-nats", no_nats, "No relay, even if ANNALS_TEST_NATS is set");
  app.add_option("--bank", o.bank_exe, "The `bank` executable (default: beside this one)");
  app.add_option("--annals", o.annals_exe, "The `annals` executable (default: beside this one)");
  app.add_flag("--keep", o.keep, "Keep the temporary directory and the JetStream stream");

  soak::worker_options w;
  auto* worker = app.add_subcommand("worker", "");  // internal: one load process
  worker->group("");
  worker->add_option("--db", w.db)->required();
  worker->add_option("--name", w.name)->required();
  worker->add_option("--accounts", w.accounts)->required();
  worker->add_option("--seed", w.seed)->required();
  worker->add_option("--retries", w.max_retries);
  worker->add_option("--pause-ms", w.pause_ms);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "annals-soak: {}\nRun 'annals-soak --help' for usage.\n", e.what());
    return soak::exit_usage;
  }
  if (worker->parsed()) return soak::run_worker(w);

  const std::string self = self_path();
  if (o.bank_exe.empty()) o.bank_exe = beside(self, "bank");
  if (o.annals_exe.empty()) o.annals_exe = beside(self, "annals");
  if (o.nats.empty() && !no_nats) {
    if (const char* v = std::getenv("ANNALS_TEST_NATS"); v && *v) o.nats = v;
  }
  if (no_nats) o.nats.clear();
  return soak::run_soak(o, self);
}
