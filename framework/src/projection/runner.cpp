// The projection runner. Contract: annals/projection_runner.hpp; tables: docs/storage-format.md.
//
// Exactly-once effect: a batch is applied inside BEGIN IMMEDIATE, after re-reading the
// checkpoint under that lock (compare-and-set). If another runner moved it, the batch is
// dropped and re-read. The read-model writes and the new checkpoint commit together.
//
// Events are read through an event_store on the same file (another connection). Only
// positions <= a head read before the batch are used: positions are assigned under the write
// lock, so everything up to that head is committed and immutable.
#include <annals/fault.hpp>
#include <annals/projection_runner.hpp>
#include <annals/trace.hpp>

#include "consumer/lag.hpp"
#include "consumer/core.hpp"
#include "consumer/tables.hpp"
#include "db/transaction.hpp"
#include "projection/internal.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>

#include <climits>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace annals {

namespace {

using detail::sql_connection;
using clock_type = std::chrono::steady_clock;
using names_map = std::map<std::string, std::string, std::less<>>;

using detail::pg_ddl_lock_sql;

std::string shadow_name(std::string_view table) { return std::string(table) + "__rebuild"; }

struct stored_state {
  bool exists = false;
  int version = 0;
  std::int64_t checkpoint = 0;
  std::optional<std::int64_t> stuck;
  std::string error;
  double events_per_s = 0;
};

// The checkpoint row of `name` (exists false when missing); `lock` takes the row's lock on
// PostgreSQL (SQLite's write transaction already holds the database's).
result<stored_state> load_projection_state(sql_tx& tx, std::string_view name, bool lock = false) {
  stored_state st;
  const bool for_update = lock && tx.dialect() == "postgresql";
  auto r = tx.query(
      for_update ? "SELECT version, checkpoint, stuck_position, coalesce(error, ''), "
                   "events_per_s FROM annals_consumers WHERE kind = 'projection' AND name = ?1 FOR UPDATE"
                 : "SELECT version, checkpoint, stuck_position, coalesce(error, ''), "
                   "events_per_s FROM annals_consumers WHERE kind = 'projection' AND name = ?1",
      {name}, [&](const sql_row& row) {
        st.exists = true;
        st.version = static_cast<int>(row.int64(0));
        st.checkpoint = row.int64(1);
        if (!row.is_null(2)) st.stuck = row.int64(2);
        st.error = row.text(3);
        st.events_per_s = row.real(4);
        return false;
      });
  if (!r) return std::move(r).error();
  return st;
}

class runner_impl final : public projection_runner {
 public:
  runner_impl(projection_list defs, runner_options o, std::shared_ptr<event_store> store,
              std::unique_ptr<sql_connection> writer, std::unique_ptr<sql_connection> reader,
              std::unique_ptr<detail::runner_coordination> coordination)
      : defs_(std::move(defs)),
        o_(o),
        store_(std::move(store)),
        writer_(std::move(writer)),
        reader_(std::move(reader)),
        coord_(std::move(coordination)),
        pg_(writer_->dialect() == detail::sql_dialect::postgres),
        loop_(store::commits_of(*store_)) {}

  ~runner_impl() override { stop(); }

  result<void> init() {
    std::lock_guard lock(write_mu_);
    return in_write_tx([&](sql_tx&) { return detail::init_projections(*writer_, defs_); });
  }

  // ---- catching up -----------------------------------------------------------------------

  result<catch_up_report> catch_up() override {
    auto head = store_->head_position();
    if (!head) return std::move(head).error();
    // One projection's failure must not hold the others back: go on, report the first error.
    catch_up_report report;
    std::optional<error> first;
    for (const auto& d : defs_) {
      auto r = catch_up_one(*d, head.value(), &report);
      if (!r) {
        if (!first) first = std::move(r).error();
        continue;
      }
      report.events += r.value();
    }
    if (first) return std::move(*first);
    return report;
  }

  // Catches d up when this runner may lead it (PostgreSQL: one active runner per projection;
  // a live runner keeps the lead, a one-shot catch-up gives it back when done). Another
  // runner leading it is not an error: it applies the events. Where d stops short of `head`,
  // `report` (when given) gets the reason.
  result<std::int64_t> catch_up_one(const projection_def& d, std::int64_t head,
                                    catch_up_report* report = nullptr) {
    if (!coord_->lead(d.name, live())) {
      hold(report, d.name, held_reason::led_elsewhere,
           "another live runner leads it and applies its events");
      return 0;
    }
    auto r = catch_up_led(d, head, report);
    coord_->release(d.name);
    return r;
  }

  static void hold(catch_up_report* report, const std::string& name, held_reason why,
                   std::string detail) {
    if (report) report->held.push_back({name, why, std::move(detail)});
  }

  // Whether the live loop runs (its catch-ups keep their leads).
  bool live() const noexcept { return loop_.running(); }

