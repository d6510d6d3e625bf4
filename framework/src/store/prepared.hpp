// Backend-independent checks and encodings done before an append takes the write lock.
#pragma once

#include <annals/event_store.hpp>
#include <annals/store.hpp>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace annals::detail {
class sql_connection;  // db/sql_connection.hpp
}

namespace annals::store {

using uuid_bytes = std::array<unsigned char, 16>;

// Parses canonical 8-4-4-4-12 hex (either case).
std::optional<uuid_bytes> parse_uuid(std::string_view text);
// Canonical lower-case text; the second form reuses `out`'s buffer.
std::string format_uuid(const unsigned char* bytes);
void format_uuid(const unsigned char* bytes, std::string& out);
// A new UUIDv7 written to 16 bytes. Thread-safe, monotonic in one process, fork-safe.
void new_uuid_v7(unsigned char* bytes);

// The event at `position` read back through store.read_all (so upcast as every read); nullopt
// if none is there.
result<std::optional<recorded_event>> event_at(event_store& store, std::int64_t position);
// find_event for a backend: parses the id (invalid_argument naming it), asks `position_of`
// for the event's position (nullopt: no such id), then reads it with event_at.
result<std::optional<recorded_event>> find_event_by_id(
    event_store& store, std::string_view event_id,
    const std::function<result<std::optional<std::int64_t>>(const uuid_bytes&)>& position_of);

// errc::invalid_argument with a message naming the rule, or success.
result<void> check_stream_id(std::string_view stream_id);
result<void> check_event_type(std::string_view type);
// A read's arguments, checked the same in every backend: the stream id, max_count >= 0, and
// read_all's event types.
result<void> check_read(std::string_view stream_id, const read_stream_options& o);
result<void> check_read(const read_all_options& o);
bool valid_utf8(std::string_view s) noexcept;

// An event ready to insert: validated, id assigned, metadata serialized.
struct prepared_event {
  uuid_bytes id{};
  std::string type;
  std::string payload;
  std::string metadata;  // serialized annals.v1.EventMetadata; empty when there is none
};

// The schema version a store object stamps per event type (the versions it registered).
// Immutable once shared: a registration publishes a new map, never edits one in place.
using schema_versions = std::map<std::string, std::int32_t, std::less<>>;

// Validates an append's stream id, events and expected version (an exact one must not be
// negative), assigns missing ids from `id_source`
// (default: UUIDv7), stamps metadata.schema_version where it is 0 from `versions` (when not
// null; a type it does not list stays 0) and serializes metadata. Moves payloads out of
// `events`.
result<std::vector<prepared_event>> prepare_append(std::string_view stream_id,
                                                   const expected_version& expected,
                                                   std::vector<event_data>& events,
                                                   const std::function<std::string()>& id_source,
                                                   const schema_versions* versions);

// Expected-version rules and their errors, the same in every backend.
// Whether a stream whose last version is `current` (-1: no stream) satisfies `expected`.
bool expected_matches(const expected_version& expected, std::int64_t current) noexcept;
// errc::concurrency_conflict with conflict_details and the message every backend gives.
error conflict_error(std::string_view stream_id, const expected_version& expected,
                     std::int64_t current);

// Where an event id is stored.
struct stored_event_id {
  std::string stream_id;
  std::int64_t stream_version = 0;
  std::int64_t position = 0;
};
// Decides an append that conflicted or whose event ids collided, inside the backend's write
// lock: if every event id is already stored at the versions this append would have given it,
// the original result (already_appended); if none is stored, an empty optional; otherwise
// invalid_argument naming one misplaced id. `find` looks one event id up (nullopt: absent).
result<std::optional<append_result>> judge_repeated_append(
    std::string_view stream_id, const expected_version& expected,
    const std::vector<prepared_event>& events,
    const std::function<result<std::optional<stored_event_id>>(const prepared_event&)>& find);

// Upcasting on reads, the same in every backend (`upcast` may be null).
// The stored type names to select so that, after upcasting, every `wanted` type is found.
std::vector<std::string> stored_types_for(const upcasters* upcast,
                                          const std::vector<std::string>& wanted);
// Runs the upcasters on `ev`; false when, afterwards, its type is not one of `wanted` (an
// empty `wanted` takes every type).
result<bool> upcast_wanted(const upcasters* upcast, recorded_event& ev,
                           const std::vector<std::string>& wanted);

// Schema registration, the same in every backend. check_schema_candidates: the checks made
// before the write lock (valid type names, a descriptor set and fingerprint each, no type
// twice): invalid_argument naming the candidate. resolve_registration: given every stored
// version of the candidates' types, each candidate's version (its fingerprint's stored
// version, else the declared one, else the type's next) and whether it must be stored;
// invalid_argument when a declared version disagrees with the store.
result<void> check_schema_candidates(const std::vector<schema_candidate>& candidates);
result<std::vector<registered_type>> resolve_registration(
    const std::vector<schema_candidate>& candidates, const std::vector<stored_schema>& stored);

// The registry's rows (annals_schemas), the same SQL on every backend through the database
// layer. read_schema_rows appends the stored schemas of `type` by version, or of every type
// (by type, then version) when `type` is empty. An unknown compatibility mode is corruption;
// given `unknown_modes` (the admin's readers, which report what they can), the row is read as
// backward and described there ("TYPE version N has ... 'MODE'") instead.
result<void> read_schema_rows(detail::sql_connection& c, std::string_view type,
                              std::vector<stored_schema>& out,
                              std::vector<std::string>* unknown_modes = nullptr);
// register_schemas() inside the caller's write transaction, the store's write lock held (so
// every registration committed before is read): reads the candidates' stored versions, runs
// `check` on them, resolves, and inserts the new descriptors stamped `now`. `wrote` says
// whether anything was inserted (when not, the caller rolls back).
result<std::vector<registered_type>> register_schema_rows(
    detail::sql_connection& c, const std::vector<schema_candidate>& candidates,
    const schema_check_fn& check, std::int64_t now, bool& wrote);

// The versions a store object stamps on appends: registrations publish a new immutable map,
// appends take the current one without waiting for a registration. Callers serialize publish().
// A short lock, not std::atomic<shared_ptr>: gcc 12's lock-bit implementation is opaque to
// ThreadSanitizer, which reports it as a race.
class schema_stamps {
 public:
  std::shared_ptr<const schema_versions> current() const {
    std::lock_guard lock(mu_);
    return versions_;
  }
  // Publishes a copy of the current map with `registered` set.
  void publish(const std::vector<registered_type>& registered);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const schema_versions> versions_;
};

// Encodes / decodes annals.v1.EventMetadata.
std::string encode_metadata(const event_metadata& m);
bool decode_metadata(std::string_view bytes, event_metadata& out);

std::int64_t system_clock_us();

// One store's commit signal: raised after every commit that appended events to that store (a
// database file, or a PostgreSQL database), so this process's runners, subscriptions and SSE
// streams on that store wake at once, and those on other stores sleep on. Thread-safe.
class commit_signal {
 public:
  void notify() noexcept;
  std::uint64_t sequence() const noexcept;
  // Returns when sequence() != seen, or after `timeout`.
  void wait(std::uint64_t seen, std::chrono::milliseconds timeout) const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::uint64_t sequence_ = 0;
};

// The signal of the store named `identity` (sqlite::identity, pg::identity): every handle on
// the same store in this process gets the same signal, for as long as one holds it.
std::shared_ptr<commit_signal> commit_signal_for(const std::string& identity);

// The signal of `s` (store::opened_store::commits); for a store Annals did not open (a test
// double), a signal of its own that nothing raises: those who wait on it poll.
std::shared_ptr<commit_signal> commits_of(const event_store& s);

}  // namespace annals::store
