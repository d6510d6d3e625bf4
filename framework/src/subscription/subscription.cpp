// Catch-up subscriptions. Contract: annals/subscription.hpp; tables: docs/storage-format.md.
//
// Delivery: read a page of matching events after the checkpoint (positions <= a head read
// before the page: committed and immutable, see the projection runner), hand it to the handler,
// then store the new checkpoint. The checkpoint write names the lease holder (fencing): an
// instance that lost its lease cannot move the checkpoint.
#include <annals/subscription.hpp>
#include <annals/trace.hpp>

#include "consumer/lag.hpp"
#include "consumer/core.hpp"
#include "consumer/lease.hpp"
#include "consumer/tables.hpp"
#include "db/transaction.hpp"
#include "projection/internal.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <thread>

namespace annals {

std::string subscription_filter::describe() const {
  std::string out;
  if (!stream.empty()) {
    out = "stream:" + stream;
  } else if (!stream_prefix.empty()) {
    out = "prefix:" + stream_prefix;
  } else {
    out = "all";
  }
  if (!event_types.empty()) {
    std::vector<std::string> sorted = event_types;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    out += " types:";
    for (std::size_t i = 0; i < sorted.size(); ++i) out += (i ? "," : "") + sorted[i];
  }
  return out;
}

namespace {

using detail::sql_connection;
using clock_type = std::chrono::steady_clock;


long long now_us() { return static_cast<long long>(store::system_clock_us()); }

bool transient(errc e) {
  return e == errc::io || e == errc::busy || e == errc::timed_out ||
         e == errc::concurrency_conflict;
}

// The consumer tables (consumer/tables.hpp) in a write transaction: created when missing, or
// (`create` false, for the admin) only migrated from the previous format.
result<void> prepare_tables(sql_connection& c, bool create) {
  const bool pg = c.dialect() == detail::sql_dialect::postgres;
  return db::in_transaction(c, pg ? db::begin_pg_write : db::begin_sqlite_write,
                            "cannot create the consumer tables", [&] {
                              return create ? detail::create_consumer_tables(c)
                                            : detail::migrate_consumer_tables(c);
                            });
}

using detail::in_write_tx;

// The tables a subscription itself reads: its open created them.
const detail::consumer_sources own_tables{detail::consumers_table,
                                         detail::consumer_parked_table};

// The statuses of the subscriptions in `src` (consumers empty: none), or only of `only`.
result<std::vector<consumer_status>> read_statuses(sql_connection& c, event_store& store,
                                                   const detail::consumer_sources& src,
                                                   std::string_view only) {
  std::vector<consumer_status> out;
  if (src.consumers.empty()) return out;
  auto tx = detail::sql_tx_access::make(c);
  const long long now = now_us();  // lag: against the events' recorded_at, this machine's clock
  // Active: the lease against the clock it is written in (the database server's on PostgreSQL).
  auto lease_now = detail::lease_clock(tx);
  if (!lease_now) return std::move(lease_now).error();
  const auto parked =
      src.parked.empty()
          ? std::string("0")
          : fmt::format("(SELECT count(*) FROM {} p WHERE p.kind = 'subscription' AND "
                        "p.consumer = s.name AND p.state IN ('parked', 'retry'))",
                        src.parked);
  auto r = tx.query(
      fmt::format("SELECT s.name, s.filter, s.checkpoint, s.delivered, s.updated_at, s.error, "
                  "CASE WHEN s.owner IS NOT NULL AND s.lease_until >= ?2 THEN 1 ELSE 0 END, {} "
                  "FROM {} s WHERE s.kind = 'subscription' AND (?1 = '' OR s.name = ?1) "
                  "ORDER BY s.name",
                  parked, src.consumers),
      {only, *lease_now}, [&](const sql_row& row) {
        consumer_status st;
        st.kind = consumer_kind::subscription;
        st.name = row.text(0);
        st.detail = row.text(1);
        st.checkpoint = row.int64(2);
        st.delivered = row.int64(3);
        st.updated_at_us = row.int64(4);
        st.error = row.text(5);
        st.active = row.int64(6) != 0;
        st.parked = row.int64(7);
        out.push_back(std::move(st));
        return true;
      });
  if (!r) return std::move(r).error();
  auto head = store.head_position();
  if (!head) return std::move(head).error();
  for (auto& st : out) {
    st.head = head.value();
    auto lag = detail::measure_lag(store, st.checkpoint, st.head, now);
    if (!lag) return std::move(lag).error();
    st.lag_events = lag->events;
    st.lag_seconds = lag->seconds;
    st.state = st.lag_events ? consumer_state::catching_up : consumer_state::running;
  }
  return out;
}

// `o` with a log: stderr when it has none.
subscription_options with_log(subscription_options o) {
  if (!o.log) {
    o.log = [](std::string_view line) {
      std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    };
  }
  return o;
}

// The attributes of a delivery span (nothing when it does not record).
void describe_delivery(span& step, std::string_view subscription, const recorded_event& e) {
  if (!step.recording()) return;
  step.attribute("subscription", subscription);
  step.attribute("position", std::to_string(e.position));
  step.attribute("type", e.type);
}

class subscription_impl final : public subscription, private detail::consumer_policy {
 public:
  subscription_impl(std::string name, subscription_batch_handler handler, subscription_options o,
                    detail::backend b)
      : name_(std::move(name)),
        handler_(std::move(handler)),
        o_(with_log(std::move(o))),
        b_(std::move(b)),
        filter_text_(o_.filter.describe()),
        page_filter_{o_.filter.event_types, o_.filter.stream_prefix, o_.filter.stream},
        lease_("subscription", name_, o_.lease, o_.log, [this] { return own_connection(); }),
        loop_(store::commits_of(*b_.store)) {}