  result<std::int64_t> catch_up_led(const projection_def& d, std::int64_t head,
                                    catch_up_report* report) {
    std::int64_t applied = 0;
    for (;;) {
      auto st = read_state(d.name);
      if (!st) return std::move(st).error();
      if (st->stuck) {
        hold(report, d.name, held_reason::stuck,
             fmt::format("stuck at position {}: {}", *st->stuck, st->error));
        return applied;
      }
      if (st->version != d.version) {
        const auto versions = fmt::format("version {} stored, {} in the code", st->version,
                                          d.version);
        if (!o_.rebuild_on_version_change) {
          hold(report, d.name, held_reason::stale,
               versions + "; rebuild_on_version_change is off: rebuild it");
          return applied;
        }
        if (coord_->rebuild_running(d.name)) {  // someone is on it
          hold(report, d.name, held_reason::led_elsewhere, "another runner is rebuilding it");
          return applied;
        }
        if (auto why = recently_failed(d.name)) {  // do not replay everything every poll
          hold(report, d.name, held_reason::stale,
               fmt::format("{}; its rebuild failed: {}", versions, *why));
          return applied;
        }
        auto r = rebuild_def(d, {});
        if (!r) {
          if (r.error().kind() == errc::busy) {
            hold(report, d.name, held_reason::led_elsewhere, "another runner is rebuilding it");
            return applied;
          }
          remember_failure(d.name, r.error().message());
          return std::move(r).error();
        }
        forget_failure(d.name);
        applied += r->events;
        continue;
      }
      if (st->checkpoint >= head) return applied;

      projection_pass pass(*this, d);  // the rate is measured from before the read
      std::vector<recorded_event> batch;
      auto read = read_events(d, st->checkpoint, head, o_.batch_size, batch);
      if (!read) return std::move(read).error();
      auto c = detail::consume_page(pass, loop_.stopping(),
                                    detail::backoff(o_.retry_backoff, o_.max_backoff), batch,
                                    st->checkpoint, read.value());
      if (!c) return std::move(c).error();
      applied += c->handled;
      notify();
      // Otherwise: on from the new checkpoint, or (another runner moved it, or the event was
      // parked and the projection is stuck) the state read again.
      if (c->ended && loop_.stopping().stopped()) return applied;  // stop() cut retries short
    }
  }

  // Visits up to `limit` events of d's types in (after, head], leaving out recorded skips, one
  // at a time; an error from `visit` stops the scan with that error. Returns the position up to
  // which the range is covered.
  result<std::int64_t> scan_events(const projection_def& d, std::int64_t after,
                                   std::int64_t head, std::int64_t limit,
                                   const std::function<result<void>(const recorded_event&)>& visit) {
    auto skipped = skipped_positions(d.name);
    if (!skipped) return skipped.error();
    detail::page_filter filter{d.event_types, {}, {}};
    return detail::read_page(*store_, after, head, limit, filter,
                             [&](const recorded_event& e) -> result<void> {
                               if (skipped->count(e.position)) return {};
                               return visit(e);
                             });
  }

  // scan_events into a batch (catch-up keeps the batch to retry a failing event alone).
  result<std::int64_t> read_events(const projection_def& d, std::int64_t after,
                                   std::int64_t head, std::int64_t limit,
                                   std::vector<recorded_event>& out) {
    out.clear();
    return scan_events(d, after, head, limit, [&](const recorded_event& e) -> result<void> {
      out.push_back(e);
      return {};
    });
  }

  // scan_events applying each event to the shadow tables as it is read: a rebuild holds one
  // event in memory at a time, not a batch. Caller holds write_mu_ and a write transaction.
  result<std::int64_t> replay_into(const projection_def& d, const names_map& shadow,
                                   std::int64_t after, std::int64_t head, std::int64_t limit,
                                   std::int64_t& applied) {
    auto shadow_tx = detail::sql_tx_access::make(*writer_, &shadow);
    return scan_events(d, after, head, limit, [&](const recorded_event& e) -> result<void> {
      if (auto a = apply_one(d, e, shadow_tx); !a) return a;
      ++applied;
      return {};
    });
  }

  struct batch_outcome {
    bool raced = false;
    std::optional<std::size_t> failed_at;
    std::optional<error> failure;
  };

  // Applies events[0, count) and moves the checkpoint from `expected` to `next`, atomically.
  // On PostgreSQL the batch's writes are pipelined (sql_tx::write). When a pipelined write
  // failed, the error surfaced at a later statement, maybe a later event's: the batch is then
  // applied again without pipelining, which stops at the failing event.
  result<batch_outcome> apply_batch(const projection_def& d, std::int64_t expected,
                                    const std::vector<recorded_event>& events, std::int64_t next,
                                    clock_type::time_point started, std::size_t count = SIZE_MAX) {
    bool deferred_failure = false;
    auto out = apply_batch_once(d, expected, events, next, started, count, &deferred_failure);
    if (!deferred_failure) return out;
    return apply_batch_once(d, expected, events, next, started, count, nullptr);
  }

  // Pipelined when `deferred_failure` is given; sets it when a pipelined write failed.
  result<batch_outcome> apply_batch_once(const projection_def& d, std::int64_t expected,
                                         const std::vector<recorded_event>& events,
                                         std::int64_t next, clock_type::time_point started,
                                         std::size_t count, bool* deferred_failure) {
    count = std::min(count, events.size());
    std::lock_guard lock(write_mu_);
    detail::pipelined writes(*writer_, deferred_failure != nullptr);
    batch_outcome out;
    auto r = in_write_tx([&](sql_tx& tx) -> result<void> {
      auto st = load_projection_state(tx, d.name, true);
      if (!st) return st.error();
      if (!st->exists || st->checkpoint != expected || st->stuck || st->version != d.version) {
        out.raced = true;
        return error(errc::concurrency_conflict, "checkpoint moved");
      }
      for (std::size_t i = 0; i < count; ++i) {
        auto a = apply_one(d, events[i], tx);
        if (!a) {
          out.failed_at = i;
          out.failure = a.error();
          return a;
        }
      }
      // The read-model writes are done, the checkpoint not yet (one transaction: a crash
      // here must leave neither).
      if (auto f = fault::point(fault::projection_after_write); !f) return f;
      double secs = std::chrono::duration<double>(clock_type::now() - started).count();
      double rate = secs > 0 ? static_cast<double>(count) / secs : 0;
      auto u = tx.exec(
          "UPDATE annals_consumers SET checkpoint = ?1, events_per_s = ?2, updated_at = ?3 "
          "WHERE kind = 'projection' AND name = ?4",
          {static_cast<long long>(next), rate, static_cast<long long>(store::system_clock_us()),
           d.name});
      if (!u) return u.error();
      return {};
    });
    if (deferred_failure) *deferred_failure = !r && writer_->pipeline_failed();
    if (!r && !out.raced && !out.failed_at) return std::move(r).error();
    return out;
  }

