// annals/admin.hpp — store inspection and maintenance for generic tools (`annals`, servers):
// listing streams, statistics, a whole-store verification that keeps going after problems,
// and an exact export / import in JSON lines.
//
// A store_admin works on the stored rows themselves, below the event_store contract (it sees
// what read_all would refuse), so each backend has its own. open_admin() dispatches on the URI
// like open_store(): a path or "sqlite:PATH" (SQLite), "postgresql://..." or "postgres://..."
// (PostgreSQL). copy_store() and compare_stores() move a store between backends.
//
// Thread safety: a store_admin is for one thread at a time. Ownership: it owns its store
// connection(s); store() borrows the event_store it opened, valid while the admin lives.
#pragma once

#include <annals/event_store.hpp>
#include <annals/status.hpp>
#include <annals/store.hpp>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

class payload_decoder;  // annals/json.hpp

struct stream_info {
  std::string stream_id;
  std::int64_t version = -1;     // the stream row's last version
  std::int64_t event_count = 0;  // events stored for it (version + 1 in a healthy store)
};

struct type_stats {
  std::string type;
  std::int64_t events = 0;
  std::int64_t payload_bytes = 0;
};

struct store_stats {
  std::int32_t format_version = 0;
  std::int64_t events = 0;
  std::int64_t streams = 0;
  std::int64_t head_position = 0;
  std::int64_t file_bytes = 0;  // the database file plus its WAL
  std::int64_t payload_bytes = 0;
  std::int64_t metadata_bytes = 0;
  std::vector<stream_info> largest_streams;  // by event count, descending
  std::vector<type_stats> types;             // by event count, descending
  std::int64_t schemas = 0;                  // stored schema versions
  std::int64_t snapshots = 0;
  // The projections as consumer_admin lists them (annals/status.hpp: version is the stored
  // one), their head and lag as of stats' head_position.
  std::vector<consumer_status> projections;  // empty when the store has none
};

// One problem found by verify(). position is 0 when it is not about one event.
// A warning is something verify could not check rather than something wrong: a type with no
// stored descriptor at all ("type-unregistered", one per type, at its first event: stores
// whose application never registered schemas), an event without a schema version whose
// payload the latest stored version does not parse ("payload-unversioned"), or a type never
// registered whose payload the stored file defining its message does not parse
// ("payload-unregistered"). A payload failing the stored version the event names is a problem.
struct store_problem {
  std::int64_t position = 0;
  std::string check;   // short id: "version-gap", "event-id", "payload", "integrity", ...
  std::string detail;  // a sentence naming the stream, version, type...
  bool warning = false;
};

// An event row exactly as stored.
struct raw_event {
  std::int64_t position = 0;
  std::string stream_id;
  std::int64_t stream_version = 0;
  std::string event_id;  // the stored bytes (16 in a healthy store)
  std::string type;
  std::int64_t recorded_at_us = 0;
  std::optional<std::string> metadata;  // serialized annals.v1.EventMetadata; nullopt: NULL
  std::string payload;
};

// Receives a consistent copy of the store (one read snapshot): first the schemas and the
// number of events, then every event in position order. An error stops the dump.
struct dump_visitor {
  std::function<result<void>(const std::vector<stored_schema>& schemas, std::int64_t events)> begin;
  std::function<result<void>(const raw_event& event)> event;
};

// Writes into an empty store in one transaction: nothing is visible until commit(), and
// destroying the session without commit() writes nothing.
class import_session {
 public:
  virtual ~import_session() = default;
  virtual result<void> add_schema(const stored_schema& schema) = 0;
  // Events must come in increasing positions and contiguous versions per stream from 0.
  virtual result<void> add_event(const raw_event& event) = 0;
  virtual result<void> commit() = 0;
};

class store_admin {
 public:
  virtual ~store_admin() = default;

  // The event store over the same file (read-only unless opened writable).
  virtual event_store& store() = 0;

  // Streams whose id starts with `prefix` (byte-wise), in id order, at most `limit`.
  virtual result<void> list_streams(std::string_view prefix, std::int64_t limit,
                                    const std::function<bool(const stream_info&)>& visit) = 0;

  // `top` bounds largest_streams (types are all listed).
  virtual result<store_stats> stats(std::size_t top) = 0;

