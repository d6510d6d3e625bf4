// store_admin for PostgreSQL stores (annals/admin.hpp): raw reads of the tables of
// docs/storage-format.md on a connection of its own, so a damaged row is reported, not fatal.
//
// - stats().file_bytes is the total relation size (table, indexes and TOAST) of the store's own
//   tables (annals_meta, annals_streams, annals_events, annals_schemas, annals_snapshots and,
//   when present, the consumer tables, or the two sets of an older format), not
//   pg_database_size: the database
//   may hold other data, read models included.
// - verify()'s backend integrity check ("integrity") is what the row checks cannot see and the
//   format relies on: the primary keys, the unique (stream, stream_version) and event-id
//   constraints and the events→streams foreign key exist, and no index of those tables is
//   invalid (a failed concurrent index build). It does not read pages the way SQLite's
//   integrity_check does (PostgreSQL's amcheck would, but needs an extension installed).
//   Everything else is the same row checks as SQLite (admin/checks.hpp), minus the column
//   storage classes, which PostgreSQL's fixed column types guarantee.
// - dump(), stats() and verify() each read one snapshot (REPEATABLE READ READ ONLY).
// - begin_import() is one READ COMMITTED transaction holding the store's advisory write lock
//   (appenders wait), so it is all or nothing and positions stay as imported: the store
//   assigns new positions as max(position) + 1 under the same lock, and stream ids come from
//   annals_streams' identity, which the import's inserts advance themselves.
// A read-only admin's connection has default_transaction_read_only on.
#include <annals/admin.hpp>
#include <annals/json.hpp>
#include <annals/schema.hpp>

#include "admin/checks.hpp"
#include "admin/queries.hpp"
#include "db/transaction.hpp"
#include "backends/postgres/pg.hpp"
#include "backends/postgres/pg_sql.hpp"
#include "store/checksum.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>

#include <optional>
#include <set>

namespace annals {
namespace {

using pg::connection;
using pg::params;

constexpr int pg_checksum_format = 2;  // the PostgreSQL format that added the checksum column

// How long opening an admin waits for the server: a wrong host or port fails fast.
constexpr int connect_timeout_s = 5;
// How long an import waits for the store's write lock (held by appenders) before busy.
constexpr const char* lock_timeout = "10s";
constexpr std::size_t insert_chunk = 256;  // events per INSERT statement (9 parameters each)

// Runs a query, calling `row(result, index)` for each row (returning false stops).
template <class Row>
result<void> each_row(connection& c, std::string_view what, const std::string& sql,
                      const params& p, Row&& row) {
  auto r = c.for_each_row(what, sql, p, true, [&](const PGresult* res, int i) -> result<bool> {
    if constexpr (std::is_same_v<decltype(row(res, i)), bool>) {
      return row(res, i);
    } else {
      row(res, i);
      return true;
    }
  });
  if (!r) return std::move(r).error();
  return {};
}

result<std::int64_t> scalar(connection& c, std::string_view what, const std::string& sql) {
  auto r = c.exec(what, sql, params{});
  if (!r) return std::move(r).error();
  return PQntuples(r->get()) ? pg::get_int8(r->get(), 0, 0) : 0;
}

std::string text(const PGresult* r, int row, int col) { return std::string(pg::get_bytes(r, row, col)); }

// A result row for admin_detail::dump_row.
struct pg_row {
  const PGresult* r;
  int i;
  std::int64_t int64(int col) const { return pg::get_int8(r, i, col); }
  double real(int col) const { return pg::get_float8(r, i, col); }
  std::string_view bytes(int col) const { return pg::get_bytes(r, i, col); }
  std::string_view text_view(int col) const { return bytes(col); }
  bool is_null(int col) const { return pg::is_null(r, i, col); }
};

// The connection for the shared queries (admin/queries.hpp).
struct pg_db {
  connection& c;
  result<bool> table_exists(const char* name) { return pg::has_table(c, name); }
  template <class F>
  result<void> rows(std::string_view what, const std::string& sql,
                    std::initializer_list<std::int64_t> ints, F&& fn) {
    params q;
    for (auto v : ints) q.add_int8(v);
    return each_row(c, what, sql, q, [&](const PGresult* r, int i) { fn(pg_row{r, i}); });
  }
};

const admin_detail::admin_sql sql{
    "SELECT count(*), coalesce(max(position), 0)::int8, "
    "coalesce(sum(octet_length(payload)), 0)::int8, "
    "coalesce(sum(octet_length(metadata)), 0)::int8 FROM annals_events",
    "SELECT count(*) FROM annals_streams",
    "SELECT s.name, s.version, count(e.position) AS n FROM annals_streams s "
    "LEFT JOIN annals_events e ON e.stream = s.id GROUP BY s.id ORDER BY n DESC, s.name LIMIT $1",
    "SELECT type, count(*) AS n, sum(octet_length(payload))::int8 FROM annals_events "
    "GROUP BY type ORDER BY n DESC, type",
    "SELECT id, name, version FROM annals_streams ORDER BY id",
    "SELECT min(position), count(*), string_agg(position::text, ', ' ORDER BY position) "
    "FROM annals_events GROUP BY event_id HAVING count(*) > 1 ORDER BY 1"};

// One snapshot (REPEATABLE READ READ ONLY) until its destructor ends it.
result<db::transaction<connection>> snapshot_tx(connection& c) {
  return db::transaction<connection>::begin(c, db::begin_pg_snapshot,
                                            "cannot start a read transaction");
}

// Unknown compatibility modes: corruption, or described in `unknown_modes` (verify).
result<std::vector<stored_schema>> read_schemas(connection& c,
                                                std::vector<std::string>* unknown_modes = nullptr) {
  std::vector<stored_schema> out;
  auto exists = pg::has_table(c, "annals_schemas");
  if (!exists) return std::move(exists).error();
  if (*exists) {
    pg::sql_conn conn(&c);
    if (auto r = store::read_schema_rows(conn, {}, out, unknown_modes); !r) return r.error();
  }
  return out;
}

class pg_import final : public import_session {
 public:
  explicit pg_import(connection& c) : c_(c) {}

