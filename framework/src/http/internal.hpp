// Internal to annals_http: JSON text helpers, the SSE session's decoder and the metrics
// exposition over already-open admins.
#pragma once

#include <annals/admin.hpp>
#include <annals/http.hpp>
#include <annals/json.hpp>
#include <annals/subscription.hpp>

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace annals::http_detail {

// annals/json.hpp's json_quote and iso8601_utc, under the names this library uses.
inline std::string json_string(std::string_view text) { return json_quote(text); }
inline std::string iso_time(std::int64_t us) { return iso8601_utc(us); }

// A payload_decoder that re-reads the store's schemas once per (type, version) it lacks, so
// a long-lived reader sees types registered after it started. One per thread.
class live_decoder {
 public:
  explicit live_decoder(event_store& s) : store_(s) {}
  result<void> load();
  payload_decoder& for_event(const recorded_event& e);

 private:
  event_store& store_;
  payload_decoder decoder_;
  std::set<std::pair<std::string, std::int32_t>> reloaded_;
};

// One event as the JSON object of http.hpp: position, stream_id, stream_version, event_id,
// type, recorded_at, metadata, data (the payload as protobuf JSON; null with "data_error"
// when it cannot be decoded).
std::string event_object(const recorded_event& e, live_decoder& decoder);

// The exposition, from open admins (the server's) and the SSE client count.
struct metrics_sources {
  store_admin* admin = nullptr;             // its store gives head and event times
  std::mutex* admin_mu = nullptr;           // guards admin (one thread at a time)
  subscription_admin* subs = nullptr;       // may be null: no subscriptions section
  std::mutex* subs_mu = nullptr;
};
result<std::string> render_metrics(const metrics_sources& src);

}  // namespace annals::http_detail
