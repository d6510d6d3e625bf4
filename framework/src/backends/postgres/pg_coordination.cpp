#include "backends/postgres/pg_coordination.hpp"

#include "backends/postgres/pg.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>
#include <poll.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace annals::pg {

namespace {

using clock_type = std::chrono::steady_clock;

// Advisory lock keys (two int4 form): a namespace per use, and a hash of the projection name.
constexpr std::int32_t rebuild_space = 0x414E4E52;  // "ANNR"
constexpr std::int32_t lead_space = 0x414E4E50;     // "ANNP"

std::int32_t name_key(std::string_view name) {
  std::uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return static_cast<std::int32_t>(h & 0x7fffffffu);
}

bool first_bool(const pg_result& r) {
  return PQntuples(r.get()) == 1 && PQgetlength(r.get(), 0, 0) == 1 && PQgetvalue(r.get(), 0, 0)[0] == 1;
}

class coordination final : public detail::runner_coordination {
 public:
  explicit coordination(std::string uri) : uri_(std::move(uri)) {
    listener_ = std::thread([this] { listen_loop(); });
  }
  ~coordination() override {
    stop_ = true;
    listener_.join();
  }

  result<void> connect() {
    std::lock_guard lock(mu_);
    return ensure_locked();
  }

  result<std::shared_ptr<void>> lock_rebuild(std::string_view name) override {
    std::lock_guard lock(mu_);
    // Session locks are re-entrant: a second rebuild in this process must be refused here.
    if (rebuilding_.count(std::string(name))) return busy_rebuild(name);
    if (auto r = ensure_locked(); !r) return r.error();
    auto got = try_lock(rebuild_space, name);
    if (!got) return std::move(got).error();
    if (!got.value()) return busy_rebuild(name);
    rebuilding_.insert(std::string(name));
    return std::shared_ptr<void>(nullptr, [this, n = std::string(name)](void*) {
      std::lock_guard lock(mu_);
      rebuilding_.erase(n);
      unlock(rebuild_space, n);
    });
  }

  bool rebuild_running(std::string_view name) override {
    std::lock_guard lock(mu_);
    if (rebuilding_.count(std::string(name))) return true;
    if (!ensure_locked()) return false;
    params p;
    p.add_int8(rebuild_space).add_int8(name_key(name));
    auto r = conn_.exec("cannot read the rebuild locks",
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND "
                        "database = (SELECT oid FROM pg_database WHERE datname = "
                        "current_database()) AND classid::int8 = $1 AND objid::int8 = $2 AND "
                        "objsubid = 2 AND granted)",
                        p);
    return r && first_bool(r.value());
  }

  bool lead(std::string_view name, bool keep) override {
    std::lock_guard lock(mu_);
    // A lead lives as long as the connection: check it now and then, and start over when it
    // was lost (another runner may have taken the projection meanwhile).
    if (!held_.empty() && clock_type::now() - checked_ > std::chrono::seconds(1)) {
      checked_ = clock_type::now();
      if (!conn_.healthy() || !conn_.exec_simple("lead check", "SELECT 1")) {
        held_.clear();
        conn_ = connection();
      }
    }
    auto it = held_.find(name);
    if (it != held_.end()) {
      it->second = it->second || keep;
      return true;
    }
    if (!ensure_locked()) return false;
    auto got = try_lock(lead_space, name);
    if (!got || !got.value()) return false;
    held_.emplace(std::string(name), keep);
    return true;
  }

  void release(std::string_view name) override {
    std::lock_guard lock(mu_);
    auto it = held_.find(name);
    if (it == held_.end() || it->second) return;  // kept by a live runner
    unlock(lead_space, it->first);
    held_.erase(it);
  }

  void release_all() override {
    std::lock_guard lock(mu_);
    for (const auto& [name, keep] : held_) unlock(lead_space, name);
    held_.clear();
  }

  std::chrono::milliseconds follow_interval(std::chrono::milliseconds poll) const override {
    // Other processes' appends arrive by NOTIFY; polling is only the fallback.
    return std::max(poll, std::chrono::milliseconds(1000));
  }

 private:
  static error busy_rebuild(std::string_view name) {
    return error(errc::busy, fmt::format("a rebuild of projection '{}' is already running", name));
  }

  result<void> ensure_locked() {
    if (conn_.healthy()) return {};
    held_.clear();  // a lost connection released every lock it held
    auto c = connection::open(uri_, 5);
    if (!c) return std::move(c).error();
    conn_ = std::move(c).value();
    checked_ = clock_type::now();
    return {};
  }

  result<bool> try_lock(std::int32_t space, std::string_view name) {
    params p;
    p.add_int4(space).add_int4(name_key(name));
    auto r = conn_.exec("cannot take an advisory lock", "SELECT pg_try_advisory_lock($1, $2)", p);
    if (!r) return std::move(r).error();
    return first_bool(r.value());
  }

  void unlock(std::int32_t space, std::string_view name) {
    if (!conn_.healthy()) return;  // gone with the connection
    params p;
    p.add_int4(space).add_int4(name_key(name));
    (void)conn_.exec("cannot release an advisory lock", "SELECT pg_advisory_unlock($1, $2)", p);
  }

  // Turns notifications of appends in other processes into the in-process commit signal.
  void listen_loop() {
    connection c;
    std::shared_ptr<store::commit_signal> commits;  // of the database listened to
    while (!stop_) {
      if (!c.healthy()) {
        auto opened = connection::open(uri_, 5);
        if (!opened || !opened->exec_simple("cannot listen", "LISTEN " ANNALS_PG_APPEND_CHANNEL)) {
          for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
        c = std::move(opened).value();
        commits = store::commit_signal_for(pg::identity(c.get()));
        commits->notify();  // appends may have been missed while not listening
      }
      pollfd fd{PQsocket(c.get()), POLLIN, 0};
      if (::poll(&fd, 1, 100) <= 0) continue;
      if (!PQconsumeInput(c.get())) {
        c = connection();
        continue;
      }
      bool woke = false;
      while (PGnotify* n = PQnotifies(c.get())) {
        PQfreemem(n);
        woke = true;
      }
      if (woke) commits->notify();
    }
  }

  const std::string uri_;
  std::mutex mu_;
  connection conn_;  // holds the session advisory locks
  std::map<std::string, bool, std::less<>> held_;  // leads held -> kept by a live runner
  std::set<std::string> rebuilding_;
  clock_type::time_point checked_{};
  std::atomic<bool> stop_{false};
  std::thread listener_;
};

}  // namespace

result<std::unique_ptr<detail::runner_coordination>> open_coordination(const std::string& uri) {
  auto c = std::make_unique<coordination>(uri);
  if (auto r = c->connect(); !r) return r.error();
  return std::unique_ptr<detail::runner_coordination>(std::move(c));
}

}  // namespace annals::pg