  ~subscription_impl() override {
    stop();
    release();
  }

  void set_tx_handler(subscription_tx_handler h) { tx_handler_ = std::move(h); }

  result<void> init() {
    if (auto r = prepare_tables(*b_.writer, true); !r) return r;
    long long head = 0;
    if (o_.start_at_end) {
      auto h = b_.store->head_position();
      if (!h) return std::move(h).error();
      head = h.value();
    }
    return in_write_tx(*b_.writer, [&](sql_tx& tx) -> result<void> {
      std::optional<std::string> stored;
      auto r = tx.query("SELECT filter FROM annals_consumers WHERE kind = 'subscription' AND "
                        "name = ?1",
                        {name_},
                        [&](const sql_row& row) {
                          stored = row.text(0);
                          return false;
                        });
      if (!r) return r.error();
      if (stored && *stored != filter_text_) {
        return error(errc::invalid_argument,
                     fmt::format("subscription '{}' was created with the filter '{}', not '{}': "
                                 "its checkpoint means nothing for another filter (use another "
                                 "name, or remove it first)",
                                 name_, *stored, filter_text_));
      }
      if (stored) return {};
      auto w = tx.exec(
          "INSERT INTO annals_consumers(kind, name, filter, checkpoint, updated_at) "
          "VALUES ('subscription', ?1, ?2, ?3, ?4)",
          {name_, filter_text_, head, now_us()});
      if (!w) return w.error();
      return {};
    });
  }

  result<catch_up_report> catch_up() override {
    catch_up_report report;
    auto n = catch_up_impl(false, &report);
    if (!n) return std::move(n).error();
    report.events = n.value();
    return report;
  }

  // Delivers up to the head; where another instance holds the lease (or takes it meanwhile),
  // `report` (when given) says so.
  result<std::int64_t> catch_up_impl(bool live, catch_up_report* report = nullptr) {
    std::lock_guard lock(deliver_mu_);
    live_call_ = live;
    // Takes or renews the lease; reads the checkpoint when it was newly taken or renewed.
    auto led = lease_.acquire(*b_.writer, [&](sql_tx& tx) -> result<void> {
      auto q = tx.query("SELECT checkpoint FROM annals_consumers WHERE kind = 'subscription' "
                        "AND name = ?1",
                        {name_}, [&](const sql_row& row) {
                          checkpoint_ = row.int64(0);
                          return false;
                        });
      if (!q) return q.error();
      return {};
    });
    if (!led) return std::move(led).error();
    if (!led.value()) {
      held_elsewhere(report);
      return std::int64_t{0};
    }
    // While delivering, the keeper renews the lease: a slow page does not let a standby in.
    if (auto k = lease_.busy(true); !k) return std::move(k).error();
    struct done_guard {
      detail::consumer_lease& lease;
      ~done_guard() { (void)lease.busy(false); }
    } guard{lease_};
    std::int64_t handled = 0;
    auto retried = redeliver_requested(handled);
    if (!retried) return std::move(retried).error();
    auto head = b_.store->head_position();
    if (!head) return std::move(head).error();
    while (checkpoint_ < head.value() && !loop_.stopping().stopped() && lease_.held()) {
      auto n = deliver_page(head.value());
      if (!n) return std::move(n).error();
      if (n.value() < 0) {  // lost the lease
        held_elsewhere(report);
        break;
      }
      handled += n.value();
    }
    return handled;
  }

