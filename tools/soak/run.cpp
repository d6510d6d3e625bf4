// The soak run: starts and restarts the children, kills them, counts what they report, runs
// the checks while the load goes on and after stopping everything, and prints the report.
#include <fmt/format.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <list>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "account.hpp"
#include "checks.hpp"
#include "processes.hpp"
#include "soak.hpp"
#include "transfers.hpp"

namespace soak {
namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::int64_t opening_deposit = 1000'00;
const char* const projection_names[] = {"account_balances", "account_statement", "daily_totals"};

double since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// "annals: fault injection: SIGKILL at NAME (hit N)" -> NAME; empty if the file has none.
std::string fault_point_in(const std::string& err) {
  const std::string marker = "fault injection: SIGKILL at ";
  auto at = err.rfind(marker);
  if (at == std::string::npos) return {};
  at += marker.size();
  auto end = err.find(" (hit", at);
  return err.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

std::string json_map(const std::map<std::string, std::int64_t>& m) {
  std::string s = "{";
  for (const auto& [k, v] : m) s += fmt::format("{}\"{}\":{}", s.size() > 1 ? "," : "", k, v);
  return s + "}";
}

std::string json_string(std::string_view v) {
  std::string s = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      s += '\\';
      s += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      s += fmt::format("\\u{:04x}", c);
    } else {
      s += c;
    }
  }
  return s + "\"";
}

std::int64_t total(const std::map<std::string, std::int64_t>& m) {
  std::int64_t t = 0;
  for (const auto& [k, v] : m) t += v;
  return t;
}

void delete_jetstream_stream(const std::string& url, const std::string& stream) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) return;
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, nc, nullptr) == NATS_OK) {
    (void)js_DeleteStream(js, stream.c_str(), nullptr, nullptr);
    jsCtx_Destroy(js);
  }
  natsConnection_Destroy(nc);
}

bool broker_reachable(const std::string& url) {
  natsConnection* nc = nullptr;
  bool ok = natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK;
  natsConnection_Destroy(nc);
  return ok;
}

class soak_run {
 public:
  soak_run(options o, std::string self) : o_(std::move(o)), self_(std::move(self)) {}
  int run();

 private:
  // ---- children ----
  std::string fault_spec(const std::string& role) const;
  child& launch(const std::string& role, std::vector<std::string> args, std::string tag = {});
  bool relaunch(child& c);
  std::vector<std::string> bank_args(std::vector<std::string> args) const;
  void consume_lines(child& c);
  void on_end(child& c, const ended& e);
  void poll_children();
  void keep_load_going();
  void kill_one();
  void stop_all();

  // ---- checks ----
  void record(check_result r);
  void periodic_checks();
  void final_checks();
  void report(int code);

  options o_;
  std::string self_;
  std::string dir_, logs_, db_;
  bool on_postgres_ = false;
  std::string js_stream_, js_prefix_;
  std::mt19937_64 rng_;
  std::uint64_t serial_ = 0;
  std::list<child> children_;
  bool stopping_ = false;

  // Figures.
  std::map<std::string, std::int64_t> ops_, kills_, faults_, starts_, peak_rss_kb_;
  std::int64_t rejected_ = 0, gave_up_ = 0, conflicts_retried_ = 0, worker_errors_ = 0;
  std::int64_t transfer_timeouts_ = 0;
  std::vector<std::string> unexpected_;
  std::int64_t db_start_ = 0, wal_start_ = 0, db_end_ = 0, wal_end_ = 0;
  std::int64_t head_start_ = 0, head_end_ = 0;
  double load_seconds_ = 0, total_seconds_ = 0, final_seconds_ = 0;

  // Shared with the checker thread.
  std::mutex mu_;
  std::vector<ack> acks_;
  std::vector<std::string> transfer_ids_;
  std::vector<check_result> checks_;
  int check_rounds_ = 0;
  std::atomic<bool> load_done_{false};
  std::condition_variable cv_;
};

std::vector<std::string> soak_run::bank_args(std::vector<std::string> args) const {
  args.insert(args.begin(),
              {o_.bank_exe, "--db", db_, "--retries", std::to_string(o_.max_retries)});
  return args;
}