  result<void> start() {
    auto tx = db::transaction<connection>::begin(c_, db::begin_pg_write, "cannot start the import");
    if (!tx) return tx.error();
    tx_.emplace(std::move(tx).value());
    // The write lock: no append interleaves, and the emptiness checked below holds to commit.
    params lock;
    lock.add_int8(pg::write_lock_key);
    if (auto r = c_.exec("cannot take the store's write lock", "SELECT pg_advisory_xact_lock($1)",
                         lock);
        !r) {
      return std::move(r).error();
    }
    auto events = scalar(c_, "cannot count events", "SELECT count(*) FROM annals_events");
    if (!events) return std::move(events).error();
    auto streams = scalar(c_, "cannot count streams", "SELECT count(*) FROM annals_streams");
    if (!streams) return std::move(streams).error();
    auto registry = pg::has_table(c_, "annals_schemas");
    if (!registry) return std::move(registry).error();
    has_registry_ = *registry;
    std::int64_t schemas = 0;
    if (has_registry_) {
      auto n = scalar(c_, "cannot count schemas", "SELECT count(*) FROM annals_schemas");
      if (!n) return std::move(n).error();
      schemas = *n;
    }
    if (*events || *streams || schemas) return admin_detail::not_empty(*events, *streams, schemas);
    return {};
  }

  result<void> add_schema(const stored_schema& s) override {
    if (!has_registry_) {
      return error(errc::invalid_argument, "this store has no schema registry to import into");
    }
    if (auto r = checker_.schema(s); !r) return r;
    if (failed_) return {};  // the transaction is void already; only the checks go on
    params q;
    q.add_text(s.type).add_int4(s.version).add_text(to_string(s.mode));
    q.add_text(s.fingerprint).add_bytea(s.descriptor_set).add_int8(s.registered_at_us);
    return write(c_.exec("cannot import a schema",
                         "INSERT INTO annals_schemas(type, version, compatibility, fingerprint, "
                         "descriptor_set, registered_at) VALUES ($1, $2, $3, $4, $5, $6)",
                         q));
  }

