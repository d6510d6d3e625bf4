// annals/event_store.hpp — the event store contract, independent of the backend.
//
// An event store keeps streams of events. Each event has a stream version (0-based,
// contiguous per stream) and a global position (1-based, strictly increasing across the
// store, commit order == position order). See docs/storage-format.md for the SQLite layout.
//
// Thread safety: an event_store is safe to use from many threads at once. Concurrent appends
// in one process share commits (group commit). Several processes may open the same store; do
// not carry an open store across fork() (open a new one in the child).
// Lifetime: the store must outlive every call in progress on it. A visitor may call the store
// (reads use pooled connections); an exception thrown by a visitor propagates to the caller.
// Idempotency is by event id: a repeated append is recognised by its ids and versions, its
// payloads are not compared.
// Opening a store (SQLite, PostgreSQL, a URI) and its options: annals/store.hpp.
#pragma once

#include <annals/result.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace annals {

// What the caller believes about the stream before an append.
class expected_version {
 public:
  enum class kind { any, no_stream, stream_exists, exact };

  static expected_version any() noexcept { return {kind::any, -1}; }
  static expected_version no_stream() noexcept { return {kind::no_stream, -1}; }
  static expected_version stream_exists() noexcept { return {kind::stream_exists, -1}; }
  // The stream's last version is exactly `version` (>= 0). Use no_stream() for "empty".
  static expected_version exact(std::int64_t version) noexcept { return {kind::exact, version}; }
  // Parses "any", "no_stream", "stream_exists" or a non-negative decimal; anything else is
  // errc::invalid_argument.
  static result<expected_version> parse(std::string_view text);

  kind form() const noexcept { return kind_; }
  std::int64_t version() const noexcept { return version_; }  // only for kind::exact
  std::string to_string() const;

 private:
  expected_version(kind k, std::int64_t v) noexcept : kind_(k), version_(v) {}
  kind kind_;
  std::int64_t version_;
};

struct header {
  std::string key;
  std::string value;
  friend bool operator==(const header&, const header&) = default;
};

struct event_metadata {
  std::string correlation_id;  // default: empty
  std::string causation_id;    // default: empty
  std::string traceparent;     // W3C trace context; default: empty
  std::vector<header> headers; // user headers, order kept
  // Version of the type's descriptor in the store's schema registry that wrote the payload
  // (annals/schema.hpp). 0 on append: the store stamps the version this process registered
  // for the type, or leaves 0 (unknown) when it registered none. Set it only to copy events.
  std::int32_t schema_version = 0;
  friend bool operator==(const event_metadata&, const event_metadata&) = default;
};

// An event to append.
struct event_data {
  std::string event_id;  // canonical UUID text; empty: the store assigns a UUIDv7
  std::string type;      // Protobuf full name, e.g. "bank.v1.MoneyDeposited"
  std::string payload;   // serialized Protobuf bytes
  event_metadata metadata;
};

// An event as stored.
struct recorded_event {
  std::int64_t position = 0;        // global position, >= 1
  std::string stream_id;
  std::int64_t stream_version = 0;  // >= 0
  std::string event_id;             // canonical lower-case UUID text
  std::string type;
  std::int64_t recorded_at_us = 0;  // UTC microseconds since the Unix epoch
  event_metadata metadata;
  std::string payload;
};

// The events of one append get consecutive stream versions and consecutive global positions
// (one write lock), so the first event's position is position - (number of events - 1).
struct append_result {
  std::int64_t stream_version = -1;  // version of the last event now in the stream
  std::int64_t position = 0;         // global position of the last event; 0 for an empty append
  // True when every event id was already stored at these versions: nothing was written and
  // the original result is returned.
  bool already_appended = false;
};

enum class direction { forward, backward };

struct read_stream_options {
  // First version to read. Any negative value means the start (forward) or the end (backward).
  // Default -1.
  std::int64_t from_version = -1;
  direction dir = direction::forward;
  std::int64_t max_count = INT64_MAX;  // default: no limit
};

struct read_all_options {
  std::int64_t from_position = 1;     // inclusive; default: the start of the store
  std::int64_t max_count = INT64_MAX; // default: no limit
  std::vector<std::string> event_types{};  // empty: every type
  std::string stream_prefix{};             // empty: every stream; matched byte-wise
};

// Called once per event, in order. Return false to stop early. The reference is valid only
// during the call: reads stream, they never hold a whole stream in memory.
using event_visitor = std::function<bool(const recorded_event&)>;

// Limits enforced on every append. Exceeding one is errc::invalid_argument.
struct store_limits {
  static constexpr std::size_t max_stream_id_bytes = 512;
  static constexpr std::size_t max_type_bytes = 256;
  static constexpr std::size_t max_event_bytes = 4u << 20;    // payload + metadata, 4 MiB
  static constexpr std::size_t max_append_bytes = 64u << 20;  // one append call, 64 MiB
  static constexpr std::size_t max_events_per_append = 100000;
};

// Which readers must keep working when a type's descriptor changes (Confluent's names).
// See annals/schema.hpp.
enum class compatibility {
  backward,  // default: the new descriptor reads every event written with the stored ones
  forward,   // the stored descriptors read events written with the new one
  full,      // both
  none,      // no check
};

