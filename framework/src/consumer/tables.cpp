#include "consumer/tables.hpp"

#include "projection/internal.hpp"

#include <fmt/format.h>

#include <vector>

namespace annals::detail {

namespace {

constexpr const char* sqlite_tables_sql = R"sql(
CREATE TABLE IF NOT EXISTS annals_consumers(
  kind           TEXT NOT NULL,
  name           TEXT NOT NULL,
  checkpoint     INTEGER NOT NULL,
  version        INTEGER NOT NULL DEFAULT 0,
  filter         TEXT NOT NULL DEFAULT '',
  delivered      INTEGER NOT NULL DEFAULT 0,
  owner          TEXT,
  lease_until    INTEGER NOT NULL DEFAULT 0,
  stuck_position INTEGER,
  error          TEXT NOT NULL DEFAULT '',
  events_per_s   REAL NOT NULL DEFAULT 0,
  updated_at     INTEGER NOT NULL,
  PRIMARY KEY(kind, name)
);
CREATE TABLE IF NOT EXISTS annals_consumer_parked(
  kind           TEXT NOT NULL,
  consumer       TEXT NOT NULL,
  position       INTEGER NOT NULL,
  stream_id      TEXT NOT NULL,
  stream_version INTEGER NOT NULL DEFAULT -1,
  event_id       TEXT NOT NULL,
  type           TEXT NOT NULL,
  error          TEXT NOT NULL,
  attempts       INTEGER NOT NULL,
  parked_at      INTEGER NOT NULL,
  state          TEXT NOT NULL,
  resolved_at    INTEGER,
  PRIMARY KEY(kind, consumer, position)
);
)sql";

// The same on PostgreSQL: 64-bit integers, and names compared byte by byte.
constexpr const char* pg_tables_sql = R"sql(
CREATE TABLE IF NOT EXISTS annals_consumers(
  kind           TEXT COLLATE "C" NOT NULL,
  name           TEXT COLLATE "C" NOT NULL,
  checkpoint     BIGINT NOT NULL,
  version        BIGINT NOT NULL DEFAULT 0,
  filter         TEXT NOT NULL DEFAULT '',
  delivered      BIGINT NOT NULL DEFAULT 0,
  owner          TEXT,
  lease_until    BIGINT NOT NULL DEFAULT 0,
  stuck_position BIGINT,
  error          TEXT NOT NULL DEFAULT '',
  events_per_s   DOUBLE PRECISION NOT NULL DEFAULT 0,
  updated_at     BIGINT NOT NULL,
  PRIMARY KEY(kind, name)
);
CREATE TABLE IF NOT EXISTS annals_consumer_parked(
  kind           TEXT COLLATE "C" NOT NULL,
  consumer       TEXT COLLATE "C" NOT NULL,
  position       BIGINT NOT NULL,
  stream_id      TEXT NOT NULL,
  stream_version BIGINT NOT NULL DEFAULT -1,
  event_id       TEXT NOT NULL,
  type           TEXT NOT NULL,
  error          TEXT NOT NULL,
  attempts       BIGINT NOT NULL,
  parked_at      BIGINT NOT NULL,
  state          TEXT NOT NULL,
  resolved_at    BIGINT,
  PRIMARY KEY(kind, consumer, position)
);
)sql";

// One old table: its name, and the SELECT of its rows in the new table's columns (also the
// branch of the read-only union over it).
struct old_table {
  const char* name;
  bool parked;  // into annals_consumer_parked (else annals_consumers)
  const char* select;
};

constexpr const char* consumer_columns =
    "kind, name, checkpoint, version, filter, delivered, owner, lease_until, stuck_position, "
    "error, events_per_s, updated_at";
constexpr const char* parked_columns =
    "kind, consumer, position, stream_id, stream_version, event_id, type, error, attempts, "
    "parked_at, state, resolved_at";

// Each column named as in the new tables, so that a UNION ALL of them reads like those.
const old_table old_tables[] = {
    {"annals_projections", false,
     "SELECT 'projection' AS kind, name AS name, checkpoint AS checkpoint, version AS version, "
     "'' AS filter, 0 AS delivered, CAST(NULL AS TEXT) AS owner, 0 AS lease_until, "
     "stuck_position AS stuck_position, coalesce(error, '') AS error, "
     "events_per_s AS events_per_s, updated_at AS updated_at FROM annals_projections"},
    {"annals_subscriptions", false,
     "SELECT 'subscription' AS kind, name AS name, checkpoint AS checkpoint, 0 AS version, "
     "filter AS filter, delivered AS delivered, owner AS owner, lease_until AS lease_until, "
     "CAST(NULL AS BIGINT) AS stuck_position, last_error AS error, 0.0 AS events_per_s, "
     "updated_at AS updated_at FROM annals_subscriptions"},
    {"annals_parked", true,
     "SELECT 'projection' AS kind, projection AS consumer, position AS position, "
     "stream_id AS stream_id, stream_version AS stream_version, event_id AS event_id, "
     "type AS type, error AS error, attempts AS attempts, parked_at AS parked_at, "
     "state AS state, resolved_at AS resolved_at FROM annals_parked"},
    {"annals_sub_parked", true,
     "SELECT 'subscription' AS kind, subscription AS consumer, position AS position, "
     "stream_id AS stream_id, -1 AS stream_version, event_id AS event_id, type AS type, "
     "error AS error, attempts AS attempts, parked_at AS parked_at, state AS state, "
     "resolved_at AS resolved_at FROM annals_sub_parked"},
};