  static result<void> apply_one(const projection_def& d, const recorded_event& e, sql_tx& tx) {
    return detail::apply_projection(d, e, tx);
  }

  // A projection's way with the pages the consumer core reads: applied in the checkpoint's
  // transaction, which compares and sets the checkpoint (another runner moved it: the page is
  // dropped); an event that keeps failing is parked and leaves the projection stuck.
  class projection_pass final : public detail::consumer_policy {
   public:
    projection_pass(runner_impl& r, const projection_def& d) : r_(r), d_(d) {}

    result<detail::page_result> handle(const std::vector<recorded_event>& page,
                                       std::int64_t checkpoint, std::int64_t end) override {
      // The rate: of the page from before its read; of a retry from its own start.
      const auto started = std::exchange(read_started_, std::nullopt).value_or(clock_type::now());
      auto o = r_.apply_batch(d_, checkpoint, page, end, started);
      if (!o) return std::move(o).error();
      detail::page_result out;
      out.lost = o->raced;
      if (o->raced || !o->failed_at) {
        if (!o->raced) out.done = page.size();
        return out;
      }
      // Commit the events before the failed one (the batch's transaction rolled back).
      out.done = *o->failed_at;
      out.failure = std::move(o->failure);
      if (out.done == 0) return out;
      auto prefix = r_.apply_batch(d_, checkpoint, page, page[out.done].position - 1,
                                   clock_type::now(), out.done);
      if (!prefix) return std::move(prefix).error();
      if (prefix->raced || prefix->failed_at) return detail::page_result{0, {}, true};
      return out;
    }
    detail::on_failure failed(const recorded_event&, int attempts, const error&) override {
      return attempts >= r_.o_.max_attempts ? detail::on_failure::park
                                            : detail::on_failure::retry;
    }
    result<bool> park(const recorded_event& e, const error& failure, int attempts,
                      std::int64_t checkpoint) override {
      if (auto r = r_.park(d_, e, failure.message(), attempts, checkpoint); !r) return r.error();
      return true;
    }

   private:
    runner_impl& r_;
    const projection_def& d_;
    std::optional<clock_type::time_point> read_started_ = clock_type::now();
  };

  // Parks `bad` and leaves d stuck on it, unless the checkpoint is no longer `before` (just
  // before it) or d is stuck already: another runner got there.
  result<void> park(const projection_def& d, const recorded_event& bad, const std::string& failure,
                    int attempts, std::int64_t before) {
    std::lock_guard lock(write_mu_);
    auto parked = in_write_tx([&](sql_tx& tx) -> result<void> {
      auto st = load_projection_state(tx, d.name, true);
      if (!st) return st.error();
      if (st->checkpoint != before || st->stuck) return {};  // another runner got there
      const auto now = static_cast<long long>(store::system_clock_us());
      auto r = detail::park_event(tx, "projection", d.name, bad, failure, attempts, now);
      if (!r) return r;
      auto u = tx.exec(
          "UPDATE annals_consumers SET stuck_position = ?1, error = ?2, updated_at = ?3 "
          "WHERE kind = 'projection' AND name = ?4",
          {static_cast<long long>(bad.position), detail::consumer_text(failure), now, d.name});
      if (!u) return u.error();
      return {};
    });
    return parked;
  }

  // ---- live ------------------------------------------------------------------------------

  result<void> start() override {
    // Appends in this process wake the loop at once; other processes are seen by polling, or on
    // PostgreSQL at once too (LISTEN/NOTIFY), polling being only a fallback.
    loop_.start(
        [this] {
          if (auto r = catch_up(); !r) {
            std::lock_guard lock(state_mu_);
            last_error_ = r.error().message();
          }
        },
        [this] { return coord_->follow_interval(o_.poll_interval); });
    return {};
  }

  void stop() override {
    loop_.stop([&] { coord_->release_all(); });  // another runner may lead our projections now
  }

  void notify() {
    {
      std::lock_guard lock(state_mu_);
      ++progress_;
    }
    progress_cv_.notify_all();
  }

  result<void> wait_for(std::string_view name, std::int64_t position,
                        std::chrono::milliseconds timeout) override {
    auto d = find(name);
    if (!d) return std::move(d).error();
    auto deadline = clock_type::now() + timeout;
    for (;;) {
      auto st = read_state(name);
      if (!st) return std::move(st).error();
      if (st->checkpoint >= position && st->version == d.value()->version) return {};
      if (st->stuck) {
        return error(errc::stuck, fmt::format("projection '{}' is stuck at position {}: {}", name,
                                             *st->stuck, st->error));
      }
      if (clock_type::now() >= deadline) {
        return error(errc::timed_out,
                     fmt::format("projection '{}' did not reach position {} within {} ms "
                                 "(checkpoint {})",
                                 name, position, timeout.count(), st->checkpoint));
      }
      if (live()) {
        std::unique_lock lock(state_mu_);
        auto seen = progress_;
        progress_cv_.wait_for(lock, std::chrono::milliseconds(5),
                              [&] { return progress_ != seen; });
      } else {
        auto head = store_->head_position();
        if (!head) return std::move(head).error();
        auto r = catch_up_one(*d.value(), head.value());
        if (!r) return std::move(r).error();
        if (r.value() == 0) {
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
          auto pause = std::min(coord_->follow_interval(o_.poll_interval), left);
          loop_.commits().wait(loop_.commits().sequence(),
                               std::max(pause, std::chrono::milliseconds(1)));
        }
      }
    }
  }

