// The row checks every store_admin shares (checks.hpp).
#include "admin/checks.hpp"

#include <annals/upcaster.hpp>

#include "store/checksum.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace annals::admin_detail {
namespace {
// 2000-01-01T00:00:00Z: an Annals store cannot hold anything older.
constexpr std::int64_t earliest_plausible_us = 946684800LL * 1000000;
constexpr std::int64_t day_us = 86400LL * 1000000;
}  // namespace

store_verifier::store_verifier(std::vector<stored_schema> schemas, const upcasters* upcast,
                               const report_fn& report, int checksum_format)
    : decoder_(std::move(schemas)),
      upcast_(upcast),
      report_(report),
      latest_plausible_(store::system_clock_us() + day_us),
      checksum_format_(checksum_format) {}

void store_verifier::problem(std::int64_t position, std::string check, std::string detail) {
  ++problems_;
  report_(store_problem{position, std::move(check), std::move(detail)});
}

void store_verifier::warning(std::int64_t position, std::string check, std::string detail) {
  report_(store_problem{position, std::move(check), std::move(detail), true});
}

// Only the version the event names is authoritative: failing it is a problem; failing a best
// guess (the latest version for an event without one, another type's stored file for a type
// never registered) a warning.
void store_verifier::check_payload(std::int64_t pos, const std::string& type,
                                   std::int32_t version, std::string_view payload) {
  if (const stored_schema* exact = decoder_.find(type, version)) {
    if (auto c = decoder_.check(*exact, payload); !c) problem(pos, "payload", c.error().message());
  } else if (const stored_schema* latest = decoder_.pick(type, version)) {
    auto c = decoder_.check(*latest, payload);
    if (version != 0) {
      problem(pos, "schema-version",
              fmt::format("the event says schema version {} of {}, which the store does not "
                          "have (the latest, version {}, {})",
                          version, type, latest->version, c ? "parses it" : c.error().message()));
    } else if (!c) {
      warning(pos, "payload-unversioned",
              fmt::format("the event has no schema version and the latest stored version of "
                          "{} does not parse it: {}",
                          type, c.error().message()));
    }
  } else if (version != 0) {
    // Only a registered type is stamped with a version: a stamped event whose type the store
    // has no schema of had its type changed after it was written (a damaged row).
    problem(pos, "schema-version",
            fmt::format("the event says schema version {} of {}, but the store has no schema "
                        "of that type",
                        version, type));
  } else if (const stored_schema* other = decoder_.find_defining(type)) {
    if (auto c = decoder_.check(*other, payload, type); !c) {
      warning(pos, "payload-unregistered",
              fmt::format("event type {} has no schema in the store; {}", type,
                          c.error().message()));
    }
  } else {
    auto [it, added] = undescribed_.try_emplace(type, pos, 0);
    ++it->second.second;
  }
}

void store_verifier::event(const event_row& r) {
  const std::int64_t pos = r.position;
  const std::string name =
      r.stream_name ? std::string(*r.stream_name) : fmt::format("#{}", r.stream);
  if (pos < 1 || pos <= last_position_) {
    problem(pos, "position",
            fmt::format("position {} does not follow position {}", pos, last_position_));
  }
  last_position_ = pos;
  if (!r.stream_name) {
    problem(pos, "stream-row-missing",
            fmt::format("the event refers to stream #{}, which the streams table does not have",
                        r.stream));
  }
  if (!r.stream_version_typed || r.stream_version < 0) {
    problem(pos, "version", fmt::format("stream '{}' has a malformed version", name));
  } else {
    auto [it, added] = next_version_.try_emplace(r.stream, 0);
    if (r.stream_version > it->second) {
      problem(pos, "version-gap",
              fmt::format("stream '{}' jumps to version {}; expected {}", name, r.stream_version,
                          it->second));
    } else if (r.stream_version < it->second) {
      problem(pos, "version-duplicate",
              fmt::format("stream '{}' has version {} again (or out of order); expected {}", name,
                          r.stream_version, it->second));
    }
    it->second = std::max(it->second, r.stream_version + 1);
  }
  if (!r.event_id_typed) {
    problem(pos, "event-id", "the event id is not a blob of 16 bytes");
  } else if (r.event_id.size() != 16) {
    problem(pos, "event-id",
            fmt::format("the event id is {} bytes long, not 16", r.event_id.size()));
  }
  const std::string type(r.type);
  bool type_ok = r.type_typed && store::check_event_type(type).ok();
  if (!type_ok) problem(pos, "type", fmt::format("event type '{}' is malformed", type));
  const std::int64_t at = r.recorded_at_us;
  if (!r.recorded_at_typed) {
    problem(pos, "recorded-at", "recorded_at is not an integer");
  } else if (at < earliest_plausible_us || at > latest_plausible_) {
    problem(pos, "recorded-at", fmt::format("recorded_at {} is not a plausible time", at));
  } else {
    if (at < last_recorded_) {
      problem(pos, "recorded-at-decreasing",
              fmt::format("recorded_at goes back {} us from the previous event",
                          last_recorded_ - at));
    }
    last_recorded_ = at;
  }
  if (!r.metadata_typed || !well_formed_metadata(r.metadata, meta_)) {
    problem(pos, "metadata", "the metadata is not a well-formed annals.v1.EventMetadata");
    meta_.schema_version = 0;
  }
  if (!r.payload_typed) {
    problem(pos, "payload", "the payload is not a blob");
  } else if (type_ok) {
    check_payload(pos, type, meta_.schema_version, r.payload);
    if (upcast_ && !upcast_->empty()) {
      upcast_probe_.position = pos;
      upcast_probe_.type = type;
      upcast_probe_.metadata.schema_version = meta_.schema_version;
      upcast_probe_.payload.assign(r.payload);
      if (auto u = upcast_->apply(upcast_probe_); !u) problem(pos, "upcast", u.error().message());
    }
  }
  check_checksum(r);
}

