// store_admin for SQLite stores (annals/admin.hpp): raw reads of the tables of
// docs/storage-format.md on a connection of its own, so a damaged row is reported, not fatal.
#include <annals/admin.hpp>
#include <annals/upcaster.hpp>
#include <annals/json.hpp>
#include <annals/schema.hpp>

#include "admin/checks.hpp"
#include "store/prepared.hpp"
#include "store/sqlite/sqlite.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <map>
#include <unordered_map>

namespace annals {
namespace {

using sqlite::connection;
using sqlite::reset_guard;
using sqlite::statement;

// 2000-01-01T00:00:00Z: an Annals store cannot hold anything older.
constexpr std::int64_t earliest_plausible_us = 946684800LL * 1000000;
constexpr std::int64_t day_us = 86400LL * 1000000;

// Runs `st` to the end, calling `row` for each row (false stops). `what` names it in errors.
template <class Row>
result<void> each_row(sqlite3* db, statement& st, std::string_view what, Row&& row) {
  reset_guard g(st);
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    if constexpr (std::is_same_v<decltype(row(st)), bool>) {
      if (!row(st)) return {};
    } else {
      row(st);
    }
  }
  if (rc != SQLITE_DONE) return sqlite::make_error(rc, what, db);
  return {};
}

result<statement> prepare(sqlite3* db, std::string_view sql) { return statement::prepare(db, sql); }

// Prepares `sql` (no parameters) and runs it with each_row.
template <class Row>
result<void> query(sqlite3* db, std::string_view sql, std::string_view what, Row&& row) {
  auto st = prepare(db, sql);
  if (!st) return std::move(st).error();
  return each_row(db, *st, what, std::forward<Row>(row));
}

result<std::int64_t> scalar(sqlite3* db, std::string_view sql, std::string_view what) {
  auto st = prepare(db, sql);
  if (!st) return std::move(st).error();
  std::int64_t v = 0;
  auto r = each_row(db, *st, what, [&](statement& s) {
    v = s.column_int64(0);
    return false;
  });
  if (!r) return r.error();
  return v;
}

result<bool> has_table(sqlite3* db, std::string_view name) {
  auto st = prepare(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1");
  if (!st) return std::move(st).error();
  st->bind(1, name);
  bool found = false;
  auto r = each_row(db, *st, "cannot read the store schema", [&](statement& s) {
    found = s.column_int64(0) > 0;
    return false;
  });
  if (!r) return r.error();
  return found;
}

compatibility compatibility_named(std::string_view text) {
  for (auto c : {compatibility::backward, compatibility::forward, compatibility::full,
                 compatibility::none}) {
    if (to_string(c) == text) return c;
  }
  return compatibility::backward;
}

result<std::vector<stored_schema>> read_schema_rows(sqlite3* db) {
  std::vector<stored_schema> out;
  auto exists = has_table(db, "annals_schemas");
  if (!exists) return std::move(exists).error();
  if (!*exists) return out;
  auto st = prepare(db,
                    "SELECT type, version, compatibility, fingerprint, descriptor_set, "
                    "registered_at FROM annals_schemas ORDER BY type, version");
  if (!st) return std::move(st).error();
  auto r = each_row(db, *st, "cannot read schemas", [&](statement& s) {
    stored_schema& x = out.emplace_back();
    x.type = s.column_text(0);
    x.version = static_cast<std::int32_t>(s.column_int64(1));
    x.mode = compatibility_named(s.column_text(2));
    x.fingerprint = s.column_text(3);
    x.descriptor_set = s.column_blob(4);
    x.registered_at_us = s.column_int64(5);
  });
  if (!r) return r.error();
  return out;
}

std::int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_size) : 0;
}

// A read transaction for the life of the object: every query inside sees one snapshot.
class read_tx {
 public:
  explicit read_tx(connection& c) : c_(c) {}
  result<void> begin() {
    auto r = c_.exec("BEGIN", "cannot start a read transaction");
    open_ = r.ok();
    return r;
  }
  ~read_tx() {
    if (open_) (void)c_.exec("COMMIT", "cannot end a read transaction");
  }