  result<void> add_event(const raw_event& e) override {
    auto stream = checker_.event(e);
    if (!stream) return std::move(stream).error();
    auto& st = **stream;
    if (!failed_ && st.key == 0) {
      params q;
      q.add_bytea(e.stream_id);
      auto r = c_.exec("cannot import a stream",
                       "INSERT INTO annals_streams(name, version) VALUES ($1, 0) RETURNING id", q);
      if (!r) return write(std::move(r));
      st.key = pg::get_int8(r->get(), 0, 0);
    }
    checker_.accept(st, e);
    if (failed_) return {};
    pending_.push_back(e);
    pending_keys_.push_back(st.key);
    if (pending_.size() == insert_chunk) return flush();
    return {};
  }

  result<void> commit() override {
    if (failed_) return *failed_;
    if (auto r = flush(); !r) return r;
    // Each stream's version: its last event (versions were checked contiguous from 0).
    if (auto r = write(c_.exec("cannot import the streams",
                               "UPDATE annals_streams s SET version = m.v FROM (SELECT stream, "
                               "max(stream_version) AS v FROM annals_events GROUP BY stream) m "
                               "WHERE m.stream = s.id",
                               params{}));
        !r) {
      return r;
    }
    // As an append: runners following by LISTEN learn of the events at commit.
    if (auto r = tx_->commit("cannot commit the import", "NOTIFY " ANNALS_PG_APPEND_CHANNEL "; COMMIT");
        !r) {
      return r;
    }
    tx_.reset();
    store::commit_signal_for(pg::identity(c_.get()))->notify();
    return {};
  }

 private:
  // Records the first failure: PostgreSQL voids the rest of the transaction after it.
  template <class T>
  result<void> write(result<T> r, pg::failure* why = nullptr) {
    if (r) return {};
    error e = std::move(r).error();
    if (why && why->sqlstate == "23505") {
      e = error(errc::invalid_argument,
                fmt::format("an event id appears twice in the input ({})", why->message));
    }
    failed_ = e;
    return e;
  }

  result<void> flush() {
    if (pending_.empty()) return {};
    std::string sql =
        "INSERT INTO annals_events(position, stream, stream_version, event_id, type, "
        "recorded_at, metadata, payload, checksum) VALUES ";
    params q;
    q.reserve(9 * pending_.size());
    for (std::size_t i = 0; i < pending_.size(); ++i) {
      const raw_event& e = pending_[i];
      int b = 1 + 9 * static_cast<int>(i);
      sql += fmt::format("{}(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})", i ? ", " : "", b,
                         b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8);
      q.add_int8(e.position).add_int8(pending_keys_[i]).add_int8(e.stream_version);
      q.add_bytea(e.event_id).add_text(e.type).add_int8(e.recorded_at_us);
      if (e.metadata) {
        q.add_bytea(*e.metadata);
      } else {
        q.add_null_bytea();
      }
      q.add_bytea(e.payload);
      // Recomputed: an export carries no checksum, and the import checked the row as verify
      // does.
      q.add_int8(store::event_checksum(e.stream_id, e.stream_version, e.event_id, e.type,
                                       e.recorded_at_us,
                                       e.metadata ? *e.metadata : std::string_view{}, e.payload));
    }
    pg::failure why;
    auto r = c_.exec("cannot import events", sql, q, pending_.size() == insert_chunk, &why);
    pending_.clear();
    pending_keys_.clear();
    return write(std::move(r), &why);
  }

  connection& c_;
  std::optional<db::transaction<connection>> tx_;  // from start(); rolled back unless committed
  bool has_registry_ = true;
  admin_detail::import_checker checker_;
  std::vector<raw_event> pending_;  // events not yet sent
  std::vector<std::int64_t> pending_keys_;
  std::optional<error> failed_;
};

class pg_admin final : public store_admin {
 public:
  pg_admin(std::unique_ptr<event_store> store, connection c)
      : store_(std::move(store)), c_(std::move(c)) {}

  event_store& store() override { return *store_; }