// The row's checksum against its stored bytes: a row altered after it was written (a bit
// flip that left every field well-formed) differs here and nowhere else.
void store_verifier::check_checksum(const event_row& r) {
  if (!r.checksum_typed) {
    problem(r.position, "checksum", "the checksum is not an integer");
    return;
  }
  if (!r.checksum) {
    if (unchecked_++ == 0) first_unchecked_ = r.position;
    return;
  }
  // A missing stream row or a column of the wrong storage class is reported already; the sum
  // of such a row means nothing more.
  if (!r.stream_name || !r.stream_version_typed || !r.event_id_typed || !r.type_typed ||
      !r.recorded_at_typed || !r.metadata_typed || !r.payload_typed) {
    return;
  }
  auto sum = store::event_checksum(*r.stream_name, r.stream_version, r.event_id, r.type,
                                   r.recorded_at_us, r.metadata, r.payload);
  if (static_cast<std::int64_t>(sum) != *r.checksum) {
    problem(r.position, "checksum",
            fmt::format("the stored bytes of event {} (stream '{}' version {}) do not match "
                        "their checksum: the row was altered after it was written",
                        r.position, *r.stream_name, r.stream_version));
  }
}

void store_verifier::stream_row(std::int64_t key, std::string_view name, std::int64_t version) {
  auto it = next_version_.find(key);
  std::int64_t last = it == next_version_.end() ? -1 : it->second - 1;
  if (last != version) {
    problem(0, "stream-version",
            fmt::format("stream '{}' says version {} but its events end at {}", name, version,
                        last));
  }
}

void store_verifier::duplicate_id(std::int64_t first_position, std::int64_t count,
                                  std::string_view positions) {
  problem(first_position, "event-id-duplicate",
          fmt::format("{} events share one event id (positions {})", count, positions));
}

void store_verifier::projections(const std::vector<consumer_status>& projections) {
  for (const auto& p : projections) {
    if (p.checkpoint > last_position_) {
      problem(0, "projection-checkpoint",
              fmt::format("projection '{}' has checkpoint {} past the head {}", p.name,
                          p.checkpoint, last_position_));
    }
    if (p.stuck_position) {
      problem(*p.stuck_position, "projection-stuck",
              fmt::format("projection '{}' is stuck: {}", p.name, p.error));
    }
  }
}

void store_verifier::parked(std::int64_t position, std::string_view projection,
                            std::string_view type, std::string_view error) {
  problem(position, "projection-parked",
          fmt::format("projection '{}' parked this {} event: {}", projection, type, error));
}

std::int64_t store_verifier::finish() {
  for (const auto& [type, seen] : undescribed_) {
    warning(seen.first, "type-unregistered",
            fmt::format("event type {} has no schema in the store and no stored descriptor "
                        "defines it: its {} event{} (first at position {}) were not checked",
                        type, seen.second, seen.second == 1 ? "" : "s", seen.first));
  }
  undescribed_.clear();
  if (unchecked_ > 0) {
    warning(first_unchecked_, "checksum-missing",
            fmt::format("{} event{} written before checksums (storage format {} or older): "
                        "not checked",
                        unchecked_, unchecked_ == 1 ? " was" : "s were", checksum_format_ - 1));
    unchecked_ = 0;
  }
  return problems_;
}

result<void> import_checker::schema(const stored_schema& s) {
  if (auto r = store::check_event_type(s.type); !r) return r;
  if (s.version < 1) return error(errc::invalid_argument, "schema version must be >= 1");
  if (!schemas_.emplace(s.type, s.version).second) {
    return error(errc::invalid_argument,
                 fmt::format("schema {} version {} appears twice", s.type, s.version));
  }
  return {};
}

result<import_checker::stream_state*> import_checker::event(const raw_event& e) {
  if (e.position <= last_position_) {
    return error(errc::invalid_argument,
                 fmt::format("position {} does not follow position {}", e.position,
                             last_position_));
  }
  if (auto r = store::check_stream_id(e.stream_id); !r) return r.error();
  if (auto r = store::check_event_type(e.type); !r) return r.error();
  if (e.event_id.size() != 16) return error(errc::invalid_argument, "an event id must be 16 bytes");
  auto it = streams_.find(e.stream_id);
  std::int64_t expected = it == streams_.end() ? 0 : it->second.last + 1;
  if (e.stream_version != expected) {
    return error(errc::invalid_argument,
                 fmt::format("stream '{}' version {} does not follow (expected {})", e.stream_id,
                             e.stream_version, expected));
  }
  if (it == streams_.end()) it = streams_.emplace(e.stream_id, stream_state{}).first;
  return &it->second;
}

error not_empty(std::int64_t events, std::int64_t streams, std::int64_t schemas) {
  return error(errc::invalid_argument,
               fmt::format("import needs an empty store; this one has {} events, {} streams and "
                           "{} schemas",
                           events, streams, schemas));
}

error no_stream_row(std::int64_t position) {
  return error(errc::corruption,
               fmt::format("the event at position {} has no stream row (run annals verify)",
                           position));
}

std::string parked_sql(std::string_view parked_source) {
  return fmt::format(
      "SELECT consumer, CAST(position AS BIGINT), type, error FROM {} k "
      "WHERE k.kind = 'projection' AND k.state = 'parked' ORDER BY position, consumer",
      parked_source);
}

}  // namespace annals::admin_detail
