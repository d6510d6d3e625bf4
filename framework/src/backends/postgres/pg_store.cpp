// The PostgreSQL event store. Layout and the gap-free argument: docs/storage-format.md.
//
// Writes: concurrent appends of this object share one READ COMMITTED transaction on a pooled
// connection (a group commit, store/group_commit.hpp). It first takes a transaction-level
// advisory lock on a fixed key (the store's write lock, one per database), then reads the
// streams' versions and the head position and inserts the events at head+1... The lock is
// released only after the commit is visible, so positions are assigned in commit order and a
// reader of $all never skips an event that commits later. Concurrency across processes is the
// same lock; the unique (stream, stream_version) constraint stands behind it.
//
// Reads: every page is one statement in autocommit (its own snapshot); events are immutable
// and positions dense, so pages by version or position neither lose nor repeat events. Rows
// arrive one at a time (single-row mode), so a page of large events is never held whole.
//
// Schema registry (annals_schemas): a registration is one transaction holding the same
// advisory write lock as appends, so registrations serialize with each other and with appends
// in every process. Reads of the registry take no lock (the check callback reads it on another
// pooled connection while the registration holds the lock). The versions a registration
// stored or found are published as an immutable map swapped atomically; appends stamp with it.
//
// Snapshots (annals_snapshots): reads use the pool; saves go to a bounded queue served by one
// background thread with its own connection and a short lock_timeout/statement_timeout, so a
// save never blocks its caller and never fails it (a failure is logged to stderr and dropped).
#include "metrics.hpp"
#include "db/transaction.hpp"
#include "backends/postgres/pg.hpp"
#include "backends/postgres/pg_sql.hpp"
#include "store/openers.hpp"
#include "store/checksum.hpp"
#include "store/group_commit.hpp"
#include "store/commit_hook.hpp"
#include "store/prepared.hpp"
#include "store/snapshot_queue.hpp"
#include "store/uri.hpp"

#include <annals/fault.hpp>
#include <annals/schema.hpp>
#include <annals/upcaster.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <unordered_map>

namespace annals {
namespace {

using pg::connection;
using pg::has_table;  // shared with the admin (pg.hpp)
using pg::params;
using store::prepared_event;

constexpr std::int64_t format_version = 3;
constexpr std::int64_t page_size = 2048;
constexpr std::size_t insert_chunk = 500;  // events per INSERT statement, at most
// Bytes of payload and metadata per INSERT statement, at most, unless one event is larger: an
// append's own limit, so a batch of large appends stays far below PostgreSQL's 1 GB per value.
constexpr std::size_t insert_bytes = 64u << 20;

// Advisory lock keys (64-bit, per database): "ANNL" then a small number.
#define ANNALS_PG_WRITE_LOCK "4705784748973228033"   // 0x414E4E4C00000001
#define ANNALS_PG_SCHEMA_LOCK "4705784748973228034"  // 0x414E4E4C00000002
static_assert(0x414E4E4C00000001LL == 4705784748973228033LL);
static_assert(pg::write_lock_key == 4705784748973228033LL);

constexpr const char* create_sql = R"sql(
CREATE TABLE IF NOT EXISTS annals_meta(
  key   TEXT PRIMARY KEY,
  value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS annals_streams(
  id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name    BYTEA NOT NULL UNIQUE,
  version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS annals_events(
  position       BIGINT PRIMARY KEY,
  stream         BIGINT NOT NULL REFERENCES annals_streams(id),
  stream_version BIGINT NOT NULL,
  event_id       BYTEA NOT NULL,
  type           TEXT NOT NULL,
  recorded_at    BIGINT NOT NULL,
  metadata       BYTEA,
  payload        BYTEA NOT NULL,
  checksum       BIGINT,
  CONSTRAINT annals_events_stream_version_key UNIQUE (stream, stream_version),
  CONSTRAINT annals_events_event_id_key UNIQUE (event_id)
);
INSERT INTO annals_meta(key, value) VALUES ('format', 3) ON CONFLICT (key) DO NOTHING;
)sql";

// Format 2 adds the row checksum (store/checksum.hpp); rows written before stay NULL. Adding a
// nullable column without a default rewrites nothing. Format 3 puts projections and
// subscriptions in one set of consumer tables (consumer/tables.hpp): the first writable
// consumer open moves the rows; the number keeps builds that know only the old tables away.
// Run on a format-1 or format-2 store opened writable.
constexpr const char* upgrade_sql = R"sql(
ALTER TABLE annals_events ADD COLUMN IF NOT EXISTS checksum BIGINT;
UPDATE annals_meta SET value = 3 WHERE key = 'format' AND value < 3;
)sql";

// The schema registry and snapshots. Part of every new store; created when missing in a store
// made by a build that did not have them (opened writable).
constexpr const char* registry_sql = R"sql(
CREATE TABLE IF NOT EXISTS annals_schemas(
  type           TEXT NOT NULL,
  version        INTEGER NOT NULL,
  compatibility  TEXT NOT NULL,
  fingerprint    TEXT NOT NULL,
  descriptor_set BYTEA NOT NULL,
  registered_at  BIGINT NOT NULL,
  PRIMARY KEY(type, version)
);
CREATE TABLE IF NOT EXISTS annals_snapshots(
  stream   BYTEA NOT NULL,
  key      BYTEA NOT NULL,
  version  BIGINT NOT NULL,
  state    BYTEA NOT NULL,
  taken_at BIGINT NOT NULL,
  PRIMARY KEY(stream, key)
);
)sql";

// As the SQLite store: keeps the higher version; an equal one replaces the stored snapshot
// (which may be the corrupt one a load just fell back from). A stored snapshot claiming a
// version beyond the stream's end is not a snapshot of this stream: any save replaces it.
const std::string upsert_snapshot_sql =
    "INSERT INTO annals_snapshots(stream, key, version, state, taken_at) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream, key) DO UPDATE SET "
    "version = excluded.version, state = excluded.state, taken_at = excluded.taken_at "
    "WHERE excluded.version >= annals_snapshots.version OR annals_snapshots.version > "
    "coalesce((SELECT version FROM annals_streams WHERE name = excluded.stream), -1)";

const std::string event_cols =
    "e.position, e.event_id, e.type, e.recorded_at, e.metadata, e.payload, e.stream_version";

using pending_append = store::group_commit::request;

// The events of one append as rows of annals_events: `events` at versions from `version` and
// positions from `position` on, in the stream with internal id `sid`.
struct event_run {
  std::int64_t sid;
  const pending_append* append;
  std::int64_t version;
  std::int64_t position;
};

// A stream touched by a batch of appends: as stored (id 0: not yet) and as the batch leaves it.
struct batch_stream {
  std::int64_t id = 0;
  std::int64_t stored = -1;   // its version before the batch
  std::int64_t version = -1;  // after the appends of the batch so far
};

constexpr std::size_t max_batch = 1024;  // appends per transaction
// A batch's statements touching up to this many streams are prepared once per connection and
// reused (planning one costs about as much as running it); larger ones are planned each time.
constexpr int cached_shapes = 16;

// Background snapshot saves (store::snapshot_queue) on a connection of their own, opened by the
// queue's thread on the first save.
class snapshot_writer {
 public:
  // Per statement: the writer never waits long on a lock or a slow server.
  static constexpr const char* lock_timeout = "200ms";
  static constexpr const char* statement_timeout = "2000ms";
  static constexpr int connect_timeout_s = 2;