 private:
  connection& c_;
  bool open_ = false;
};

class sqlite_import final : public import_session {
 public:
  explicit sqlite_import(connection& c) : c_(c) {}
  ~sqlite_import() override {
    if (open_) (void)c_.exec("ROLLBACK", "cannot roll back the import");
  }

  result<void> start() {
    if (auto r = c_.exec("BEGIN IMMEDIATE", "cannot start the import"); !r) return r;
    open_ = true;
    auto events = scalar(c_.get(), "SELECT count(*) FROM events", "cannot count events");
    if (!events) return std::move(events).error();
    auto streams = scalar(c_.get(), "SELECT count(*) FROM streams", "cannot count streams");
    if (!streams) return std::move(streams).error();
    auto schemas = has_table(c_.get(), "annals_schemas");
    if (!schemas) return std::move(schemas).error();
    std::int64_t schema_rows = 0;
    if (*schemas) {
      auto n = scalar(c_.get(), "SELECT count(*) FROM annals_schemas", "cannot count schemas");
      if (!n) return std::move(n).error();
      schema_rows = *n;
    }
    if (*events || *streams || schema_rows) {
      return error(errc::invalid_argument,
                   fmt::format("import needs an empty store; this one has {} events, {} streams "
                               "and {} schemas",
                               *events, *streams, schema_rows));
    }
    for (auto [s, sql] :
         {std::pair{&insert_stream_, "INSERT INTO streams(name, version) VALUES(?1, 0)"},
          std::pair{&insert_event_,
                    "INSERT INTO events(position, stream, stream_version, "
                    "event_id, type, recorded_at, metadata, payload) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"}}) {
      auto p = prepare(c_.get(), sql);
      if (!p) return std::move(p).error();
      *s = std::move(p).value();
    }
    if (*schemas) {
      auto p = prepare(c_.get(),
                       "INSERT INTO annals_schemas(type, version, compatibility, fingerprint, "
                       "descriptor_set, registered_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
      if (!p) return std::move(p).error();
      insert_schema_ = std::move(p).value();
    }
    return {};
  }

  result<void> add_schema(const stored_schema& s) override {
    if (!insert_schema_.get()) {
      return error(errc::invalid_argument, "this store has no schema registry to import into");
    }
    if (auto r = store::check_event_type(s.type); !r) return r;
    if (s.version < 1) return error(errc::invalid_argument, "schema version must be >= 1");
    reset_guard g(insert_schema_);
    insert_schema_.bind(1, s.type);
    insert_schema_.bind(2, static_cast<std::int64_t>(s.version));
    insert_schema_.bind(3, to_string(s.mode));
    insert_schema_.bind(4, s.fingerprint);
    insert_schema_.bind(5, statement::blob{s.descriptor_set.data(), s.descriptor_set.size()});
    insert_schema_.bind(6, s.registered_at_us);
    int rc = insert_schema_.step();
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      return error(errc::invalid_argument,
                   fmt::format("schema {} version {} appears twice", s.type, s.version));
    }
    if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import a schema", c_.get());
    return {};
  }

