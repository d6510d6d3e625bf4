// annals/subscription.hpp — catch-up subscriptions with checkpoints, retries and dead letters.
//
// A subscription delivers the events of $all, of one stream, or of a category (stream-name
// prefix), optionally only some event types, to a handler, in position order. It starts from
// the checkpoint stored for its name (in the store's own database), catches up, then follows
// live appends. Delivery is at least once: the checkpoint is stored after a batch has been
// handled, so a crash redelivers the events since the last stored checkpoint. Handlers must be
// idempotent (key their effects by event id).
//
//   auto sub = annals::subscription::open("bank.db", "email-sender",
//       [&](const annals::recorded_event& e) -> annals::result<void> { return send(e); },
//       {.filter = {.stream_prefix = "account-"}});
//   if (!sub || !sub.value()->start()) { /* sub.error() ... */ }
//
// A handler that fails is retried with backoff. Errors that say "try again" (errc::io, busy,
// timed_out, concurrency_conflict) are retried without limit by a started subscription: a
// broker or database outage pauses it, it never loses or parks events. Any other error, or an
// exception (errc::handler_failed, with its what()), is retried max_attempts times, then the event is parked in the dead-letter table (annals_consumer_parked)
// with the error, and the subscription goes on. Nothing is silently skipped: parked events are
// listed, retried (redelivered by the running subscription) or skipped (recorded) with
// subscription_admin or `annals subscriptions`.
//
// One active instance per name: an instance holds a lease on its name (default 10 s; renewed
// every lease/3 by a thread of its own while it delivers, so a slow handler keeps it); others
// with the same name wait, and take over when it stops or its process dies and the lease runs
// out. Checkpoints are only written by the lease holder. Lease times come from the database's
// clock on PostgreSQL. A process frozen past its lease may still finish the handler call it
// was in after another instance took over (delivery is at least once).
//
// Thread safety: a subscription object may be used from several threads; the handler is
// called from one thread at a time (the caller of catch_up(), or the thread of start()).
// Lifetime: the handler and the object must outlive start()/stop().
#pragma once

#include <annals/catch_up.hpp>
#include <annals/event_store.hpp>
#include <annals/parked.hpp>
#include <annals/status.hpp>
#include <annals/store_ref.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

class sql_tx;     // annals/sql.hpp

// Which events a subscription receives. Empty fields do not filter.
struct subscription_filter {
  std::string stream{};                   // exactly this stream
  std::string stream_prefix{};            // a category: streams whose id starts with this
  std::vector<std::string> event_types{}; // these full type names only
  // "all", or "stream:ID", "prefix:P", with " types:A,B" appended; stored with the checkpoint.
  std::string describe() const;
};

// Called once per event, in position order. An error or an exception fails the delivery.
using subscription_handler = std::function<result<void>(const recorded_event&)>;

// Called with a batch of consecutive matching events (in position order). Sets `handled` to
// the number of leading events handled; returns an error (for batch[handled]) when handled <
// batch.size(). For handlers that pipeline work over a batch (a relay publishing
// asynchronously, then waiting for every acknowledgement).
using subscription_batch_handler =
    std::function<result<void>(const std::vector<recorded_event>& batch, std::size_t& handled)>;

// Called once per event inside the write transaction that moves the checkpoint past it, on the
// store's own database (the SQLite file; the PostgreSQL database): what it writes through `tx`
// commits with the checkpoint or not at all, and only while this instance holds the lease. A
// table of its own (a ledger of e-mails sent, an outbox, a deduplication table) is then kept
// exactly once, with no storage of its own, as a projection's read model is. An error or an
// exception undoes its writes for that event (a savepoint), then the event is retried and
// parked like any other. Effects outside the database (sending the e-mail) stay at least once.
// Keep it short: on SQLite the transaction holds the store's write lock, so appends wait.
using subscription_tx_handler = std::function<result<void>(const recorded_event&, sql_tx& tx)>;

struct subscription_options {
  subscription_filter filter;
  std::int64_t batch_size = 500;   // events read and handled per checkpoint write. Default 500.
  // Deliveries of a failing event, in all (for errors that are not "try again"), before it is
  // parked. Default 5.
  int max_attempts = 5;
  std::chrono::milliseconds retry_backoff{50};   // first pause (>= 1 ms), doubled each retry...
  std::chrono::milliseconds max_backoff{5000};   // ...up to this. Defaults 50 ms, 5 s.
  // How often the live loop looks for appends by other processes (appends in this process,
  // and on PostgreSQL appends anywhere, wake it at once). Default 20 ms.
  std::chrono::milliseconds poll_interval{20};
  std::chrono::milliseconds lease{10000};   // see above. Default 10 s.
  std::int64_t busy_timeout_ms = 10000;     // waiting for the store's write lock. Default 10 s.
  // Where a subscription with no stored checkpoint starts: false (default) the beginning of
  // the store, true its current head (only new events).
  bool start_at_end = false;
  // Called with a line of text when a delivery fails (retry or park). Default: stderr.
  std::function<void(std::string_view)> log;
};

