// Consumer leases. Contract: consumer/lease.hpp.
#include "consumer/lease.hpp"

#include "projection/internal.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>

#include <annals/event_store.hpp>

namespace annals::detail {

namespace {
using clock_type = std::chrono::steady_clock;
}  // namespace

result<long long> lease_clock(sql_tx& tx) {
  if (tx.dialect() != "postgresql") return static_cast<long long>(store::system_clock_us());
  long long now = 0;
  auto r = tx.query("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", {},
                    [&](const sql_row& row) {
                      now = row.int64(0);
                      return false;
                    });
  if (!r) return std::move(r).error();
  return now;
}

result<bool> fenced(sql_connection& c, const std::function<result<bool>(sql_tx&)>& write) {
  bool kept = true;
  auto r = in_write_tx(c, [&](sql_tx& tx) -> result<void> {
    auto k = write(tx);
    if (!k) return k.error();
    kept = k.value();
    if (!kept) return error(errc::io, "the lease was lost");  // rolls back
    return {};
  });
  if (!kept) return false;
  if (!r) return std::move(r).error();
  return true;
}

consumer_lease::consumer_lease(std::string kind, std::string name,
                               std::chrono::milliseconds length,
                               std::function<void(std::string_view)> log, connector connect)
    : kind_(std::move(kind)),
      name_(std::move(name)),
      owner_(new_uuid_v7()),
      length_(length),
      log_(std::move(log)),
      connect_(std::move(connect)) {}

consumer_lease::~consumer_lease() {
  {
    std::lock_guard lock(keeper_mu_);
    stop_ = true;
  }
  keeper_cv_.notify_all();
  if (keeper_.joinable()) keeper_.join();
}

bool consumer_lease::due() const noexcept {
  return clock_type::now().time_since_epoch().count() >= renew_at_.load();
}

long long consumer_lease::expiry(long long now) const noexcept {
  return now + static_cast<long long>(length_.count()) * 1000;
}

result<long long> consumer_lease::until(sql_tx& tx) {
  auto now = lease_clock(tx);
  if (!now) return now;
  return expiry(*now);
}

result<bool> consumer_lease::acquire(sql_connection& c,
                                     const std::function<result<void>(sql_tx&)>& then) {
  if (held_ && !due()) return true;
  bool got = false;
  auto r = in_write_tx(c, [&](sql_tx& tx) -> result<void> {
    auto now = lease_clock(tx);
    if (!now) return now.error();
    auto w = tx.exec(
        "UPDATE annals_consumers SET owner = ?1, lease_until = ?2 WHERE kind = ?3 AND name = ?4 "
        "AND (owner IS NULL OR owner = ?1 OR lease_until < ?5)",
        {owner_, expiry(*now), kind_, name_, *now});
    if (!w) return w.error();
    got = w.value() == 1;
    if (got) return then(tx);
    bool exists = false;
    auto q = tx.query("SELECT 1 FROM annals_consumers WHERE kind = ?1 AND name = ?2",
                      {kind_, name_}, [&](const sql_row&) {
                        exists = true;
                        return false;
                      });
    if (!q) return q.error();
    if (exists) return {};
    return error(errc::not_found,
                 fmt::format("{} '{}' was removed while this instance was open; open it again to "
                             "start over",
                             kind_, name_));
  });
  if (!r) return std::move(r).error();
  if (held_ && !got) lost();
  if (got) written(true);
  held_ = got;
  return got;
}

bool consumer_lease::written(bool kept) {
  if (kept) {
    renew_at_ = (clock_type::now() + length_ / 3).time_since_epoch().count();
  } else {
    lost();
  }
  return kept;
}

void consumer_lease::lost() {
  if (!held_.exchange(false)) return;
  log_(fmt::format("annals: {} '{}' lost its lease (another instance took over, or it was "
                   "removed); it stands by",
                   kind_, name_));
}

void consumer_lease::release(sql_connection& c) {
  if (!held_.exchange(false)) return;
  (void)in_write_tx(c, [&](sql_tx& tx) -> result<void> {
    auto w = tx.exec("UPDATE annals_consumers SET owner = NULL, lease_until = 0 "
                     "WHERE kind = ?1 AND name = ?2 AND owner = ?3",
                     {kind_, name_, owner_});
    if (!w) return w.error();
    return {};
  });
}

result<void> consumer_lease::busy(bool on) {
  busy_ = on;
  if (!on) return {};
  std::lock_guard lock(keeper_mu_);
  if (keeper_.joinable()) return {};
  auto c = connect_();
  if (!c) {
    busy_ = false;
    return std::move(c).error();
  }
  keeper_conn_ = std::move(c).value();
  keeper_ = std::thread([this] { keeper_loop(); });
  return {};
}

void consumer_lease::keeper_loop() {
  std::unique_lock lock(keeper_mu_);
  while (!stop_) {
    keeper_cv_.wait_for(lock, length_ / 3);
    if (stop_) break;
    if (!busy_ || !held_) continue;
    lock.unlock();
    auto kept = fenced(*keeper_conn_, [&](sql_tx& tx) -> result<bool> {
      auto lease_until = until(tx);
      if (!lease_until) return lease_until.error();
      auto w = tx.exec("UPDATE annals_consumers SET lease_until = ?1 WHERE kind = ?2 AND "
                       "name = ?3 AND owner = ?4",
                       {*lease_until, kind_, name_, owner_});
      if (!w) return w.error();
      return w.value() == 1;
    });
    if (kept && !kept.value()) lost();
    lock.lock();
  }
}

}  // namespace annals::detail