  snapshot_writer(std::string uri, bool read_only)
      : uri_(std::move(uri)), queue_([this](const snapshot_record& s) { return write(s); },
                                     read_only) {}

  void save(snapshot_record snapshot) noexcept { queue_.save(std::move(snapshot)); }

 private:
  result<void> connect() {
    // Bounded, so the destructor's flush is bounded even when the server is unreachable.
    auto c = connection::open(uri_, connect_timeout_s);
    if (!c) return std::move(c).error();
    auto conn = std::make_unique<connection>(std::move(c).value());
    params p;
    p.add_text(lock_timeout).add_text(statement_timeout);
    if (auto r = conn->exec("cannot set the snapshot writer's timeouts",
                            "SELECT set_config('lock_timeout', $1, false), "
                            "set_config('statement_timeout', $2, false)",
                            p, false);
        !r) {
      return std::move(r).error();
    }
    conn_ = std::move(conn);
    return {};
  }

  result<void> write(const snapshot_record& s) {
    if (!conn_ || !conn_->healthy()) {
      conn_.reset();
      if (auto r = connect(); !r) return r;
    }
    params q;
    q.add_bytea(s.stream_id).add_bytea(s.key).add_int8(s.version).add_bytea(s.state);
    q.add_int8(store::system_clock_us());
    auto r = conn_->exec("cannot save a snapshot", upsert_snapshot_sql, q);
    if (!r) {
      if (!conn_->idle()) conn_.reset();  // broken or stuck: reconnect next time
      return std::move(r).error();
    }
    return {};
  }

  const std::string uri_;
  std::unique_ptr<connection> conn_;  // the queue's thread's only
  store::snapshot_queue queue_;       // last: destroyed (flushed, joined) before conn_
};

class pg_store final : public event_store, public store::opened_store {
 public:
  pg_store(std::string uri, postgres_options o, std::shared_ptr<store::commit_hook> hook)
      : uri_(std::move(uri)),
        where_{store::location::backend::postgres, uri_},
        options_(std::move(o)),
        hook_(std::move(hook)) {}

  // ---- connection pool ------------------------------------------------------------------

  struct lease {
    lease(pg_store& s, std::unique_ptr<connection> c) : store(s), conn(std::move(c)) {}
    ~lease() { store.give_back(std::move(conn)); }
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    connection* operator->() { return conn.get(); }
    pg_store& store;
    std::unique_ptr<connection> conn;
  };

