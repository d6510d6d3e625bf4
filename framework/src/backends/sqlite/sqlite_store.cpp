// The SQLite event store. Layout: docs/storage-format.md.
//
// Writes: one writer connection. Appenders queue their (already validated) requests; whichever
// appender finds no commit in flight becomes the leader, takes the whole queue, and applies it
// in one BEGIN IMMEDIATE transaction with a SAVEPOINT per append, so one append's conflict
// fails only that append. The leader commits once (one fsync for all) and hands each appender
// its own result. Positions are assigned inside the write lock, so commit order == position
// order and a reader of $all never skips an event that commits later.
//
// Reads: a small pool of reader connections; each read runs in pages of `page_size` rows,
// one short read transaction per page, so a long fold neither holds memory nor pins the WAL.
//
// Schema registry (annals_schemas): a registration takes the group-commit leadership, so it
// runs on the writer connection between two batches of appends, in its own BEGIN IMMEDIATE
// transaction (which also serializes it against other processes). The versions it registered
// are published as an immutable map swapped atomically; appends read it without a lock.
#include "db/transaction.hpp"
#include "metrics.hpp"
#include "store/openers.hpp"
#include "store/commit_hook.hpp"
#include "store/checksum.hpp"
#include "store/group_commit.hpp"
#include "store/prepared.hpp"
#include "backends/sqlite/snapshot_writer.hpp"
#include "backends/sqlite/sql_connection.hpp"
#include "backends/sqlite/sqlite.hpp"
#include "store/uri.hpp"

#include <annals/fault.hpp>
#include <annals/upcaster.hpp>

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <climits>
#include <mutex>
#include <unordered_map>
#include <thread>

