#include "store/prepared.hpp"
#include "db/sql_connection.hpp"
#include "store/uri.hpp"

#include "annals/v1/envelope.pb.h"

#include <annals/schema.hpp>
#include <annals/upcaster.hpp>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <fmt/format.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <algorithm>

namespace annals {

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// UUIDv7 state: 48-bit ms timestamp, then a 12-bit counter (RFC 9562 §6.2 method 1) seeded
// randomly each millisecond, then 62 random bits. Reseeded in a fork()ed child (pthread_atfork)
// so parent and child never share a sequence, without a getpid() system call per id.
struct uuid_v7_state {
  std::mutex mu;
  std::mt19937_64 rng;
  bool seeded = false;
  std::uint64_t last_ms = 0;
  std::uint32_t counter = 0;
};
uuid_v7_state& v7_state() {
  static uuid_v7_state* s = [] {
    auto* st = new uuid_v7_state;  // never destroyed: usable from atexit handlers and threads
    pthread_atfork([] { v7_state().mu.lock(); }, [] { v7_state().mu.unlock(); },
                   [] {
                     auto& c = v7_state();
                     c.seeded = false;
                     c.mu.unlock();
                   });
    return st;
  }();
  return *s;
}
}  // namespace

namespace store {
void new_uuid_v7(unsigned char* b) {
  auto& st = v7_state();
  {
    std::lock_guard lock(st.mu);
    if (!st.seeded) {
      std::random_device rd;
      std::seed_seq seq{rd(), rd(), rd(), rd(), static_cast<unsigned>(getpid())};
      st.rng.seed(seq);
      st.seeded = true;
    }
    auto now_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
    if (now_ms > st.last_ms) {
      st.last_ms = now_ms;
      st.counter = static_cast<std::uint32_t>(st.rng() & 0x7ff);  // leave headroom to count
    } else if (++st.counter > 0xfff) {
      ++st.last_ms;  // counter exhausted: borrow the next millisecond, stay monotonic
      st.counter = static_cast<std::uint32_t>(st.rng() & 0x7ff);
    }
    std::uint64_t ms = st.last_ms;
    for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
    b[6] = static_cast<unsigned char>(0x70 | ((st.counter >> 8) & 0x0f));
    b[7] = static_cast<unsigned char>(st.counter & 0xff);
    std::uint64_t r = st.rng();
    for (int i = 8; i < 16; ++i) b[i] = static_cast<unsigned char>(r >> (8 * (i - 8)));
  }
  b[8] = static_cast<unsigned char>(0x80 | (b[8] & 0x3f));
}
}  // namespace store

std::string new_uuid_v7() {
  unsigned char b[16];
  store::new_uuid_v7(b);
  return store::format_uuid(b);
}

result<void> validate_stream_id(std::string_view stream_id) {
  return store::check_stream_id(stream_id);
}
bool is_valid_utf8(std::string_view text) noexcept { return store::valid_utf8(text); }