  result<void> list_streams(std::string_view prefix, std::int64_t limit,
                            const std::function<bool(const stream_info&)>& visit) override {
    params q;
    q.add_bytea(prefix).add_int8(limit < 0 ? INT64_MAX : limit);
    stream_info info;
    return each_row(c_, "cannot list streams",
                    "SELECT s.name, s.version, (SELECT count(*) FROM annals_events e WHERE "
                    "e.stream = s.id) FROM annals_streams s WHERE substring(s.name from 1 for "
                    "octet_length($1::bytea)) = $1::bytea ORDER BY s.name LIMIT $2",
                    q, [&](const PGresult* r, int i) {
                      info.stream_id = text(r, i, 0);
                      info.version = pg::get_int8(r, i, 1);
                      info.event_count = pg::get_int8(r, i, 2);
                      return visit(info);
                    });
  }

  result<std::vector<consumer_status>> projections() override {
    auto tx = snapshot_tx(c_);
    if (!tx) return tx.error();
    pg_db d{c_};
    return admin_detail::measured_projections(d, *store_);
  }

  result<store_stats> stats(std::size_t top) override {
    auto tx = snapshot_tx(c_);
    if (!tx) return tx.error();
    store_stats out;
    auto format = scalar(c_, "cannot read the store's format",
                         "SELECT value FROM annals_meta WHERE key = 'format'");
    if (!format) return std::move(format).error();
    out.format_version = static_cast<std::int32_t>(*format);
    auto bytes = scalar(c_, "cannot read the store's size",
                        "SELECT coalesce(sum(pg_total_relation_size(t)), 0)::int8 FROM "
                        "unnest(ARRAY['annals_meta', 'annals_streams', 'annals_events', "
                        "'annals_schemas', 'annals_snapshots', 'annals_consumers', "
                        "'annals_consumer_parked', 'annals_projections', 'annals_parked', "
                        "'annals_subscriptions', 'annals_sub_parked']) AS n, to_regclass(n) "
                        "AS t WHERE t IS NOT NULL");
    if (!bytes) return std::move(bytes).error();
    out.file_bytes = *bytes;
    pg_db d{c_};
    if (auto r = admin_detail::fill_stats(d, sql, top, *store_, out); !r) return r.error();
    return out;
  }

  result<std::int64_t> verify(const std::function<void(const store_problem&)>& report,
                              const upcasters* upcast) override {
    auto tx = snapshot_tx(c_);
    if (!tx) return tx.error();
    std::vector<std::string> unknown_modes;
    auto schemas = read_schemas(c_, &unknown_modes);
    if (!schemas) return std::move(schemas).error();
    admin_detail::store_verifier v(std::move(schemas).value(), upcast, report,
                                   pg_checksum_format);
    for (auto& m : unknown_modes) v.problem(0, "schema-mode", std::move(m));
    if (auto r = check_integrity(v); !r) return r.error();

    // A read-only store of format 1 has no checksum column: every row is unchecked.
    auto has_checksum = scalar(c_, "cannot read the store's columns",
                               "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = "
                               "to_regclass('annals_events') AND attname = 'checksum' AND "
                               "NOT attisdropped");
    if (!has_checksum) return std::move(has_checksum).error();
    admin_detail::event_row row;
    if (auto r = each_row(c_, "cannot scan events",
                          fmt::format("SELECT e.position, e.stream, s.name, e.stream_version, "
                                      "e.event_id, e.type, e.recorded_at, e.metadata, e.payload, "
                                      "{} FROM annals_events e LEFT JOIN annals_streams s ON "
                                      "s.id = e.stream ORDER BY e.position",
                                      *has_checksum ? "e.checksum" : "NULL::int8"),
                          params{},
                          [&](const PGresult* r, int i) {
                            row.position = pg::get_int8(r, i, 0);
                            row.stream = pg::get_int8(r, i, 1);
                            row.stream_name.reset();
                            if (!pg::is_null(r, i, 2)) row.stream_name = pg::get_bytes(r, i, 2);
                            row.stream_version = pg::get_int8(r, i, 3);
                            row.event_id = pg::get_bytes(r, i, 4);
                            row.type = pg::get_bytes(r, i, 5);
                            row.recorded_at_us = pg::get_int8(r, i, 6);
                            row.metadata = pg::is_null(r, i, 7) ? std::string_view{}
                                                                 : pg::get_bytes(r, i, 7);
                            row.payload = pg::get_bytes(r, i, 8);
                            row.checksum.reset();
                            if (!pg::is_null(r, i, 9)) row.checksum = pg::get_int8(r, i, 9);
                            v.event(row);
                          });
        !r) {
      return r.error();
    }
    pg_db d{c_};
    return admin_detail::finish_verify(d, sql, v);
  }

