// The PostgreSQL event store. Layout and the gap-free argument: docs/storage-format.md.
//
// Writes: each append is one READ COMMITTED transaction on a pooled connection. It first takes
// a transaction-level advisory lock on a fixed key (the store's write lock, one per database),
// then reads the stream's version and the head position and inserts the events at head+1...
// The lock is released only after the commit is visible, so positions are assigned in commit
// order and a reader of $all never skips an event that commits later. Concurrency across
// processes is the same lock; the unique (stream, stream_version) constraint stands behind it.
//
// Reads: every page is one statement in autocommit (its own snapshot); events are immutable
// and positions dense, so pages by version or position neither lose nor repeat events. Rows
// arrive one at a time (single-row mode), so a page of large events is never held whole.
#include "store/postgres/pg.hpp"
#include "store/prepared.hpp"

#include <annals/upcaster.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <mutex>

namespace annals {
namespace {

using pg::connection;
using pg::params;
using store::prepared_event;

constexpr std::int64_t format_version = 1;
constexpr std::int64_t page_size = 2048;
constexpr std::size_t insert_chunk = 500;  // events per INSERT statement (6 params each)

// Advisory lock keys (64-bit, per database): "ANNL" then a small number.
#define ANNALS_PG_WRITE_LOCK "4705784748973228033"   // 0x414E4E4C00000001
#define ANNALS_PG_SCHEMA_LOCK "4705784748973228034"  // 0x414E4E4C00000002
static_assert(0x414E4E4C00000001LL == 4705784748973228033LL);

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
  CONSTRAINT annals_events_stream_version_key UNIQUE (stream, stream_version),
  CONSTRAINT annals_events_event_id_key UNIQUE (event_id)
);
INSERT INTO annals_meta(key, value) VALUES ('format', 1) ON CONFLICT (key) DO NOTHING;
)sql";

const std::string event_cols =
    "e.position, e.event_id, e.type, e.recorded_at, e.metadata, e.payload, e.stream_version";

struct pending_append {
  std::string_view stream_id;
  expected_version expected;
  std::vector<prepared_event> events;
};