namespace annals {
namespace {

using sqlite::connection;
using sqlite::reset_guard;
using sqlite::statement;
using store::prepared_event;

constexpr std::int32_t application_id = 0x414E4E4C;  // "ANNL"
constexpr int format_version = 4;
constexpr std::int64_t page_size = 2048;

constexpr const char* schema_sql = R"sql(
CREATE TABLE streams(
  id      INTEGER PRIMARY KEY,
  name    TEXT NOT NULL UNIQUE,
  version INTEGER NOT NULL
);
CREATE TABLE events(
  position       INTEGER PRIMARY KEY,
  stream         INTEGER NOT NULL,
  stream_version INTEGER NOT NULL,
  event_id       BLOB NOT NULL,
  type           TEXT NOT NULL,
  recorded_at    INTEGER NOT NULL,
  metadata       BLOB,
  payload        BLOB NOT NULL,
  checksum       INTEGER
);
CREATE UNIQUE INDEX events_by_stream ON events(stream, stream_version);
CREATE UNIQUE INDEX events_by_id ON events(event_id);
PRAGMA application_id = 1095650892;
)sql";
// Format 2 adds the schema registry and snapshots. Run on new stores after schema_sql, and on
// format-1 stores when they are opened for writing (then format3_sql).
constexpr const char* format2_sql = R"sql(
CREATE TABLE IF NOT EXISTS annals_schemas(
  type           TEXT NOT NULL,
  version        INTEGER NOT NULL,
  compatibility  TEXT NOT NULL,
  fingerprint    TEXT NOT NULL,
  descriptor_set BLOB NOT NULL,
  registered_at  INTEGER NOT NULL,
  PRIMARY KEY(type, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS annals_snapshots(
  stream   TEXT NOT NULL,
  key      TEXT NOT NULL,
  version  INTEGER NOT NULL,
  state    BLOB NOT NULL,
  taken_at INTEGER NOT NULL,
  PRIMARY KEY(stream, key)
) WITHOUT ROWID;
)sql";
// Format 3 adds the row checksum (store/checksum.hpp): O(1) in SQLite, rows written before stay
// NULL. Run on format-1 and format-2 stores opened for writing; new stores have the column.
constexpr const char* format3_sql = "ALTER TABLE events ADD COLUMN checksum INTEGER;";
// Format 4 puts projections and subscriptions in one set of consumer tables
// (consumer/tables.hpp). The store itself has nothing to change: the first writable consumer
// open moves the rows. The number keeps builds that know only the old tables away.
constexpr const char* set_format_sql = "PRAGMA user_version = 4;";
static_assert(format_version == 4);
static_assert(application_id == 1095650892);


result<std::int64_t> query_int(sqlite3* db, const char* sql, std::string_view what) {
  auto st = statement::prepare(db, sql);
  if (!st) return std::move(st).error();
  int rc = st->step();
  if (rc != SQLITE_ROW) return sqlite::make_error(rc, what, db);
  return st->column_int64(0);
}

// Statements of the writer connection, prepared once.
struct writer_statements {
  statement find_stream, insert_stream, update_stream, insert_event, find_event;
  statement savepoint, release, rollback_to;

  static result<writer_statements> prepare(sqlite3* db) {
    writer_statements w;
    auto r = statement::prepare_all(
        db, {{&w.find_stream, "SELECT id, version FROM streams WHERE name = ?1"},
             {&w.insert_stream, "INSERT INTO streams(name, version) VALUES(?1, ?2)"},
             {&w.update_stream, "UPDATE streams SET version = ?2 WHERE id = ?1"},
             {&w.insert_event,
              "INSERT INTO events(stream, stream_version, event_id, type, recorded_at, "
              "metadata, payload, checksum) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
             {&w.find_event,
              "SELECT s.name, e.stream_version, e.position FROM events e "
              "JOIN streams s ON s.id = e.stream WHERE e.event_id = ?1"},
             {&w.savepoint, "SAVEPOINT annals_append"},
             {&w.release, "RELEASE annals_append"},
             {&w.rollback_to, "ROLLBACK TO annals_append"}});
    if (!r) return r.error();
    return w;
  }
};

using pending_append = store::group_commit::request;

// A reader connection with its statements, checked out of the pool for one read.
struct reader {
  connection conn;
  statement stream_id, stream_page_fwd, stream_page_bwd, head, version, name_of, by_id;
  // Stream names by internal id. Ids are never reused (streams are never deleted), so entries
  // never go stale; the cache is dropped when it grows past max_cached_names.
  std::unordered_map<std::int64_t, std::string> names;
};
constexpr std::size_t max_cached_names = 100000;

class sqlite_store final : public event_store, public store::opened_store {
 public:
  sqlite_store(std::string path, sqlite_options o, std::shared_ptr<store::commit_hook> hook,
               connection writer, writer_statements ws)
      : path_(std::move(path)),
        where_{store::location::backend::sqlite, path_},
        options_(std::move(o)),
        writer_(std::move(writer)),
        ws_(std::move(ws)),
        commits_(store::commit_signal_for(sqlite::identity(writer_.get()))),
        hook_(std::move(hook)) {
    if (hook_) inline_conn_ = std::make_unique<detail::sqlite_sql_connection>(writer_.get());
  }

  // Creates the inline projections' tables and checkpoints. Called once after construction.
  result<void> init_inline() {
    if (!inline_conn_) return {};
    if (auto r = db::in_transaction(writer_, db::begin_sqlite_write,
                                    "cannot create inline projection tables",
                                    [&] { return hook_->init(*inline_conn_); });
        !r) {
      return r;
    }
    // Each inline projection's read of new events, prepared once (not per append). Columns as
    // decode_row expects them, then stream_version and the stream name.
    for (std::size_t i = 0; i < hook_->consumers(); ++i) {
      statement& st = inline_reads_.emplace_back();
      auto& types = inline_types_.emplace_back(stored_types(hook_->event_types(i)));
      if (types.empty()) continue;  // lists no event: nothing to read
      std::string sql =
          "SELECT e.position, e.event_id, e.type, e.recorded_at, e.metadata, e.payload, "
          "e.stream_version, s.name FROM events e JOIN streams s ON s.id = e.stream "
          "WHERE e.position > ?1 AND e.position <= ?2 AND e.type IN (";
      for (std::size_t i = 0; i < types.size(); ++i) {
        sql += fmt::format("{}?{}", i ? "," : "", i + 3);
      }
      sql += ") ORDER BY e.position";
      auto p = statement::prepare(writer_.get(), sql);
      if (!p) return std::move(p).error();
      st = std::move(p).value();
    }
    return {};
  }

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
    pending_append req(stream_id, expected, std::move(prepared).value());
    return group_.submit(req, [this](const std::vector<store::group_commit::request*>& batch) {
      commit_batch(batch);
    });
  }

  result<std::int64_t> read_stream(std::string_view stream_id, const read_stream_options& o,
                                   const event_visitor& visit) override {
    if (auto r = store::check_read(stream_id, o); !r) return r.error();
    auto r = checkout();
    if (!r) return std::move(r).error();
    lease lease(*this, std::move(r).value());
    reader& rd = *lease.r;

    std::int64_t sid, last_version;
    {
      reset_guard g(rd.stream_id);
      rd.stream_id.bind(1, stream_id);
      int rc = rd.stream_id.step();
      if (rc == SQLITE_DONE) return std::int64_t{0};
      if (rc != SQLITE_ROW) return sqlite::make_error(rc, "cannot read stream", rd.conn.get());
      sid = rd.stream_id.column_int64(0);
      last_version = rd.stream_id.column_int64(1);
    }
    bool forward = o.dir == direction::forward;
    std::int64_t next = forward ? std::max<std::int64_t>(o.from_version, 0)
                                : (o.from_version < 0 ? last_version : o.from_version);
    std::int64_t visited = 0;
    recorded_event ev;
    ev.stream_id = std::string(stream_id);
    statement& page = forward ? rd.stream_page_fwd : rd.stream_page_bwd;
    while (visited < o.max_count && next >= 0) {
      reset_guard g(page);
      page.bind(1, sid);
      page.bind(2, next);
      page.bind(3, std::min(page_size, o.max_count - visited));
      std::int64_t rows = 0;
      int rc;
      while ((rc = page.step()) == SQLITE_ROW) {
        ++rows;
        if (auto d = decode_row(page, 0, ev); !d) return d.error();
        ev.stream_version = page.column_int64(6);
        next = forward ? ev.stream_version + 1 : ev.stream_version - 1;
        if (auto u = upcast(ev, {}); !u) return u.error();
        ++visited;
        if (!visit(ev)) return visited;
      }
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot read stream", rd.conn.get());
      if (rows < page_size) break;
    }
    return visited;
  }

  result<std::int64_t> read_all(const read_all_options& o, const event_visitor& visit) override {
    if (auto r = store::check_read(o); !r) return r.error();
    // With upcasters, old stored types that are read as a wanted type are read too, and the
    // filter is applied again after upcasting.
    const std::vector<std::string> types = stored_types(o.event_types);
    auto r = checkout();
    if (!r) return std::move(r).error();
    lease lease(*this, std::move(r).value());
    reader& rd = *lease.r;

    // Filters become placeholders; the values are bound, never pasted.
    // No join per row: the stream name comes from the reader's id -> name cache.
    std::string sql =
        "SELECT position, event_id, type, recorded_at, metadata, payload, stream_version, "
        "stream FROM events WHERE position >= ?1";
    int next_param = 3;
    if (!o.stream_prefix.empty()) {
      sql += " AND stream IN (SELECT id FROM streams "
             "WHERE substr(CAST(name AS BLOB), 1, ?3) = CAST(?4 AS BLOB))";
      next_param = 5;
    }
    if (!types.empty()) {
      sql += " AND type IN (";
      for (std::size_t i = 0; i < types.size(); ++i) {
        sql += fmt::format("{}?{}", i ? "," : "", next_param + static_cast<int>(i));
      }
      sql += ")";
    }
    sql += " ORDER BY position LIMIT ?2";
    auto prepared = statement::prepare(rd.conn.get(), sql);
    if (!prepared) return std::move(prepared).error();
    statement page = std::move(prepared).value();

    std::int64_t next = std::max<std::int64_t>(o.from_position, 1);
    std::int64_t visited = 0;
    recorded_event ev;
    while (visited < o.max_count) {
      reset_guard g(page);
      page.bind(1, next);
      // Rows asked for, not rows visited, decide whether the page was the last: upcasting
      // may drop rows of old types that are no longer wanted.
      const std::int64_t asked = std::min(page_size, o.max_count - visited);
      page.bind(2, asked);
      if (!o.stream_prefix.empty()) {
        page.bind(3, static_cast<std::int64_t>(o.stream_prefix.size()));
        page.bind(4, o.stream_prefix);
      }
      for (std::size_t i = 0; i < types.size(); ++i) {
        page.bind(next_param + static_cast<int>(i), types[i]);
      }
      std::int64_t rows = 0;
      int rc;
      while ((rc = page.step()) == SQLITE_ROW) {
        ++rows;
        if (auto d = decode_row(page, 0, ev); !d) return d.error();
        ev.stream_version = page.column_int64(6);
        if (auto n = stream_name(rd, page.column_int64(7), ev.stream_id); !n) return n.error();
        next = ev.position + 1;
        auto u = upcast(ev, o.event_types);
        if (!u) return u.error();
        if (!*u) continue;
        ++visited;
        if (!visit(ev)) return visited;
      }
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot read $all", rd.conn.get());
      if (rows < asked) break;
    }
    return visited;
  }

  result<std::int64_t> stream_version(std::string_view stream_id) override {
    if (auto r = store::check_stream_id(stream_id); !r) return r.error();
    auto r = checkout();
    if (!r) return std::move(r).error();
    lease lease(*this, std::move(r).value());
    reset_guard g(lease.r->version);
    lease.r->version.bind(1, stream_id);
    int rc = lease.r->version.step();
    if (rc == SQLITE_DONE) return std::int64_t{-1};
    if (rc != SQLITE_ROW) {
      return sqlite::make_error(rc, "cannot read stream version", lease.r->conn.get());
    }
    return lease.r->version.column_int64(0);
  }

  const store::location& where() const noexcept override { return where_; }
  bool read_only() const noexcept override { return options_.read_only; }
  const std::shared_ptr<store::commit_signal>& commits() const noexcept override {
    return commits_;
  }

  result<std::int64_t> head_position() override {
    auto r = checkout();
    if (!r) return std::move(r).error();
    lease lease(*this, std::move(r).value());
    reset_guard g(lease.r->head);
    int rc = lease.r->head.step();
    if (rc != SQLITE_ROW) {
      return sqlite::make_error(rc, "cannot read head position", lease.r->conn.get());
    }
    return lease.r->head.column_int64(0);
  }

  result<std::optional<recorded_event>> find_event(std::string_view event_id) override {
    return store::find_event_by_id(
        *this, event_id,
        [&](const store::uuid_bytes& id) -> result<std::optional<std::int64_t>> {
          auto r = checkout();
          if (!r) return std::move(r).error();
          lease lease(*this, std::move(r).value());
          reset_guard g(lease.r->by_id);
          lease.r->by_id.bind(1, statement::blob{id.data(), id.size()});
          int rc = lease.r->by_id.step();
          if (rc == SQLITE_DONE) return std::optional<std::int64_t>{};
          if (rc != SQLITE_ROW) {
            return sqlite::make_error(rc, "cannot look up an event id", lease.r->conn.get());
          }
          return std::optional<std::int64_t>{lease.r->by_id.column_int64(0)};
        });
  }

  // Snapshots: their own connections and background writer (backends/sqlite/snapshot_writer).
  result<std::optional<snapshot_record>> read_snapshot(std::string_view stream_id,
                                                       std::string_view key) override {
    return snapshots_.read(stream_id, key);
  }
  void save_snapshot(snapshot_record snapshot) noexcept override {
    snapshots_.save(std::move(snapshot));
  }

  result<std::vector<stored_schema>> read_schemas(std::string_view type) override {
    if (!type.empty()) {
      if (auto r = store::check_event_type(type); !r) return r.error();
    }
    auto r = checkout();
    if (!r) return std::move(r).error();
    lease lease(*this, std::move(r).value());
    sqlite3* db = lease.r->conn.get();
    // A format-1 store opened read-only has no registry table: it has no schemas. (Tables are
    // never dropped, so checking first and reading after is safe.)
    auto has = query_int(db,
                         "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
                         "name = 'annals_schemas'",
                         "cannot read the schema registry");
    if (!has) return std::move(has).error();
    std::vector<stored_schema> out;
    if (has.value() == 0) return out;
    detail::sqlite_sql_connection conn(db);
    if (auto rows = store::read_schema_rows(conn, type, out); !rows) return rows.error();
    return out;
  }

  result<std::vector<registered_type>> register_schemas(
      const std::vector<schema_candidate>& candidates, const schema_check_fn& check) override {
    if (options_.read_only) {
      return error(errc::read_only, "the store was opened read-only: it cannot register schemas");
    }
    if (auto r = store::check_schema_candidates(candidates); !r) return r.error();
    if (candidates.empty()) return std::vector<registered_type>{};
    // The writer connection belongs to the group-commit leader: become the leader (waiting
    // for the batch in flight), so appends queue behind the registration and no second
    // connection competes for the write lock. Released on every path, exceptions included.
    store::group_commit::leadership lead(group_);
    return register_as_leader(candidates, check);
  }

 private:

  // register_schemas() once it holds the leadership: one BEGIN IMMEDIATE transaction.
  result<std::vector<registered_type>> register_as_leader(
      const std::vector<schema_candidate>& candidates, const schema_check_fn& check) {
    auto tx = db::transaction<connection>::begin(writer_, db::begin_sqlite_write,
                                                 "cannot start a write transaction");
    if (!tx) return tx.error();
    detail::sqlite_sql_connection conn(writer_.get());
    bool wrote = false;
    auto out = store::register_schema_rows(
        conn, candidates, check, options_.clock ? options_.clock() : store::system_clock_us(),
        wrote);
    if (!out) return out;  // rolled back
    if (wrote) {
      if (auto r = tx->commit("cannot commit the schema registration"); !r) return r.error();
    }  // else nothing written: rolled back
    // Still the leader: two registrations of this store object publish in order.
    stamps_.publish(*out);
    return out;
  }

  std::vector<std::string> stored_types(const std::vector<std::string>& wanted) const {
    return store::stored_types_for(options_.upcast.get(), wanted);
  }
  result<bool> upcast(recorded_event& ev, const std::vector<std::string>& wanted) const {
    return store::upcast_wanted(options_.upcast.get(), ev, wanted);
  }

  // Columns: position, event_id, type, recorded_at, metadata, payload.
  static result<void> decode_row(const statement& s, int first, recorded_event& ev) {
    ev.position = s.column_int64(first);
    auto id = s.column_blob(first + 1);
    if (id.size() != 16) {
      return error(errc::corruption,
                   fmt::format("event at position {} has a malformed event id", ev.position));
    }
    store::format_uuid(reinterpret_cast<const unsigned char*>(id.data()), ev.event_id);
    ev.type.assign(s.column_text(first + 2));
    ev.recorded_at_us = s.column_int64(first + 3);
    if (!store::decode_metadata(s.column_blob(first + 4), ev.metadata)) {
      return error(errc::corruption,
                   fmt::format("event at position {} has undecodable metadata", ev.position));
    }
    ev.payload.assign(s.column_blob(first + 5));
    return {};
  }

  static result<void> stream_name(reader& rd, std::int64_t id, std::string& out) {
    if (auto it = rd.names.find(id); it != rd.names.end()) {
      out.assign(it->second);
      return {};
    }
    reset_guard g(rd.name_of);
    rd.name_of.bind(1, id);
    int rc = rd.name_of.step();
    if (rc == SQLITE_DONE) {
      return error(errc::corruption, fmt::format("an event refers to stream #{}, which the "
                                                 "streams table does not have", id));
    }
    if (rc != SQLITE_ROW) return sqlite::make_error(rc, "cannot read $all", rd.conn.get());
    out.assign(rd.name_of.column_text(0));
    if (rd.names.size() >= max_cached_names) rd.names.clear();
    rd.names.emplace(id, out);
    return {};
  }

  // ---- writes -------------------------------------------------------------------------

  void commit_batch(const std::vector<store::group_commit::request*>& requests) {
    auto fail_all = [&](const error& e) {
      for (auto* p : requests) p->staged = e;
    };
    // One transaction for the batch, a savepoint for each append in it. Rolled back by its
    // destructor on every path that does not commit (nothing written, a failed COMMIT, an
    // exception).
    auto tx = db::transaction<connection>::begin(writer_, db::begin_sqlite_write,
                                                 "cannot start a write transaction");
    if (!tx) {
      fail_all(tx.error());
      return;
    }
    std::int64_t now = options_.clock ? options_.clock() : store::system_clock_us();
    bool wrote = false;
    for (auto* p : requests) {
      if (auto r = step(ws_.savepoint, "cannot start an append"); !r) {
        p->staged = r.error();
        continue;
      }
      auto r = apply_one(*p, now);
      if (r && !r->already_appended && !p->events.empty()) {
        if (auto x = apply_inline(r->position); !x) r = x.error();
      }
      if (r && !r->already_appended && !p->events.empty()) wrote = true;
      if (!r) {
        (void)step(ws_.rollback_to, "cannot undo a failed append");
      }
      (void)step(ws_.release, "cannot finish an append");
      p->staged = std::move(r);
    }
    if (!wrote) return;  // every append failed or was already there: nothing to commit
    auto r = fault::point(fault::store_append_before_commit);
    if (r) r = tx->commit("cannot commit appended events");
    if (!r) {
      tx->rollback();
      for (auto* p : requests) {
        // Nothing of this batch was written.
        if (p->staged && p->staged->ok()) p->staged = r.error();
      }
      return;
    }
    commits_->notify();
    if (auto f = fault::point(fault::store_append_after_commit); !f) {
      // Committed, but the appenders are told it failed: the outcome is unknown to them.
      for (auto* p : requests) {
        if (p->staged && p->staged->ok()) p->staged = f.error();
      }
    }
  }

  // Runs the commit hook (the inline projections) up to `last` inside the current append's
  // savepoint.
  result<void> apply_inline(std::int64_t last) {
    if (!hook_) return {};
    return hook_->committing(
        *inline_conn_, last,
        [&](std::size_t i, std::int64_t after, std::int64_t upto,
            const std::function<result<void>(const recorded_event&)>& visit) -> result<void> {
          statement& read = inline_reads_[i];
          if (!read.get()) return {};  // lists no event
          reset_guard g(read);
          read.bind(1, after);
          read.bind(2, upto);
          const auto& types = inline_types_[i];
          for (std::size_t t = 0; t < types.size(); ++t) {
            read.bind(static_cast<int>(t) + 3, types[t]);
          }
          recorded_event ev;
          int rc;
          while ((rc = read.step()) == SQLITE_ROW) {
            if (auto r = decode_row(read, 0, ev); !r) return r.error();
            ev.stream_version = read.column_int64(6);
            ev.stream_id.assign(read.column_text(7));
            auto wanted = upcast(ev, hook_->event_types(i));
            if (!wanted) return wanted.error();
            if (!*wanted) continue;
            if (auto v = visit(ev); !v) return v;
          }
          if (rc != SQLITE_DONE) {
            return sqlite::make_error(rc, "cannot read events for an inline projection",
                                      writer_.get());
          }
          return {};
        });
  }

  result<void> step(statement& s, std::string_view what) {
    reset_guard g(s);
    int rc = s.step();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return sqlite::make_error(rc, what, writer_.get());
    return {};
  }

  result<append_result> apply_one(pending_append& p, std::int64_t now) {
    std::int64_t sid = 0, current = -1;
    {
      reset_guard g(ws_.find_stream);
      ws_.find_stream.bind(1, p.stream_id);
      int rc = ws_.find_stream.step();
      if (rc == SQLITE_ROW) {
        sid = ws_.find_stream.column_int64(0);
        current = ws_.find_stream.column_int64(1);
      } else if (rc != SQLITE_DONE) {
        return sqlite::make_error(rc, "cannot read stream", writer_.get());
      }
    }
    if (!store::expected_matches(p.expected, current)) {
      if (!p.events.empty()) {
        auto again = check_already_appended(p);
        if (!again || again->has_value()) {
          if (!again) return std::move(again).error();
          return **again;
        }
      }
      return store::conflict_error(p.stream_id, p.expected, current);
    }
    if (p.events.empty()) return append_result{current, 0, false};

    if (sid == 0) {
      reset_guard g(ws_.insert_stream);
      ws_.insert_stream.bind(1, p.stream_id);
      ws_.insert_stream.bind(2, current + static_cast<std::int64_t>(p.events.size()));
      int rc = ws_.insert_stream.step();
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot create stream", writer_.get());
      sid = sqlite3_last_insert_rowid(writer_.get());
    } else {
      reset_guard g(ws_.update_stream);
      ws_.update_stream.bind(1, sid);
      ws_.update_stream.bind(2, current + static_cast<std::int64_t>(p.events.size()));
      int rc = ws_.update_stream.step();
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot update stream", writer_.get());
    }
    std::int64_t version = current;
    std::int64_t position = 0;
    for (const auto& e : p.events) {
      ++version;
      reset_guard g(ws_.insert_event);
      ws_.insert_event.bind(1, sid);
      ws_.insert_event.bind(2, version);
      ws_.insert_event.bind(3, statement::blob{e.id.data(), e.id.size()});
      ws_.insert_event.bind(4, e.type);
      ws_.insert_event.bind(5, now);
      if (e.metadata.empty()) {
        ws_.insert_event.bind(6, statement::null{});
      } else {
        ws_.insert_event.bind(6, statement::blob{e.metadata.data(), e.metadata.size()});
      }
      ws_.insert_event.bind(7, statement::blob{e.payload.data(), e.payload.size()});
      ws_.insert_event.bind(
          8, static_cast<std::int64_t>(store::event_checksum(
                 p.stream_id, version,
                 {reinterpret_cast<const char*>(e.id.data()), e.id.size()}, e.type, now,
                 e.metadata, e.payload)));
      int rc = ws_.insert_event.step();
      if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        // An event id is already stored. Undo and decide: idempotent retry, or misuse.
        ws_.insert_event.reset();
        (void)step(ws_.rollback_to, "cannot undo a failed append");
        auto again = check_already_appended(p);
        if (!again) return std::move(again).error();
        if (again->has_value()) return **again;
        return error(errc::corruption,
                     fmt::format("stream '{}' has an event at version {} that its stream row "
                                 "does not count",
                                 p.stream_id, version));
      }
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot append event", writer_.get());
      position = sqlite3_last_insert_rowid(writer_.get());
    }
    return append_result{version, position, false};
  }

  // If the append's event ids are already stored, at the versions this append would have
  // given them, returns the original result. If none is stored returns an empty optional.
  // If some are stored elsewhere returns invalid_argument naming one.
  result<std::optional<append_result>> check_already_appended(pending_append& p) {
    return store::judge_repeated_append(
        p.stream_id, p.expected, p.events,
        [&](const prepared_event& e) -> result<std::optional<store::stored_event_id>> {
          reset_guard g(ws_.find_event);
          ws_.find_event.bind(1, statement::blob{e.id.data(), e.id.size()});
          int rc = ws_.find_event.step();
          if (rc == SQLITE_DONE) return std::optional<store::stored_event_id>{};
          if (rc != SQLITE_ROW) {
            return sqlite::make_error(rc, "cannot look up event id", writer_.get());
          }
          return std::optional<store::stored_event_id>{store::stored_event_id{
              std::string(ws_.find_event.column_text(0)), ws_.find_event.column_int64(1),
              ws_.find_event.column_int64(2)}};
        });
  }


  // ---- reader pool --------------------------------------------------------------------

  result<std::unique_ptr<reader>> checkout() {
    {
      std::lock_guard lock(pool_mu_);
      if (!pool_.empty()) {
        auto r = std::move(pool_.back());
        pool_.pop_back();
        return r;
      }
    }
    auto c = connection::open(path_, SQLITE_OPEN_READONLY,
                              static_cast<int>(options_.busy_timeout_ms));
    if (!c) return std::move(c).error();
    auto r = std::make_unique<reader>();
    r->conn = std::move(c).value();
    constexpr const char* cols =
        "position, event_id, type, recorded_at, metadata, payload, stream_version";
    std::string fwd = fmt::format(
        "SELECT {} FROM events WHERE stream = ?1 AND stream_version >= ?2 "
        "ORDER BY stream_version LIMIT ?3",
        cols);
    std::string bwd = fmt::format(
        "SELECT {} FROM events WHERE stream = ?1 AND stream_version <= ?2 "
        "ORDER BY stream_version DESC LIMIT ?3",
        cols);
    auto p = statement::prepare_all(
        r->conn.get(), {{&r->stream_id, "SELECT id, version FROM streams WHERE name = ?1"},
                        {&r->stream_page_fwd, fwd},
                        {&r->stream_page_bwd, bwd},
                        {&r->head, "SELECT coalesce(max(position), 0) FROM events"},
                        {&r->version, "SELECT version FROM streams WHERE name = ?1"},
                        {&r->name_of, "SELECT name FROM streams WHERE id = ?1"},
                        {&r->by_id, "SELECT position FROM events WHERE event_id = ?1"}});
    if (!p) return p.error();
    return r;
  }

  struct lease {
    lease(sqlite_store& s, std::unique_ptr<reader> rd) : store(s), r(std::move(rd)) {}
    ~lease() {
      std::lock_guard lock(store.pool_mu_);
      if (store.pool_.size() < 8) store.pool_.push_back(std::move(r));
    }
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    sqlite_store& store;
    std::unique_ptr<reader> r;
  };

  std::string path_;
  const store::location where_;
  sqlite_options options_;

  connection writer_;  // used only by the current leader
  writer_statements ws_;
  std::shared_ptr<store::commit_signal> commits_;  // this file's, shared in this process
  std::shared_ptr<store::commit_hook> hook_;  // the inline projections; null: none
  std::unique_ptr<detail::sqlite_sql_connection> inline_conn_;  // borrows writer_; leader only
  std::vector<statement> inline_reads_;  // per inline projection, on writer_; leader only
  std::vector<std::vector<std::string>> inline_types_;  // the stored types each one selects
  // The schema version this store object stamps per type: the versions that register_schemas
  // registered (or found) for THIS process's descriptors, even if another process has since
  // stored newer ones. Null until the first registration. Replaced (never modified) by a
  // registration while it holds the leadership.
  store::schema_stamps stamps_;
  store::group_commit group_;  // appends and registrations take turns on writer_

  std::mutex pool_mu_;
  std::vector<std::unique_ptr<reader>> pool_;
  // Last member: destroyed first, flushing queued snapshot saves (bounded wait).
  sqlite::snapshot_writer snapshots_{path_, options_.read_only};
};

// Refuses, before anything is written, a database that is certainly not an Annals store: one
// with another application id, or with tables and no Annals header. Opening the store changes
// the file (journal_mode=WAL persists), so this runs first: a foreign database, opened by
// mistake, is left exactly as it was. On a file that is not SQLite at all, this is where
// SQLite first reads the header and reports NOTADB. ensure_schema() checks again under the
// write lock. Both values come from one statement, so one snapshot: read separately, another
// process creating the store in between would make a new store look foreign.
result<void> refuse_foreign(connection& c, const std::string& path) {
  auto st = statement::prepare(c.get(),
                               "SELECT (SELECT application_id FROM pragma_application_id), "
                               "(SELECT count(*) FROM sqlite_schema)");
  if (!st) return std::move(st).error();
  int rc = st->step();
  if (rc != SQLITE_ROW) return sqlite::make_error(rc, "cannot read the store header", c.get());
  std::int64_t app = st->column_int64(0), tables = st->column_int64(1);
  if (app == application_id) return {};
  if (app != 0) {
    return error(errc::corruption,
                 fmt::format("'{}' is not an Annals store (SQLite application_id is {:#x})", path,
                             app));
  }
  if (tables != 0) {
    return error(errc::corruption,
                 fmt::format("'{}' is a SQLite database but not an Annals store "
                             "(it has other tables and no Annals header)",
                             path));
  }
  return {};
}

// Upgrades a format-1 or format-2 store to the current format in one write transaction: the
// format-2 tables, then the checksum column. The format is read again under the write lock,
// since another process may be upgrading the same file.
result<void> upgrade_format(connection& c, const std::string& path) {
  auto tx = db::transaction<connection>::begin(c, db::begin_sqlite_write,
                                               "cannot upgrade the store format");
  if (!tx) return tx.error();
  auto version = query_int(c.get(), "PRAGMA user_version", "cannot read the store header");
  if (!version) return std::move(version).error();
  const std::string what =
      fmt::format("cannot upgrade '{}' to storage format {}", path, format_version);
  for (auto [below, sql] : {std::pair{2, format2_sql}, std::pair{3, format3_sql},
                            std::pair{format_version, set_format_sql}}) {
    if (version.value() >= below) continue;
    if (auto r = c.exec(sql, what); !r) return r;
  }
  return tx->commit("cannot upgrade the store format");
}

// Creates the schema in an empty database, or checks that an existing one is ours.
result<void> ensure_schema(connection& c, const std::string& path, bool read_only) {
  auto app = query_int(c.get(), "PRAGMA application_id", "cannot read the store header");
  if (!app) return std::move(app).error();
  if (app.value() == 0 && !read_only) {
    auto tx = db::transaction<connection>::begin(c, db::begin_sqlite_write,
                                                 "cannot initialize the store");
    if (!tx) return tx.error();
    // Checked again inside the write lock: another process may have just created it.
    app = query_int(c.get(), "PRAGMA application_id", "cannot read the store header");
    auto tables = query_int(c.get(), "SELECT count(*) FROM sqlite_schema", "cannot read schema");
    if (!app || !tables) return !app ? std::move(app).error() : std::move(tables).error();
    if (app.value() == 0 && tables.value() != 0) {
      return error(errc::corruption,
                   fmt::format("'{}' is a SQLite database but not an Annals store "
                               "(it has other tables and no Annals header)",
                               path));
    }
    if (app.value() == 0) {
      for (const char* sql : {schema_sql, format2_sql, set_format_sql}) {
        if (auto r = c.exec(sql, "cannot create the store schema"); !r) return r;
      }
    }
    if (auto r = tx->commit("cannot initialize the store"); !r) return r;
    app = application_id;
  }
  if (app.value() != application_id) {
    return error(errc::corruption,
                 fmt::format("'{}' is not an Annals store (SQLite application_id is {:#x})", path,
                             app.value()));
  }
  auto version = query_int(c.get(), "PRAGMA user_version", "cannot read the store header");
  if (!version) return std::move(version).error();
  if (version.value() > format_version) {
    return error(errc::corruption,
                 fmt::format("'{}' has storage format {}, newer than this Annals knows ({})", path,
                             version.value(), format_version));
  }
  if (version.value() < format_version && !read_only) return upgrade_format(c, path);
  // A read-only store of format 1 or 2 stays as it is: format 1 simply has no schemas
  // (read_schemas() checks whether the table exists); neither has checksums (reads do not
  // select the column; verify checks whether it exists).
  return {};
}

}  // namespace