  result<void> add_event(const raw_event& e) override {
    if (e.position <= last_position_) {
      return error(errc::invalid_argument, fmt::format("position {} does not follow position {}",
                                                       e.position, last_position_));
    }
    if (auto r = store::check_stream_id(e.stream_id); !r) return r;
    if (auto r = store::check_event_type(e.type); !r) return r;
    if (e.event_id.size() != 16) {
      return error(errc::invalid_argument, "an event id must be 16 bytes");
    }
    auto it = streams_.find(e.stream_id);
    std::int64_t expected = it == streams_.end() ? 0 : it->second.second + 1;
    if (e.stream_version != expected) {
      return error(errc::invalid_argument,
                   fmt::format("stream '{}' version {} does not follow (expected {})", e.stream_id,
                               e.stream_version, expected));
    }
    if (it == streams_.end()) {
      reset_guard g(insert_stream_);
      insert_stream_.bind(1, e.stream_id);
      int rc = insert_stream_.step();
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import a stream", c_.get());
      it = streams_
               .emplace(e.stream_id,
                        std::pair{sqlite3_last_insert_rowid(c_.get()), std::int64_t{-1}})
               .first;
    }
    reset_guard g(insert_event_);
    insert_event_.bind(1, e.position);
    insert_event_.bind(2, it->second.first);
    insert_event_.bind(3, e.stream_version);
    insert_event_.bind(4, statement::blob{e.event_id.data(), e.event_id.size()});
    insert_event_.bind(5, e.type);
    insert_event_.bind(6, e.recorded_at_us);
    if (e.metadata) {
      insert_event_.bind(7, statement::blob{e.metadata->data(), e.metadata->size()});
    } else {
      insert_event_.bind(7, statement::null{});
    }
    insert_event_.bind(8, statement::blob{e.payload.data(), e.payload.size()});
    int rc = insert_event_.step();
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      return error(errc::invalid_argument,
                   fmt::format("event id {} appears twice",
                               store::format_uuid(
                                   reinterpret_cast<const unsigned char*>(e.event_id.data()))));
    }
    if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import an event", c_.get());
    it->second.second = e.stream_version;
    last_position_ = e.position;
    return {};
  }

  result<void> commit() override {
    auto update = prepare(c_.get(), "UPDATE streams SET version = ?2 WHERE id = ?1");
    if (!update) return std::move(update).error();
    for (const auto& [name, s] : streams_) {
      reset_guard g(*update);
      update->bind(1, s.first);
      update->bind(2, s.second);
      int rc = update->step();
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import a stream", c_.get());
    }
    if (auto r = c_.exec("COMMIT", "cannot commit the import"); !r) return r;
    open_ = false;
    store::notify_commit();
    return {};
  }

 private:
  connection& c_;
  bool open_ = false;
  statement insert_stream_, insert_event_, insert_schema_;
  std::unordered_map<std::string, std::pair<std::int64_t, std::int64_t>> streams_;  // id, last
  std::int64_t last_position_ = 0;
};

class sqlite_admin final : public store_admin {
 public:
  sqlite_admin(std::string path, std::unique_ptr<event_store> store, connection c)
      : path_(std::move(path)), store_(std::move(store)), c_(std::move(c)) {}

  event_store& store() override { return *store_; }

  result<void> list_streams(std::string_view prefix, std::int64_t limit,
                            const std::function<bool(const stream_info&)>& visit) override {
    auto st = prepare(db(),
                      "SELECT s.name, s.version, "
                      "(SELECT count(*) FROM events e WHERE e.stream = s.id) FROM streams s "
                      "WHERE substr(CAST(s.name AS BLOB), 1, ?1) = CAST(?2 AS BLOB) "
                      "ORDER BY s.name LIMIT ?3");
    if (!st) return std::move(st).error();
    st->bind(1, static_cast<std::int64_t>(prefix.size()));
    st->bind(2, prefix);
    st->bind(3, limit < 0 ? INT64_MAX : limit);
    stream_info info;
    return each_row(db(), *st, "cannot list streams", [&](statement& s) {
      info.stream_id = s.column_text(0);
      info.version = s.column_int64(1);
      info.event_count = s.column_int64(2);
      return visit(info);
    });
  }