  // ---- status and repair -----------------------------------------------------------------

  result<std::vector<consumer_status>> status() override {
    auto head = store_->head_position();
    if (!head) return std::move(head).error();
    std::vector<consumer_status> out;
    for (const auto& d : defs_) {
      auto st = read_state(d->name);
      if (!st) return std::move(st).error();
      consumer_status s;
      s.name = d->name;
      s.version = d->version;
      s.stored_version = st->exists ? st->version : 0;
      s.detail = fmt::format("version {}", s.stored_version);
      s.checkpoint = st->checkpoint;
      s.head = head.value();
      s.events_per_s = st->events_per_s;
      auto lag = detail::measure_lag(*store_, s.checkpoint, s.head, store::system_clock_us());
      if (!lag) return std::move(lag).error();
      s.lag_events = lag->events;
      s.lag_seconds = lag->seconds;
      auto parked_count = count_parked(d->name);
      if (!parked_count) return std::move(parked_count).error();
      s.parked = parked_count.value();
      if (st->stuck) {
        s.state = consumer_state::stuck;
        s.stuck_position = st->stuck;
        s.error = st->error;
      } else if (coord_->rebuild_running(d->name)) {
        s.state = consumer_state::rebuilding;
      } else if (s.lag_events > 0 || s.stored_version != s.version) {
        s.state = consumer_state::catching_up;
      }
      if (s.error.empty()) s.error = rebuild_failure(d->name);  // a failed automatic rebuild
      out.push_back(std::move(s));
    }
    return out;
  }

  result<std::vector<parked_event>> parked(std::string_view name) override {
    if (auto d = find(name); !d) return std::move(d).error();
    std::vector<parked_event> out;
    auto r = read([&](sql_tx& tx) -> result<void> {
      auto p = detail::read_parked(tx, "projection", name, detail::consumer_parked_table);
      if (!p) return p.error();
      out = std::move(p).value();
      return {};
    });
    if (!r) return r.error();
    return out;
  }

  result<void> retry(std::string_view name) override {
    if (auto d = find(name); !d) return std::move(d).error();
    std::lock_guard lock(write_mu_);
    return in_write_tx([&](sql_tx& tx) -> result<void> {
      auto n = detail::retry_parked(tx, name, 0);
      if (!n) return n.error();
      return {};
    });
  }

  result<void> skip(std::string_view name, std::int64_t position) override {
    if (auto d = find(name); !d) return std::move(d).error();
    std::lock_guard lock(write_mu_);
    auto r = in_write_tx([&](sql_tx& tx) { return detail::skip_parked(tx, name, position); });
    if (r) notify();
    return r;
  }

  result<void> reset(std::string_view name) override {
    auto d = find(name);
    if (!d) return std::move(d).error();
    std::lock_guard lock(write_mu_);
    auto r = in_write_tx([&](sql_tx& tx) -> result<void> {
      if (auto x = lock_ddl(tx); !x) return x;
      if (auto st = load_projection_state(tx, name, true); !st) return st.error();  // wait for a batch
      for (const auto* t : d.value()->tables) {
        auto q = detail::quote_identifier(t->table);
        if (auto x = tx.exec("DROP TABLE IF EXISTS " + q); !x) return x.error();
        if (auto x = tx.exec(detail::create_table_sql(*t, q, writer_->dialect())); !x) {
          return x.error();
        }
      }
      auto now = static_cast<long long>(store::system_clock_us());
      // Skips are decisions about events, not about this model: they are kept.
      auto x = tx.exec(
          "DELETE FROM annals_consumer_parked WHERE kind = 'projection' AND consumer = ?1 "
          "AND state <> 'skipped'",
          {name});
      if (!x) return x.error();
      x = tx.exec(
          "INSERT INTO annals_consumers(kind, name, version, checkpoint, updated_at) "
          "VALUES ('projection', ?1, ?2, 0, ?3) ON CONFLICT(kind, name) DO UPDATE SET "
          "version = excluded.version, "
          "checkpoint = 0, stuck_position = NULL, error = '', events_per_s = 0, "
          "updated_at = excluded.updated_at",
          {name, d.value()->version, now});
      if (!x) return x.error();
      return {};
    });
    writer_->clear_cache();
    return r;
  }

  // ---- rebuild ---------------------------------------------------------------------------

  result<rebuild_report> rebuild(std::string_view name, const rebuild_options& o) override {
    auto d = find(name);
    if (!d) return std::move(d).error();
    return rebuild_def(*d.value(), o);
  }