// A parked (dead-lettered) delivery: the one parked type (annals/parked.hpp), by its old name.
using parked_delivery = parked_event;

class subscription {
 public:
  // Opens the subscription `name` (1..200 bytes of UTF-8) on a store (annals/store_ref.hpp:
  // a handle, or a path, sqlite:PATH or postgresql://... it opens itself). Creates its row
  // and tables when missing. A stored filter that differs from options.filter is
  // invalid_argument (a subscription's checkpoint means nothing for another filter: use a
  // new name, or subscription_admin::reset()). Events are read through the store: on a
  // handle, its upcasters apply (a URI opens the store without any); a store double is
  // invalid_argument and a read-only store read_only.
  static result<std::unique_ptr<subscription>> open(store_ref store, std::string name,
                                                    subscription_handler handler,
                                                    subscription_options options = {});
  static result<std::unique_ptr<subscription>> open(store_ref store, std::string name,
                                                    subscription_batch_handler handler,
                                                    subscription_options options = {});
  static result<std::unique_ptr<subscription>> open(store_ref store, std::string name,
                                                    subscription_tx_handler handler,
                                                    subscription_options options = {});
  virtual ~subscription() = default;  // stops

  // Delivers everything up to the head seen at the call, then returns the number of events
  // handled (report.events; parked ones not counted). Redelivers parked events asked to be
  // retried first. When another instance holds the lease it returns at once, with the
  // subscription in report.held (reason led_elsewhere): that instance delivers. Errors: the
  // store's, and a handler's "try again" error still failing after max_attempts (the
  // checkpoint stays before that event; nothing is parked). In start()'s thread such errors
  // are retried without limit.
  virtual result<catch_up_report> catch_up() = 0;

  // A background thread: catch_up(), then follow live appends, until stop() or destruction.
  virtual result<void> start() = 0;
  virtual void stop() = 0;

  // Waits until the checkpoint reaches `position` and every parked event at or before it that
  // subscription_admin::retry asked for has been redelivered (or parked again). Without a
  // start()ed thread it delivers itself (catch_up()). timed_out at the deadline.
  virtual result<void> wait_for(std::int64_t position, std::chrono::milliseconds timeout) = 0;

  virtual result<consumer_status> status() = 0;
};

// Managing subscriptions by name, without their handlers (the `annals` tool uses this).
// Creates no tables: on a store where no subscription was ever opened, list() is empty and a
// name is not_found. The object owns its connections to the store (closed on destruction).
// Not thread-safe: one object per thread.
class subscription_admin {
 public:
  // Opens an existing store (a handle, or a path, sqlite:PATH or postgresql://...; missing:
  // not_found) writable, as open_store() does: a store of an older storage format is upgraded.
  static result<std::unique_ptr<subscription_admin>> open(store_ref store);
  // Opens an existing store read-only (SQLite SQLITE_OPEN_READONLY; PostgreSQL read-only
  // transactions): it writes nothing, creates no tables and upgrades no older format, so it
  // works on a read-only file and leaves an inspected store as it was (`annals serve`,
  // /metrics). list() and parked() work; retry(), skip() and remove() fail with
  // errc::read_only.
  static result<std::unique_ptr<subscription_admin>> open_read_only(store_ref store);
  virtual ~subscription_admin() = default;
  virtual result<std::vector<consumer_status>> list() = 0;  // by name
  virtual result<std::vector<parked_event>> parked(std::string_view name) = 0;
  // Asks the running subscription to redeliver a parked event (position 0: all of them).
  // not_found when no such parked event is waiting.
  virtual result<std::int64_t> retry(std::string_view name, std::int64_t position) = 0;
  // Records that a parked event will not be delivered (position 0: all of them).
  virtual result<std::int64_t> skip(std::string_view name, std::int64_t position) = 0;
  // Forgets the subscription: its checkpoint, filter and parked events.
  virtual result<void> remove(std::string_view name) = 0;
};

}  // namespace annals