  void held_elsewhere(catch_up_report* report) const {
    if (!report) return;
    report->held.push_back({name_, held_reason::led_elsewhere,
                            "another instance holds the subscription's lease and delivers"});
  }

  result<void> start() override {
    loop_.start(
        [this] {
          auto r = catch_up_impl(true);
          if (!r) o_.log(fmt::format("annals: subscription '{}': {}", name_, r.error().message()));
        },
        [this] {
          // A standby instance (another holds the lease) looks again a few times per lease.
          auto wait = b_.coordination->follow_interval(o_.poll_interval);
          if (lease_.held()) return wait;
          return std::max(wait, std::min(o_.lease / 4, std::chrono::milliseconds(1000)));
        });
    return {};
  }

  void stop() override {
    loop_.stop([&] { release(); });
  }

  result<void> wait_for(std::int64_t position, std::chrono::milliseconds timeout) override {
    const auto deadline = clock_type::now() + timeout;
    for (;;) {
      // Only the stored checkpoint: not the lag status() computes from the store.
      auto p = stored_progress(position);
      if (!p) return std::move(p).error();
      if (p->checkpoint >= position && p->retries == 0) return {};
      if (clock_type::now() >= deadline) {
        if (p->checkpoint >= position) {
          return error(errc::timed_out,
                       fmt::format("subscription '{}' did not redeliver, in time, {} parked "
                                   "event(s) at or before position {} that were asked to be "
                                   "retried",
                                   name_, p->retries, position));
        }
        return error(errc::timed_out,
                     fmt::format("subscription '{}' reached position {}, not {}, in time", name_,
                                 p->checkpoint, position));
      }
      if (!loop_.running()) {
        if (auto r = catch_up(); !r) return std::move(r).error();
      }
      // Another instance delivering: look less often.
      std::this_thread::sleep_for(std::chrono::milliseconds(lease_.held() ? 2 : 25));
    }
  }

  result<consumer_status> status() override {
    std::lock_guard lock(status_mu_);
    if (auto c = status_connection(); !c) return std::move(c).error();
    auto all = read_statuses(*status_conn_, *b_.store, own_tables, name_);
    if (!all) return std::move(all).error();
    if (all->empty()) return removed();
    return std::move(all->front());
  }

  void set_uri(std::string uri) { uri_ = std::move(uri); }

 private:
  error removed() const {
    return error(errc::not_found, "subscription '" + name_ + "' was removed");
  }

  // The connection status() and wait_for() read with: one of their own, since they may be
  // called while a delivery holds the writer. Caller holds status_mu_.
  result<void> status_connection() {
    if (status_conn_) return {};
    auto c = own_connection();
    if (!c) return std::move(c).error();
    status_conn_ = std::move(c).value();
    return {};
  }

  struct progress {
    std::int64_t checkpoint = 0;
    std::int64_t retries = 0;  // parked events up to the position asked to be retried, not yet
  };
  // The checkpoint as stored (by whichever instance delivers), and how many parked events at
  // or before `position` wait for a retry that was asked for.
  result<progress> stored_progress(std::int64_t position) {
    std::lock_guard lock(status_mu_);
    if (auto c = status_connection(); !c) return std::move(c).error();
    std::optional<progress> p;
    auto tx = detail::sql_tx_access::make(*status_conn_);
    auto r = tx.query(
        "SELECT s.checkpoint, (SELECT count(*) FROM annals_consumer_parked p "
        "WHERE p.kind = s.kind AND p.consumer = s.name AND p.state = 'retry' AND "
        "p.position <= ?2) FROM annals_consumers s WHERE s.kind = 'subscription' AND "
        "s.name = ?1",
        {name_, static_cast<long long>(position)}, [&](const sql_row& row) {
          p = progress{row.int64(0), row.int64(1)};
          return false;
        });
    if (!r) return std::move(r).error();
    if (!p) return removed();
    return *p;
  }