  // The projections' bookkeeping alone (stats().projections without counting the store), with
  // their lag behind the current head (one event read per projection, for its age; an
  // unreadable one leaves lag_seconds at 0): cheap enough for a metrics scrape. Empty when the
  // store has none.
  virtual result<std::vector<consumer_status>> projections() = 0;

  // Checks the whole store and reports each problem to `report`, continuing after it:
  // positions, versions contiguous per stream and equal to the stream rows, event ids, types,
  // metadata, recorded_at, every payload against the stored schemas, projections (checkpoint
  // past the head, stuck, parked events), and the backend's own integrity check.
  // With `upcast` (the application's upcasters: generic tools have none), every event is also
  // run through its upcaster chain and a chain that fails is a problem ("upcast").
  // Returns the number of problems, warnings not counted; an error only when the store
  // cannot be read at all.
  virtual result<std::int64_t> verify(const std::function<void(const store_problem&)>& report,
                                      const upcasters* upcast = nullptr) = 0;

  virtual result<void> dump(const dump_visitor& visit) = 0;

  // Starts an import. invalid_argument when the store already holds events, streams or
  // schemas, or was opened read-only.
  virtual result<std::unique_ptr<import_session>> begin_import() = 0;
};

// Opens the store at `uri` for inspection. Read-only unless `writable` (needed by
// begin_import; a missing file, or a database without the store's tables, is then created as
// a new store). Errors as open_store(): not_found (missing file or tables, read-only),
// corruption (not an Annals store, newer format), io (for PostgreSQL: a server that does not
// answer within 5 s, refused credentials, a missing database).
result<std::unique_ptr<store_admin>> open_admin(std::string_view uri, bool writable = false);

// `annals export`: writes the store as JSON lines (annals.v1.ExportLine, protobuf's JSON
// mapping): a header, every schema, then every event with its stored bytes (base64) and a
// readable decoding of its metadata and payload. Returns the number of events written.
// A row that cannot be exported exactly (malformed event id or metadata, no stream row) stops
// it: corruption, naming the position (`annals verify` lists every such row).
result<std::int64_t> export_store(store_admin& admin, std::ostream& out);

// `annals import`: reads what export_store wrote into an empty store, exactly (positions,
// versions, ids, types, times, metadata and payload bytes, schemas), all or nothing.
// Every line is checked as verify would check the row: positions from 1, increasing and below
// 2^62 (so appends can go on), versions contiguous per stream from 0, ids UUIDs and unique,
// well-formed stream ids, types and metadata, schema versions 0 or one of the imported
// schemas of the event's type. Payloads and times are copied as they are. Malformed lines
// are all reported (invalid_argument, one "line N: ..." per line of the message) and nothing
// is written. Returns the number of events imported.
result<std::int64_t> import_store(store_admin& admin, std::istream& in);

// `annals migrate`, first half: copies every schema and every event of `from` (one read
// snapshot, rows exactly as stored: positions, stream ids and versions, event ids, types,
// recorded_at, metadata and payload bytes) into the empty store `to` (opened writable) through
// one import session: all or nothing. Not copied: snapshots (a cache; aggregates save new
// ones), projection checkpoints, parked events and read models (derived data: rebuild them at
// the target). invalid_argument when `to` is not empty (nothing written); corruption, naming
// the position, when a row of `from` cannot be copied (annals verify lists them).
struct copy_summary {
  std::int64_t events = 0;   // events copied
  std::int64_t streams = 0;  // streams copied (their stream rows)
  std::int64_t schemas = 0;  // stored schema versions copied
};
result<copy_summary> copy_store(store_admin& from, store_admin& to);

// `annals migrate`, second half: re-reads both stores (each from one snapshot, side by side,
// one event of each in memory at a time; the stream lists whole) and compares every event
// field by field and byte for byte, the stream rows (id, version, event count) and the
// schemas. Returns the differences, one sentence each (at most 100, then a count of the
// rest); empty when identical.
result<std::vector<std::string>> compare_stores(store_admin& a, store_admin& b);

// One event as a one-line JSON object for people and scripts (`annals read --json`): the
// fields of annals.v1.ExportedEvent without the raw bytes (metadata decoded, payload_json).
std::string event_json(const recorded_event& event, payload_decoder& decoder);

}  // namespace annals