std::string soak_run::fault_spec(const std::string& role) const {
  if (o_.fault_scale <= 0) return {};
  auto p = [&](double base) { return fmt::format("{:.6f}", std::min(1.0, base * o_.fault_scale)); };
  if (role == "worker") {
    return fmt::format("store.append.before_commit=crash%{0},store.append.after_commit=crash%{0}",
                       p(0.0005));
  }
  if (role == "saga") {
    return fmt::format("saga.between_steps=crash%{},store.append.after_commit=crash%{}", p(0.01),
                       p(0.002));
  }
  if (role == "transfer") {
    return fmt::format("saga.between_steps=crash%{},store.append.after_commit=crash%{}", p(0.03),
                       p(0.01));
  }
  if (role == "reader") return fmt::format("projection.after_write=crash%{}", p(0.03));
  if (role == "rebuild") return fmt::format("rebuild.before_swap=crash%{}", p(0.3));
  if (role == "relay") {
    return fmt::format("relay.before_ack=crash%{0},relay.after_ack=crash%{0}", p(0.01));
  }
  return {};
}

child& soak_run::launch(const std::string& role, std::vector<std::string> args, std::string tag) {
  auto& c = children_.emplace_back();
  c.role = role;
  c.argv = std::move(args);
  c.tag = std::move(tag);
  c.faults = fault_spec(role);
  relaunch(c);
  return c;
}

bool soak_run::relaunch(child& c) {
  ++serial_;
  c.err_path = fmt::format("{}/{}-{}.err", logs_, c.role, serial_);
  if (c.role == "worker") {  // a new name for the accounts this incarnation opens
    auto& name = c.argv[c.argv.size() - 1];
    name = fmt::format("w{}", serial_);
  }
  ++starts_[c.role];
  if (!start(c, o_.seed * 1000003u + serial_)) {
    unexpected_.push_back(fmt::format("could not start {}", c.argv[0]));
    return false;
  }
  return true;
}

void soak_run::consume_lines(child& c) {
  std::string line;
  while (next_line(c, line)) {
    if (c.role != "worker") {
      // `bank transfer`: its answer names the transfer once the request is stored.
      if (c.role == "transfer" && line.find("transfer '" + c.tag + "'") != std::string::npos) {
        std::lock_guard lock(mu_);
        if (transfer_ids_.empty() || transfer_ids_.back() != c.tag) {
          transfer_ids_.push_back(c.tag);
          ++ops_["transfer"];
        }
      }
      continue;
    }
    std::istringstream words(line);
    std::string kind, op;
    words >> kind >> op;
    if (kind == "ack") {
      ack a;
      int conflicts = 0;
      words >> a.stream >> a.version >> a.position >> conflicts;
      ++ops_[op];
      conflicts_retried_ += conflicts;
      std::lock_guard lock(mu_);
      acks_.push_back(std::move(a));
    } else if (kind == "rejected") {
      ++rejected_;
    } else if (kind == "gave_up") {
      ++gave_up_;
      conflicts_retried_ += o_.max_retries;
    } else if (kind == "error") {
      ++worker_errors_;
    }
  }
}

void soak_run::on_end(child& c, const ended& e) {
  consume_lines(c);
  auto& rss = peak_rss_kb_[c.role];
  rss = std::max<std::int64_t>(rss, e.max_rss_kb);
  const std::string err = read_file(c.err_path);
  bool expected = true;
  if (e.exit_code == 128 + SIGKILL) {
    if (auto point = fault_point_in(err); !point.empty()) {
      ++faults_[point];
    } else if (c.killed_by_us) {
      ++kills_[c.role];
    } else {
      expected = false;
    }
  } else if (c.role == "transfer") {
    if (e.exit_code == 3) {
      ++gave_up_;
    } else if (e.exit_code == 4 && err.find("carries it on") != std::string::npos) {
      ++transfer_timeouts_;  // it waited past --timeout: the request stands, a saga finishes it
    } else {
      expected = e.exit_code == 0 || e.exit_code == 1;
    }
  } else if (c.role == "worker" || c.role == "saga" || c.role == "relay") {
    // Told to stop: it exits 0, or dies of the SIGTERM if it was restarted just before and had
    // not yet set up its handler.
    expected = stopping_ && (e.exit_code == 0 || e.exit_code == 128 + SIGTERM);
  } else {
    expected = e.exit_code == 0;
    if (expected) ++ops_[c.role == "rebuild" ? "rebuild" : c.tag];
  }
  if (!expected) {
    unexpected_.push_back(fmt::format("{} (pid {}) ended with {}{}: {}", c.role, e.pid,
                                      e.exit_code, c.killed_by_us ? " (killed by us)" : "",
                                      err.substr(err.size() > 600 ? err.size() - 600 : 0)));
  } else {
    unlink(c.err_path.c_str());
  }
}