  result<store_stats> stats(std::size_t top) override {
    read_tx tx(c_);
    if (auto r = tx.begin(); !r) return r.error();
    store_stats out;
    auto format = scalar(db(), "PRAGMA user_version", "cannot read the store header");
    if (!format) return std::move(format).error();
    out.format_version = static_cast<std::int32_t>(*format);
    out.file_bytes = file_size(path_) + file_size(path_ + "-wal");

    if (auto r = query(db(),
                       "SELECT count(*), coalesce(max(position), 0), "
                       "coalesce(sum(length(payload)), 0), coalesce(sum(length(metadata)), 0) "
                       "FROM events",
                       "cannot count events",
                       [&](statement& s) {
                         out.events = s.column_int64(0);
                         out.head_position = s.column_int64(1);
                         out.payload_bytes = s.column_int64(2);
                         out.metadata_bytes = s.column_int64(3);
                       });
        !r) {
      return r.error();
    }
    auto streams = scalar(db(), "SELECT count(*) FROM streams", "cannot count streams");
    if (!streams) return std::move(streams).error();
    out.streams = *streams;

    auto largest = prepare(db(),
                           "SELECT s.name, s.version, count(e.position) AS n FROM streams s "
                           "LEFT JOIN events e ON e.stream = s.id GROUP BY s.id "
                           "ORDER BY n DESC, s.name LIMIT ?1");
    if (!largest) return std::move(largest).error();
    largest->bind(1, static_cast<std::int64_t>(top));
    if (auto r = each_row(db(), *largest, "cannot read streams",
                          [&](statement& s) {
                            out.largest_streams.push_back({std::string(s.column_text(0)),
                                                           s.column_int64(1), s.column_int64(2)});
                          });
        !r) {
      return r.error();
    }
    if (auto r = query(db(),
                       "SELECT type, count(*) AS n, sum(length(payload)) FROM events "
                       "GROUP BY type ORDER BY n DESC, type",
                       "cannot read event types",
                       [&](statement& s) {
                         out.types.push_back(
                             {std::string(s.column_text(0)), s.column_int64(1), s.column_int64(2)});
                       });
        !r) {
      return r.error();
    }
    for (auto [table, target] : {std::pair{"annals_schemas", &out.schemas},
                                 std::pair{"annals_snapshots", &out.snapshots}}) {
      auto exists = has_table(db(), table);
      if (!exists) return std::move(exists).error();
      if (!*exists) continue;
      auto n = scalar(db(), fmt::format("SELECT count(*) FROM {}", table), "cannot count rows");
      if (!n) return std::move(n).error();
      *target = *n;
    }
    auto projections = read_projections();
    if (!projections) return std::move(projections).error();
    out.projections = std::move(projections).value();
    return out;
  }