  void release() {
    if (!lease_.held()) return;
    std::lock_guard lock(deliver_mu_);
    lease_.release(*b_.writer);
  }

  // A connection of the subscription's own beside the store's (status, the lease keeper).
  result<std::unique_ptr<sql_connection>> own_connection() const {
    detail::backend_options bo;
    bo.busy_timeout_ms = o_.busy_timeout_ms;
    bo.sql_only = true;
    auto b = detail::open_backend(uri_, bo, "subscriptions");
    if (!b) return std::move(b).error();
    return std::move(b->writer);
  }

  // Stores the checkpoint (and renews the lease) if this instance still holds the lease.
  // false: it lost it (another instance took over).
  result<bool> store_checkpoint(std::int64_t checkpoint, std::int64_t delivered,
                                const std::string& last_error) {
    auto kept = detail::fenced(*b_.writer, [&](sql_tx& tx) {
      return checkpoint_in(tx, checkpoint, delivered, last_error);
    });
    if (!kept) return std::move(kept).error();
    return checkpoint_committed(kept.value(), checkpoint);
  }

  // The checkpoint's UPDATE, in the caller's transaction, fenced by the lease: false when
  // another instance holds it now (nothing changed).
  result<bool> checkpoint_in(sql_tx& tx, std::int64_t checkpoint, std::int64_t delivered,
                             const std::string& last_error) {
    auto until = lease_.until(tx);
    if (!until) return until.error();
    auto w = tx.exec(
        "UPDATE annals_consumers SET checkpoint = ?1, delivered = delivered + ?2, "
        "error = ?3, updated_at = ?4, lease_until = ?5 WHERE kind = 'subscription' AND "
        "name = ?6 AND owner = ?7",
        {static_cast<long long>(checkpoint), static_cast<long long>(delivered),
         detail::consumer_text(last_error), now_us(), *until, name_, lease_.owner()});
    if (!w) return w.error();
    return w.value() == 1;
  }

  // After checkpoint_in's transaction committed: remembers the checkpoint, or the lost lease.
  bool checkpoint_committed(bool kept, std::int64_t checkpoint) {
    if (lease_.written(kept)) checkpoint_ = checkpoint;
    return kept;
  }

  // The transactional handler (subscription_tx_handler): delivers `events` in order in one
  // write transaction, each in a savepoint, stopping at the first failure (its writes undone,
  // the error in `failure`, `done` the events delivered before it); then `finish` records the
  // outcome in the same transaction. false from finish (the lease is lost) rolls everything
  // back: the handlers' writes commit with the bookkeeping or not at all.
  result<bool> deliver_in_tx(const std::vector<recorded_event>& events, std::size_t& done,
                             std::optional<error>& failure,
                             const std::function<result<bool>(sql_tx&)>& finish) {
    done = 0;
    failure.reset();
    return detail::fenced(*b_.writer, [&](sql_tx& tx) -> result<bool> {
      for (const auto& e : events) {
        auto sp = db::savepoint<sql_connection>::begin(*b_.writer, "cannot deliver an event");
        if (!sp) return sp.error();
        span step("subscription.deliver", e.metadata.traceparent);
        describe_delivery(step, name_, e);
        auto h = call_tx(e, tx);
        if (!h) {
          step.fail(h.error().message());
          if (auto x = sp->undo("cannot undo a failed delivery"); !x) return x.error();
          failure = h.error();
          break;
        }
        if (auto x = sp->release("cannot deliver an event"); !x) return x.error();
        ++done;
      }
      return finish(tx);
    });
  }

  // Runs one call of the user's handler. Its error says whether the event is poison (not "try
  // again"); an exception is handler_failed, and poison.
  template <class Call>
  result<void> guarded(Call&& call) {
    try {
      auto r = call();
      if (!r) poison_ = !transient(r.error().kind());
      return r;
    } catch (const std::exception& x) {
      poison_ = true;
      return error(errc::handler_failed, std::string("the handler threw: ") + x.what());
    } catch (...) {
      poison_ = true;
      return error(errc::handler_failed, "the handler threw an unknown exception");
    }
  }

  result<void> call_tx(const recorded_event& e, sql_tx& tx) {
    return guarded([&] { return tx_handler_(e, tx); });
  }