// One version of an event type's descriptor, as the store keeps it.
struct stored_schema {
  std::string type;            // full name, e.g. "bank.v1.MoneyDeposited"
  std::int32_t version = 0;    // 1, 2, 3... per type, in registration order
  compatibility mode = compatibility::backward;  // the mode it was registered with
  std::string fingerprint;     // hex hash of the type's closure (annals::type_fingerprint)
  std::string descriptor_set;  // serialized google.protobuf.FileDescriptorSet
  std::int64_t registered_at_us = 0;
};

// What register_schemas() is asked to store. descriptor_set and fingerprint as above.
struct schema_candidate {
  std::string type;
  compatibility mode = compatibility::backward;
  std::string descriptor_set;
  std::string fingerprint;
  std::int32_t version = 0;  // declared by the application; 0: the store numbers it
};

struct registered_type {
  std::string type;
  std::int32_t version = 0;  // the version this process now stamps on events of the type
  bool added = false;        // true when this call stored a new version
};

// Called by register_schemas() inside the store's write lock with every stored version of the
// candidates' types (oldest first); an error refuses the whole registration.
using schema_check_fn = std::function<result<void>(const std::vector<stored_schema>& stored)>;

// A saved aggregate state (annals/aggregate.hpp, snapshots).
struct snapshot_record {
  std::string stream_id;
  std::string key;              // state descriptor hash + fold version; other keys are ignored
  std::int64_t version = -1;    // the last stream version folded into `state`
  std::string state;            // serialized state message
  std::int64_t taken_at_us = 0; // set by the store
};

class event_store {
 public:
  virtual ~event_store() = default;

  // Appends atomically: all events or none. Checks `expected` against the stream inside the
  // write lock. Errors: concurrency_conflict (with conflict_details), invalid_argument (bad
  // stream id, type, event id, size, or event ids already stored elsewhere), read_only, busy,
  // io.
  // An empty `events` list checks `expected` and writes nothing.
  virtual result<append_result> append(std::string_view stream_id, expected_version expected,
                                       std::vector<event_data> events) = 0;

  // Reads one stream in version order. Returns the number of events visited.
  // A stream that does not exist visits nothing and returns 0 (not an error).
  // Errors (for both reads): invalid_argument (bad stream id or type, negative max_count),
  // corruption (a malformed stored row, or an upcaster that cannot read an old event), busy, io.
  virtual result<std::int64_t> read_stream(std::string_view stream_id,
                                           const read_stream_options& options,
                                           const event_visitor& visit) = 0;

  // Reads $all in position order from options.from_position, filtered.
  // Returns the number of events visited. With upcasters (sqlite_options::upcast), the type
  // filter also selects the stored types read as a wanted type, and applies after upcasting.
  virtual result<std::int64_t> read_all(const read_all_options& options,
                                        const event_visitor& visit) = 0;

  // The stream's last version, or -1 if it has no events.
  virtual result<std::int64_t> stream_version(std::string_view stream_id) = 0;

  // The highest committed global position, 0 for an empty store.
  virtual result<std::int64_t> head_position() = 0;

  // The event with this id (canonical UUID text, any case), upcast as reads are, or nullopt
  // when no event has it (or the upcasters drop it). Errors: invalid_argument (not a UUID),
  // busy, io, corruption.
  // Default: invalid_argument (the backend cannot look events up by id).
  virtual result<std::optional<recorded_event>> find_event(std::string_view event_id);

  // --- Schema registry (use annals/schema.hpp; these are the storage primitives) ---
  // Every stored version of `type` (all types when empty), by type then version.
  // Default: invalid_argument (the backend keeps no schemas).
  virtual result<std::vector<stored_schema>> read_schemas(std::string_view type = {});
  // Atomically: reads the stored versions of the candidates' types, calls `check`, stores each
  // candidate whose fingerprint is not stored yet as the type's next version, and remembers
  // the versions so later appends of this store object are stamped with them.
  // Errors: whatever `check` returns (nothing stored), read_only, invalid_argument (a declared
  // version that disagrees with the store), busy, io. Default: invalid_argument.
  virtual result<std::vector<registered_type>> register_schemas(
      const std::vector<schema_candidate>& candidates, const schema_check_fn& check);

  // --- Snapshots (used by annals::load / annals::handle for aggregates that opt in) ---
  // The snapshot of `stream_id` saved under `key`, or nullopt. Default: nullopt.
  virtual result<std::optional<snapshot_record>> read_snapshot(std::string_view stream_id,
                                                               std::string_view key);
  // Saves in the background, best effort: never blocks on the write lock and never reports a
  // failure to the caller (a failed save is logged and dropped). A snapshot older than the
  // stored one for the same key is ignored. Default: does nothing.
  virtual void save_snapshot(snapshot_record snapshot) noexcept;
};

// A new UUIDv7 (RFC 9562) in canonical lower-case text. Thread-safe; monotonic in one process.
std::string new_uuid_v7();

// A deterministic event id (a UUIDv8, RFC 9562, from a 128-bit hash) for the step `step`
// caused by the event `source_event_id`. A process manager that handles the same trigger again
// (after a crash) appends events with the same ids, and event_store::find_event() tells it the
// step is done. Not cryptographic: distinct (source, step) pairs give distinct ids unless a
// 122-bit non-cryptographic hash collides; do not derive ids from untrusted input to dedupe.
std::string derived_event_id(std::string_view source_event_id, std::string_view step);

// The checks append applies to a stream id (see store_limits): invalid_argument naming the rule.
result<void> validate_stream_id(std::string_view stream_id);
// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF).
bool is_valid_utf8(std::string_view text) noexcept;

}  // namespace annals