  result<std::int64_t> verify(const std::function<void(const store_problem&)>& report,
                              const upcasters* upcast) override {
    std::int64_t problems = 0;
    auto problem = [&](std::int64_t position, std::string check, std::string detail) {
      ++problems;
      report(store_problem{position, std::move(check), std::move(detail)});
    };
    // The integrity check first, outside the scan: it reads every page itself.
    if (auto r = query(db(), "PRAGMA integrity_check", "cannot run the integrity check",
                       [&](statement& s) {
                         if (s.column_text(0) != "ok") {
                           problem(0, "integrity", fmt::format("SQLite: {}", s.column_text(0)));
                         }
                       });
        !r) {
      return r.error();
    }

    read_tx tx(c_);
    if (auto r = tx.begin(); !r) return r.error();
    auto schemas = read_schema_rows(db());
    if (!schemas) return std::move(schemas).error();
    payload_decoder decoder(std::move(schemas).value());
    auto warning = [&](std::int64_t position, std::string check, std::string detail) {
      report(store_problem{position, std::move(check), std::move(detail), true});
    };
    // Types nothing stored describes: first position, events.
    std::map<std::string, std::pair<std::int64_t, std::int64_t>> undescribed;
    // The payload against the stored schemas. Only the version the event names is
    // authoritative: failing it is a problem; failing a best guess (the latest version for an
    // event without one, another type's stored file for a type never registered) a warning.
    auto check_payload = [&](std::int64_t pos, const std::string& type, std::int32_t version,
                             std::string_view payload) {
      if (const stored_schema* exact = decoder.find(type, version)) {
        if (auto c = decoder.check(*exact, payload); !c) problem(pos, "payload", c.error().message());
      } else if (const stored_schema* latest = decoder.pick(type, version)) {
        auto c = decoder.check(*latest, payload);
        if (version != 0) {
          problem(pos, "schema-version",
                  fmt::format("the event says schema version {} of {}, which the store does not "
                              "have (the latest, version {}, {})",
                              version, type, latest->version,
                              c ? "parses it" : c.error().message()));
        } else if (!c) {
          warning(pos, "payload-unversioned",
                  fmt::format("the event has no schema version and the latest stored version of "
                              "{} does not parse it: {}",
                              type, c.error().message()));
        }
      } else if (const stored_schema* other = decoder.find_defining(type)) {
        if (auto c = decoder.check(*other, payload, type); !c) {
          warning(pos, "payload-unregistered",
                  fmt::format("event type {} has no schema in the store; {}", type,
                              c.error().message()));
        }
      } else {
        auto [it, added] = undescribed.try_emplace(type, pos, 0);
        ++it->second.second;
      }
    };

    auto scan = prepare(db(),
                        "SELECT e.position, e.stream, s.name, e.stream_version, "
                        "typeof(e.stream_version), e.event_id, typeof(e.event_id), e.type, "
                        "typeof(e.type), e.recorded_at, typeof(e.recorded_at), e.metadata, "
                        "typeof(e.metadata), e.payload, typeof(e.payload) "
                        "FROM events e LEFT JOIN streams s ON s.id = e.stream "
                        "ORDER BY e.position");
    if (!scan) return std::move(scan).error();
    std::unordered_map<std::int64_t, std::int64_t> next_version;  // by streams.id
    std::int64_t last_position = 0, last_recorded = 0;
    const std::int64_t latest_plausible = store::system_clock_us() + day_us;
    event_metadata meta;
    recorded_event upcast_probe;  // what the upcasters see of each event
    auto r = each_row(db(), *scan, "cannot scan events", [&](statement& s) {
      const std::int64_t pos = s.column_int64(0);
      const std::int64_t sid = s.column_int64(1);
      const bool has_stream = !s.column_is_null(2);
      const std::string name = has_stream ? std::string(s.column_text(2)) : fmt::format("#{}", sid);
      const std::int64_t version = s.column_int64(3);
      if (pos < 1 || pos <= last_position) {
        problem(pos, "position",
                fmt::format("position {} does not follow position {}", pos, last_position));
      }
      last_position = pos;
      if (!has_stream) {
        problem(pos, "stream-row-missing",
                fmt::format("the event refers to stream #{}, which the streams table does not "
                            "have",
                            sid));
      }
      if (s.column_text(4) != "integer" || version < 0) {
        problem(pos, "version", fmt::format("stream '{}' has a malformed version", name));
      } else {
        auto [it, added] = next_version.try_emplace(sid, 0);
        if (version > it->second) {
          problem(pos, "version-gap",
                  fmt::format("stream '{}' jumps to version {}; expected {}", name, version,
                              it->second));
        } else if (version < it->second) {
          problem(pos, "version-duplicate",
                  fmt::format("stream '{}' has version {} again (or out of order); expected {}",
                              name, version, it->second));
        }
        it->second = std::max(it->second, version + 1);
      }
      auto id = s.column_blob(5);
      if (s.column_text(6) != "blob" || id.size() != 16) {
        problem(pos, "event-id",
                fmt::format("the event id is a {} of {} bytes, not 16 bytes", s.column_text(6),
                            id.size()));
      }
      const std::string type(s.column_text(7));
      bool type_ok = s.column_text(8) == "text";
      if (auto t = store::check_event_type(type); !type_ok || !t) {
        type_ok = false;
        problem(pos, "type", fmt::format("event type '{}' is malformed", type));
      }
      const std::int64_t at = s.column_int64(9);
      if (s.column_text(10) != "integer" || at < earliest_plausible_us || at > latest_plausible) {
        problem(pos, "recorded-at",
                fmt::format("recorded_at {} is not a plausible time", s.column_text(9)));
      } else {
        if (at < last_recorded) {
          problem(pos, "recorded-at-decreasing",
                  fmt::format("recorded_at goes back {} us from the previous event",
                              last_recorded - at));
        }
        last_recorded = at;
      }
      auto meta_type = s.column_text(12);
      if ((meta_type != "null" && meta_type != "blob") ||
          !admin_detail::well_formed_metadata(s.column_blob(11), meta)) {
        problem(pos, "metadata", "the metadata is not a well-formed annals.v1.EventMetadata");
        meta.schema_version = 0;
      }
      if (s.column_text(14) != "blob") {
        problem(pos, "payload", fmt::format("the payload is a {}, not a blob", s.column_text(14)));
      } else if (type_ok) {
        check_payload(pos, type, meta.schema_version, s.column_blob(13));
        if (upcast && !upcast->empty()) {
          upcast_probe.position = pos;
          upcast_probe.type = type;
          upcast_probe.metadata.schema_version = meta.schema_version;
          upcast_probe.payload.assign(s.column_blob(13));
          if (auto u = upcast->apply(upcast_probe); !u) {
            problem(pos, "upcast", u.error().message());
          }
        }
      }
    });
    if (!r) return r.error();
    // One warning per type that nothing stored describes, at its first event.
    for (const auto& [type, seen] : undescribed) {
      warning(seen.first, "type-unregistered",
              fmt::format("event type {} has no schema in the store and no stored descriptor "
                          "defines it: its {} event{} (first at position {}) were not checked",
                          type, seen.second, seen.second == 1 ? "" : "s", seen.first));
    }

    // Stream rows against the events counted above.
    if (auto x =
            query(db(), "SELECT id, name, version FROM streams ORDER BY id", "cannot read streams",
                  [&](statement& s) {
                    auto it = next_version.find(s.column_int64(0));
                    std::int64_t last = it == next_version.end() ? -1 : it->second - 1;
                    if (last != s.column_int64(2)) {
                      problem(0, "stream-version",
                              fmt::format("stream '{}' says version {} but its events end at {}",
                                          s.column_text(1), s.column_int64(2), last));
                    }
                  });
        !x) {
      return x.error();
    }
    // Duplicate ids (the unique index makes them impossible unless it was dropped).
    if (auto x = query(db(),
                       "SELECT min(position), count(*), group_concat(position, ', ') FROM events "
                       "GROUP BY event_id HAVING count(*) > 1 ORDER BY 1",
                       "cannot check event ids",
                       [&](statement& s) {
                         problem(s.column_int64(0), "event-id-duplicate",
                                 fmt::format("{} events share one event id (positions {})",
                                             s.column_int64(1), s.column_text(2)));
                       });
        !x) {
      return x.error();
    }
    auto projections = read_projections();
    if (!projections) return std::move(projections).error();
    for (const auto& p : *projections) {
      if (p.checkpoint > last_position) {
        problem(0, "projection-checkpoint",
                fmt::format("projection '{}' has checkpoint {} past the head {}", p.name,
                            p.checkpoint, last_position));
      }
      if (p.stuck_position) {
        problem(*p.stuck_position, "projection-stuck",
                fmt::format("projection '{}' is stuck: {}", p.name, p.error));
      }
    }
    if (!projections->empty()) {
      auto parked = has_table(db(), "annals_parked");
      if (!parked) return std::move(parked).error();
      if (*parked) {
        if (auto x = query(db(),
                           "SELECT projection, position, type, error FROM annals_parked "
                           "WHERE state = 'parked' ORDER BY position, projection",
                           "cannot read parked events",
                           [&](statement& s) {
                             problem(
                                 s.column_int64(1), "projection-parked",
                                 fmt::format("projection '{}' parked this {} event: {}",
                                             s.column_text(0), s.column_text(2), s.column_text(3)));
                           });
            !x) {
          return x.error();
        }
      }
    }
    return problems;
  }