  result<rebuild_report> rebuild_def(const projection_def& d, const rebuild_options& o) {
    if (o.batch_size <= 0) return error(errc::invalid_argument, "batch_size must be > 0");
    auto lock = coord_->lock_rebuild(d.name);
    if (!lock) return std::move(lock).error();
    auto started = clock_type::now();
    names_map shadow;
    for (const auto* t : d.tables) {
      shadow[t->table] = detail::quote_identifier(shadow_name(t->table));
    }
    // 1. Fresh shadow tables (a killed rebuild may have left some behind).
    {
      std::lock_guard wl(write_mu_);
      auto r = in_write_tx([&](sql_tx& tx) -> result<void> {
        if (auto x = lock_ddl(tx); !x) return x;
        for (const auto* t : d.tables) {
          const auto& q = shadow[t->table];
          if (auto x = tx.exec("DROP TABLE IF EXISTS " + q); !x) return x.error();
          if (auto x = tx.exec(detail::create_table_sql(*t, q, writer_->dialect())); !x) {
            return x.error();
          }
        }
        return {};
      });
      writer_->clear_cache();
      if (!r) return r.error();
    }
    // 2. Replay in large batches, each its own transaction, without holding the write lock
    //    between them: appends and the live model go on meanwhile.
    rebuild_report report;
    std::int64_t position = 0;
    for (;;) {
      auto head = store_->head_position();
      if (!head) return std::move(head).error();
      auto step = replay_batch(d, shadow, position, head.value(), o.batch_size);
      if (!step) return cleanup_after(d, shadow, std::move(step).error());
      report.events += step->second;
      position = step->first;
      if (o.progress) {
        double secs = std::chrono::duration<double>(clock_type::now() - started).count();
        rebuild_progress p;
        p.position = position;
        p.head = head.value();
        p.events = report.events;
        p.events_per_s = secs > 0 ? static_cast<double>(report.events) / secs : 0;
        double per_position = position > 0 ? secs / static_cast<double>(position) : 0;
        p.eta_seconds = per_position * static_cast<double>(head.value() - position);
        o.progress(p);
      }
      if (position >= head.value()) break;
    }
    // Verify compares with the live model, so bring that up to date first.
    if (o.verify) {
      auto head = store_->head_position();
      if (!head) return std::move(head).error();
      // Where another runner leads the projection (PostgreSQL), wait for it instead.
      if (pg_) {
        // Stuck or too slow: the comparison below says why.
        auto w = wait_for(d.name, head.value(), std::chrono::seconds(30));
        if (!w && w.error().kind() != errc::stuck && w.error().kind() != errc::timed_out) {
          return cleanup_after(d, shadow, w.error());
        }
      } else if (auto c = catch_up_one(d, head.value()); !c) {
        return cleanup_after(d, shadow, c.error());
      }
    }
    // 3. Under the write lock: the last events, then the swap (or the comparison). The lock
    //    is released before a failure's cleanup_after, which takes it again.
    std::unique_lock wl(write_mu_);
    auto r = in_write_tx([&](sql_tx& tx) -> result<void> {
      if (auto x = lock_ddl(tx); !x) return x;
      std::int64_t target = 0;
      // Locks the checkpoint row on PostgreSQL: a batch of another runner commits first, or
      // waits for the swap and then finds the checkpoint moved.
      auto st = load_projection_state(tx, d.name, true);
      if (!st) return st.error();
      if (o.verify) {
        if (st->stuck || st->checkpoint < position) {
          return error(st->stuck ? errc::stuck : errc::timed_out,
                       fmt::format("the live model of '{}' is {} at position {}; "
                                               "it cannot be compared",
                                               d.name, st->stuck ? "stuck" : "behind",
                                               st->checkpoint));
        }
        target = st->checkpoint;
      } else if (pg_) {
        // Appends go on meanwhile; positions are assigned in commit order, so every position up
        // to the committed head is there. Later ones are the live model's next catch-up.
        auto h = store_->head_position();
        if (!h) return h.error();
        target = h.value();
      } else {
        auto h = tx.query("SELECT coalesce(max(position), 0) FROM events", {},
                          [&](const sql_row& row) {
                            target = row.int64(0);
                            return false;
                          });
        if (!h) return h.error();
        // No append can commit while this transaction holds the write lock, so the events up
        // to `target` are all there is.
      }
      if (auto x = replay_into(d, shadow, position, target, INT64_MAX, report.events); !x) {
        return x.error();
      }
      report.position = target;
      if (o.verify) {
        auto diff = compare(d, shadow, tx, o);
        if (!diff) return diff.error();
        report.differences = diff.value();
        for (const auto& [logical, physical] : shadow) {
          if (auto x = tx.exec("DROP TABLE IF EXISTS " + physical); !x) return x.error();
        }
        return {};
      }
      if (auto f = fault::point(fault::rebuild_before_swap); !f) return f;
      for (const auto* t : d.tables) {
        auto live = detail::quote_identifier(t->table);
        if (auto x = tx.exec("DROP TABLE IF EXISTS " + live); !x) return x.error();
        auto rename = fmt::format("ALTER TABLE {} RENAME TO {}", shadow[t->table], live);
        if (auto x = tx.exec(rename); !x) return x.error();
        auto key = detail::rename_key_sql(shadow_name(t->table), t->table, writer_->dialect());
        if (!key.empty()) {
          if (auto x = tx.exec(key); !x) return x.error();
        }
      }
      auto now = static_cast<long long>(store::system_clock_us());
      auto x = tx.exec(
          "INSERT INTO annals_consumers(kind, name, version, checkpoint, updated_at) "
          "VALUES ('projection', ?1, ?2, ?3, ?4) ON CONFLICT(kind, name) DO UPDATE SET "
          "version = excluded.version, "
          "checkpoint = excluded.checkpoint, stuck_position = NULL, error = '', "
          "updated_at = excluded.updated_at",
          {d.name, d.version, static_cast<long long>(target), now});
      if (!x) return x.error();
      // The new model applied every event, so nothing is parked any more.
      x = tx.exec(
          "UPDATE annals_consumer_parked SET state = 'retried', resolved_at = ?2 "
          "WHERE kind = 'projection' AND consumer = ?1 AND state = 'parked'",
          {d.name, now});
      if (!x) return x.error();
      report.swapped = true;
      return {};
    });
    writer_->clear_cache();
    wl.unlock();
    if (!r) return cleanup_after(d, shadow, r.error());
    report.seconds = std::chrono::duration<double>(clock_type::now() - started).count();
    notify();
    return report;
  }