result<std::unique_ptr<event_store>> store::open_sqlite(const std::string& path,
                                                       sqlite_options options,
                                                       std::shared_ptr<commit_hook> hook) {
  if (path.empty() || path.find('\0') != std::string::npos) {
    return error(errc::invalid_argument, "store path is empty or contains NUL");
  }
  if (options.busy_timeout_ms < 0 || options.busy_timeout_ms > INT_MAX) {
    return error(errc::invalid_argument,
                 fmt::format("busy_timeout_ms must be between 0 and {}", INT_MAX));
  }
  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && (!options.create_if_missing || options.read_only)) {
    return error(errc::not_found, fmt::format("store file '{}' does not exist", path));
  }
  if (exists && S_ISDIR(st.st_mode)) {
    return error(errc::io, fmt::format("'{}' is a directory, not a store file", path));
  }
  // On a read-only file system a writable WAL store cannot even be read (its -shm file cannot
  // be created): say so instead of SQLite's "unable to open database file".
  if (exists && !options.read_only && ::access(path.c_str(), W_OK) != 0 && errno == EROFS) {
    return error(errc::read_only, fmt::format("store file '{}' is on a read-only file system: open it "
                                       "read-only to read it",
                                       path));
  }
  int flags = options.read_only ? SQLITE_OPEN_READONLY
                                : SQLITE_OPEN_READWRITE |
                                      (options.create_if_missing ? SQLITE_OPEN_CREATE : 0);
  auto c = connection::open(path, flags, static_cast<int>(options.busy_timeout_ms));
  if (!c) return std::move(c).error();
  connection conn = std::move(c).value();
  if (!options.read_only) {
    if (auto r = refuse_foreign(conn, path); !r) return r.error();
    // WAL is persistent in the file; setting it again is cheap.
    auto mode = statement::prepare(conn.get(), "PRAGMA journal_mode=WAL");
    if (!mode) return std::move(mode).error();
    // Switching a new file to WAL takes an exclusive lock without calling the busy handler:
    // when several processes open a new store at once, some get SQLITE_BUSY immediately.
    // Retry until the busy timeout, as every other locked step waits.
    auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options.busy_timeout_ms);
    int rc;
    for (int attempt = 1;; ++attempt) {
      rc = mode->step();
      if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline) break;
      mode->reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(attempt, 10)));
    }
    if (rc != SQLITE_ROW) {
      return sqlite::make_error(rc, fmt::format("cannot open store '{}'", path), conn.get());
    }
    if (mode->column_text(0) != "wal") {
      return error(errc::io, fmt::format("store '{}' cannot use WAL journaling", path));
    }
  }
  if (auto r = ensure_schema(conn, path, options.read_only); !r) return r.error();
  const char* sync = options.sync == durability::full ? "PRAGMA synchronous=FULL"
                                                      : "PRAGMA synchronous=NORMAL";
  if (auto r = conn.exec(sync, "cannot set durability"); !r) return r.error();
  // A read-only store never appends; an older format's events table has no checksum column to
  // prepare the insert against.
  auto ws = options.read_only ? result<writer_statements>(writer_statements{})
                              : writer_statements::prepare(conn.get());
  if (!ws) return std::move(ws).error();
  // Reader connections open later: use the absolute file name, so a chdir() in between cannot
  // send reads to another file.
  const char* absolute = sqlite3_db_filename(conn.get(), "main");
  std::string file = absolute && *absolute ? std::string(absolute) : path;
  auto store = std::make_unique<sqlite_store>(file, std::move(options), std::move(hook),
                                              std::move(conn), std::move(ws).value());
  if (auto r = store->init_inline(); !r) return r.error();
  return std::unique_ptr<event_store>(std::move(store));
}

}  // namespace annals