void soak_run::poll_children() {
  for (auto it = children_.begin(); it != children_.end();) {
    drain(*it);
    consume_lines(*it);
    ended e;
    if (!reap(*it, e, false)) {
      ++it;
      continue;
    }
    on_end(*it, e);
    const bool long_lived = it->role == "worker" || it->role == "saga" || it->role == "relay";
    if (long_lived && !stopping_) {
      relaunch(*it);
      ++it;
    } else {
      it = children_.erase(it);
    }
  }
}

void soak_run::keep_load_going() {
  int transfers = 0, readers = 0;
  for (const auto& c : children_) {
    transfers += c.role == "transfer";
    readers += c.role == "reader";
  }
  auto account = [&] { return shared_account(static_cast<int>(rng_() % o_.accounts)); };
  for (; transfers < o_.transfers_at_once; ++transfers) {
    std::string from = account(), to = account();
    if (rng_() % 10 == 0) to = "soak-nobody";  // refused by the target: refunded
    if (to == from) to = shared_account((static_cast<int>(rng_() % o_.accounts) + 1) % o_.accounts);
    std::string id = fmt::format("s{}-{}", o_.seed, ++serial_);
    std::string amount = fmt::format("{}.{:02}", 1 + rng_() % 300, rng_() % 100);
    std::vector<std::string> args{"transfer", from, to, amount, "--id", id, "--timeout", "20"};
    if (rng_() % 2) args.push_back("--no-wait");
    launch("transfer", bank_args(args), id);
  }
  for (; readers < o_.readers_at_once; ++readers) {
    const bool statement = rng_() % 3 == 0;
    launch("reader", bank_args({statement ? "statement" : "balance", account()}),
           statement ? "statement" : "balance");
  }
}

void soak_run::kill_one() {
  std::vector<child*> running;
  for (auto& c : children_) {
    if (c.pid > 0 && !c.killed_by_us) running.push_back(&c);
  }
  if (running.empty()) return;
  auto* c = running[rng_() % running.size()];
  c->killed_by_us = true;
  kill(c->pid, SIGKILL);
}

