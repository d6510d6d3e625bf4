// JSON text helpers and trace context for annals_http (internal.hpp).
#include "http/internal.hpp"

#include <fmt/format.h>

#include <chrono>
#include <ctime>

namespace annals::http_detail {

std::string json_string(std::string_view s) {
  const bool utf8 = is_valid_utf8(s);
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04x}", c);
        } else if (c >= 0x80 && !utf8) {
          out += "\\ufffd";
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

std::string iso_time(std::int64_t us) {
  std::int64_t secs = us / 1000000, frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    --secs;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) return fmt::format("{}us", us);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

result<void> live_decoder::load() {
  auto d = payload_decoder::from_store(store_);
  if (!d) return d.error();
  decoder_ = std::move(d).value();
  return {};
}

payload_decoder& live_decoder::for_event(const recorded_event& e) {
  const std::int32_t v = e.metadata.schema_version;
  if ((v != 0 ? !decoder_.find(e.type, v) : !decoder_.pick(e.type, 0)) &&
      reloaded_.emplace(e.type, v).second) {
    (void)load();
  }
  return decoder_;
}

std::string event_object(const recorded_event& e, live_decoder& decoder) {
  std::string out = fmt::format(
      R"({{"position":{},"stream_id":{},"stream_version":{},"event_id":{},"type":{},"recorded_at":{},"metadata":{{)",
      e.position, json_string(e.stream_id), e.stream_version, json_string(e.event_id),
      json_string(e.type), json_string(iso_time(e.recorded_at_us)));
  out += fmt::format(R"("correlation_id":{},"causation_id":{},"traceparent":{},"schema_version":{},"headers":[)",
                     json_string(e.metadata.correlation_id), json_string(e.metadata.causation_id),
                     json_string(e.metadata.traceparent), e.metadata.schema_version);
  bool first = true;
  for (const auto& h : e.metadata.headers) {
    if (!first) out += ',';
    first = false;
    out += fmt::format(R"({{"key":{},"value":{}}})", json_string(h.key), json_string(h.value));
  }
  out += "]},\"data\":";
  auto payload = decoder.for_event(e).to_json(e);
  if (payload) {
    out += *payload;
  } else {
    // The kind only: the message may name descriptor internals.
    out += fmt::format(R"(null,"data_error":{})",
                       json_string(payload.error().kind() == errc::not_found
                                       ? "no stored schema for this type"
                                       : "the payload could not be decoded"));
  }
  out += '}';
  return out;
}

}  // namespace annals::http_detail
