// Internal to the admin code: what every backend's store_admin shares, so that verify and
// import judge rows the same way on SQLite and PostgreSQL, and an import accepts exactly what
// verify would pass. A backend reads its rows; these classes decide what is wrong with them.
#pragma once

#include <annals/admin.hpp>
#include <annals/event_store.hpp>
#include <annals/json.hpp>

#include "consumer/tables.hpp"
#include "store/prepared.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace annals::admin_detail {

// Imported positions stay below this, so that appends can go on after them.
inline constexpr std::int64_t max_import_position = std::int64_t{1} << 62;

// Stored metadata bytes as verify accepts them: an annals.v1.EventMetadata with
// schema_version >= 0 and every string UTF-8. Decodes into `out`; on false, out.schema_version
// is 0.
inline bool well_formed_metadata(std::string_view bytes, event_metadata& out) {
  bool ok = store::decode_metadata(bytes, out) && out.schema_version >= 0 &&
            store::valid_utf8(out.correlation_id) && store::valid_utf8(out.causation_id) &&
            store::valid_utf8(out.traceparent);
  for (const auto& h : out.headers) {
    if (!store::valid_utf8(h.key) || !store::valid_utf8(h.value)) ok = false;
  }
  if (!ok) out.schema_version = 0;
  return ok;
}

// One event row as a backend read it. SQLite columns are dynamically typed: the *_typed flags
// say whether a column holds the storage class the format gives it (always true on
// PostgreSQL, whose column types are fixed).
struct event_row {
  std::int64_t position = 0;
  std::int64_t stream = 0;                      // the stream row's key
  std::optional<std::string_view> stream_name;  // nullopt: no stream row has that key
  std::int64_t stream_version = 0;
  bool stream_version_typed = true;  // an integer
  std::string_view event_id;
  bool event_id_typed = true;  // a blob
  std::string_view type;
  bool type_typed = true;  // text
  std::int64_t recorded_at_us = 0;
  bool recorded_at_typed = true;  // an integer
  std::string_view metadata;      // empty when NULL
  bool metadata_typed = true;     // a blob or NULL
  std::string_view payload;
  bool payload_typed = true;  // a blob
  std::optional<std::int64_t> checksum;  // nullopt: NULL (written before checksums)
  bool checksum_typed = true;            // an integer or NULL
};

// The checks of store_admin::verify (annals/admin.hpp) on rows fed to it by a backend: first
// every event in position order, then every stream row, then what the backend's queries find
// (duplicate ids, projections, parked events). Reports each problem as it is found.
class store_verifier {
 public:
  using report_fn = std::function<void(const store_problem&)>;
  // `checksum_format`: the backend's storage format that added row checksums (rows with none
  // were written by an older one).
  store_verifier(std::vector<stored_schema> schemas, const upcasters* upcast,
                 const report_fn& report, int checksum_format);

  void problem(std::int64_t position, std::string check, std::string detail);
  void warning(std::int64_t position, std::string check, std::string detail);

  void event(const event_row& row);
  // A stream row against the events seen for its key.
  void stream_row(std::int64_t key, std::string_view name, std::int64_t version);
  // `count` events share one id; `positions` lists them.
  void duplicate_id(std::int64_t first_position, std::int64_t count, std::string_view positions);
  void projections(const std::vector<consumer_status>& projections);
  // An event still parked (state 'parked') by a projection.
  void parked(std::int64_t position, std::string_view projection, std::string_view type,
              std::string_view error);
  // Reports the types nothing stored describes (one warning each) and returns the number of
  // problems (warnings not counted).
  std::int64_t finish();

 private:
  void check_payload(std::int64_t pos, const std::string& type, std::int32_t version,
                     std::string_view payload);
  void check_checksum(const event_row& r);

  payload_decoder decoder_;
  const upcasters* upcast_;
  const report_fn& report_;
  std::int64_t problems_ = 0;
  std::int64_t last_position_ = 0, last_recorded_ = 0;
  const std::int64_t latest_plausible_;
  const int checksum_format_;
  std::int64_t unchecked_ = 0, first_unchecked_ = 0;  // rows without a checksum
  std::unordered_map<std::int64_t, std::int64_t> next_version_;  // by stream key
  // Types nothing stored describes: first position, events.
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> undescribed_;
  event_metadata meta_;
  recorded_event upcast_probe_;  // what the upcasters see of each event
};

// The checks an import_session makes before writing a row, the same on every backend (they
// mirror verify's). A backend keeps a key of its own per stream (its stream row).
class import_checker {
 public:
  struct stream_state {
    std::int64_t key = 0;   // the backend's stream row key; 0 until the row is written
    std::int64_t last = -1;  // the last version accepted
  };
  result<void> schema(const stored_schema& s);
  // Checks `e` against the rows accepted before it; returns its stream's state (new streams
  // are added with key 0). accept() it once it is written.
  result<stream_state*> event(const raw_event& e);
  void accept(stream_state& s, const raw_event& e) {
    s.last = e.stream_version;
    last_position_ = e.position;
  }
  const std::unordered_map<std::string, stream_state>& streams() const { return streams_; }

 private:
  std::unordered_map<std::string, stream_state> streams_;
  std::set<std::pair<std::string, std::int32_t>> schemas_;
  std::int64_t last_position_ = 0;
};

// The message import sessions give for a store that is not empty.
error not_empty(std::int64_t events, std::int64_t streams, std::int64_t schemas);

// The error of a dump that meets an event without a stream row.
error no_stream_row(std::int64_t position);

// One row of a dump query (columns: position, stream name or NULL when the stream row is
// missing, stream_version, event_id, type, recorded_at, metadata or NULL, payload) into `ev`,
// then to the visitor. R reads a backend's row: int64(col), bytes(col), is_null(col).
template <class R>
result<void> dump_row(const R& row, raw_event& ev, const dump_visitor& visit) {
  ev.position = row.int64(0);
  if (row.is_null(1)) return no_stream_row(ev.position);
  ev.stream_id.assign(row.bytes(1));
  ev.stream_version = row.int64(2);
  ev.event_id.assign(row.bytes(3));
  ev.type.assign(row.bytes(4));
  ev.recorded_at_us = row.int64(5);
  if (row.is_null(6)) {
    ev.metadata.reset();
  } else {
    ev.metadata = std::string(row.bytes(6));
  }
  ev.payload.assign(row.bytes(7));
  return visit.event(ev);
}

// Starts an import session of type S on connection `c` (S::start() checks and begins).
template <class S, class C>
result<std::unique_ptr<import_session>> start_import(C& c) {
  auto s = std::make_unique<S>(c);
  if (auto r = s->start(); !r) return r.error();
  return std::unique_ptr<import_session>(std::move(s));
}

// The projections' events still parked: projection, position, type, error; in position order.
std::string parked_sql(std::string_view parked_source);

// The backends' admins (backends/*/..._admin.cpp), reached through their tables
// (store/backend_ops.hpp) by open_admin(): a SQLite file, a PostgreSQL connection URI.
result<std::unique_ptr<store_admin>> open_sqlite_admin(const std::string& path, bool writable);
result<std::unique_ptr<store_admin>> open_postgres_admin(const std::string& uri, bool writable);

}  // namespace annals::admin_detail