  result<void> dump(const dump_visitor& visit) override {
    read_tx tx(c_);
    if (auto r = tx.begin(); !r) return r.error();
    auto schemas = read_schema_rows(db());
    if (!schemas) return std::move(schemas).error();
    auto count = scalar(db(), "SELECT count(*) FROM events", "cannot count events");
    if (!count) return std::move(count).error();
    if (auto r = visit.begin(*schemas, *count); !r) return r;
    auto st = prepare(db(),
                      "SELECT e.position, s.name, e.stream_version, e.event_id, e.type, "
                      "e.recorded_at, e.metadata, e.payload FROM events e "
                      "LEFT JOIN streams s ON s.id = e.stream ORDER BY e.position");
    if (!st) return std::move(st).error();
    raw_event ev;
    result<void> failed;
    auto r = each_row(db(), *st, "cannot read events", [&](statement& s) {
      ev.position = s.column_int64(0);
      if (s.column_is_null(1)) {
        failed = error(
            errc::corruption,
            fmt::format("the event at position {} has no stream row (run annals verify)", ev.position));
        return false;
      }
      ev.stream_id = s.column_text(1);
      ev.stream_version = s.column_int64(2);
      ev.event_id = s.column_blob(3);
      ev.type = s.column_text(4);
      ev.recorded_at_us = s.column_int64(5);
      if (s.column_is_null(6)) {
        ev.metadata.reset();
      } else {
        ev.metadata = std::string(s.column_blob(6));
      }
      ev.payload = s.column_blob(7);
      failed = visit.event(ev);
      return failed.ok();
    });
    if (!r) return r;
    return failed;
  }