  // Marks a parked event redelivered (and counts it), fenced by the lease like a checkpoint.
  result<bool> mark_retried(sql_tx& t, std::int64_t position, std::int64_t outcome) {
    auto x = t.exec(
        "UPDATE annals_consumer_parked SET state = 'retried', resolved_at = ?1 "
        "WHERE kind = 'subscription' AND consumer = ?2 AND position = ?3 AND state = 'retry'",
        {now_us(), name_, static_cast<long long>(position)});
    if (!x) return x.error();
    x = t.exec(
        "UPDATE annals_consumers SET delivered = delivered + ?1 WHERE kind = 'subscription' "
        "AND name = ?2 AND owner = ?3",
        {outcome, name_, lease_.owner()});
    if (!x) return x.error();
    return x.value() == 1;
  }

  // One page after the checkpoint. Returns events handled, -1 when the lease was lost (or
  // stop() cut a retry pause short).
  result<std::int64_t> deliver_page(std::int64_t head) {
    std::vector<recorded_event> page;
    auto covered = detail::read_page(*b_.store, checkpoint_, head, o_.batch_size, page_filter_,
                                     [&](const recorded_event& e) -> result<void> {
                                       page.push_back(e);
                                       return {};
                                     });
    if (!covered) return std::move(covered).error();
    auto c = consume(page, covered.value());
    if (!c) return std::move(c).error();
    return c->ended ? -1 : c->handled;
  }

  // Through the consumer core: delivered, a failing event retried and parked by this policy.
  result<detail::consumed> consume(const std::vector<recorded_event>& page, std::int64_t end) {
    return detail::consume_page(*this, loop_.stopping(),
                                detail::backoff(o_.retry_backoff, o_.max_backoff), page,
                                checkpoint_, end);
  }

  // ---- the subscription's policy over the consumer core ------------------------------------

  // Delivers `page`, then moves the checkpoint (fenced by the lease) to `end`, or with the
  // delivered prefix to just before a failed event; a transactional handler's writes commit
  // with it. A redelivery (redelivering_) marks its event redelivered instead: the checkpoint
  // is past it already.
  result<detail::page_result> handle(const std::vector<recorded_event>& page, std::int64_t,
                                     std::int64_t end) override {
    detail::page_result out;
    const auto checkpoint = [&] { return out.failure ? page[out.done].position - 1 : end; };
    const auto record = [&](sql_tx& tx) -> result<bool> {
      if (out.failure && out.done == 0) return true;  // nothing to record
      if (redelivering_) return mark_retried(tx, page.front().position, 1);
      return checkpoint_in(tx, checkpoint(), static_cast<std::int64_t>(out.done),
                           out.failure ? out.failure->message() : std::string());
    };
    if (tx_handler_ && !page.empty()) {
      auto kept = deliver_in_tx(page, out.done, out.failure, record);
      if (!kept) return std::move(kept).error();
      out.lost = !kept.value();
    } else if (out.failure = call(page, out.done); !out.failure || out.done > 0) {
      auto kept = detail::fenced(*b_.writer, record);
      if (!kept) return std::move(kept).error();
      out.lost = !kept.value();
    }
    if (out.lost || (!redelivering_ && (!out.failure || out.done > 0))) {
      checkpoint_committed(!out.lost, checkpoint());
    }
    return out;
  }

  detail::on_failure failed(const recorded_event& bad, int attempts,
                            const error& failure) override {
    const bool poison = poison_;
    if (poison && attempts >= o_.max_attempts) {
      o_.log(fmt::format("annals: subscription '{}': event {} ({}, {}) parked after {} attempts: "
                         "{}",
                         name_, bad.position, bad.type, bad.event_id, attempts,
                         failure.message()));
      return detail::on_failure::park;
    }
    // An explicit catch_up() gives up on an outage (the live loop keeps trying): the
    // checkpoint stays before the event, nothing is parked.
    if (!poison && !live_call_ && attempts >= o_.max_attempts) return detail::on_failure::give_up;
    o_.log(fmt::format("annals: subscription '{}': event {} ({}, {}) failed, attempt {}: {}",
                       name_, bad.position, bad.type, bad.event_id, attempts,
                       failure.message()));
    return detail::on_failure::retry;
  }

  // Renews the lease while waiting on an outage (and notices losing it).
  result<bool> before_retry(const error& failure) override {
    if (!lease_.due()) return true;
    return store_checkpoint(checkpoint_, 0, failure.message());
  }

