// Internal to the admin code: the parts of stats() and verify() that are the same algorithm on
// every backend, written once over a small adapter of the backend's connection:
//
//   struct DB {
//     result<bool> table_exists(const char* name);
//     // Runs `sql` with the integers bound as parameters 1, 2...; fn(row) for each row, where
//     // row has int64(col), bytes(col), text_view(col) and is_null(col).
//     template <class F> result<void> rows(std::string_view what, const std::string& sql,
//                                         std::initializer_list<std::int64_t> ints, F&& fn);
//   };
//
// and the backend's SQL for the same questions (admin_sql). The projection tables have the
// same names and columns everywhere, so their SQL is shared.
#pragma once

#include <annals/admin.hpp>

#include "admin/checks.hpp"
#include "consumer/lag.hpp"
#include "consumer/tables.hpp"

#include <fmt/format.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace annals::admin_detail {

struct admin_sql {
  const char* event_totals;     // count, head position, payload bytes, metadata bytes
  const char* stream_count;     // count
  const char* largest_streams;  // name, version, events; LIMIT parameter 1
  const char* types;            // type, events, payload bytes; most events first
  const char* stream_rows;      // key, name, version
  const char* duplicate_ids;    // first position, count, positions as text
};

// Where the consumer rows are (consumer/tables.hpp), through the admin's connection.
template <class DB>
result<detail::consumer_sources> consumer_sources_of(DB& db) {
  return detail::reading_sources(
      [&](std::string_view table) { return db.table_exists(std::string(table).c_str()); });
}

template <class DB>
result<std::vector<consumer_status>> read_projections(DB& db) {
  std::vector<consumer_status> out;
  auto src = consumer_sources_of(db);
  if (!src) return std::move(src).error();
  if (src->consumers.empty()) return out;
  auto r = db.rows("cannot read projections", detail::projections_sql(*src), {},
                   [&](const auto& row) { out.push_back(detail::projection_row(row)); });
  if (!r) return r.error();
  return out;
}

// read_projections with each one's lag behind the store's current head.
template <class DB>
result<std::vector<consumer_status>> measured_projections(DB& db, event_store& store) {
  auto out = read_projections(db);
  if (!out) return out;
  auto head = store.head_position();
  if (!head) return std::move(head).error();
  detail::measure_projections(store, *head, *out);
  return out;
}

// Everything of store_stats but format_version and file_bytes (the projections' lag measured
// on `store` against the head read here).
template <class DB>
result<void> fill_stats(DB& db, const admin_sql& sql, std::size_t top, event_store& store,
                        store_stats& out) {
  if (auto r = db.rows("cannot count events", sql.event_totals, {},
                       [&](const auto& row) {
                         out.events = row.int64(0);
                         out.head_position = row.int64(1);
                         out.payload_bytes = row.int64(2);
                         out.metadata_bytes = row.int64(3);
                       });
      !r) {
    return r;
  }
  if (auto r = db.rows("cannot count streams", sql.stream_count, {},
                       [&](const auto& row) { out.streams = row.int64(0); });
      !r) {
    return r;
  }
  if (auto r = db.rows("cannot read streams", sql.largest_streams,
                       {static_cast<std::int64_t>(top)},
                       [&](const auto& row) {
                         out.largest_streams.push_back(
                             {std::string(row.bytes(0)), row.int64(1), row.int64(2)});
                       });
      !r) {
    return r;
  }
  if (auto r = db.rows("cannot read event types", sql.types, {},
                       [&](const auto& row) {
                         out.types.push_back(
                             {std::string(row.bytes(0)), row.int64(1), row.int64(2)});
                       });
      !r) {
    return r;
  }
  for (auto [table, target] : {std::pair{"annals_schemas", &out.schemas},
                               std::pair{"annals_snapshots", &out.snapshots}}) {
    auto exists = db.table_exists(table);
    if (!exists) return std::move(exists).error();
    if (!*exists) continue;
    // A constant table name, not a value.
    if (auto r = db.rows("cannot count rows", fmt::format("SELECT count(*) FROM {}", table), {},
                         [&, t = target](const auto& row) { *t = row.int64(0); });
        !r) {
      return r;
    }
  }
  auto projections = read_projections(db);
  if (!projections) return std::move(projections).error();
  out.projections = std::move(projections).value();
  detail::measure_projections(store, out.head_position, out.projections);
  return {};
}

// verify() after the event scan: stream rows, duplicate ids, projections and parked events.
// Returns the number of problems.
template <class DB>
result<std::int64_t> finish_verify(DB& db, const admin_sql& sql, store_verifier& v) {
  if (auto r = db.rows("cannot read streams", sql.stream_rows, {},
                       [&](const auto& row) {
                         v.stream_row(row.int64(0), row.bytes(1), row.int64(2));
                       });
      !r) {
    return r.error();
  }
  // Duplicate ids (the unique index makes them impossible unless it was dropped).
  if (auto r = db.rows("cannot check event ids", sql.duplicate_ids, {},
                       [&](const auto& row) {
                         v.duplicate_id(row.int64(0), row.int64(1), row.bytes(2));
                       });
      !r) {
    return r.error();
  }
  auto projections = read_projections(db);
  if (!projections) return std::move(projections).error();
  v.projections(*projections);
  if (!projections->empty()) {
    auto src = consumer_sources_of(db);
    if (!src) return std::move(src).error();
    if (!src->parked.empty()) {
      if (auto r = db.rows("cannot read parked events", parked_sql(src->parked), {},
                           [&](const auto& row) {
                             v.parked(row.int64(1), row.bytes(0), row.bytes(2), row.bytes(3));
                           });
          !r) {
        return r.error();
      }
    }
  }
  return v.finish();
}

}  // namespace annals::admin_detail