result<void> run(sql_connection& c, const std::string& sql) {
  auto r = c.run(sql, nullptr, 0);
  if (!r) return r.error();
  return {};
}

// The storage format that brought these tables (SQLite, PostgreSQL; the stores' format_version
// in backends/*/..._store.cpp), and the one before it.
constexpr std::int64_t sqlite_format = 4;
constexpr std::int64_t pg_format = 3;

result<std::int64_t> stored_format(sql_connection& c, bool pg) {
  std::int64_t v = -1;
  auto r = c.query(pg ? "SELECT value FROM annals_meta WHERE key = 'format'"
                      : "PRAGMA user_version",
                   nullptr, 0, [&](const sql_row& row) {
                     v = row.int64(0);
                     return false;
                   });
  if (!r) return std::move(r).error();
  return v;
}

// Before moving rows out of the old tables: the store must be of the format just before these
// tables (set to theirs here, in the same transaction, so that a build knowing only the old
// tables refuses it from now on), or already of theirs; and the new tables must not hold rows
// already (an older build, running since before the upgrade, recreated the old tables).
result<void> claim_format(sql_connection& c, bool pg) {
  const std::int64_t now = pg ? pg_format : sqlite_format;
  auto v = stored_format(c, pg);
  if (!v) return std::move(v).error();
  if (v.value() < now - 1) {
    return error(errc::invalid_argument,
                 fmt::format("the store has storage format {}: open it writable with "
                             "annals::open_store once (which upgrades it) before moving its "
                             "consumer tables",
                             v.value()));
  }
  auto both = table_exists(c, consumers_table);
  if (!both) return std::move(both).error();
  if (both.value()) {
    return error(errc::corruption,
                 "the store has both the consumer tables (annals_consumers) and those of the "
                 "format before them (annals_projections or annals_subscriptions): a build older "
                 "than the consumer tables wrote to it after the upgrade. Stop it; then keep "
                 "the rows you trust and drop the others (docs/storage-format.md)");
  }
  if (v.value() == now) return {};
  if (!pg) return run(c, fmt::format("PRAGMA user_version = {}", now));  // a PRAGMA binds nothing
  const sql_value format{static_cast<long long>(now)};
  auto r = c.run("UPDATE annals_meta SET value = ?1 WHERE key = 'format'", &format, 1);
  if (!r) return r.error();
  return {};
}

result<void> migrate(sql_connection& c, bool create) {
  const bool pg = c.dialect() == sql_dialect::postgres;
  if (pg) {
    if (auto r = c.exec(pg_ddl_lock_sql, "cannot lock the consumer tables"); !r) return r;
  }
  // Under the write lock (SQLite) or the DDL lock (PostgreSQL): another process may have
  // migrated meanwhile.
  std::vector<const old_table*> present;
  for (const auto& t : old_tables) {
    auto e = table_exists(c, t.name);
    if (!e) return std::move(e).error();
    if (e.value()) present.push_back(&t);
  }
  if (!create && present.empty()) return {};
  if (!present.empty()) {
    if (auto r = claim_format(c, pg); !r) return r;
  }
  if (auto r = c.exec(pg ? pg_tables_sql : sqlite_tables_sql, "cannot create the consumer tables");
      !r) {
    return r;
  }
  for (const auto* t : present) {
    auto copy = fmt::format("INSERT INTO {}({}) {}",
                            t->parked ? consumer_parked_table : consumers_table,
                            t->parked ? parked_columns : consumer_columns, t->select);
    if (auto r = run(c, copy); !r) {
      return error(r.error().kind(), fmt::format("cannot move {} into the consumer tables: {}",
                                                 t->name, r.error().message()));
    }
  }
  for (const auto* t : present) {
    if (auto r = run(c, fmt::format("DROP TABLE {}", t->name)); !r) return r;
  }
  if (!present.empty()) c.clear_cache();
  return {};
}

}  // namespace