  // Calls the batch handler; `done` counts the events handled (the failed one is events[done]).
  std::optional<error> call(const std::vector<recorded_event>& events, std::size_t& done) {
    done = 0;
    if (events.empty()) return std::nullopt;
    auto r = guarded([&] { return handler_(events, done); });
    if (r) {
      done = events.size();
      return std::nullopt;
    }
    if (done >= events.size()) done = events.size() - 1;
    return r.error();
  }

  // Records the event as parked and (unless it is a redelivery) moves the checkpoint past it,
  // in one transaction, if this instance still holds the lease. false: it lost it.
  result<bool> park(const recorded_event& bad, const error& failure, int attempts,
                    std::int64_t) override {
    const bool advance = !redelivering_;
    auto kept = detail::fenced(*b_.writer, [&](sql_tx& tx) -> result<bool> {
      // A redelivered event stays behind the checkpoint: it only moves when advancing.
      auto w = checkpoint_in(tx, advance ? bad.position : checkpoint_, 0, failure.message());
      if (!w || !w.value()) return w;
      auto p = detail::park_event(tx, "subscription", name_, bad, failure.message(), attempts,
                                  now_us());
      if (!p) return p.error();
      return true;
    });
    if (!kept) return std::move(kept).error();
    if (!lease_.written(kept.value())) return false;
    if (advance) checkpoint_ = bad.position;
    return true;
  }

  // Redelivers the parked events that subscription_admin::retry asked for.
  result<void> redeliver_requested(std::int64_t& handled) {
    std::vector<std::int64_t> positions;
    auto tx = detail::sql_tx_access::make(*b_.writer);
    auto q = tx.query(
        "SELECT position FROM annals_consumer_parked WHERE kind = 'subscription' AND "
        "consumer = ?1 AND state = 'retry' ORDER BY position",
        {name_}, [&](const sql_row& row) {
          positions.push_back(row.int64(0));
          return true;
        });
    if (!q) return q.error();
    redelivering_ = true;
    struct done_guard {
      bool& flag;
      ~done_guard() { flag = false; }
    } guard{redelivering_};
    for (std::int64_t position : positions) {
      if (loop_.stopping().stopped()) break;
      auto e = store::event_at(*b_.store, position);
      if (!e) return e.error();
      if (!e.value()) {  // the event no longer reads as one: nothing to deliver
        auto kept =
            detail::fenced(*b_.writer, [&](sql_tx& t) { return mark_retried(t, position, 0); });
        if (!kept) return kept.error();
        if (!kept.value()) return checkpoint_committed(false, checkpoint_), result<void>{};
        continue;
      }
      auto c = consume({**e}, position);
      if (!c) return c.error();
      if (c->ended) return {};
      handled += c->handled;  // 0: parked again
    }
    return {};
  }

  const std::string name_;
  subscription_batch_handler handler_;  // empty when tx_handler_ is set
  subscription_tx_handler tx_handler_;
  subscription_options o_;
  detail::backend b_;
  const std::string filter_text_;
  const detail::page_filter page_filter_;
  std::string uri_;

  std::mutex deliver_mu_;  // one delivery at a time; guards the fields below
  std::int64_t checkpoint_ = 0;
  bool poison_ = false;  // the last failure is not "try again"
  bool redelivering_ = false;  // redeliver_requested() runs: handle() and park() act for it
  bool live_call_ = false;  // the delivery runs in start()'s thread
  detail::consumer_lease lease_;


  std::mutex status_mu_;
  std::unique_ptr<sql_connection> status_conn_;

