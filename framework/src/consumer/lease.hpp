// The lease on a consumer's row in annals_consumers (columns owner, lease_until): one instance
// of a consumer runs it at a time, and its bookkeeping is fenced, each write naming the owner,
// so an instance that lost the lease changes nothing. Lease times are the database server's
// clock on PostgreSQL (instances on several hosts compare one clock), this machine's on SQLite,
// in UTC microseconds. While the owner is busy (a handler may take longer than a lease), a
// keeper thread renews it every third of a lease on a connection of its own.
//
// Thread safety: held(), due() and busy() from any thread; the rest from one thread at a time
// (the owner's delivery, or its stop() and destructor under the same lock).
#pragma once

#include "db/sql_connection.hpp"

#include <annals/result.hpp>
#include <annals/sql.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace annals::detail {

class consumer_lease {
 public:
  using connector = std::function<result<std::unique_ptr<sql_connection>>()>;
  // The lease of the consumer `kind` `name`, `length` long. `log` reports losing it; `connect`
  // opens the keeper's connection when it first starts.
  consumer_lease(std::string kind, std::string name, std::chrono::milliseconds length,
                 std::function<void(std::string_view)> log, connector connect);
  consumer_lease(const consumer_lease&) = delete;
  consumer_lease& operator=(const consumer_lease&) = delete;
  ~consumer_lease();  // stops the keeper; release() is the owner's to call

  const std::string& owner() const noexcept { return owner_; }
  bool held() const noexcept { return held_; }
  // A third of the lease has passed since it was last written: renew it.
  bool due() const noexcept;

  // Takes the lease, or renews it when due, in a write transaction on `c`; `then` runs in that
  // transaction when it is newly taken or renewed. false: another instance holds it.
  // not_found when the consumer's row is gone (removed by an admin).
  result<bool> acquire(sql_connection& c, const std::function<result<void>(sql_tx&)>& then);
  // The lease_until a fenced write sets (renewing the lease), read in its transaction.
  result<long long> until(sql_tx& tx);
  // After a fenced write: `kept` counts as a renewal; false marks the lease lost (logged once).
  // Returns `kept`.
  bool written(bool kept);
  // Gives the lease up on `c` if held (owner NULL): another instance may take it at once.
  void release(sql_connection& c);

  // While set (and the lease held), the keeper renews it; the keeper starts on first use.
  result<void> busy(bool on);

 private:
  void lost();
  void keeper_loop();
  long long expiry(long long now) const noexcept;  // the lease_until of a lease taken at `now`

  const std::string kind_, name_, owner_;
  const std::chrono::milliseconds length_;
  const std::function<void(std::string_view)> log_;
  const connector connect_;
  std::atomic<bool> held_{false};
  std::atomic<std::chrono::steady_clock::rep> renew_at_{0};
  std::atomic<bool> busy_{false};

  std::mutex keeper_mu_;  // guards stop_, keeper_ and keeper_conn_
  std::condition_variable keeper_cv_;
  bool stop_ = false;
  std::thread keeper_;
  std::unique_ptr<sql_connection> keeper_conn_;
};

// Now on the lease clock (above), read in `tx`: what lease_until is compared with.
result<long long> lease_clock(sql_tx& tx);

// Runs `write` in a write transaction on `c`: committed when it returns true, rolled back when
// it returns false (the lease was lost: nothing of the transaction may stay) or fails.
result<bool> fenced(sql_connection& c, const std::function<result<bool>(sql_tx&)>& write);

}  // namespace annals::detail
