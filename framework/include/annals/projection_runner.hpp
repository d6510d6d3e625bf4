// annals/projection_runner.hpp — running, following, rebuilding and repairing projections.
//
// Read models live next to the events: in the store's SQLite file, or in its PostgreSQL
// database. A runner catches each projection up from its checkpoint in batches; a batch's
// read-model writes and the new checkpoint commit in one transaction, so a crash at any moment
// leaves every model exactly as of some checkpoint. Several runners (threads or processes) may
// run the same projection: each batch re-checks the checkpoint under a lock (SQLite's write
// lock; on PostgreSQL the checkpoint row's), so no event is applied twice.
//
// On PostgreSQL, one live runner (start()) per projection does the work across processes: it
// holds a session advisory lock for it, and when its process dies another live runner takes
// the projection over. Appends wake live runners in every process through LISTEN/NOTIFY.
//
// Bookkeeping tables (same database): the consumer tables it shares with subscriptions,
// annals_consumers (name, version, checkpoint, state, ...) and annals_consumer_parked (dead
// letters). See docs/storage-format.md.
//
// Thread safety: a projection_runner may be used from several threads; start() runs one
// background thread that follows live appends.
#pragma once

#include <annals/catch_up.hpp>
#include <annals/parked.hpp>
#include <annals/projection.hpp>
#include <annals/status.hpp>
#include <annals/store_ref.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

namespace annals {

struct rebuild_progress {
  std::int64_t position = 0;  // last position replayed into the shadow tables
  std::int64_t head = 0;
  std::int64_t events = 0;    // events applied so far
  double events_per_s = 0;
  double eta_seconds = 0;
};

struct rebuild_options {
  // Compare the rebuilt shadow tables with the live model row by row, report differences, and
  // do not swap. Default false.
  bool verify = false;
  std::int64_t batch_size = 50000;  // events per transaction while replaying
  std::function<void(const rebuild_progress&)> progress;  // called after each batch
  std::function<void(std::string_view)> difference;       // verify: one line per difference
  std::int64_t max_differences = 100;                     // verify: lines reported at most
};

struct rebuild_report {
  std::int64_t events = 0;     // events applied to the new model
  std::int64_t position = 0;   // the checkpoint of the new model
  double seconds = 0;
  bool swapped = false;        // false for verify
  std::int64_t differences = 0;  // verify: rows that differ (live-only plus rebuilt-only)
};

struct runner_options {
  std::int64_t batch_size = 1000;  // events per transaction when catching up. Default 1000.
  // How often the live loop looks for appends by other processes. Appends through a store in
  // this process wake it at once. Default 5 ms. On PostgreSQL every append wakes it at once
  // (LISTEN/NOTIFY) and polling, at max(poll_interval, 1 s), is only a fallback.
  std::chrono::milliseconds poll_interval{5};
  int max_attempts = 3;  // handler attempts before parking an event. Default 3.
  // The first retry pause (>= 0), doubled after each retry up to max_backoff (below
  // retry_backoff: every pause is retry_backoff). stop() cuts a pause of the started loop
  // short. Defaults 20 ms, 5 s.
  std::chrono::milliseconds retry_backoff{20};
  std::chrono::milliseconds max_backoff{5000};
  std::int64_t busy_timeout_ms = 10000;         // waiting for the write lock. Default 10 s.
  // Rebuild a projection whose stored version differs from the code's, automatically, when
  // catching up (zero downtime: shadow tables, then a swap). Default true; when false such a
  // projection is reported stale by status() and not run.
  bool rebuild_on_version_change = true;
};

class projection_runner {
 public:
  // Opens a runner for these projections on a store (annals/store_ref.hpp: a handle, or a
  // path, sqlite:PATH or postgresql://... it opens itself). Creates the bookkeeping tables
  // and each projection's tables if missing. On a handle the runner reads through the store
  // (its pool, and its upcasters: handlers see the upcast events, so a projection lists only
  // the current types; a URI opens the store without upcasters) and opens beside it a writer
  // and a reader connection, and on PostgreSQL one for its advisory locks and one LISTEN-ing.
  // Errors: not_found (no store at the URI), corruption/io as for open_store,
  // invalid_argument (a store double not adopted with a database), read_only (a store opened
  // read-only).
  static result<std::unique_ptr<projection_runner>> open(store_ref store,
                                                         projection_list projections,
                                                         runner_options options = {});
  virtual ~projection_runner() = default;

  // Applies events until every projection reaches the head seen at the start, or is held.
  // Returns the number of events applied and, in `held`, each projection left short of that
  // head with the reason: stuck at a parked event, led by another live runner (PostgreSQL; it
  // applies the events), being rebuilt by another runner, or stale (a changed version that
  // is not rebuilt now). A held projection is not an error: check report.complete() (or call
  // wait_for) before trusting a model to be current. One projection's error does not stop
  // the others; the first error is returned.
  virtual result<catch_up_report> catch_up() = 0;

  // Starts a background thread that catches up, then follows live appends (from this process
  // at once, from other processes within poll_interval). stop() ends it; the destructor too.
  virtual result<void> start() = 0;
  virtual void stop() = 0;

  // Waits until `projection` has applied everything up to `position` (read-your-writes after
  // a command: pass the command's position). Catches up itself when start() was not called.
  // Errors: not_found (unknown projection), timed_out (not there by the deadline), stuck (the
  // projection is held at a parked event: retry or skip it).
  virtual result<void> wait_for(std::string_view projection, std::int64_t position,
                                std::chrono::milliseconds timeout) = 0;

  virtual result<std::vector<consumer_status>> status() = 0;

  // Rebuilds into shadow tables from position 1, catches up to the head, then swaps them in
  // atomically with the checkpoint. Readers see the old model until the swap. A rebuild that is
  // killed leaves the live model untouched; the next one starts cleanly.
  virtual result<rebuild_report> rebuild(std::string_view projection,
                                         const rebuild_options& options = {}) = 0;
  // Drops the model and its checkpoint; the next catch-up replays from the start.
  virtual result<void> reset(std::string_view projection) = 0;

  virtual result<std::vector<parked_event>> parked(std::string_view projection) = 0;
  // Unsticks a projection: its parked events are applied again on the next catch-up.
  virtual result<void> retry(std::string_view projection) = 0;
  // Moves a stuck projection past its parked event at `position`, recording the skip.
  virtual result<void> skip(std::string_view projection, std::int64_t position) = 0;

  // Runs fn in a read transaction on the read models: one consistent snapshot.
  virtual result<void> read(const std::function<result<void>(sql_tx&)>& fn) = 0;
};

}  // namespace annals