class pg_store final : public event_store {
 public:
  pg_store(std::string uri, postgres_options o) : uri_(std::move(uri)), options_(std::move(o)) {}

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
    if (c->healthy() && !c->idle()) (void)c->exec_simple("rollback", "ROLLBACK");
    if (!c->idle()) return;  // broken or stuck: closed, not pooled
    std::lock_guard lock(pool_mu_);
    if (idle_.size() < options_.pool_size) idle_.push_back(std::move(c));
  }

  const postgres_options& options() const noexcept { return options_; }

  // ---- appends --------------------------------------------------------------------------

  result<append_result> append(std::string_view stream_id, expected_version expected,
                               std::vector<event_data> events) override {
    if (options_.read_only) {
      return error(errc::invalid_argument, "the store was opened read-only");
    }
    auto prepared = store::prepare_append(stream_id, events, options_.id_source, nullptr);
    if (!prepared) return std::move(prepared).error();
    if (expected.form() == expected_version::kind::exact && expected.version() < 0) {
      return error(errc::invalid_argument,
                   fmt::format("expected version {} is negative; use no_stream() for a stream "
                               "that must not exist",
                               expected.version()));
    }
    pending_append p{stream_id, expected, std::move(prepared).value()};
    auto c = checkout();
    if (!c) return std::move(c).error();
    lease conn(*this, std::move(c).value());  // rolls back whatever is left open
    try {
      return append_in_tx(*conn.conn, p);
    } catch (const std::exception& e) {
      return error(errc::io, fmt::format("append failed: {}", e.what()));
    } catch (...) {
      return error(errc::io, "append failed: unknown exception");
    }
  }

  result<append_result> append_in_tx(connection& c, pending_append& p) {
    if (auto r = c.exec_simple("cannot start a write transaction",
                               "BEGIN ISOLATION LEVEL READ COMMITTED");
        !r) {
      return r.error();
    }
    // The write lock. Everything below runs with it held, until COMMIT or ROLLBACK.
    if (auto r = c.exec("cannot take the store's write lock",
                        "SELECT pg_advisory_xact_lock(" ANNALS_PG_WRITE_LOCK ")", params{});
        !r) {
      return std::move(r).error();
    }
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
    bool matches = false;
    switch (p.expected.form()) {
      case expected_version::kind::any: matches = true; break;
      case expected_version::kind::no_stream: matches = current == -1; break;
      case expected_version::kind::stream_exists: matches = current >= 0; break;
      case expected_version::kind::exact: matches = current == p.expected.version(); break;
    }
    if (!matches) {
      if (!p.events.empty()) {
        auto again = check_already_appended(c, p);
        if (!again) return std::move(again).error();
        if (again->has_value()) return **again;
      }
      return conflict(p, current);
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
    for (std::size_t first = 0; first < p.events.size(); first += insert_chunk) {
      std::size_t count = std::min(insert_chunk, p.events.size() - first);
      std::string sql =
          "INSERT INTO annals_events(stream, recorded_at, position, stream_version, event_id, "
          "type, metadata, payload) VALUES ";
      params q;
      q.reserve(2 + 6 * count);
      q.add_int8(sid).add_int8(now);
      for (std::size_t i = 0; i < count; ++i) {
        const auto& e = p.events[first + i];
        auto k = static_cast<std::int64_t>(first + i);
        int b = 3 + 6 * static_cast<int>(i);
        sql += fmt::format("{}($1, $2, ${}, ${}, ${}, ${}, ${}, ${})", i ? ", " : "", b, b + 1,
                           b + 2, b + 3, b + 4, b + 5);
        q.add_int8(head + 1 + k).add_int8(current + 1 + k);
        q.add_bytea({reinterpret_cast<const char*>(e.id.data()), e.id.size()});
        q.add_text(e.type);
        if (e.metadata.empty()) {
          q.add_null_bytea();
        } else {
          q.add_bytea(e.metadata);
        }
        q.add_bytea(e.payload);
      }
      pg::failure why;
      auto r = c.exec("cannot append events", sql, q, count == 1 || count == insert_chunk, &why);
      if (!r) {
        if (why.sqlstate != "23505") return std::move(r).error();
        (void)c.exec_simple("cannot roll back", "ROLLBACK");
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
        return conflict(p, v ? v.value() : current);
      }
    }
    if (auto r = c.exec_simple("cannot commit appended events", "COMMIT"); !r) return r.error();
    store::notify_commit();
    return append_result{current + n, head + n, false};
  }

  // If the append's event ids are already stored, at the versions this append would have
  // given them, returns the original result. If none is stored returns an empty optional.
  // If some are stored elsewhere returns invalid_argument naming one. (As the SQLite store.)
  result<std::optional<append_result>> check_already_appended(connection& c,
                                                              const pending_append& p) {
    std::int64_t first_version = -1;
    append_result original{-1, 0, true};
    std::size_t found = 0;
    std::string mismatch;
    for (std::size_t i = 0; i < p.events.size(); ++i) {
      const auto& e = p.events[i];
      params q;
      q.add_bytea({reinterpret_cast<const char*>(e.id.data()), e.id.size()});
      auto r = c.exec("cannot look up event id",
                      "SELECT s.name, e.stream_version, e.position FROM annals_events e "
                      "JOIN annals_streams s ON s.id = e.stream WHERE e.event_id = $1",
                      q);
      if (!r) return std::move(r).error();
      if (PQntuples(r->get()) == 0) continue;
      ++found;
      auto stream = pg::get_bytes(r->get(), 0, 0);
      std::int64_t version = pg::get_int8(r->get(), 0, 1);
      if (i == 0) first_version = version;
      bool in_place = stream == p.stream_id && first_version >= 0 &&
                      version == first_version + static_cast<std::int64_t>(i);
      if (!in_place && mismatch.empty()) {
        mismatch = fmt::format("event id {} is already stored in stream '{}' at version {}",
                               store::format_uuid(e.id.data()), stream, version);
      }
      original.stream_version = version;
      original.position = pg::get_int8(r->get(), 0, 2);
    }
    if (found == 0) return std::optional<append_result>{};
    bool expected_ok = true;
    switch (p.expected.form()) {
      case expected_version::kind::no_stream: expected_ok = first_version == 0; break;
      case expected_version::kind::exact:
        expected_ok = first_version - 1 == p.expected.version();
        break;
      default: break;
    }
    if (found == p.events.size() && mismatch.empty() && expected_ok) {
      return std::optional<append_result>{original};
    }
    if (mismatch.empty()) {
      mismatch = found == p.events.size()
                     ? fmt::format("these event ids are already stored in stream '{}' from "
                                   "version {}, not where expected version {} puts them",
                                   p.stream_id, first_version, p.expected.to_string())
                     : "some, not all, of this append's event ids are already stored";
    }
    return error(errc::invalid_argument,
                 mismatch + "; an append may only be repeated with the same ids at the same "
                            "versions");
  }

  static error conflict(const pending_append& p, std::int64_t current) {
    conflict_details d{std::string(p.stream_id), p.expected.to_string(), current};
    auto msg = fmt::format("concurrency conflict on stream '{}': expected version {}, actual {}",
                           p.stream_id, d.expected,
                           current < 0 ? std::string("no_stream") : std::to_string(current));
    return error(std::move(d), std::move(msg));
  }

  // ---- reads ----------------------------------------------------------------------------

  result<std::int64_t> read_stream(std::string_view stream_id, const read_stream_options& o,
                                   const event_visitor& visit) override {
    if (auto r = store::check_stream_id(stream_id); !r) return r.error();
    if (o.max_count < 0) return error(errc::invalid_argument, "max_count must not be negative");
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
    if (o.max_count < 0) return error(errc::invalid_argument, "max_count must not be negative");
    for (const auto& t : o.event_types) {
      if (auto r = store::check_event_type(t); !r) return r.error();
    }
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

  result<std::int64_t> head_position() override {
    auto checked_out = checkout();
    if (!checked_out) return std::move(checked_out).error();
    lease l(*this, std::move(checked_out).value());
    auto r = l.conn->exec("cannot read head position",
                           "SELECT coalesce(max(position), 0)::int8 FROM annals_events", params{});
    if (!r) return std::move(r).error();
    return pg::get_int8(r->get(), 0, 0);
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

  std::vector<std::string> stored_types(const std::vector<std::string>& wanted) const {
    if (!options_.upcast || options_.upcast->empty() || wanted.empty()) return wanted;
    return options_.upcast->stored_types_for(wanted);
  }

  result<bool> upcast(recorded_event& ev, const std::vector<std::string>& wanted) const {
    if (!options_.upcast || options_.upcast->empty()) return true;
    if (auto u = options_.upcast->apply(ev); !u) return u.error();
    return wanted.empty() || std::find(wanted.begin(), wanted.end(), ev.type) != wanted.end();
  }

  std::string uri_;
  postgres_options options_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<connection>> idle_;
};

// Creates the tables when missing (one transaction, serialized against other processes by an
// advisory lock), or checks that the existing ones are of a format this build knows.
result<void> ensure_schema(connection& c, const postgres_options& o) {
  auto exists = [&]() -> result<bool> {
    auto r = c.exec("cannot read the store's tables",
                    "SELECT count(*) FROM pg_catalog.pg_class "
                    "WHERE oid = to_regclass('annals_meta')",
                    params{}, false);
    if (!r) return std::move(r).error();
    return pg::get_int8(r->get(), 0, 0) != 0;
  };
  auto have = exists();
  if (!have) return std::move(have).error();
  if (!*have) {
    if (o.read_only || !o.create_if_missing) {
      return error(errc::not_found, "the database holds no Annals store (no annals_meta table)");
    }
    if (auto r = c.exec_simple("cannot create the store's tables",
                               "BEGIN; SELECT pg_advisory_xact_lock(" ANNALS_PG_SCHEMA_LOCK ")");
        !r) {
      (void)c.exec_simple("rollback", "ROLLBACK");
      return r;
    }
    if (auto r = c.exec_simple("cannot create the store's tables", create_sql); !r) {
      (void)c.exec_simple("rollback", "ROLLBACK");
      return r;
    }
    if (auto r = c.exec_simple("cannot create the store's tables", "COMMIT"); !r) return r;
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
  return {};
}

}  // namespace

result<std::unique_ptr<event_store>> open_postgres_store(const std::string& uri,
                                                         postgres_options options) {
  if (uri.empty() || uri.find('\0') != std::string::npos) {
    return error(errc::invalid_argument, "PostgreSQL URI is empty or contains NUL");
  }
  if (options.lock_timeout_ms < 0) {
    return error(errc::invalid_argument, "lock_timeout_ms must not be negative");
  }
  auto store = std::make_unique<pg_store>(uri, std::move(options));
  auto c = store->checkout();
  if (!c) return std::move(c).error();
  pg_store::lease conn(*store, std::move(c).value());
  if (auto r = ensure_schema(*conn.conn, store->options()); !r) return r.error();
  return std::unique_ptr<event_store>(std::move(store));
}

}  // namespace annals