void soak_run::stop_all() {
  stopping_ = true;
  for (auto& c : children_) {
    if (c.pid > 0 && (c.role == "worker" || c.role == "saga" || c.role == "relay")) {
      kill(c.pid, SIGTERM);
    }
  }
  const auto started = clock_type::now();
  while (!children_.empty()) {
    poll_children();
    if (since(started) > 90) {
      for (auto& c : children_) {
        if (c.pid > 0 && !c.killed_by_us) {
          unexpected_.push_back(fmt::format("{} did not stop within 90 s", c.role));
          c.killed_by_us = true;
          kill(c.pid, SIGKILL);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void soak_run::record(check_result r) {
  std::lock_guard lock(mu_);
  if (!r.ok) fmt::print(stderr, "annals-soak: check FAILED: {}: {}\n", r.name, r.detail);
  checks_.push_back(std::move(r));
}

void soak_run::periodic_checks() {
  auto store = bank::open_store(db_);
  if (!store) {
    record({"open_store", false, store.error().message()});
    return;
  }
  int round = 0;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(o_.check_every_s),
                   [&] { return load_done_.load(); });
      if (load_done_) return;
    }
    std::vector<ack> acks;
    std::vector<std::string> transfers;
    {
      std::lock_guard lock(mu_);
      acks = acks_;
      transfers = transfer_ids_;
    }
    record(check_acks(**store, acks, transfers));
    if (auto l = read_ledger(**store)) {
      record(check_money(*l, false));
    } else {
      record({"money_conserved", false, l.error().message()});
    }
    record(check_balance_model(db_, **store));
    record(check_verify(o_.annals_exe, db_));
    record(check_rebuild(o_.bank_exe, db_, projection_names[round % 3]));
    if (!o_.nats.empty()) record(check_relay(o_.nats, js_stream_, js_prefix_, db_, **store, false));
    std::lock_guard lock(mu_);
    ++check_rounds_;
    ++round;
  }
}

void soak_run::final_checks() {
  // Finish what the kills left half-done: pending transfer steps, unrelayed events.
  for (int attempt = 0;; ++attempt) {
    auto r = soak::run(bank_args({"saga", "--once", "--lease", "1"}));
    if (r.exit_code == 0) break;
    if (attempt == 3) {
      record({"saga_finishes", false, fmt::format("exit {}: {}", r.exit_code, r.out)});
      break;
    }
  }
  if (!o_.nats.empty()) {
    auto r = soak::run(bank_args({"relay", "--once", "--nats", o_.nats, "--stream", js_stream_,
                            "--prefix", js_prefix_, "--lease-ms", "500"}));
    if (r.exit_code != 0) record({"relay_finishes", false, fmt::format("exit {}: {}", r.exit_code, r.out)});
  }
  auto store = bank::open_store(db_);
  if (!store) {
    record({"open_store", false, store.error().message()});
    return;
  }
  record(check_acks(**store, acks_, transfer_ids_));
  auto l = read_ledger(**store);
  if (!l) {
    record({"money_conserved_final", false, l.error().message()});
  } else {
    record(check_money(*l, true));
    record(check_aggregates(db_, **store, *l));
  }
  record(check_transfers_finished(**store));
  record(check_verify(o_.annals_exe, db_));
  for (const char* name : projection_names) record(check_rebuild(o_.bank_exe, db_, name));
  if (!o_.nats.empty()) record(check_relay(o_.nats, js_stream_, js_prefix_, db_, **store, true));
  if (auto h = (*store)->head_position()) head_end_ = *h;
}

void soak_run::report(int code) {
  std::int64_t passed = 0, failed = 0;
  for (const auto& c : checks_) (c.ok ? passed : failed)++;
  std::int64_t peak = 0;
  for (const auto& [k, v] : peak_rss_kb_) peak = std::max(peak, v);
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const std::int64_t events = head_end_ - head_start_;
  const std::int64_t growth = (db_end_ + wal_end_) - (db_start_ + wal_start_);
  const double per_event = events > 0 ? static_cast<double>(growth) / static_cast<double>(events) : 0;
  std::string failures = "[";
  for (const auto& c : checks_) {
    if (!c.ok) failures += (failures.size() > 1 ? "," : "") + json_string(c.name + ": " + c.detail);
  }
  failures += "]";
  std::string unexpected = "[";
  for (const auto& u : unexpected_) unexpected += (unexpected.size() > 1 ? "," : "") + json_string(u);
  unexpected += "]";
  auto restarts = total(starts_);
  fmt::print(
      "{{\"soak\":\"annals\",\"exit_code\":{},\"seed\":{},\"seconds\":{:.1f},\"total_seconds\":{:.1f},\"final_seconds\":{:.1f},"
      "\"store\":\"{}\",\"db\":{},\"worker_processes\":{},\"sagas\":{},\"relay\":{},"
      "\"operations\":{},\"operations_total\":{},\"rejected\":{},\"conflicts_retried\":{},"
      "\"gave_up\":{},\"worker_errors\":{},\"transfer_timeouts\":{},\"processes_started\":{},"
      "\"kill9\":{},\"kill9_total\":{},\"fault_crashes\":{},\"fault_crashes_total\":{},"
      "\"checks_passed\":{},\"checks_failed\":{},\"check_rounds\":{},\"failed_checks\":{},"
      "\"unexpected_exits\":{},\"peak_rss_kb\":{},\"peak_rss_kb_max\":{},\"soak_rss_kb\":{},"
      "\"events_start\":{},\"events_end\":{},\"db_bytes_start\":{},\"wal_bytes_start\":{},"
      "\"db_bytes_end\":{},\"wal_bytes_end\":{},\"bytes_per_event\":{:.1f}}}\n",
      code, o_.seed, load_seconds_, total_seconds_, final_seconds_, on_postgres_ ? "postgresql" : "sqlite",
      json_string(db_), o_.processes, o_.sagas, o_.nats.empty() ? "false" : "true",
      json_map(ops_), total(ops_), rejected_, conflicts_retried_, gave_up_, worker_errors_,
      transfer_timeouts_, restarts, json_map(kills_), total(kills_), json_map(faults_),
      total(faults_), passed, failed, check_rounds_, failures, unexpected, json_map(peak_rss_kb_),
      peak, self.ru_maxrss, head_start_, head_end_, db_start_, wal_start_, db_end_, wal_end_,
      per_event);

  std::string op_list, kill_list, fault_list;
  for (const auto& [k, v] : ops_) op_list += fmt::format(" {} {},", k, v);
  for (const auto& [k, v] : kills_) kill_list += fmt::format(" {} {},", k, v);
  for (const auto& [k, v] : faults_) fault_list += fmt::format(" {} {},", k, v);
  auto trim = [](std::string s) { return s.empty() ? std::string(" none") : s.substr(0, s.size() - 1); };
  fmt::print(stderr, "\nannals-soak: {:.0f} s of load ({:.0f} s in all), seed {}, {} store {}{}\n",
             load_seconds_, total_seconds_, o_.seed, on_postgres_ ? "PostgreSQL" : "SQLite", db_,
             o_.nats.empty() ? ", no relay" : ", relay to " + o_.nats);
  fmt::print(stderr, "  operations acknowledged: {} ({})\n", total(ops_), trim(op_list).substr(1));
  fmt::print(stderr, "  rejected by a rule {}, conflicts retried {}, gave up after retries {}, "
             "transfers past their wait {}\n", rejected_, conflicts_retried_, gave_up_, transfer_timeouts_);
  fmt::print(stderr, "  crashes: kill -9 {} ({}); fault-point SIGKILLs {} ({}); {} processes started\n",
             total(kills_), trim(kill_list).substr(1), total(faults_), trim(fault_list).substr(1), restarts);
  fmt::print(stderr, "  invariant checks: {} passed, {} failed ({} rounds during the load, then the final ones)\n",
             passed, failed, check_rounds_);
  for (const auto& c : checks_) {
    if (!c.ok) fmt::print(stderr, "    FAILED {}: {}\n", c.name, c.detail);
  }
  for (const auto& u : unexpected_) fmt::print(stderr, "  unexpected: {}\n", u);
  fmt::print(stderr, "  peak RSS: {:.1f} MB (a child), {:.1f} MB (annals-soak)\n", peak / 1024.0,
             self.ru_maxrss / 1024.0);
  if (!on_postgres_) {
    fmt::print(stderr, "  store: {} -> {} events; file {:.1f} -> {:.1f} MB, -wal {:.1f} -> {:.1f} MB; "
               "{:.0f} bytes per event\n", head_start_, head_end_, db_start_ / 1e6, db_end_ / 1e6,
               wal_start_ / 1e6, wal_end_ / 1e6, per_event);
  } else {
    fmt::print(stderr, "  store: {} -> {} events\n", head_start_, head_end_);
  }
  fmt::print(stderr, "  final phase (stop, finish transfers and relay, checks): {:.1f} s\n", final_seconds_);
  fmt::print(stderr, "  result: {}\n",
             code == exit_ok ? "every check passed"
             : code == exit_invariant ? "AN INVARIANT CHECK FAILED"
             : code == exit_unexpected_child ? "a child ended unexpectedly"
                                             : "setup failed");
}

int soak_run::run() {
  const auto run_started = clock_type::now();
  if (o_.seed == 0) o_.seed = std::random_device{}() | 1u;
  rng_.seed(o_.seed);
  std::string tmp = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  dir_ = tmp + "/annals-soak-XXXXXX";
  if (!mkdtemp(dir_.data())) {
    fmt::print(stderr, "annals-soak: cannot create a temporary directory in {}\n", tmp);
    return exit_setup;
  }
  logs_ = dir_;
  db_ = o_.db.empty() ? dir_ + "/bank.db" : o_.db;
  on_postgres_ = db_.find("://") != std::string::npos;
  for (const auto* exe : {&o_.bank_exe, &o_.annals_exe}) {
    if (access(exe->c_str(), X_OK) != 0) {
      fmt::print(stderr, "annals-soak: cannot run {}\n", *exe);
      return exit_setup;
    }
  }
  if (!o_.nats.empty()) {
    if (!broker_reachable(o_.nats)) {
      fmt::print(stderr, "annals-soak: no NATS server at {}\n", o_.nats);
      return exit_setup;
    }
    const std::string tag = annals::new_uuid_v7().substr(24, 12);
    js_stream_ = "SOAK_" + tag;
    js_prefix_ = "soak" + tag;
  }
  {
    // The shared accounts, each with an opening deposit (acknowledged like any command).
    auto store = bank::open_store(db_);
    if (!store) {
      fmt::print(stderr, "annals-soak: {}: {}\n", db_, store.error().message());
      return exit_setup;
    }
    for (int i = 0; i < o_.accounts; ++i) {
      const std::string id = shared_account(i);
      auto a = annals::load<bank::account>(**store, bank::stream_for(id));
      if (!a) {
        fmt::print(stderr, "annals-soak: {}\n", a.error().message());
        return exit_setup;
      }
      if (a->version >= 0) continue;  // a kept store: the account is there
      for (int step = 0; step < 2; ++step) {
        auto r = annals::handle<bank::account>(**store, bank::stream_for(id), [&](const bank::account& s) {
          return step == 0 ? bank::open(s, id, "Soak " + id) : bank::deposit(s, id, opening_deposit);
        });
        if (!r) {
          fmt::print(stderr, "annals-soak: {}\n", r.error().message());
          return exit_setup;
        }
        acks_.push_back({bank::stream_for(id), r->stream_version, r->position});
      }
    }
    if (auto h = (*store)->head_position()) head_start_ = *h;
  }
  if (!on_postgres_) {
    db_start_ = file_size(db_);
    wal_start_ = file_size(db_ + "-wal");
  }
  fmt::print(stderr, "annals-soak: {} s, seed {}, store {}, {} workers, {} sagas{}, logs in {}\n",
             o_.seconds, o_.seed, db_, o_.processes, o_.sagas,
             o_.nats.empty() ? ", no relay" : ", relay to " + o_.nats + " stream " + js_stream_,
             logs_);

  for (int i = 0; i < o_.processes; ++i) {
    launch("worker", {self_, "worker", "--db", db_, "--accounts", std::to_string(o_.accounts),
                      "--seed", std::to_string(o_.seed + 7919u * (i + 1)), "--retries",
                      std::to_string(o_.max_retries), "--pause-ms", std::to_string(o_.pause_ms),
                      "--name", "w"});
  }
  for (int i = 0; i < o_.sagas; ++i) launch("saga", bank_args({"saga", "--lease", "1"}));
  if (!o_.nats.empty()) {
    launch("relay", bank_args({"relay", "--nats", o_.nats, "--stream", js_stream_, "--prefix",
                               js_prefix_, "--lease-ms", "500"}));
  }
  std::thread checker;
  if (o_.check_every_s > 0) checker = std::thread([this] { periodic_checks(); });

  const auto load_started = clock_type::now();
  std::exponential_distribution<double> kill_gap(o_.kill_every_ms > 0 ? 1.0 / o_.kill_every_ms : 1.0);
  auto next_kill = load_started + std::chrono::duration<double, std::milli>(kill_gap(rng_));
  auto next_rebuild = load_started + std::chrono::duration<double>(o_.rebuild_every_s / 2);
  int rebuilds = 0;
  while (since(load_started) < o_.seconds) {
    poll_children();
    keep_load_going();
    const auto now = clock_type::now();
    if (o_.rebuild_every_s > 0 && now >= next_rebuild) {
      bool running = false;
      for (const auto& c : children_) running = running || c.role == "rebuild";
      if (!running) {
        launch("rebuild", bank_args({"projections", "rebuild", projection_names[rebuilds++ % 3]}));
      }
      next_rebuild = now + std::chrono::duration<double>(o_.rebuild_every_s);
    }
    if (o_.kill_every_ms > 0 && now >= next_kill) {
      kill_one();
      next_kill = now + std::chrono::duration<double, std::milli>(kill_gap(rng_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  load_seconds_ = since(load_started);
  {
    std::lock_guard lock(mu_);
    load_done_ = true;
  }
  cv_.notify_all();
  if (checker.joinable()) checker.join();
  const auto final_started = clock_type::now();
  stop_all();
  final_checks();
  if (!on_postgres_) {
    db_end_ = file_size(db_);
    wal_end_ = file_size(db_ + "-wal");
  }
  if (!o_.nats.empty() && !o_.keep) delete_jetstream_stream(o_.nats, js_stream_);
  final_seconds_ = since(final_started);
  total_seconds_ = since(run_started);

  bool all_passed = !checks_.empty();
  for (const auto& c : checks_) all_passed = all_passed && c.ok;
  int code = exit_ok;
  if (!all_passed) {
    code = exit_invariant;
  } else if (!unexpected_.empty() || total(ops_) == 0) {
    code = exit_unexpected_child;
  }
  report(code);
  if (code == exit_ok && !o_.keep) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);  // the store (unless --db) and the logs
  } else {
    fmt::print(stderr, "  kept: {}\n", dir_);
  }
  return code;
}

}  // namespace

int run_soak(options o, const std::string& self_exe) {
  soak_run r(std::move(o), self_exe);
  return r.run();
}

}  // namespace soak