  // One rebuild batch in its own transaction. Returns the position covered and the events
  // applied.
  result<std::pair<std::int64_t, std::int64_t>> replay_batch(const projection_def& d,
                                                              const names_map& shadow,
                                                              std::int64_t after,
                                                              std::int64_t head,
                                                              std::int64_t limit) {
    std::int64_t covered = after, applied = 0;
    std::lock_guard wl(write_mu_);
    auto once = [&](bool pipeline) {
      detail::pipelined writes(*writer_, pipeline);
      applied = 0;
      return in_write_tx([&](sql_tx&) -> result<void> {
        auto c = replay_into(d, shadow, after, head, limit, applied);
        if (!c) return c.error();
        covered = c.value();
        return {};
      });
    };
    // Pipelined on PostgreSQL; when a pipelined write failed, replayed without, to name the
    // failing event.
    auto r = once(true);
    if (!r && writer_->pipeline_failed()) r = once(false);
    if (!r) return r.error();
    return std::pair{covered, applied};
  }

  // Drops the shadow tables after a failed rebuild (best effort) and returns the error.
  error cleanup_after(const projection_def&, const names_map& shadow, error e) {
    std::lock_guard wl(write_mu_);
    (void)in_write_tx([&](sql_tx& tx) -> result<void> {
      for (const auto& [logical, physical] : shadow) (void)tx.exec("DROP TABLE IF EXISTS " + physical);
      return {};
    });
    writer_->clear_cache();
    return error(e.kind(), "rebuild stopped, the live model is unchanged: " + e.message());
  }

  // Rows only in the live model, then rows only in the rebuilt one, table by table.
  result<std::int64_t> compare(const projection_def& d, const names_map& shadow, sql_tx& tx,
                               const rebuild_options& o) {
    std::int64_t differences = 0;
    for (const auto* t : d.tables) {
      auto live = detail::quote_identifier(t->table);
      const auto& rebuilt = shadow.at(t->table);
      for (auto [from, other, label] :
           {std::tuple{live, rebuilt, "only in the live model"},
            std::tuple{rebuilt, live, "only in the rebuilt model"}}) {
        auto sql = fmt::format("SELECT * FROM {} EXCEPT SELECT * FROM {}", from, other);
        const char* side = label;  // clang 14 cannot capture a structured binding
        auto q = tx.query(sql, {}, [&](const sql_row& row) {
          ++differences;
          if (o.difference && differences <= o.max_differences) {
            std::string values;
            for (int c = 0; c < row.columns(); ++c) {
              if (c) values += ", ";
              values += t->columns[static_cast<std::size_t>(c)].name + "=";
              values += row.is_null(c) ? std::string("NULL") : std::string(row.text_view(c));
            }
            o.difference(fmt::format("{}: {}: {}", t->table, side, values));
          }
          return true;
        });
        if (!q) return q.error();
      }
    }
    return differences;
  }

  // ---- reads -----------------------------------------------------------------------------

  result<void> read(const std::function<result<void>(sql_tx&)>& fn) override {
    std::lock_guard lock(read_mu_);
    // One snapshot for the whole call on both backends.
    auto tx = db::transaction<sql_connection>::begin(
        *reader_, pg_ ? db::begin_pg_snapshot : db::begin_default, "cannot start a read transaction");
    if (!tx) return tx.error();
    auto stx = detail::sql_tx_access::make(*reader_);
    auto r = fn(stx);  // an exception rolls back on its way out
    // Cached statements survive a swap: SQLite re-prepares them when the schema changes, and
    // on PostgreSQL a statement whose columns changed is prepared again at its next use.
    // A failed statement aborts a PostgreSQL transaction: end it either way.
    if (r) (void)tx->commit("cannot end a read transaction");
    return r;
  }

 private:
  result<const projection_def*> find(std::string_view name) const {
    for (const auto& d : defs_) {
      if (d->name == name) return d.get();
    }
    return error(errc::not_found, fmt::format("no projection named '{}'", name));
  }

  // Runs fn in a write transaction on the writer (SQLite: BEGIN IMMEDIATE, the file's write
  // lock; PostgreSQL: READ COMMITTED, rows locked as load_projection_state(..., true) reads them);
  // commits if it succeeds, else rolls back. Caller holds write_mu_.
  result<void> in_write_tx(const std::function<result<void>(sql_tx&)>& fn) {
    return detail::in_write_tx(*writer_, fn);
  }

  // PostgreSQL: serializes DDL on projection tables across processes (see pg_ddl_lock_sql).
  result<void> lock_ddl(sql_tx& tx) {
    if (!pg_) return {};
    auto r = tx.query(pg_ddl_lock_sql, {}, [](const sql_row&) { return false; });
    if (!r) return r.error();
    return {};
  }

  // The projection's bookkeeping row. In a write transaction pass `lock`: on PostgreSQL the row
  // is then locked until commit (SELECT ... FOR UPDATE), which makes the checkpoint's
  // compare-and-set safe across runners; SQLite's write transaction already excludes them.
  result<stored_state> read_state(std::string_view name) {
    stored_state out;
    auto r = read([&](sql_tx& tx) -> result<void> {
      auto st = load_projection_state(tx, name);
      if (!st) return st.error();
      out = st.value();
      return {};
    });
    if (!r) return r.error();
    return out;
  }

  // Positions an operator skipped on purpose: replays (rebuild, after reset) skip them too.
  result<std::set<std::int64_t>> skipped_positions(std::string_view name) {
    std::set<std::int64_t> out;
    auto r = read([&](sql_tx& tx) -> result<void> {
      auto q = tx.query(
          "SELECT position FROM annals_consumer_parked WHERE kind = 'projection' AND "
          "consumer = ?1 AND state = 'skipped'",
          {name}, [&](const sql_row& row) {
            out.insert(row.int64(0));
            return true;
          });
      if (!q) return q.error();
      return {};
    });
    if (!r) return r.error();
    return out;
  }

