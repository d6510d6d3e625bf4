// JSON text helpers and trace context for annals_http (internal.hpp).
#include "http/internal.hpp"

#include <fmt/format.h>

#include <chrono>
#include <ctime>

namespace annals::http_detail {

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