  // Last: destroyed first, its thread ended before what it uses. Woken by commits to b_.store;
  // stop() ends it and cuts a retry pause short.
  detail::live_loop loop_;
};


result<void> check_name(std::string_view name) {
  if (name.empty() || name.size() > 200) {
    return error(errc::invalid_argument, "a subscription name must be 1 to 200 bytes");
  }
  if (!is_valid_utf8(name)) {
    return error(errc::invalid_argument, "a subscription name must be UTF-8");
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return error(errc::invalid_argument,
                   "a subscription name must not hold control characters");
    }
  }
  return {};
}

result<std::unique_ptr<subscription>> open_impl(const store_ref& store, std::string name,
                                                subscription_batch_handler handler,
                                                subscription_options o,
                                                subscription_tx_handler tx = {}) {
  if (auto r = check_name(name); !r) return r.error();
  if (!handler && !tx) return error(errc::invalid_argument, "a subscription needs a handler");
  if (o.batch_size <= 0 || o.max_attempts <= 0) {
    return error(errc::invalid_argument, "batch_size and max_attempts must be > 0");
  }
  if (o.lease.count() < 100) return error(errc::invalid_argument, "the lease must be >= 100 ms");
  if (o.retry_backoff.count() < 1 || o.max_backoff < o.retry_backoff) {
    return error(errc::invalid_argument, "need 1 ms <= retry_backoff <= max_backoff");
  }
  if (!o.filter.stream.empty()) {
    if (auto r = validate_stream_id(o.filter.stream); !r) return r.error();
  }
  detail::backend_options bo;
  bo.busy_timeout_ms = o.busy_timeout_ms;
  auto b = detail::open_backend(store, bo, "subscriptions");
  if (!b) return std::move(b).error();
  std::string uri = b->where.uri();  // for the connections opened later (status, lease keeper)
  auto s = std::make_unique<subscription_impl>(std::move(name), std::move(handler), std::move(o),
                                               std::move(b).value());
  s->set_uri(std::move(uri));
  s->set_tx_handler(std::move(tx));
  if (auto r = s->init(); !r) return r.error();
  return std::unique_ptr<subscription>(std::move(s));
}

class admin_impl final : public subscription_admin {
 public:
  admin_impl(detail::backend b, bool read_only) : b_(std::move(b)), read_only_(read_only) {}

  result<std::vector<consumer_status>> list() override {
    auto src = detail::reading_sources(*b_.writer);  // none: no consumer was ever opened
    if (!src) return std::move(src).error();
    return read_statuses(*b_.writer, *b_.store, *src, {});
  }

  result<std::vector<parked_event>> parked(std::string_view name) override {
    auto src = exists(name);
    if (!src) return std::move(src).error();
    auto tx = detail::sql_tx_access::make(*b_.writer);
    return detail::read_parked(tx, "subscription", name, src->parked);
  }

  result<std::int64_t> retry(std::string_view name, std::int64_t position) override {
    return mark(name, position, "retry", "state = 'parked'");
  }
  result<std::int64_t> skip(std::string_view name, std::int64_t position) override {
    return mark(name, position, "skipped", "state IN ('parked', 'retry')");
  }

  result<void> remove(std::string_view name) override {
    if (auto r = writable("remove", name); !r) return r;
    if (auto r = exists(name); !r) return std::move(r).error();
    return in_write_tx(*b_.writer, [&](sql_tx& tx) -> result<void> {
      for (const char* sql : {"DELETE FROM annals_consumer_parked WHERE kind = 'subscription' "
                              "AND consumer = ?1",
                              "DELETE FROM annals_consumers WHERE kind = 'subscription' AND "
                              "name = ?1"}) {
        auto w = tx.exec(sql, {name});
        if (!w) return w.error();
      }
      return {};
    });
  }

 private:
  // The mutating calls of an admin opened read-only fail before touching the store.
  result<void> writable(std::string_view action, std::string_view name) const {
    if (!read_only_) return {};
    return error(errc::read_only,
                 fmt::format("cannot {} subscription '{}': the subscription admin was opened "
                             "read-only (use subscription_admin::open)",
                             action, name));
  }

  // not_found unless the subscription exists; then where to read it from.
  result<detail::consumer_sources> exists(std::string_view name) {
    auto src = detail::reading_sources(*b_.writer);
    if (!src) return std::move(src).error();
    auto found = detail::has_consumer(*b_.writer, *src, "subscription", name);
    if (!found) return std::move(found).error();
    if (!found.value()) return error(errc::not_found, fmt::format("no subscription '{}'", name));
    return src;
  }