  result<std::int64_t> count_parked(std::string_view name) {
    std::int64_t n = 0;
    auto r = read([&](sql_tx& tx) -> result<void> {
      auto q = tx.query(
          "SELECT count(*) FROM annals_consumer_parked WHERE kind = 'projection' AND "
          "consumer = ?1 AND state = 'parked'",
          {name},
          [&](const sql_row& row) {
            n = row.int64(0);
            return false;
          });
      if (!q) return q.error();
      return {};
    });
    if (!r) return r.error();
    return n;
  }

  projection_list defs_;
  runner_options o_;
  std::shared_ptr<event_store> store_;  // shared with the application when opened on a handle

  std::mutex write_mu_;  // one transaction at a time on writer_
  std::unique_ptr<sql_connection> writer_;
  std::mutex read_mu_;
  std::unique_ptr<sql_connection> reader_;
  std::unique_ptr<detail::runner_coordination> coord_;
  const bool pg_;  // PostgreSQL (else SQLite)

  // Automatic rebuilds that failed: not retried for rebuild_retry_pause; shown by status().
  static constexpr std::chrono::seconds rebuild_retry_pause{30};
  struct failed_rebuild {
    clock_type::time_point at;
    std::string error;
  };
  // The error of an automatic rebuild of `name` that failed less than rebuild_retry_pause ago.
  std::optional<std::string> recently_failed(const std::string& name) {
    std::lock_guard lock(state_mu_);
    auto it = rebuild_failures_.find(name);
    if (it == rebuild_failures_.end() || clock_type::now() - it->second.at >= rebuild_retry_pause) {
      return std::nullopt;
    }
    return it->second.error;
  }
  void remember_failure(const std::string& name, std::string why) {
    std::lock_guard lock(state_mu_);
    rebuild_failures_[name] = {clock_type::now(), std::move(why)};
  }
  void forget_failure(const std::string& name) {
    std::lock_guard lock(state_mu_);
    rebuild_failures_.erase(name);
  }
  std::string rebuild_failure(const std::string& name) {
    std::lock_guard lock(state_mu_);
    auto it = rebuild_failures_.find(name);
    return it == rebuild_failures_.end() ? std::string() : it->second.error;
  }
  std::map<std::string, failed_rebuild> rebuild_failures_;

  std::mutex state_mu_;
  std::condition_variable progress_cv_;
  std::uint64_t progress_ = 0;
  std::string last_error_;

  // Last: destroyed first, its thread ended before what it uses. Woken by commits to store_;
  // stop() cuts a retry pause short.
  detail::live_loop loop_;
};

}  // namespace

namespace detail {

result<std::int64_t> retry_parked(sql_tx& tx, std::string_view projection,
                                  std::int64_t position) {
  auto now = static_cast<long long>(store::system_clock_us());
  auto st = load_projection_state(tx, projection, true);
  if (!st) return st.error();
  if (position != 0 && (!st->stuck || *st->stuck != position)) {
    return error(errc::not_found,
                 st->stuck ? fmt::format("projection '{}' is stuck at position {}, not {}",
                                         projection, *st->stuck, position)
                           : fmt::format("projection '{}' is not stuck", projection));
  }
  auto n = tx.exec(
      "UPDATE annals_consumer_parked SET state = 'retried', resolved_at = ?2 "
      "WHERE kind = 'projection' AND consumer = ?1 AND state = 'parked'",
      {projection, now});
  if (!n) return n.error();
  auto r = tx.exec(
      "UPDATE annals_consumers SET stuck_position = NULL, error = '', updated_at = ?2 "
      "WHERE kind = 'projection' AND name = ?1",
      {projection, now});
  if (!r) return r.error();
  return n.value();
}

result<void> skip_parked(sql_tx& tx, std::string_view projection, std::int64_t position) {
  auto st = load_projection_state(tx, projection, true);
  if (!st) return st.error();
  if (!st->stuck || *st->stuck != position) {
    return error(errc::invalid_argument,
                 st->stuck ? fmt::format("projection '{}' is stuck at position {}, not {}",
                                         projection, *st->stuck, position)
                           : fmt::format("projection '{}' is not stuck", projection));
  }
  auto now = static_cast<long long>(store::system_clock_us());
  auto u = tx.exec(
      "UPDATE annals_consumer_parked SET state = 'skipped', resolved_at = ?3 "
      "WHERE kind = 'projection' AND consumer = ?1 AND position = ?2",
      {projection, static_cast<long long>(position), now});
  if (!u) return u.error();
  u = tx.exec(
      "UPDATE annals_consumers SET checkpoint = ?2, stuck_position = NULL, error = '', "
      "updated_at = ?3 WHERE kind = 'projection' AND name = ?1",
      {projection, static_cast<long long>(position), now});
  if (!u) return u.error();
  return {};
}

result<void> apply_projection(const projection_def& d, const recorded_event& e, sql_tx& tx) {
  span step("projection.apply", e.metadata.traceparent);  // records only when tracing
  if (step.recording()) {
    step.attribute("projection", d.name);
    step.attribute("position", std::to_string(e.position));
    step.attribute("type", e.type);
  }
  try {
    auto r = d.apply(e, tx);
    if (!r) {
      step.fail(r.error().message());
      return error(r.error().kind(),
                   fmt::format("projection '{}' failed on event at position {} ({}): {}", d.name,
                               e.position, e.type, r.error().message()));
    }
    return {};
  } catch (const std::exception& ex) {
    return error(errc::handler_failed,
                 fmt::format("projection '{}' threw on event at position {} ({}): {}",
                                       d.name, e.position, e.type, ex.what()));
  } catch (...) {
    return error(errc::handler_failed,
                 fmt::format("projection '{}' threw on event at position {} ({})",
                                       d.name, e.position, e.type));
  }
}

namespace {
class inline_hook final : public store::commit_hook {
 public:
  inline_hook(projection_list defs, std::int64_t max_lag)
      : defs_(std::move(defs)), max_lag_(max_lag) {}
  std::size_t consumers() const noexcept override { return defs_.size(); }
  const std::vector<std::string>& event_types(std::size_t index) const override {
    return defs_.at(index)->event_types;
  }
  result<void> init(sql_connection& c) override { return init_projections(c, defs_); }
  result<void> committing(sql_connection& c, std::int64_t last,
                          const store::hook_events& read) override;