  result<std::unique_ptr<import_session>> begin_import() override {
    auto s = std::make_unique<sqlite_import>(c_);
    if (auto r = s->start(); !r) return r.error();
    return std::unique_ptr<import_session>(std::move(s));
  }

 private:
  sqlite3* db() const { return c_.get(); }

  result<std::vector<projection_info>> read_projections() {
    std::vector<projection_info> out;
    auto exists = has_table(db(), "annals_projections");
    if (!exists) return std::move(exists).error();
    if (!*exists) return out;
    auto parked = has_table(db(), "annals_parked");
    if (!parked) return std::move(parked).error();
    auto st = prepare(db(), fmt::format("SELECT name, version, checkpoint, stuck_position, "
                                        "coalesce(error, ''), {} FROM annals_projections p "
                                        "ORDER BY name",
                                        *parked ? "(SELECT count(*) FROM annals_parked a WHERE "
                                                  "a.projection = p.name AND a.state = 'parked')"
                                                : "0"));
    if (!st) return std::move(st).error();
    auto r = each_row(db(), *st, "cannot read projections", [&](statement& s) {
      projection_info& p = out.emplace_back();
      p.name = s.column_text(0);
      p.version = s.column_int64(1);
      p.checkpoint = s.column_int64(2);
      if (!s.column_is_null(3)) p.stuck_position = s.column_int64(3);
      p.error = s.column_text(4);
      p.parked = s.column_int64(5);
    });
    if (!r) return r.error();
    return out;
  }

  std::string path_;
  std::unique_ptr<event_store> store_;
  connection c_;
};

}  // namespace

result<std::unique_ptr<store_admin>> open_admin(std::string_view uri, bool writable) {
  constexpr std::string_view sqlite_scheme = "sqlite:";
  std::string path(uri.substr(0, sqlite_scheme.size()) == sqlite_scheme
                       ? uri.substr(sqlite_scheme.size())
                       : uri);
  // open_store checks the URI, the file (missing, foreign, newer format) and creates a new
  // store when writable.
  sqlite_options options;
  options.read_only = !writable;
  options.create_if_missing = writable;
  auto store = open_store(uri, std::move(options));
  if (!store) return std::move(store).error();
  auto c = connection::open(path, writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, 10000);
  if (!c) return std::move(c).error();
  return std::unique_ptr<store_admin>(
      std::make_unique<sqlite_admin>(path, std::move(store).value(), std::move(c).value()));
}

}  // namespace annals