  result<void> dump(const dump_visitor& visit) override {
    auto tx = snapshot_tx(c_);
    if (!tx) return tx.error();
    auto schemas = read_schemas(c_);
    if (!schemas) return std::move(schemas).error();
    auto count = scalar(c_, "cannot count events", "SELECT count(*) FROM annals_events");
    if (!count) return std::move(count).error();
    if (auto r = visit.begin(*schemas, *count); !r) return r;
    raw_event ev;
    result<void> failed;
    auto r = each_row(c_, "cannot read events",
                      "SELECT e.position, s.name, e.stream_version, e.event_id, e.type, "
                      "e.recorded_at, e.metadata, e.payload FROM annals_events e "
                      "LEFT JOIN annals_streams s ON s.id = e.stream ORDER BY e.position",
                      params{}, [&](const PGresult* res, int i) {
                        failed = admin_detail::dump_row(pg_row{res, i}, ev, visit);
                        return failed.ok();
                      });
    if (!r) return r;
    return failed;
  }

  result<std::unique_ptr<import_session>> begin_import() override {
    return admin_detail::start_import<pg_import>(c_);
  }

 private:
  // The constraints and indexes the format relies on (see the header comment).
  result<void> check_integrity(admin_detail::store_verifier& v) {
    std::set<std::string> present;
    if (auto r = each_row(c_, "cannot read the store's constraints",
                          "SELECT conname::text FROM pg_catalog.pg_constraint WHERE conrelid IN "
                          "(to_regclass('annals_events'), to_regclass('annals_streams')) AND "
                          "convalidated",
                          params{},
                          [&](const PGresult* r, int i) { present.insert(text(r, i, 0)); });
        !r) {
      return r;
    }
    for (const char* name : {"annals_events_pkey", "annals_events_stream_fkey",
                             "annals_events_stream_version_key", "annals_events_event_id_key",
                             "annals_streams_pkey", "annals_streams_name_key"}) {
      if (!present.count(name)) {
        v.problem(0, "integrity",
                  fmt::format("PostgreSQL: constraint {} is missing (or not validated): the "
                              "store's guarantees rest on it",
                              name));
      }
    }
    return each_row(c_, "cannot read the store's indexes",
                    "SELECT c.relname::text FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class "
                    "c ON c.oid = i.indexrelid WHERE i.indrelid IN (to_regclass('annals_events'), "
                    "to_regclass('annals_streams'), to_regclass('annals_schemas')) AND NOT "
                    "(i.indisvalid AND i.indisready) ORDER BY 1",
                    params{}, [&](const PGresult* r, int i) {
                      v.problem(0, "integrity",
                                fmt::format("PostgreSQL: index {} is invalid (rebuild it with "
                                            "REINDEX)",
                                            text(r, i, 0)));
                    });
  }

  std::unique_ptr<event_store> store_;
  connection c_;
};

}  // namespace

namespace admin_detail {

result<std::unique_ptr<store_admin>> open_postgres_admin(const std::string& uri, bool writable) {
  if (uri.find('\0') != std::string::npos) {
    return error(errc::invalid_argument, "PostgreSQL URI contains NUL");
  }
  // Connects first, bounded: an unreachable server fails here within connect_timeout_s.
  auto c = connection::open(uri, connect_timeout_s);
  if (!c) return std::move(c).error();
  params settings;
  settings.add_text(lock_timeout).add_text(writable ? "off" : "on");
  if (auto r = c->exec("cannot configure the connection",
                       "SELECT set_config('lock_timeout', $1, false), "
                       "set_config('default_transaction_read_only', $2, false)",
                       settings, false);
      !r) {
    return std::move(r).error();
  }
  postgres_options o;
  o.pool_size = 1;
  o.read_only = !writable;
  o.create_if_missing = writable;
  auto store = open_postgres_store(uri, std::move(o));
  if (!store) return std::move(store).error();
  return std::unique_ptr<store_admin>(
      std::make_unique<pg_admin>(std::move(store).value(), std::move(c).value()));
}

}  // namespace admin_detail
}  // namespace annals