 private:
  projection_list defs_;
  std::int64_t max_lag_;
};

result<void> inline_hook::committing(sql_connection& c, std::int64_t last,
                                     const store::hook_events& read) {
  auto tx = detail::sql_tx_access::make(c);
  for (std::size_t i = 0; i < defs_.size(); ++i) {
    const auto& d = defs_[i];
    bool exists = false, stuck = false;
    int version = 0;
    std::int64_t checkpoint = 0;
    auto q = tx.query(
        "SELECT version, checkpoint, stuck_position IS NOT NULL FROM annals_consumers "
        "WHERE kind = 'projection' AND name = ?1",
        {d->name}, [&](const sql_row& row) {
          exists = true;
          version = static_cast<int>(row.int64(0));
          checkpoint = row.int64(1);
          stuck = row.int64(2) != 0;
          return false;
        });
    if (!q) return q.error();
    if (!exists || stuck || version != d->version || last - checkpoint > max_lag_) {
      continue;  // a projection_runner's job (status shows it)
    }
    auto r = read(i, checkpoint, last, [&](const recorded_event& e) -> result<void> {
      if (auto a = apply_projection(*d, e, tx); !a) {
        return error(a.error().kind(),
                     fmt::format("inline {}; the append was not written", a.error().message()));
      }
      return {};
    });
    if (!r) return r;
    auto u = tx.exec("UPDATE annals_consumers SET checkpoint = ?1, updated_at = ?2 "
                     "WHERE kind = 'projection' AND name = ?3",
                     {static_cast<long long>(last),
                      static_cast<long long>(store::system_clock_us()), d->name});
    if (!u) return u.error();
  }
  return {};
}

}  // namespace

std::shared_ptr<store::commit_hook> inline_projections_hook(projection_list defs,
                                                            std::int64_t max_lag) {
  if (defs.empty()) return nullptr;
  return std::make_shared<inline_hook>(std::move(defs), max_lag);
}

result<void> init_projections(sql_connection& c, const projection_list& defs) {
  if (auto r = create_consumer_tables(c); !r) return r;  // takes the DDL lock on PostgreSQL
  auto tx = detail::sql_tx_access::make(c);
  for (const auto& d : defs) {
    bool exists = false;
    int version = 0;
    auto q = tx.query("SELECT version FROM annals_consumers WHERE kind = 'projection' AND "
                      "name = ?1",
                      {d->name},
                      [&](const sql_row& row) {
                        exists = true;
                        version = static_cast<int>(row.int64(0));
                        return false;
                      });
    if (!q) return q.error();
    if (exists && version != d->version) continue;  // rebuilt on catch-up
    for (const auto* t : d->tables) {
      auto create = create_table_sql(*t, quote_identifier(t->table), c.dialect());
      if (auto r = tx.exec(create); !r) return r.error();
    }
    if (!exists) {
      auto r = tx.exec(
          "INSERT INTO annals_consumers(kind, name, version, checkpoint, updated_at) "
          "VALUES ('projection', ?1, ?2, 0, ?3)",
          {d->name, d->version, static_cast<long long>(store::system_clock_us())});
      if (!r) return r.error();
    }
  }
  return {};
}
}  // namespace detail

namespace {

result<void> check_runner(const projection_list& projections, const runner_options& options) {
  std::map<std::string, int> seen;
  for (const auto& p : projections) {
    if (!p || p->name.empty()) return error(errc::invalid_argument, "a projection has no name");
    if (seen[p->name]++) {
      return error(errc::invalid_argument,
                   fmt::format("two projections are named '{}'", p->name));
    }
  }
  if (options.busy_timeout_ms < 0 || options.busy_timeout_ms > INT_MAX) {
    return error(errc::invalid_argument,
                 fmt::format("busy_timeout_ms must be between 0 and {}", INT_MAX));
  }
  if (options.batch_size <= 0 || options.max_attempts <= 0) {
    return error(errc::invalid_argument, "batch_size and max_attempts must be > 0");
  }
  if (options.retry_backoff.count() < 0) {
    return error(errc::invalid_argument, "retry_backoff must be >= 0");
  }
  return {};
}

}  // namespace

result<std::unique_ptr<projection_runner>> projection_runner::open(store_ref store,
                                                                   projection_list projections,
                                                                   runner_options options) {
  if (auto r = check_runner(projections, options); !r) return r.error();
  detail::backend_options bo;
  bo.busy_timeout_ms = options.busy_timeout_ms;
  bo.reader = true;
  auto b = detail::open_backend(store, bo, "projections");
  if (!b) return std::move(b).error();
  auto runner = std::make_unique<runner_impl>(std::move(projections), options,
                                              std::move(b->store), std::move(b->writer),
                                              std::move(b->reader), std::move(b->coordination));
  if (auto r = runner->init(); !r) return r.error();
  return std::unique_ptr<projection_runner>(std::move(runner));
}

}  // namespace annals