result<void> create_consumer_tables(sql_connection& c) { return migrate(c, true); }

result<void> migrate_consumer_tables(sql_connection& c) { return migrate(c, false); }

result<consumer_sources> reading_sources(const table_probe& exists) {
  consumer_sources out;
  auto now = exists(consumers_table);
  if (!now) return std::move(now).error();
  if (now.value()) {
    out.consumers = consumers_table;
    out.parked = consumer_parked_table;
    return out;
  }
  // Not migrated (a read-only open of an older store): the old tables, as the new ones.
  std::string consumers;
  std::string parked;
  for (const auto& t : old_tables) {
    auto e = exists(t.name);
    if (!e) return std::move(e).error();
    if (!e.value()) continue;
    auto& into = t.parked ? parked : consumers;
    if (!into.empty()) into += " UNION ALL ";
    into += t.select;
  }
  if (!consumers.empty()) out.consumers = "(" + consumers + ")";
  if (!parked.empty()) out.parked = "(" + parked + ")";
  return out;
}

result<consumer_sources> reading_sources(sql_connection& c) {
  return reading_sources([&](std::string_view t) { return table_exists(c, t); });
}

result<bool> has_consumer(sql_connection& c, const consumer_sources& src, std::string_view kind,
                          std::string_view name) {
  if (src.consumers.empty()) return false;
  bool found = false;
  auto tx = sql_tx_access::make(c);
  auto r = tx.query(
      fmt::format("SELECT 1 FROM {} c WHERE c.kind = ?1 AND c.name = ?2", src.consumers),
      {kind, name}, [&](const sql_row&) {
        found = true;
        return false;
      });
  if (!r) return std::move(r).error();
  return found;
}

result<std::vector<parked_event>> read_parked(sql_tx& tx, std::string_view kind,
                                              std::string_view name,
                                              std::string_view parked_source) {
  std::vector<parked_event> out;
  if (parked_source.empty()) return out;
  auto q = tx.query(
      fmt::format("SELECT position, stream_id, stream_version, event_id, type, error, "
                  "attempts, parked_at, state FROM {} p WHERE p.kind = ?1 AND p.consumer = ?2 "
                  "ORDER BY position",
                  parked_source),
      {kind, name}, [&](const sql_row& row) {
        out.push_back({row.int64(0), row.text(1), row.int64(2), row.text(3), row.text(4),
                       row.text(5), static_cast<int>(row.int64(6)), row.int64(7), row.text(8)});
        return true;
      });
  if (!q) return q.error();
  return out;
}

std::string consumer_text(std::string_view s) {
  if (s.size() > 2000) {
    s = s.substr(0, 2000);
    // Do not cut a UTF-8 character in two.
    for (int i = 0; i < 3 && !is_valid_utf8(s); ++i) s.remove_suffix(1);
  }
  const bool utf8 = is_valid_utf8(s);
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) out += (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) ? '?' : char(c);
  return out;
}

result<void> park_event(sql_tx& tx, std::string_view kind, std::string_view name,
                        const recorded_event& e, std::string_view failure, int attempts,
                        long long now_us) {
  auto w = tx.exec(
      "INSERT INTO annals_consumer_parked(kind, consumer, position, stream_id, "
      "stream_version, event_id, type, error, attempts, parked_at, state) VALUES "
      "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'parked') "
      "ON CONFLICT(kind, consumer, position) DO UPDATE SET stream_id = excluded.stream_id, "
      "stream_version = excluded.stream_version, event_id = excluded.event_id, "
      "type = excluded.type, error = excluded.error, "
      "attempts = annals_consumer_parked.attempts + excluded.attempts, "
      "parked_at = excluded.parked_at, state = 'parked', resolved_at = NULL",
      {kind, name, static_cast<long long>(e.position), consumer_text(e.stream_id),
       static_cast<long long>(e.stream_version), e.event_id, e.type, consumer_text(failure),
       attempts, now_us});
  if (!w) return w.error();
  return {};
}

std::string projections_sql(const consumer_sources& src) {
  return fmt::format(
      "SELECT name, CAST(version AS BIGINT), CAST(checkpoint AS BIGINT), "
      "CAST(stuck_position AS BIGINT), error, CAST({} AS BIGINT), "
      "CAST(events_per_s AS DOUBLE PRECISION) "
      "FROM {} p WHERE p.kind = 'projection' ORDER BY name",
      src.parked.empty()
          ? std::string("0")
          : fmt::format("(SELECT count(*) FROM {} a WHERE a.kind = 'projection' AND "
                        "a.consumer = p.name AND a.state = 'parked')",
                        src.parked),
      src.consumers);
}

}  // namespace annals::detail
