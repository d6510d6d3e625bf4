// The consumer tables: one set for projections and subscriptions (docs/storage-format.md).
//
//   annals_consumers        one row per consumer, keyed by (kind, name): its checkpoint, and
//                           what each kind keeps (a projection's version and stuck position; a
//                           subscription's filter, delivered count and lease)
//   annals_consumer_parked  the events each consumer parked, keyed by (kind, consumer, position)
//
// `kind` is 'projection' or 'subscription'. Stores of format 3 (SQLite) / 2 (PostgreSQL) had
// two sets (annals_projections/annals_parked, annals_subscriptions/annals_sub_parked): the
// first writable consumer open moves their rows into these and drops them, in one transaction.
// A read-only open changes nothing and reads the old tables through reading_sources().
#pragma once

#include "db/sql_connection.hpp"

#include <annals/event_store.hpp>
#include <annals/parked.hpp>
#include <annals/result.hpp>
#include <annals/sql.hpp>
#include <annals/status.hpp>

#include <fmt/format.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace annals::detail {

inline constexpr const char* consumers_table = "annals_consumers";
inline constexpr const char* consumer_parked_table = "annals_consumer_parked";

// On PostgreSQL, DDL on the consumer tables and the read models (creation, migration, reset,
// rebuild swaps) runs under this transaction-level advisory lock (0x414E4E4C00000003):
// concurrent CREATE TABLE IF NOT EXISTS can otherwise fail.
inline constexpr const char* pg_ddl_lock_sql = "SELECT pg_advisory_xact_lock(4705784748973228035)";

// Migrates the old tables (if any is there), then creates the consumer tables when missing.
// Caller holds a write transaction (on PostgreSQL this takes the DDL advisory lock in it).
result<void> create_consumer_tables(sql_connection& c);
// Only the migration: creates nothing on a store without old tables. For the admins, which
// write to existing tables and create none.
result<void> migrate_consumer_tables(sql_connection& c);

// What a reader selects from, aliased by the caller ("FROM {} c"): the consumer tables, or on a
// store not yet migrated a subquery of the same columns over the old tables. Empty when there
// is nothing to read (no consumer was ever opened).
//   consumers: kind, name, checkpoint, version, filter, delivered, owner, lease_until,
//              stuck_position, error, events_per_s, updated_at
//   parked:    kind, consumer, position, stream_id, stream_version, event_id, type, error,
//              attempts, parked_at, state, resolved_at
struct consumer_sources {
  std::string consumers;
  std::string parked;
};
using table_probe = std::function<result<bool>(std::string_view table)>;
result<consumer_sources> reading_sources(const table_probe& exists);
result<consumer_sources> reading_sources(sql_connection& c);

// Whether `src` (reading_sources) holds a consumer `kind` named `name`.
result<bool> has_consumer(sql_connection& c, const consumer_sources& src, std::string_view kind,
                          std::string_view name);

// The parked events of the consumer `kind` ("projection", "subscription") `name`, by position,
// resolved ones included, read from `parked_source` (reading_sources().parked; empty: none).
result<std::vector<parked_event>> read_parked(sql_tx& tx, std::string_view kind,
                                              std::string_view name,
                                              std::string_view parked_source);

// The projections' rows, in SQL valid on every backend, read from `src` (reading_sources,
// consumers not empty): name, version, checkpoint, stuck_position (NULL), error, parked count,
// events_per_s.
std::string projections_sql(const consumer_sources& src);
// One of those rows as a status: the bookkeeping alone (measure_projections, consumer/lag.hpp,
// adds head and lag). Row: int64(col), real(col), text_view(col), is_null(col) (an sql_row, or
// an admin's own row adapter).
template <class Row>
consumer_status projection_row(const Row& row) {
  consumer_status p;
  p.name = row.text_view(0);
  p.version = p.stored_version = static_cast<int>(row.int64(1));
  p.detail = fmt::format("version {}", p.version);
  p.checkpoint = row.int64(2);
  if (!row.is_null(3)) p.stuck_position = row.int64(3);
  p.error = row.text_view(4);
  p.parked = row.int64(5);
  p.events_per_s = row.real(6);
  if (p.stuck_position) p.state = consumer_state::stuck;
  return p;
}

// A text for the consumer tables' TEXT columns (an error, a stream name): PostgreSQL refuses
// invalid UTF-8 and NUL, so control bytes (and every byte >= 0x80 of a text that is not UTF-8)
// become '?', and the text is cut to 2000 bytes on a character boundary.
std::string consumer_text(std::string_view s);

// Records `e` as parked by the consumer `kind` `name` after `attempts` failed attempts, in the
// caller's write transaction: state 'parked'. An earlier row for the same position (a retry
// that failed again; a projection's earlier version, rebuilt since) adds its attempts to
// these: `attempts` counts every failure of that event for that consumer.
result<void> park_event(sql_tx& tx, std::string_view kind, std::string_view name,
                        const recorded_event& e, std::string_view failure, int attempts,
                        long long now_us);

}  // namespace annals::detail