  result<std::int64_t> mark(std::string_view name, std::int64_t position, const char* state,
                            const char* from) {
    if (auto r = writable(std::string_view(state) == "retry" ? "retry a parked event of"
                                                               : "skip a parked event of",
                          name);
        !r) {
      return r.error();
    }
    if (position < 0) return error(errc::invalid_argument, "position must be >= 0");
    if (auto r = exists(name); !r) return std::move(r).error();
    std::int64_t changed = 0;
    // A retry is not resolved yet (resolved_at NULL until redelivered); a skip is.
    auto sql = fmt::format(
        "UPDATE annals_consumer_parked SET state = ?1, resolved_at = CASE WHEN ?2 = 0 THEN "
        "NULL ELSE ?2 END WHERE kind = 'subscription' AND consumer = ?3 AND "
        "(?4 = 0 OR position = ?4) AND {}",
        from);
    auto r = in_write_tx(*b_.writer, [&](sql_tx& tx) -> result<void> {
      auto w = tx.exec(sql, {state, std::string_view(state) == "retry" ? 0LL : now_us(), name,
                             static_cast<long long>(position)});
      if (!w) return w.error();
      changed = w.value();
      return {};
    });
    if (!r) return std::move(r).error();
    if (changed == 0) {
      return error(errc::not_found,
                   position ? fmt::format("subscription '{}' has no parked event at position {}",
                                          name, position)
                            : fmt::format("subscription '{}' has no parked events", name));
    }
    return changed;
  }

  detail::backend b_;
  const bool read_only_;
};

result<std::unique_ptr<subscription_admin>> open_admin_on(const store_ref& store,
                                                          bool read_only) {
  detail::backend_options bo;
  bo.read_only = read_only;
  bo.coordination = false;  // the admin runs no subscription
  auto b = detail::open_backend(store, bo, "subscriptions");
  if (!b) return std::move(b).error();
  if (!read_only) {  // it writes the consumer tables as they are now (creates none)
    if (auto r = prepare_tables(*b->writer, false); !r) return r.error();
  }
  return std::unique_ptr<subscription_admin>(
      std::make_unique<admin_impl>(std::move(b).value(), read_only));
}

}  // namespace

result<std::unique_ptr<subscription>> subscription::open(store_ref store, std::string name,
                                                         subscription_handler handler,
                                                         subscription_options options) {
  if (!handler) return error(errc::invalid_argument, "a subscription needs a handler");
  subscription_batch_handler batch = [h = std::move(handler), sub_name = name](
                                         const std::vector<recorded_event>& events,
                                         std::size_t& handled) -> result<void> {
    for (handled = 0; handled < events.size(); ++handled) {
      const recorded_event& e = events[handled];
      span step("subscription.deliver", e.metadata.traceparent);  // records only when tracing
      describe_delivery(step, sub_name, e);
      auto r = h(e);
      if (!r) {
        step.fail(r.error().message());
        return r;
      }
    }
    return {};
  };
  return open_impl(store, std::move(name), std::move(batch), std::move(options));
}

result<std::unique_ptr<subscription>> subscription::open(store_ref store, std::string name,
                                                         subscription_batch_handler handler,
                                                         subscription_options options) {
  if (!handler) return error(errc::invalid_argument, "a subscription needs a handler");
  // When tracing, a span per event with a traceparent, lasting the batch (the handler works on
  // the batch as a whole, e.g. a relay publishing it and awaiting the acks).
  subscription_batch_handler traced = [h = std::move(handler), sub_name = name](
                                          const std::vector<recorded_event>& events,
                                          std::size_t& handled) -> result<void> {
    if (!tracing_enabled()) return h(events, handled);
    std::vector<std::unique_ptr<span>> steps;
    steps.reserve(events.size());
    for (const auto& e : events) {
      auto& step = *steps.emplace_back(
          std::make_unique<span>("subscription.deliver", e.metadata.traceparent));
      describe_delivery(step, sub_name, e);
      step.attribute("batch", std::to_string(events.size()));
    }
    auto r = h(events, handled);
    if (!r) {
      for (std::size_t i = std::min(handled, events.size()); i < events.size(); ++i) {
        steps[i]->fail(i == handled ? r.error().message() : "not delivered in this attempt");
      }
    }
    for (auto& step : steps) step.reset();  // written in position order
    return r;
  };
  return open_impl(store, std::move(name), std::move(traced), std::move(options));
}

result<std::unique_ptr<subscription>> subscription::open(store_ref store, std::string name,
                                                         subscription_tx_handler handler,
                                                         subscription_options options) {
  if (!handler) return error(errc::invalid_argument, "a subscription needs a handler");
  return open_impl(store, std::move(name), {}, std::move(options), std::move(handler));
}

result<std::unique_ptr<subscription_admin>> subscription_admin::open(store_ref store) {
  return open_admin_on(store, false);
}

result<std::unique_ptr<subscription_admin>> subscription_admin::open_read_only(
    store_ref store) {
  return open_admin_on(store, true);
}

}  // namespace annals