  result<std::unique_ptr<connection>> checkout() {
    {
      std::lock_guard lock(pool_mu_);
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    auto c = connection::open(uri_);
    if (!c) return std::move(c).error();
    auto conn = std::make_unique<connection>(std::move(c).value());
    // A writer waits this long for the store's write lock, then fails with busy.
    auto timeout = fmt::format("{}ms", options_.lock_timeout_ms);
    params p;
    p.add_text(timeout);
    if (auto r = conn->exec("cannot set lock_timeout",
                            "SELECT set_config('lock_timeout', $1, false)", p, false);
        !r) {
      return std::move(r).error();
    }
    return conn;
  }

  void give_back(std::unique_ptr<connection> c) noexcept {
    if (!c) return;
    if (c->healthy() && !c->idle()) db::abandon(*c);
    if (!c->idle()) return;  // broken or stuck: closed, not pooled
    std::lock_guard lock(pool_mu_);
    if (idle_.size() < options_.pool_size) idle_.push_back(std::move(c));
  }

  const postgres_options& options() const noexcept { return options_; }

  // ---- appends --------------------------------------------------------------------------

  result<append_result> append(std::string_view stream_id, expected_version expected,
                               std::vector<event_data> events) override {
    return metrics::timed_append(
        [&] { return append_untimed(stream_id, expected, std::move(events)); });
  }

  result<append_result> append_untimed(std::string_view stream_id, expected_version expected,
                                       std::vector<event_data> events) {
    if (options_.read_only) {
      return error(errc::read_only, "the store was opened read-only");
    }
    // Holds the map alive while it is read; a registration may publish a new one meanwhile.
    const auto versions = stamps_.current();
    auto prepared =
        store::prepare_append(stream_id, expected, events, options_.id_source, versions.get());
    if (!prepared) return std::move(prepared).error();
    pending_append p(stream_id, expected, std::move(prepared).value());
    return group_.submit(p, [this](const std::vector<store::group_commit::request*>& batch) {
      commit_batch(batch);
    });
  }

  // The group commit's leader: one transaction, one write lock and one commit for the batch
  // (at most max_batch appends each); one transaction per append when the batch could not
  // be written together.
  void commit_batch(const std::vector<store::group_commit::request*>& requests) {
    auto c = checkout();
    if (!c) {
      for (auto* r : requests) r->staged = c.error();
      return;
    }
    lease conn(*this, std::move(c).value());  // rolls back whatever is left open
    for (std::size_t first = 0; first < requests.size(); first += max_batch) {
      std::vector<pending_append*> batch;
      for (std::size_t i = first; i < std::min(requests.size(), first + max_batch); ++i) {
        batch.push_back(requests[i]);
      }
      try {
        if (append_together(*conn.conn, batch)) continue;
        for (auto* p : batch) p->staged = append_in_tx(*conn.conn, *p);
      } catch (const std::exception& e) {
        // The transaction it was in rolled back as the exception left it. Appends written
        // before it one at a time keep their results: they are committed.
        for (auto* p : batch) {
          if (!p->staged) {
            p->staged = error(errc::io, fmt::format("append failed: {}", e.what()));
          }
        }
      }
    }
  }

  // Starts a write transaction and takes the store's write lock (waiting at most
  // lock_timeout: busy). Held until COMMIT or ROLLBACK.
  static result<db::transaction<connection>> begin_write(connection& c) {
    // One round trip: BEGIN and the lock in one simple query.
    return db::transaction<connection>::begin(
        c,
        "BEGIN ISOLATION LEVEL READ COMMITTED; "
        "SELECT pg_advisory_xact_lock(" ANNALS_PG_WRITE_LOCK ")",
        "cannot take the store's write lock");
  }

  result<append_result> append_in_tx(connection& c, pending_append& p) {
    // The write lock. Everything below runs with it held, until COMMIT or ROLLBACK (on any
    // return before the commit).
    auto tx = begin_write(c);
    if (!tx) return tx.error();
    std::int64_t sid = 0, current = -1;
    {
      params q;
      q.add_bytea(p.stream_id);
      auto r = c.exec("cannot read stream", "SELECT id, version FROM annals_streams WHERE name = $1",
                      q);
      if (!r) return std::move(r).error();
      if (PQntuples(r->get()) == 1) {
        sid = pg::get_int8(r->get(), 0, 0);
        current = pg::get_int8(r->get(), 0, 1);
      }
    }
    if (!store::expected_matches(p.expected, current)) {
      if (!p.events.empty()) {
        auto again = check_already_appended(c, p);
        if (!again) return std::move(again).error();
        if (again->has_value()) return **again;
      }
      return store::conflict_error(p.stream_id, p.expected, current);
    }
    if (p.events.empty()) return append_result{current, 0, false};

    const std::int64_t now = options_.clock ? options_.clock() : store::system_clock_us();
    std::int64_t head;
    {
      auto r = c.exec("cannot read the head position",
                      "SELECT coalesce(max(position), 0)::int8 FROM annals_events", params{});
      if (!r) return std::move(r).error();
      head = pg::get_int8(r->get(), 0, 0);
    }
    const auto n = static_cast<std::int64_t>(p.events.size());
    if (sid == 0) {
      params q;
      q.add_bytea(p.stream_id).add_int8(current + n);
      auto r = c.exec("cannot create stream",
                      "INSERT INTO annals_streams(name, version) VALUES ($1, $2) RETURNING id", q);
      if (!r) return std::move(r).error();
      sid = pg::get_int8(r->get(), 0, 0);
    } else {
      params q;
      q.add_int8(sid).add_int8(current + n);
      auto r = c.exec("cannot update stream",
                      "UPDATE annals_streams SET version = $2 WHERE id = $1", q);
      if (!r) return std::move(r).error();
    }
    pg::failure why;
    if (auto r = insert_events(c, {event_run{sid, &p, current + 1, head + 1}}, now, &why); !r) {
      if (why.sqlstate != "23505") return r.error();
      tx->rollback();
      if (why.constraint == "annals_events_event_id_key") {
        // An event id is already stored. Decide: idempotent retry, or misuse.
        auto again = check_already_appended(c, p);
        if (!again) return std::move(again).error();
        if (again->has_value()) return **again;
        return error(errc::corruption,
                     fmt::format("an event id of this append to '{}' is reported stored, "
                                 "but cannot be found",
                                 p.stream_id));
      }
      // (stream, stream_version) taken: a writer that bypassed the write lock got there
      // first. The same error as a stale expected version.
      auto v = stream_version_on(c, p.stream_id);
      return store::conflict_error(p.stream_id, p.expected, v ? v.value() : current);
    }
    if (hook_) {
      if (auto r = apply_inline(c, head + n); !r) return r.error();  // rolled back
    }
    // The notification is delivered at commit, to LISTEN-ers in every process (runners
    // following live); sent with the COMMIT, it costs no extra round trip.
    if (auto r = fault::point(fault::store_append_before_commit); !r) return r.error();
    if (auto r = tx->commit("cannot commit appended events",
                            "NOTIFY " ANNALS_PG_APPEND_CHANNEL "; COMMIT");
        !r) {
      return r.error();
    }
    commits_->notify();
    if (auto r = fault::point(fault::store_append_after_commit); !r) return r.error();
    return append_result{current + n, head + n, false};
  }

  // Inserts the events of `runs` (recorded at `now`), insert_chunk rows and insert_bytes per
  // statement at most. One statement shape for any number of rows (a column per array,
  // unnested), so it is prepared once per connection and never planned again.
  result<void> insert_events(connection& c, const std::vector<event_run>& runs, std::int64_t now,
                             pg::failure* why) {
    static const std::string sql =
        "INSERT INTO annals_events(stream, recorded_at, position, stream_version, event_id, "
        "type, metadata, payload, checksum) SELECT * FROM unnest($1::int8[], $2::int8[], "
        "$3::int8[], $4::int8[], $5::bytea[], $6::text[], $7::bytea[], $8::bytea[], $9::int8[])";
    using pg::array_param;
    std::vector<array_param> cols{array_param(array_param::int8), array_param(array_param::int8),
                                  array_param(array_param::int8), array_param(array_param::int8),
                                  array_param(array_param::bytea), array_param(array_param::text),
                                  array_param(array_param::bytea), array_param(array_param::bytea),
                                  array_param(array_param::int8)};
    std::size_t bytes = 0;
    auto flush = [&]() -> result<void> {
      bytes = 0;
      if (cols[0].size() == 0) return {};
      params q;
      for (auto& col : cols) {
        q.add_array(col);
        col = array_param(col.element());
      }
      auto r = c.exec("cannot append events", sql, q, true, why);
      if (!r) return std::move(r).error();
      return {};
    };
    for (const auto& run : runs) {
      const auto& events = run.append->events;
      for (std::size_t k = 0; k < events.size(); ++k) {
        const auto& e = events[k];
        const std::size_t size = e.payload.size() + e.metadata.size();
        if (cols[0].size() > 0 && bytes + size > insert_bytes) {
          if (auto r = flush(); !r) return r;
        }
        bytes += size;
        const std::string_view id{reinterpret_cast<const char*>(e.id.data()), e.id.size()};
        const auto version = run.version + static_cast<std::int64_t>(k);
        cols[0].add_int8(run.sid);
        cols[1].add_int8(now);
        cols[2].add_int8(run.position + static_cast<std::int64_t>(k));
        cols[3].add_int8(version);
        cols[4].add_bytes(id);
        cols[5].add_bytes(e.type);
        if (e.metadata.empty()) {
          cols[6].add_null();
        } else {
          cols[6].add_bytes(e.metadata);
        }
        cols[7].add_bytes(e.payload);
        cols[8].add_int8(store::event_checksum(run.append->stream_id, version, id, e.type, now,
                                               e.metadata, e.payload));
        if (cols[0].size() == insert_chunk) {
          if (auto r = flush(); !r) return r;
        }
      }
    }
    return flush();
  }

  // Writes a batch of appends in one transaction: one write lock and one commit for all of
  // them. One statement reads the head and the batch's streams; the expected versions are
  // checked here, in queue order, against the versions as the batch leaves them; the streams
  // and the events are written in a few multi-row statements. An append whose expected version
  // does not hold is judged after the writes, in the same transaction (a conflict, or an
  // idempotent repeat of an append stored before or earlier in the batch).
  //
  // Stages every append's result and returns true; or returns false with nothing staged and
  // nothing written when one append's own trouble (an event id stored already, an inline
  // projection failing) failed the statement: the caller then appends them one at a time, so
  // that only that one append fails.
  bool append_together(connection& c, const std::vector<pending_append*>& batch) {
    auto stage_all = [&](const error& e) {
      for (auto* p : batch) p->staged = e;
      return true;
    };
    auto tx = begin_write(c);
    if (!tx) return stage_all(tx.error());

    std::unordered_map<std::string_view, batch_stream> streams;
    std::int64_t head = 0;
    {
      std::string sql =
          "SELECT NULL::bytea, coalesce(max(position), 0)::int8, 0::int8 FROM annals_events "
          "UNION ALL SELECT name, id, version FROM annals_streams WHERE name IN (";
      params q;
      for (auto* p : batch) {
        if (!streams.emplace(p->stream_id, batch_stream{}).second) continue;
        sql += fmt::format("{}${}", q.size() ? ", " : "", q.size() + 1);
        q.add_bytea(p->stream_id);
      }
      sql += ")";
      auto r = c.exec("cannot read streams", sql, q, q.size() <= cached_shapes);
      if (!r) return stage_all(r.error());
      for (int row = 0; row < PQntuples(r->get()); ++row) {
        if (pg::is_null(r->get(), row, 0)) {
          head = pg::get_int8(r->get(), row, 1);
          continue;
        }
        auto& s = streams.at(pg::get_bytes(r->get(), row, 0));
        s.id = pg::get_int8(r->get(), row, 1);
        s.stored = s.version = pg::get_int8(r->get(), row, 2);
      }
    }

    const std::int64_t now = options_.clock ? options_.clock() : store::system_clock_us();
    std::vector<std::optional<result<append_result>>> out(batch.size());
    std::vector<std::int64_t> seen(batch.size());  // the stream's version when checked
    std::vector<event_run> runs;
    std::int64_t last = head;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& p = *batch[i];
      auto& s = streams.at(p.stream_id);
      seen[i] = s.version;
      if (!store::expected_matches(p.expected, s.version)) continue;  // judged below
      const auto n = static_cast<std::int64_t>(p.events.size());
      if (n == 0) {
        out[i] = append_result{s.version, 0, false};
        continue;
      }
      runs.push_back(event_run{0, &p, s.version + 1, last + 1});
      s.version += n;
      last += n;
      out[i] = append_result{s.version, last, false};
    }

    if (!runs.empty()) {
      if (auto r = write_streams(c, streams); !r) return stage_all(r.error());
      for (auto& run : runs) run.sid = streams.at(run.append->stream_id).id;
      pg::failure why;
      if (auto r = insert_events(c, runs, now, &why); !r) {
        if (why.sqlstate == "23505") return false;  // rolled back; one at a time
        return stage_all(r.error());
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (out[i]) continue;
      auto& p = *batch[i];
      if (!p.events.empty()) {
        // An error here is this append's misuse (its ids stored elsewhere) or a failed
        // statement, after which COMMIT would only roll back: one at a time either way.
        auto again = check_already_appended(c, p);
        if (!again) return false;
        if (again->has_value()) {
          out[i] = **again;
          continue;
        }
      }
      out[i] = store::conflict_error(p.stream_id, p.expected, seen[i]);
    }

    std::optional<error> failed;  // fails every append the batch wrote
    if (!runs.empty()) {
      if (hook_) {
        if (auto r = apply_inline(c, last); !r) return false;  // rolled back; one at a time
      }
      if (auto r = fault::point(fault::store_append_before_commit); !r) {
        failed = r.error();
      } else if (auto r = tx->commit("cannot commit appended events",
                                     "NOTIFY " ANNALS_PG_APPEND_CHANNEL "; COMMIT");
                 !r) {
        failed = r.error();
      } else {
        commits_->notify();
        // Committed, but the appenders are told it failed: the outcome is unknown to them.
        if (auto f = fault::point(fault::store_append_after_commit); !f) failed = f.error();
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      // A repeat of an append stored before the batch stands whatever became of the batch.
      const bool in_batch = out[i]->ok() && (!out[i]->value().already_appended ||
                                             out[i]->value().position > head);
      batch[i]->staged = failed && in_batch ? result<append_result>(*failed) : std::move(*out[i]);
    }
    return true;
  }

  // Creates the streams of a batch not stored yet (learning their ids) and moves the others to
  // their new versions: a statement each.
  result<void> write_streams(connection& c,
                             std::unordered_map<std::string_view, batch_stream>& streams) {
    std::string create = "INSERT INTO annals_streams(name, version) VALUES ";
    std::string update =
        "UPDATE annals_streams s SET version = v.version FROM (VALUES ";
    params cq, uq;
    for (const auto& [name, s] : streams) {
      if (s.version == s.stored) continue;
      if (s.id == 0) {
        create += fmt::format("{}(${}, ${})", cq.size() ? ", " : "", cq.size() + 1,
                              cq.size() + 2);
        cq.add_bytea(name).add_int8(s.version);
      } else {
        update += fmt::format("{}(${}::int8, ${}::int8)", uq.size() ? ", " : "", uq.size() + 1,
                              uq.size() + 2);
        uq.add_int8(s.id).add_int8(s.version);
      }
    }
    if (cq.size()) {
      auto r = c.exec("cannot create streams", create + " RETURNING name, id", cq,
                      cq.size() <= 2 * cached_shapes);
      if (!r) return std::move(r).error();
      for (int row = 0; row < PQntuples(r->get()); ++row) {
        streams.at(pg::get_bytes(r->get(), row, 0)).id = pg::get_int8(r->get(), row, 1);
      }
    }
    if (uq.size()) {
      auto r = c.exec("cannot update streams",
                      update + ") AS v(id, version) WHERE s.id = v.id", uq,
                      uq.size() <= 2 * cached_shapes);
      if (!r) return std::move(r).error();
    }
    return {};
  }

  // If the append's event ids are already stored, at the versions this append would have
  // given them, returns the original result. If none is stored returns an empty optional.
  // If some are stored elsewhere returns invalid_argument naming one. (As the SQLite store.)
  result<std::optional<append_result>> check_already_appended(connection& c,
                                                              const pending_append& p) {
    return store::judge_repeated_append(
        p.stream_id, p.expected, p.events,
        [&](const prepared_event& e) -> result<std::optional<store::stored_event_id>> {
          params q;
          q.add_bytea({reinterpret_cast<const char*>(e.id.data()), e.id.size()});
          auto r = c.exec("cannot look up event id",
                          "SELECT s.name, e.stream_version, e.position FROM annals_events e "
                          "JOIN annals_streams s ON s.id = e.stream WHERE e.event_id = $1",
                          q);
          if (!r) return std::move(r).error();
          if (PQntuples(r->get()) == 0) return std::optional<store::stored_event_id>{};
          return std::optional<store::stored_event_id>{store::stored_event_id{
              std::string(pg::get_bytes(r->get(), 0, 0)), pg::get_int8(r->get(), 0, 1),
              pg::get_int8(r->get(), 0, 2)}};
        });
  }


  // ---- schema registry ------------------------------------------------------------------

  result<std::vector<stored_schema>> read_schemas(std::string_view type) override {
    if (!type.empty()) {
      if (auto r = store::check_event_type(type); !r) return r.error();
    }
    std::vector<stored_schema> out;
    if (!has_registry_) return out;  // read-only store from before the registry
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    // No lock: a registration in progress holds the write lock and calls this from its check.
    pg::sql_conn conn(l.conn.get());
    if (auto r = store::read_schema_rows(conn, type, out); !r) return r.error();
    return out;
  }

  result<std::vector<registered_type>> register_schemas(
      const std::vector<schema_candidate>& candidates, const schema_check_fn& check) override {
    if (options_.read_only) {
      return error(errc::read_only, "the store was opened read-only: it cannot register schemas");
    }
    if (auto r = store::check_schema_candidates(candidates); !r) return r.error();
    if (candidates.empty()) return std::vector<registered_type>{};
    // Two registrations of this store object publish in the order they committed.
    std::lock_guard registering(register_mu_);
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease conn(*this, std::move(checked_out).value());  // rolls back whatever is left open
    try {
      return register_in_tx(*conn.conn, candidates, check);
    } catch (const std::exception& e) {
      return error(errc::io, fmt::format("schema registration failed: {}", e.what()));
    }
  }

  // ---- snapshots ------------------------------------------------------------------------

  result<std::optional<snapshot_record>> read_snapshot(std::string_view stream_id,
                                                       std::string_view key) override {
    if (auto r = store::check_stream_id(stream_id); !r) return r.error();
    if (!has_registry_) return std::optional<snapshot_record>{};
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    params q;
    q.add_bytea(stream_id).add_bytea(key);
    auto r = l.conn->exec("cannot read a snapshot",
                          "SELECT version, state, taken_at FROM annals_snapshots "
                          "WHERE stream = $1 AND key = $2",
                          q);
    if (!r) return std::move(r).error();
    if (PQntuples(r->get()) == 0) return std::optional<snapshot_record>{};
    snapshot_record s;
    s.stream_id = std::string(stream_id);
    s.key = std::string(key);
    s.version = pg::get_int8(r->get(), 0, 0);
    s.state.assign(pg::get_bytes(r->get(), 0, 1));
    s.taken_at_us = pg::get_int8(r->get(), 0, 2);
    return std::optional<snapshot_record>{std::move(s)};
  }

  void save_snapshot(snapshot_record snapshot) noexcept override {
    if (!has_registry_) return;
    snapshots_.save(std::move(snapshot));
  }

  // Set by open_postgres_store: false only for a read-only store without the tables.
  void set_has_registry(bool v) noexcept { has_registry_ = v; }

 private:
  // One transaction holding the write lock; the caller holds register_mu_.
  result<std::vector<registered_type>> register_in_tx(connection& c,
                                                      const std::vector<schema_candidate>& candidates,
                                                      const schema_check_fn& check) {
    auto tx = begin_write(c);
    if (!tx) return tx.error();
    pg::sql_conn conn(&c);
    bool wrote = false;
    auto out = store::register_schema_rows(
        conn, candidates, check, options_.clock ? options_.clock() : store::system_clock_us(),
        wrote);
    if (!out) return out;  // rolled back
    if (wrote) {
      if (auto r = tx->commit("cannot commit the schema registration"); !r) return r.error();
    }  // else nothing written: rolled back
    stamps_.publish(*out);
    return out;
  }

 public:
  // ---- reads ----------------------------------------------------------------------------

  result<std::int64_t> read_stream(std::string_view stream_id, const read_stream_options& o,
                                   const event_visitor& visit) override {
    if (auto r = store::check_read(stream_id, o); !r) return r.error();
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    connection& c = *l.conn;
    std::int64_t sid, last_version;
    {
      params q;
      q.add_bytea(stream_id);
      auto r = c.exec("cannot read stream", "SELECT id, version FROM annals_streams WHERE name = $1",
                      q);
      if (!r) return std::move(r).error();
      if (PQntuples(r->get()) == 0) return std::int64_t{0};
      sid = pg::get_int8(r->get(), 0, 0);
      last_version = pg::get_int8(r->get(), 0, 1);
    }
    const bool forward = o.dir == direction::forward;
    std::int64_t next = forward ? std::max<std::int64_t>(o.from_version, 0)
                                : (o.from_version < 0 ? last_version : o.from_version);
    const std::string sql =
        forward ? "SELECT " + event_cols +
                      " FROM annals_events e WHERE e.stream = $1 AND e.stream_version >= $2 "
                      "ORDER BY e.stream_version LIMIT $3"
                : "SELECT " + event_cols +
                      " FROM annals_events e WHERE e.stream = $1 AND e.stream_version <= $2 "
                      "ORDER BY e.stream_version DESC LIMIT $3";
    std::int64_t visited = 0;
    recorded_event ev;
    ev.stream_id = std::string(stream_id);
    while (visited < o.max_count && next >= 0) {
      const std::int64_t asked = std::min(page_size, o.max_count - visited);
      params q;
      q.add_int8(sid).add_int8(next).add_int8(asked);
      bool stop = false;
      auto rows = c.for_each_row("cannot read stream", sql, q, true,
                                 [&](const PGresult* r, int row) -> result<bool> {
                                   if (auto d = decode_row(r, row, ev); !d) return d.error();
                                   next = forward ? ev.stream_version + 1
                                                  : ev.stream_version - 1;
                                   if (auto u = upcast(ev, {}); !u) return u.error();
                                   ++visited;
                                   stop = !visit(ev);
                                   return !stop;
                                 });
      if (!rows) return std::move(rows).error();
      if (stop || *rows < asked) break;
    }
    return visited;
  }

  result<std::int64_t> read_all(const read_all_options& o, const event_visitor& visit) override {
    if (auto r = store::check_read(o); !r) return r.error();
    const std::vector<std::string> types = stored_types(o.event_types);
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    connection& c = *l.conn;

    // Filters become placeholders; the values are bound, never pasted.
    std::string sql = "SELECT " + event_cols +
                      ", s.name FROM annals_events e JOIN annals_streams s ON s.id = e.stream "
                      "WHERE e.position >= $1";
    int next_param = 3;
    if (!o.stream_prefix.empty()) {
      // Byte-wise: names are bytea, so % _ and partial UTF-8 sequences are plain bytes.
      sql += " AND substring(s.name from 1 for octet_length($3::bytea)) = $3::bytea";
      next_param = 4;
    }
    if (!types.empty()) {
      sql += " AND e.type IN (";
      for (std::size_t i = 0; i < types.size(); ++i) {
        sql += fmt::format("{}${}", i ? ", " : "", next_param + static_cast<int>(i));
      }
      sql += ")";
    }
    sql += " ORDER BY e.position LIMIT $2";
    const bool cache = types.size() <= 4;  // few distinct texts per connection

    std::int64_t next = std::max<std::int64_t>(o.from_position, 1);
    std::int64_t visited = 0;
    recorded_event ev;
    while (visited < o.max_count) {
      // Rows asked for, not rows visited, decide whether the page was the last: upcasting
      // may drop rows of old types that are no longer wanted.
      const std::int64_t asked = std::min(page_size, o.max_count - visited);
      params q;
      q.add_int8(next).add_int8(asked);
      if (!o.stream_prefix.empty()) q.add_bytea(o.stream_prefix);
      for (const auto& t : types) q.add_text(t);
      bool stop = false;
      auto rows = c.for_each_row("cannot read $all", sql, q, cache,
                                 [&](const PGresult* r, int row) -> result<bool> {
                                   if (auto d = decode_row(r, row, ev); !d) return d.error();
                                   ev.stream_id.assign(pg::get_bytes(r, row, 7));
                                   next = ev.position + 1;
                                   auto u = upcast(ev, o.event_types);
                                   if (!u) return u.error();
                                   if (!*u) return true;
                                   ++visited;
                                   stop = !visit(ev);
                                   return !stop;
                                 });
      if (!rows) return std::move(rows).error();
      if (stop || *rows < asked) break;
    }
    return visited;
  }

  result<std::int64_t> stream_version(std::string_view stream_id) override {
    if (auto r = store::check_stream_id(stream_id); !r) return r.error();
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    return stream_version_on(*l.conn, stream_id);
  }

  const store::location& where() const noexcept override { return where_; }
  bool read_only() const noexcept override { return options_.read_only; }
  const std::shared_ptr<store::commit_signal>& commits() const noexcept override {
    return commits_;
  }
  // Set once by open_postgres_store, from its first connection.
  void set_commits(std::shared_ptr<store::commit_signal> s) noexcept { commits_ = std::move(s); }

  result<std::int64_t> head_position() override {
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    auto r = l.conn->exec("cannot read head position",
                           "SELECT coalesce(max(position), 0)::int8 FROM annals_events", params{});
    if (!r) return std::move(r).error();
    return pg::get_int8(r->get(), 0, 0);
  }

  result<std::optional<recorded_event>> find_event(std::string_view event_id) override {
    return store::find_event_by_id(
        *this, event_id,
        [&](const store::uuid_bytes& id) -> result<std::optional<std::int64_t>> {
          auto checked_out = checkout();
          if (!checked_out) return std::move(checked_out).error();
          lease l(*this, std::move(checked_out).value());
          params q;
          q.add_bytea(std::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
          auto r = l.conn->exec("cannot look up an event id",
                                "SELECT position FROM annals_events WHERE event_id = $1", q);
          if (!r) return std::move(r).error();
          if (PQntuples(r->get()) == 0) return std::optional<std::int64_t>{};
          return std::optional<std::int64_t>{pg::get_int8(r->get(), 0, 0)};
        });
  }

 private:
  static result<std::int64_t> stream_version_on(connection& c, std::string_view stream_id) {
    params q;
    q.add_bytea(stream_id);
    auto r = c.exec("cannot read stream version",
                    "SELECT version FROM annals_streams WHERE name = $1", q);
    if (!r) return std::move(r).error();
    if (PQntuples(r->get()) == 0) return std::int64_t{-1};
    return pg::get_int8(r->get(), 0, 0);
  }

  // Columns: position, event_id, type, recorded_at, metadata, payload, stream_version.
  static result<void> decode_row(const PGresult* r, int row, recorded_event& ev) {
    ev.position = pg::get_int8(r, row, 0);
    auto id = pg::get_bytes(r, row, 1);
    if (id.size() != 16) {
      return error(errc::corruption,
                   fmt::format("event at position {} has a malformed event id", ev.position));
    }
    store::format_uuid(reinterpret_cast<const unsigned char*>(id.data()), ev.event_id);
    ev.type.assign(pg::get_bytes(r, row, 2));
    ev.recorded_at_us = pg::get_int8(r, row, 3);
    std::string_view meta = pg::is_null(r, row, 4) ? std::string_view{} : pg::get_bytes(r, row, 4);
    if (!store::decode_metadata(meta, ev.metadata)) {
      return error(errc::corruption,
                   fmt::format("event at position {} has undecodable metadata", ev.position));
    }
    ev.payload.assign(pg::get_bytes(r, row, 5));
    ev.stream_version = pg::get_int8(r, row, 6);
    return {};
  }

  // Runs the commit hook (the inline projections) up to `last` in the append's transaction on
  // `c` (the write lock is held: every position up to `last` is there). Each consumer's events
  // are fetched whole (at most max_inline_lag of them) before its handlers run statements on
  // the connection.
  result<void> apply_inline(connection& c, std::int64_t last) {
    pg::sql_conn tx_conn(&c);
    return hook_->committing(
        tx_conn, last,
        [&](std::size_t i, std::int64_t after, std::int64_t upto,
            const std::function<result<void>(const recorded_event&)>& visit) -> result<void> {
          const auto& wanted_types = hook_->event_types(i);
          const auto types = stored_types(wanted_types);
          if (types.empty()) return {};  // lists no event
          std::string sql = "SELECT " + event_cols +
                            ", s.name FROM annals_events e JOIN annals_streams s ON "
                            "s.id = e.stream WHERE e.position > $1 AND e.position <= $2 AND "
                            "e.type IN (";
          params q;
          q.add_int8(after).add_int8(upto);
          for (std::size_t t = 0; t < types.size(); ++t) {
            sql += fmt::format("{}${}", t ? ", " : "", t + 3);
            q.add_text(types[t]);
          }
          sql += ") ORDER BY e.position";
          auto rows = c.exec("cannot read events for an inline projection", sql, q);
          if (!rows) return std::move(rows).error();
          recorded_event ev;
          for (int row = 0; row < PQntuples(rows->get()); ++row) {
            if (auto x = decode_row(rows->get(), row, ev); !x) return x.error();
            ev.stream_id.assign(pg::get_bytes(rows->get(), row, 7));
            auto wanted = upcast(ev, wanted_types);
            if (!wanted) return wanted.error();
            if (!*wanted) continue;
            if (auto v = visit(ev); !v) return v;
          }
          return {};
        });
  }

  std::vector<std::string> stored_types(const std::vector<std::string>& wanted) const {
    return store::stored_types_for(options_.upcast.get(), wanted);
  }
  result<bool> upcast(recorded_event& ev, const std::vector<std::string>& wanted) const {
    return store::upcast_wanted(options_.upcast.get(), ev, wanted);
  }

  std::string uri_;
  const store::location where_;
  postgres_options options_;
  std::shared_ptr<store::commit_hook> hook_;  // the inline projections; null: none
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<connection>> idle_;
  bool has_registry_ = true;
  std::shared_ptr<store::commit_signal> commits_;  // this database's, shared in this process
  // Held through a registration, so this object's registrations publish in commit order.
  std::mutex register_mu_;
  // The schema version this store object stamps per type (see register_in_tx).
  store::schema_stamps stamps_;
  store::group_commit group_;  // concurrent appends in this process share a transaction
  // Last member: destroyed first, flushing queued snapshot saves (bounded wait).
  snapshot_writer snapshots_{uri_, options_.read_only};
};

// Runs `sql` in one transaction holding the schema advisory lock (serialized against other
// processes creating tables).
result<void> create_tables(connection& c, const char* sql) {
  constexpr std::string_view what = "cannot create the store's tables";
  return db::in_transaction(c, db::begin_default, what, [&]() -> result<void> {
    if (auto r = c.exec_simple(what, "SELECT pg_advisory_xact_lock(" ANNALS_PG_SCHEMA_LOCK ")");
        !r) {
      return r;
    }
    return c.exec_simple(what, sql);
  });
}

// Creates the tables when missing, or checks that the existing ones are of a format this build
// knows. A writable store gets the registry and snapshot tables if it lacks them (made by a
// build without them). Returns whether those tables exist (false: a read-only older store).
result<bool> ensure_schema(connection& c, const postgres_options& o) {
  auto have = has_table(c, "annals_meta");
  if (!have) return std::move(have).error();
  if (!*have) {
    if (o.read_only || !o.create_if_missing) {
      return error(errc::not_found, "the database holds no Annals store (no annals_meta table)");
    }
    std::string sql = std::string(create_sql) + registry_sql;
    if (auto r = create_tables(c, sql.c_str()); !r) return r.error();
  }
  auto r = c.exec("cannot read the store's format",
                  "SELECT value FROM annals_meta WHERE key = 'format'", params{}, false);
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) != 1) {
    return error(errc::corruption, "the annals_meta table has no storage format");
  }
  auto v = pg::get_int8(r->get(), 0, 0);
  if (v > format_version || v < 1) {
    return error(errc::corruption,
                 fmt::format("the store has storage format {}; this Annals knows format {}", v,
                             format_version));
  }
  // A format-1 store opened read-only stays as it is: reads do not select the checksum, and
  // verify checks whether the column exists.
  if (v < format_version && !o.read_only) {
    if (auto made = create_tables(c, upgrade_sql); !made) return made.error();
  }
  for (const char* table : {"annals_schemas", "annals_snapshots"}) {
    auto t = has_table(c, table);
    if (!t) return std::move(t).error();
    if (*t) continue;
    if (o.read_only) return false;
    if (auto made = create_tables(c, registry_sql); !made) return made.error();
    break;
  }
  return true;
}

}  // namespace

result<std::unique_ptr<event_store>> store::open_postgres(const std::string& uri,
                                                         postgres_options options,
                                                         std::shared_ptr<commit_hook> hook) {
  if (uri.empty() || uri.find('\0') != std::string::npos) {
    return error(errc::invalid_argument, "PostgreSQL URI is empty or contains NUL");
  }
  if (options.lock_timeout_ms < 0) {
    return error(errc::invalid_argument, "lock_timeout_ms must not be negative");
  }
  auto store = std::make_unique<pg_store>(uri, std::move(options), hook);
  auto c = store->checkout();
  if (!c) return std::move(c).error();
  pg_store::lease conn(*store, std::move(c).value());
  store->set_commits(store::commit_signal_for(pg::identity(conn->get())));
  auto registry = ensure_schema(*conn.conn, store->options());
  if (!registry) return std::move(registry).error();
  store->set_has_registry(*registry);
  if (hook) {
    // The inline projections' tables and checkpoints, once, in one transaction (their init
    // serializes the DDL with other processes).
    connection& c = *conn.conn;
    pg::sql_conn tx_conn(&c);
    if (auto r = db::in_transaction(c, db::begin_pg_write, "cannot create inline projection tables",
                                    [&] { return hook->init(tx_conn); });
        !r) {
      return r.error();
    }
  }
  return std::unique_ptr<event_store>(std::move(store));
}

}  // namespace annals
