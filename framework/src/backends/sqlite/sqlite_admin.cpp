// store_admin for SQLite stores (annals/admin.hpp): raw reads of the tables of
// docs/storage-format.md on a connection of its own, so a damaged row is reported, not fatal.
#include <annals/admin.hpp>
#include <annals/upcaster.hpp>
#include <annals/json.hpp>
#include <annals/schema.hpp>

#include "admin/checks.hpp"
#include "admin/queries.hpp"
#include "db/transaction.hpp"
#include "store/checksum.hpp"
#include "store/prepared.hpp"
#include "backends/sqlite/sql_connection.hpp"
#include "backends/sqlite/sqlite.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <map>
#include <optional>
#include <unordered_map>

namespace annals {
namespace {

using sqlite::connection;
using sqlite::reset_guard;
using sqlite::statement;

constexpr int sqlite_checksum_format = 3;  // the SQLite format that added the checksum column

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

// Unknown compatibility modes: corruption, or described in `unknown_modes` (verify).
result<std::vector<stored_schema>> read_schema_rows(
    sqlite3* db, std::vector<std::string>* unknown_modes = nullptr) {
  std::vector<stored_schema> out;
  auto exists = has_table(db, "annals_schemas");
  if (!exists) return std::move(exists).error();
  if (!*exists) return out;
  detail::sqlite_sql_connection conn(db);
  if (auto r = store::read_schema_rows(conn, {}, out, unknown_modes); !r) return r.error();
  return out;
}

std::int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_size) : 0;
}

// A statement's current row for admin_detail::dump_row.
struct sqlite_row {
  statement& s;
  std::int64_t int64(int col) const { return s.column_int64(col); }
  double real(int col) const { return s.column_double(col); }
  std::string_view bytes(int col) const { return s.column_blob(col); }
  std::string_view text_view(int col) const { return bytes(col); }
  bool is_null(int col) const { return s.column_is_null(col); }
};

// The connection for the shared queries (admin/queries.hpp).
struct sqlite_db {
  sqlite3* db;
  result<bool> table_exists(const char* name) { return has_table(db, name); }
  template <class F>
  result<void> rows(std::string_view what, const std::string& sql,
                    std::initializer_list<std::int64_t> ints, F&& fn) {
    auto st = prepare(db, sql);
    if (!st) return std::move(st).error();
    int i = 1;
    for (auto v : ints) st->bind(i++, v);
    return each_row(db, *st, what, [&](statement& s) { fn(sqlite_row{s}); });
  }
};

const admin_detail::admin_sql sql{
    "SELECT count(*), coalesce(max(position), 0), coalesce(sum(length(payload)), 0), "
    "coalesce(sum(length(metadata)), 0) FROM events",
    "SELECT count(*) FROM streams",
    "SELECT s.name, s.version, count(e.position) AS n FROM streams s "
    "LEFT JOIN events e ON e.stream = s.id GROUP BY s.id ORDER BY n DESC, s.name LIMIT ?1",
    "SELECT type, count(*) AS n, sum(length(payload)) FROM events GROUP BY type "
    "ORDER BY n DESC, type",
    "SELECT id, name, version FROM streams ORDER BY id",
    "SELECT min(position), count(*), group_concat(position, ', ') FROM events "
    "GROUP BY event_id HAVING count(*) > 1 ORDER BY 1"};

// A read transaction: every query inside sees one snapshot. Ended by its destructor.
result<db::transaction<connection>> read_tx(connection& c) {
  return db::transaction<connection>::begin(c, db::begin_default, "cannot start a read transaction");
}

class sqlite_import final : public import_session {
 public:
  explicit sqlite_import(connection& c) : c_(c) {}