namespace store {

std::optional<uuid_bytes> parse_uuid(std::string_view t) {
  if (t.size() != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-') {
    return std::nullopt;
  }
  uuid_bytes out{};
  std::size_t o = 0;
  for (std::size_t i = 0; i < t.size();) {
    if (t[i] == '-') {
      ++i;
      continue;
    }
    int hi = hex_value(t[i]), lo = hex_value(t[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[o++] = static_cast<unsigned char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

void format_uuid(const unsigned char* b, std::string& out) {
  static constexpr char digits[] = "0123456789abcdef";
  out.resize(36);  // reuses the string's buffer: no allocation when reading many events
  char* p = out.data();
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = digits[b[i] >> 4];
    *p++ = digits[b[i] & 15];
  }
}

std::string format_uuid(const unsigned char* b) {
  std::string s;
  format_uuid(b, s);
  return s;
}

bool valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

result<void> check_stream_id(std::string_view id) {
  if (id.empty()) return error(errc::invalid_argument, "stream id is empty");
  if (id.size() > store_limits::max_stream_id_bytes) {
    return error(errc::invalid_argument,
                 fmt::format("stream id is {} bytes long; the limit is {} bytes", id.size(),
                             store_limits::max_stream_id_bytes));
  }
  if (!valid_utf8(id)) return error(errc::invalid_argument, "stream id is not valid UTF-8");
  for (std::size_t i = 0; i < id.size(); ++i) {
    auto c = static_cast<unsigned char>(id[i]);
    // C0 controls and DEL; in valid UTF-8, the C1 controls U+0080..U+009F (NEL among them)
    // are exactly the pairs C2 80..C2 9F.
    bool c1 = c == 0xc2 && i + 1 < id.size() && static_cast<unsigned char>(id[i + 1]) < 0xa0;
    if (c < 0x20 || c == 0x7f || c1) {
      std::uint32_t cp = c1 ? static_cast<unsigned char>(id[i + 1]) : c;
      return error(errc::invalid_argument,
                   fmt::format("stream id contains control character U+{:04X} (NUL, newline and "
                               "other control characters are not allowed)",
                               cp));
    }
  }
  if (id.front() == '$') {
    return error(errc::invalid_argument,
                 "stream ids starting with '$' are reserved for the store ($all)");
  }
  return {};
}

result<void> check_event_type(std::string_view type) {
  if (type.empty()) return error(errc::invalid_argument, "event type is empty");
  if (type.size() > store_limits::max_type_bytes) {
    return error(errc::invalid_argument,
                 fmt::format("event type is {} bytes long; the limit is {}", type.size(),
                             store_limits::max_type_bytes));
  }
  bool dot_ok = false;
  for (char c : type) {
    bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_';
    if (c == '.' && dot_ok) {
      dot_ok = false;
      continue;
    }
    if (!word) {
      return error(errc::invalid_argument,
                   "event type must be a Protobuf full name such as 'bank.v1.MoneyDeposited' "
                   "(letters, digits, '_' and single dots)");
    }
    dot_ok = true;
  }
  if (!dot_ok) return error(errc::invalid_argument, "event type must not end with '.'");
  return {};
}

bool expected_matches(const expected_version& expected, std::int64_t current) noexcept {
  switch (expected.form()) {
    case expected_version::kind::any: return true;
    case expected_version::kind::no_stream: return current == -1;
    case expected_version::kind::stream_exists: return current >= 0;
    case expected_version::kind::exact: return current == expected.version();
  }
  return false;
}

error conflict_error(std::string_view stream_id, const expected_version& expected,
                     std::int64_t current) {
  conflict_details d{std::string(stream_id), expected.to_string(), current};
  auto msg = fmt::format("concurrency conflict on stream '{}': expected version {}, actual {}",
                         stream_id, d.expected,
                         current < 0 ? std::string("no_stream") : std::to_string(current));
  return error(std::move(d), std::move(msg));
}

result<std::optional<append_result>> judge_repeated_append(
    std::string_view stream_id, const expected_version& expected,
    const std::vector<prepared_event>& events,
    const std::function<result<std::optional<stored_event_id>>(const prepared_event&)>& find) {
  std::int64_t first_version = -1;
  append_result original{-1, 0, true};
  std::size_t found = 0;
  std::string mismatch;
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto where = find(events[i]);
    if (!where) return std::move(where).error();
    if (!*where) continue;
    ++found;
    const stored_event_id& at = **where;
    if (i == 0) first_version = at.stream_version;
    bool in_place = at.stream_id == stream_id && first_version >= 0 &&
                    at.stream_version == first_version + static_cast<std::int64_t>(i);
    if (!in_place && mismatch.empty()) {
      mismatch = fmt::format("event id {} is already stored in stream '{}' at version {}",
                             format_uuid(events[i].id.data()), at.stream_id, at.stream_version);
    }
    original.stream_version = at.stream_version;
    original.position = at.position;
  }
  if (found == 0) return std::optional<append_result>{};
  bool expected_ok = true;
  switch (expected.form()) {
    case expected_version::kind::no_stream: expected_ok = first_version == 0; break;
    case expected_version::kind::exact:
      expected_ok = first_version - 1 == expected.version();  // no overflow at INT64_MAX
      break;
    default: break;
  }
  if (found == events.size() && mismatch.empty() && expected_ok) {
    return std::optional<append_result>{original};
  }
  if (mismatch.empty()) {
    mismatch = found == events.size()
                   ? fmt::format("these event ids are already stored in stream '{}' from "
                                 "version {}, not where expected version {} puts them",
                                 stream_id, first_version, expected.to_string())
                   : "some, not all, of this append's event ids are already stored";
  }
  return error(errc::invalid_argument,
               mismatch + "; an append may only be repeated with the same ids at the same "
                          "versions");
}

std::vector<std::string> stored_types_for(const upcasters* upcast,
                                          const std::vector<std::string>& wanted) {
  if (!upcast || upcast->empty() || wanted.empty()) return wanted;
  return upcast->stored_types_for(wanted);
}

result<bool> upcast_wanted(const upcasters* upcast, recorded_event& ev,
                           const std::vector<std::string>& wanted) {
  if (!upcast || upcast->empty()) return true;
  if (auto u = upcast->apply(ev); !u) return u.error();
  return wanted.empty() || std::find(wanted.begin(), wanted.end(), ev.type) != wanted.end();
}

std::string encode_metadata(const event_metadata& m) {
  if (m.correlation_id.empty() && m.causation_id.empty() && m.traceparent.empty() &&
      m.headers.empty() && m.schema_version == 0) {
    return {};
  }
  v1::EventMetadata pb;
  pb.set_correlation_id(m.correlation_id);
  pb.set_causation_id(m.causation_id);
  pb.set_traceparent(m.traceparent);
  for (const auto& h : m.headers) {
    auto* out = pb.add_headers();
    out->set_key(h.key);
    out->set_value(h.value);
  }
  pb.set_schema_version(m.schema_version);
  std::string bytes;
  pb.SerializeToString(&bytes);
  return bytes;
}

// Reads annals.v1.EventMetadata straight into `out`, reusing its strings' buffers: this runs
// once per event read, so it avoids the allocations of a generated message and a copy.
bool decode_metadata(std::string_view bytes, event_metadata& out) {
  using google::protobuf::internal::WireFormatLite;
  out.correlation_id.clear();
  out.causation_id.clear();
  out.traceparent.clear();
  out.headers.clear();
  out.schema_version = 0;
  if (bytes.empty()) return true;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  auto read_string = [&](std::string& target) {
    std::uint32_t size = 0;
    return in.ReadVarint32(&size) && in.ReadString(&target, static_cast<int>(size));
  };
  while (std::uint32_t tag = in.ReadTag()) {
    bool ok = true;
    switch (tag) {
      case (1 << 3) | 2: ok = read_string(out.correlation_id); break;
      case (2 << 3) | 2: ok = read_string(out.causation_id); break;
      case (3 << 3) | 2: ok = read_string(out.traceparent); break;
      case (4 << 3) | 2: {
        std::uint32_t size = 0;
        if (!in.ReadVarint32(&size)) return false;
        auto limit = in.PushLimit(static_cast<int>(size));
        header& h = out.headers.emplace_back();
        while (std::uint32_t inner = in.ReadTag()) {
          if (inner == ((1 << 3) | 2)) {
            ok = read_string(h.key);
          } else if (inner == ((2 << 3) | 2)) {
            ok = read_string(h.value);
          } else {
            ok = WireFormatLite::SkipField(&in, inner);
          }
          if (!ok) return false;
        }
        if (!in.ConsumedEntireMessage()) return false;
        in.PopLimit(limit);
        break;
      }
      case (5 << 3) | 0: {
        std::uint32_t v = 0;
        ok = in.ReadVarint32(&v);
        out.schema_version = static_cast<std::int32_t>(v);
        break;
      }
      default: ok = WireFormatLite::SkipField(&in, tag);
    }
    if (!ok) return false;
  }
  return in.ConsumedEntireMessage();
}

void commit_signal::notify() noexcept {
  {
    std::lock_guard lock(mu_);
    ++sequence_;
  }
  cv_.notify_all();
}

std::uint64_t commit_signal::sequence() const noexcept {
  std::lock_guard lock(mu_);
  return sequence_;
}

void commit_signal::wait(std::uint64_t seen, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return sequence_ != seen; });
}

std::shared_ptr<commit_signal> commit_signal_for(const std::string& identity) {
  struct registry {
    std::mutex mu;
    std::map<std::string, std::weak_ptr<commit_signal>, std::less<>> signals;
  };
  static auto* reg = new registry;  // never destroyed: stores may close in atexit handlers
  std::lock_guard lock(reg->mu);
  auto& slot = reg->signals[identity];
  if (auto s = slot.lock()) return s;
  auto s = std::make_shared<commit_signal>();
  slot = s;
  // Forget the stores nobody holds any more, so a process opening many files stays small.
  std::erase_if(reg->signals, [](const auto& kv) { return kv.second.expired(); });
  return s;
}

std::shared_ptr<commit_signal> commits_of(const event_store& s) {
  if (const auto* source = opened(s)) return source->commits();
  return std::make_shared<commit_signal>();
}

std::int64_t system_clock_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {
result<void> check_metadata_text(std::string_view what, std::string_view value) {
  if (!valid_utf8(value)) {
    return error(errc::invalid_argument, fmt::format("metadata {} is not valid UTF-8", what));
  }
  return {};
}
}  // namespace

result<void> check_read(std::string_view stream_id, const read_stream_options& o) {
  if (auto r = check_stream_id(stream_id); !r) return r;
  if (o.max_count < 0) return error(errc::invalid_argument, "max_count must not be negative");
  return {};
}

result<void> check_read(const read_all_options& o) {
  if (o.max_count < 0) return error(errc::invalid_argument, "max_count must not be negative");
  for (const auto& t : o.event_types) {
    if (auto r = check_event_type(t); !r) return r;
  }
  return {};
}

result<std::vector<prepared_event>> prepare_append(std::string_view stream_id,
                                                   const expected_version& expected,
                                                   std::vector<event_data>& events,
                                                   const std::function<std::string()>& id_source,
                                                   const schema_versions* versions) {
  if (auto r = check_stream_id(stream_id); !r) return r.error();
  if (events.size() > store_limits::max_events_per_append) {
    return error(errc::invalid_argument,
                 fmt::format("an append may hold at most {} events; this one has {}",
                             store_limits::max_events_per_append, events.size()));
  }
  std::vector<prepared_event> out;
  out.reserve(events.size());
  std::size_t total = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto& e = events[i];
    prepared_event p;
    if (auto r = check_event_type(e.type); !r) {
      return error(errc::invalid_argument, fmt::format("event {}: {}", i, r.error().message()));
    }
    for (auto [what, value] : {std::pair<std::string_view, std::string_view>{
                                   "correlation id", e.metadata.correlation_id},
                               {"causation id", e.metadata.causation_id},
                               {"traceparent", e.metadata.traceparent}}) {
      if (auto r = check_metadata_text(what, value); !r) return r.error();
    }
    for (const auto& h : e.metadata.headers) {
      if (auto r = check_metadata_text("header key", h.key); !r) return r.error();
      if (auto r = check_metadata_text("header value", h.value); !r) return r.error();
    }
    if (e.metadata.schema_version < 0) {
      return error(errc::invalid_argument,
                   fmt::format("event {}: schema_version must not be negative", i));
    }
    if (e.metadata.schema_version == 0 && versions) {
      if (auto it = versions->find(e.type); it != versions->end()) {
        e.metadata.schema_version = it->second;
      }
    }
    if (e.event_id.empty() && !id_source) {
      new_uuid_v7(p.id.data());  // straight to bytes: no text round trip on the hot path
    } else {
      std::string text = e.event_id.empty() ? id_source() : e.event_id;
      auto id = parse_uuid(text);
      if (!id) {
        return error(errc::invalid_argument,
                     fmt::format("event {}: event id '{}' is not a UUID "
                                 "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                                 i, text.substr(0, 64)));
      }
      p.id = *id;
    }
    p.metadata = encode_metadata(e.metadata);
    std::size_t size = e.payload.size() + p.metadata.size();
    if (size > store_limits::max_event_bytes) {
      return error(errc::invalid_argument,
                   fmt::format("event {} is {} bytes (payload + metadata); the limit is {} bytes",
                               i, size, store_limits::max_event_bytes));
    }
    total += size;
    if (total > store_limits::max_append_bytes) {
      return error(errc::invalid_argument,
                   fmt::format("the append is over {} bytes; split it into several appends",
                               store_limits::max_append_bytes));
    }
    p.type = e.type;
    p.payload = std::move(e.payload);
    out.push_back(std::move(p));
  }
  if (out.size() > 1) {
    std::vector<uuid_bytes> ids;
    ids.reserve(out.size());
    for (const auto& p : out) ids.push_back(p.id);
    std::sort(ids.begin(), ids.end());
    if (auto dup = std::adjacent_find(ids.begin(), ids.end()); dup != ids.end()) {
      return error(errc::invalid_argument,
                   fmt::format("event id {} appears twice in one append", format_uuid(dup->data())));
    }
  }
  if (expected.form() == expected_version::kind::exact && expected.version() < 0) {
    return error(errc::invalid_argument,
                 fmt::format("expected version {} is negative; use no_stream() for a stream "
                             "that must not exist",
                             expected.version()));
  }
  return out;
}

}  // namespace store
namespace store {

result<void> check_schema_candidates(const std::vector<schema_candidate>& candidates) {
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const auto& c = candidates[i];
    if (auto r = check_event_type(c.type); !r) {
      return error(errc::invalid_argument,
                   fmt::format("schema candidate {}: {}", i, r.error().message()));
    }
    if (c.descriptor_set.empty() || c.fingerprint.empty()) {
      return error(errc::invalid_argument,
                   fmt::format("schema candidate '{}' has an empty descriptor set or fingerprint",
                               c.type));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (candidates[j].type == c.type) {
        return error(errc::invalid_argument,
                     fmt::format("type '{}' is registered twice in one call", c.type));
      }
    }
  }
  return {};
}

result<std::vector<registered_type>> resolve_registration(
    const std::vector<schema_candidate>& candidates, const std::vector<stored_schema>& stored) {
  std::vector<registered_type> out;
  for (const auto& c : candidates) {
    registered_type t{c.type, 0, false};
    std::int32_t latest = 0;
    const stored_schema* taken = nullptr;  // the stored row at the declared version
    for (const auto& s : stored) {
      if (s.type != c.type) continue;
      latest = std::max(latest, s.version);
      if (s.fingerprint == c.fingerprint) t.version = s.version;
      if (c.version > 0 && s.version == c.version) taken = &s;
    }
    // A declared version names one descriptor in every store: the two may never disagree.
    if (c.version > 0 && t.version != 0 && t.version != c.version) {
      return error(errc::invalid_argument,
                   fmt::format("{} is declared as version {}, but this descriptor is stored "
                               "as version {}; events stamped {} were written with it",
                               c.type, c.version, t.version, t.version));
    }
    if (taken && taken->fingerprint != c.fingerprint) {
      return error(errc::invalid_argument,
                   fmt::format("{} is declared as version {}, but version {} is stored with "
                               "another descriptor (fingerprint {})",
                               c.type, c.version, c.version, taken->fingerprint));
    }
    if (t.version == 0) {  // a descriptor the store has not seen: declared, or the next
      t.version = c.version > 0 ? c.version : latest + 1;
      t.added = true;
    }
    out.push_back(std::move(t));
  }
  return out;
}

result<void> read_schema_rows(detail::sql_connection& c, std::string_view type,
                              std::vector<stored_schema>& out,
                              std::vector<std::string>* unknown_modes) {
  static const std::string all =
      "SELECT type, version, compatibility, fingerprint, descriptor_set, registered_at "
      "FROM annals_schemas";
  static const std::string of_type = all + " WHERE type = ?1 ORDER BY version";
  static const std::string ordered = all + " ORDER BY type, version";
  const sql_value param(type);
  result<void> failed;
  auto r = c.query(type.empty() ? ordered : of_type, &param, type.empty() ? 0 : 1,
                   [&](const sql_row& row) {
    stored_schema& s = out.emplace_back();
    s.type = row.text(0);
    s.version = static_cast<std::int32_t>(row.int64(1));
    auto mode = parse_compatibility(row.text_view(2));
    if (!mode) {
      auto why = fmt::format("stored schema {} version {} has an unknown compatibility mode '{}'",
                             s.type, s.version, row.text_view(2));
      if (!unknown_modes) {
        failed = error(errc::corruption, std::move(why));
        return false;
      }
      unknown_modes->push_back(std::move(why));
    }
    s.mode = mode ? *mode : compatibility::backward;
    s.fingerprint = row.text(3);
    s.descriptor_set = std::move(row.bytes(4).bytes);
    s.registered_at_us = row.int64(5);
    return true;
  });
  if (!r) return error(r.error().kind(), "cannot read the schema registry: " + r.error().message());
  return failed;
}

result<std::vector<registered_type>> register_schema_rows(
    detail::sql_connection& c, const std::vector<schema_candidate>& candidates,
    const schema_check_fn& check, std::int64_t now, bool& wrote) {
  wrote = false;
  std::vector<stored_schema> stored;
  for (const auto& cand : candidates) {
    if (auto r = read_schema_rows(c, cand.type, stored); !r) return r.error();
  }
  if (check) {
    if (auto r = check(stored); !r) return r.error();
  }
  auto out = resolve_registration(candidates, stored);
  if (!out) return out;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (!(*out)[i].added) continue;
    const auto& cand = candidates[i];
    const auto mode = to_string(cand.mode);
    const sql_value values[] = {cand.type, std::int64_t{(*out)[i].version}, mode,
                                cand.fingerprint, sql_value::blob_ref{cand.descriptor_set},
                                now};
    auto r = c.run("INSERT INTO annals_schemas(type, version, compatibility, fingerprint, "
                   "descriptor_set, registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                   values, std::size(values));
    if (!r) {
      return error(r.error().kind(),
                   fmt::format("cannot register schema {}: {}", cand.type, r.error().message()));
    }
    wrote = true;
  }
  return out;
}

void schema_stamps::publish(const std::vector<registered_type>& registered) {
  auto next = std::make_shared<schema_versions>();
  if (auto now = current()) *next = *now;
  for (const auto& t : registered) (*next)[t.type] = t.version;
  std::lock_guard lock(mu_);
  versions_ = std::move(next);
}

}  // namespace store
}  // namespace annals