  result<void> start() {
    auto tx = db::transaction<connection>::begin(c_, db::begin_sqlite_write,
                                                 "cannot start the import");
    if (!tx) return tx.error();
    tx_.emplace(std::move(tx).value());
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
      return admin_detail::not_empty(*events, *streams, schema_rows);
    }
    for (auto [s, sql] :
         {std::pair{&insert_stream_, "INSERT INTO streams(name, version) VALUES(?1, 0)"},
          std::pair{&insert_event_,
                    "INSERT INTO events(position, stream, stream_version, "
                    "event_id, type, recorded_at, metadata, payload, checksum) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"}}) {
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
    if (auto r = checker_.schema(s); !r) return r;
    reset_guard g(insert_schema_);
    insert_schema_.bind(1, s.type);
    insert_schema_.bind(2, static_cast<std::int64_t>(s.version));
    insert_schema_.bind(3, to_string(s.mode));
    insert_schema_.bind(4, s.fingerprint);
    insert_schema_.bind(5, statement::blob{s.descriptor_set.data(), s.descriptor_set.size()});
    insert_schema_.bind(6, s.registered_at_us);
    int rc = insert_schema_.step();
    if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import a schema", c_.get());
    return {};
  }

  result<void> add_event(const raw_event& e) override {
    auto stream = checker_.event(e);
    if (!stream) return std::move(stream).error();
    auto& st = **stream;
    if (st.key == 0) {
      reset_guard g(insert_stream_);
      insert_stream_.bind(1, e.stream_id);
      int rc = insert_stream_.step();
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import a stream", c_.get());
      st.key = sqlite3_last_insert_rowid(c_.get());
    }
    reset_guard g(insert_event_);
    insert_event_.bind(1, e.position);
    insert_event_.bind(2, st.key);
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
    // Recomputed: an export carries no checksum, and the import checked the row as verify does.
    insert_event_.bind(9, static_cast<std::int64_t>(store::event_checksum(
                              e.stream_id, e.stream_version, e.event_id, e.type,
                              e.recorded_at_us, e.metadata ? *e.metadata : std::string_view{},
                              e.payload)));
    int rc = insert_event_.step();
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      return error(errc::invalid_argument,
                   fmt::format("event id {} appears twice",
                               store::format_uuid(
                                   reinterpret_cast<const unsigned char*>(e.event_id.data()))));
    }
    if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import an event", c_.get());
    checker_.accept(st, e);
    return {};
  }

  result<void> commit() override {
    auto update = prepare(c_.get(), "UPDATE streams SET version = ?2 WHERE id = ?1");
    if (!update) return std::move(update).error();
    for (const auto& [name, s] : checker_.streams()) {
      if (s.key == 0) continue;  // its first event was refused: nothing is committed anyway
      reset_guard g(*update);
      update->bind(1, s.key);
      update->bind(2, s.last);
      int rc = update->step();
      if (rc != SQLITE_DONE) return sqlite::make_error(rc, "cannot import a stream", c_.get());
    }
    if (auto r = tx_->commit("cannot commit the import"); !r) return r;
    tx_.reset();
    store::commit_signal_for(sqlite::identity(c_.get()))->notify();
    return {};
  }

 private:
  connection& c_;
  std::optional<db::transaction<connection>> tx_;  // from start(); rolled back unless committed
  statement insert_stream_, insert_event_, insert_schema_;
  admin_detail::import_checker checker_;
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

  result<std::vector<consumer_status>> projections() override {
    auto tx = read_tx(c_);
    if (!tx) return tx.error();
    sqlite_db d{db()};
    return admin_detail::measured_projections(d, *store_);
  }

  result<store_stats> stats(std::size_t top) override {
    auto tx = read_tx(c_);
    if (!tx) return tx.error();
    store_stats out;
    auto format = scalar(db(), "PRAGMA user_version", "cannot read the store header");
    if (!format) return std::move(format).error();
    out.format_version = static_cast<std::int32_t>(*format);
    out.file_bytes = file_size(path_) + file_size(path_ + "-wal");
    sqlite_db d{db()};
    if (auto r = admin_detail::fill_stats(d, sql, top, *store_, out); !r) return r.error();
    return out;
  }

  result<std::int64_t> verify(const std::function<void(const store_problem&)>& report,
                              const upcasters* upcast) override {
    // The integrity check first, outside the scan: it reads every page itself.
    std::vector<std::string> integrity;
    if (auto r = query(db(), "PRAGMA integrity_check", "cannot run the integrity check",
                       [&](statement& s) {
                         if (s.column_text(0) != "ok") integrity.emplace_back(s.column_text(0));
                       });
        !r) {
      return r.error();
    }

    auto tx = read_tx(c_);
    if (!tx) return tx.error();
    std::vector<std::string> unknown_modes;
    auto schemas = read_schema_rows(db(), &unknown_modes);
    if (!schemas) return std::move(schemas).error();
    admin_detail::store_verifier v(std::move(schemas).value(), upcast, report,
                                   sqlite_checksum_format);
    for (auto& m : unknown_modes) v.problem(0, "schema-mode", std::move(m));
    for (const auto& line : integrity) v.problem(0, "integrity", fmt::format("SQLite: {}", line));

    // A read-only store of an older format has no checksum column: every row is unchecked.
    auto has_checksum = scalar(db(),
                               "SELECT count(*) FROM pragma_table_info('events') "
                               "WHERE name = 'checksum'",
                               "cannot read the store schema");
    if (!has_checksum) return std::move(has_checksum).error();
    auto scan = prepare(db(),
                        fmt::format("SELECT e.position, e.stream, s.name, e.stream_version, "
                        "typeof(e.stream_version), e.event_id, typeof(e.event_id), e.type, "
                        "typeof(e.type), e.recorded_at, typeof(e.recorded_at), e.metadata, "
                        "typeof(e.metadata), e.payload, typeof(e.payload), {} "
                        "FROM events e LEFT JOIN streams s ON s.id = e.stream "
                        "ORDER BY e.position",
                        *has_checksum ? "e.checksum, typeof(e.checksum)" : "NULL, 'null'"));
    if (!scan) return std::move(scan).error();
    admin_detail::event_row row;
    auto r = each_row(db(), *scan, "cannot scan events", [&](statement& s) {
      row.position = s.column_int64(0);
      row.stream = s.column_int64(1);
      row.stream_name.reset();
      if (!s.column_is_null(2)) row.stream_name = s.column_text(2);
      row.stream_version = s.column_int64(3);
      row.stream_version_typed = s.column_text(4) == "integer";
      row.event_id = s.column_blob(5);
      row.event_id_typed = s.column_text(6) == "blob";
      row.type = s.column_text(7);
      row.type_typed = s.column_text(8) == "text";
      row.recorded_at_us = s.column_int64(9);
      row.recorded_at_typed = s.column_text(10) == "integer";
      auto meta_type = s.column_text(12);
      row.metadata = s.column_blob(11);
      row.metadata_typed = meta_type == "null" || meta_type == "blob";
      row.payload = s.column_blob(13);
      row.payload_typed = s.column_text(14) == "blob";
      auto checksum_type = s.column_text(16);
      row.checksum.reset();
      if (checksum_type != "null") row.checksum = s.column_int64(15);
      row.checksum_typed = checksum_type == "null" || checksum_type == "integer";
      v.event(row);
    });
    if (!r) return r.error();

    sqlite_db d{db()};
    return admin_detail::finish_verify(d, sql, v);
  }

  result<void> dump(const dump_visitor& visit) override {
    auto tx = read_tx(c_);
    if (!tx) return tx.error();
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
      failed = admin_detail::dump_row(sqlite_row{s}, ev, visit);
      return failed.ok();
    });
    if (!r) return r;
    return failed;
  }

  result<std::unique_ptr<import_session>> begin_import() override {
    return admin_detail::start_import<sqlite_import>(c_);
  }

 private:
  sqlite3* db() const { return c_.get(); }

  std::string path_;
  std::unique_ptr<event_store> store_;
  connection c_;
};

}  // namespace

result<std::unique_ptr<store_admin>> admin_detail::open_sqlite_admin(const std::string& path,
                                                                     bool writable) {
  // open_sqlite_store checks the file (missing, foreign, newer format) and creates a new store
  // when writable.
  sqlite_options options;
  options.read_only = !writable;
  options.create_if_missing = writable;
  auto store = open_sqlite_store(path, std::move(options));
  if (!store) return std::move(store).error();
  auto c = connection::open(path, writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, 10000);
  if (!c) return std::move(c).error();
  return std::unique_ptr<store_admin>(
      std::make_unique<sqlite_admin>(path, std::move(store).value(), std::move(c).value()));
}

}  // namespace annals
