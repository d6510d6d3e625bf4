// The built-in read-only routes of annals/http.hpp: streams, events, projections,
// subscriptions, metrics, health. Every input is checked before the store is asked; a store
// error is logged and answered without its detail.
#include "http/internal.hpp"
#include "http/server_impl.hpp"

#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>

namespace annals::http_detail {

bool clean_text(std::string_view s, std::size_t max_bytes) {
  if (s.size() > max_bytes || !is_valid_utf8(s)) return false;
  return std::none_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

result<read_all_options> parse_filter(const http_request& r) {
  read_all_options o;
  o.stream_prefix = r.query_value("stream_prefix").value_or("");
  if (!clean_text(o.stream_prefix, 512)) return error(errc::invalid_argument, "bad stream_prefix");
  for (auto [it, end] = r.query.equal_range("type"); it != end; ++it) {
    if (it->second.empty() || !clean_text(it->second, 256))
      return error(errc::invalid_argument, "bad type");
    o.event_types.push_back(it->second);
  }
  return o;
}

void server_impl::add_builtin_routes() {
  auto add = [&](const char* pattern, http_response (server_impl::*fn)(const http_request&)) {
    route("GET", pattern, [this, fn](const http_request& r) { return (this->*fn)(r); }, false);
  };
  add("/streams", &server_impl::streams);
  add("/streams/{id}", &server_impl::stream);
  add("/all", &server_impl::all);
  add("/projections", &server_impl::projections);
  add("/subscriptions", &server_impl::subscriptions);
  add("/metrics", &server_impl::metrics);
  add("/health", &server_impl::health);
  route_entry sse;
  sse.method = "GET";
  sse.segments = {"subscribe"};
  sse.stream = [this](const httplib::Request& req, const http_request& r, httplib::Response& res) {
    return subscribe(req, r, res);
  };
  routes_.push_back(std::move(sse));
}

http_response server_impl::streams(const http_request& r) {
  auto limit = parse_int(r, "limit", 100, 1, max_page);
  if (!limit) return http_response::error(400, limit.error().message());
  const std::string prefix = r.query_value("prefix").value_or("");
  if (!clean_text(prefix, 512)) return http_response::error(400, "bad prefix");
  std::string body = "{\"streams\":[";
  bool first = true;
  result<void> listed;
  {
    std::lock_guard lock(admin_mu_);
    listed = admin_->list_streams(prefix, *limit, [&](const stream_info& s) {
      if (!first) body += ',';
      first = false;
      body += fmt::format(R"({{"stream_id":{},"version":{},"event_count":{}}})",
                          json_string(s.stream_id), s.version, s.event_count);
      return true;
    });
  }
  if (!listed) return store_error(listed.error());
  body += "]}";
  return http_response::json(200, std::move(body));
}

http_response server_impl::stream(const http_request& r) {
  const std::string id = r.param("id");
  if (!validate_stream_id(id)) return http_response::error(400, "bad stream id");
  auto from = parse_int(r, "from", 0, 0, INT64_MAX);
  if (!from) return http_response::error(400, from.error().message());
  auto limit = parse_int(r, "limit", 100, 1, max_page);
  if (!limit) return http_response::error(400, limit.error().message());
  event_store& s = store();
  auto version = s.stream_version(id);
  if (!version) return store_error(version.error());
  if (*version < 0) return http_response::error(404, "stream not found");
  live_decoder decoder(s);
  if (auto l = decoder.load(); !l) return store_error(l.error());
  read_stream_options o;
  o.from_version = *from;
  o.max_count = *limit;
  std::string events;
  std::int64_t last = -1;
  auto n = s.read_stream(id, o, [&](const recorded_event& e) {
    if (!events.empty()) events += ',';
    events += event_object(e, decoder);
    last = e.stream_version;
    return true;
  });
  if (!n) return store_error(n.error());
  std::string next = last >= 0 && last < *version ? std::to_string(last + 1) : "null";
  return http_response::json(
      200, fmt::format(R"({{"stream_id":{},"version":{},"events":[{}],"next":{}}})",
                       json_string(id), *version, events, next));
}

http_response server_impl::all(const http_request& r) {
  auto from = parse_int(r, "from", 1, 0, INT64_MAX);
  if (!from) return http_response::error(400, from.error().message());
  auto limit = parse_int(r, "limit", 100, 1, max_page);
  if (!limit) return http_response::error(400, limit.error().message());
  auto filter = parse_filter(r);
  if (!filter) return http_response::error(400, filter.error().message());
  read_all_options o = std::move(filter).value();
  o.from_position = std::max<std::int64_t>(*from, 1);
  o.max_count = *limit;
  event_store& s = store();
  auto head = s.head_position();
  if (!head) return store_error(head.error());
  live_decoder decoder(s);
  if (auto l = decoder.load(); !l) return store_error(l.error());
  std::string events;
  std::int64_t last = 0, count = 0;
  auto n = s.read_all(o, [&](const recorded_event& e) {
    if (!events.empty()) events += ',';
    events += event_object(e, decoder);
    last = e.position;
    ++count;
    return true;
  });
  if (!n) {
    if (n.error().kind() == errc::invalid_argument) return http_response::error(400, "bad filter");
    return store_error(n.error());
  }
  // The next page starts after the last event; a short page has read up to the head.
  const std::int64_t next = count == *limit ? last + 1 : std::max(o.from_position, *head + 1);
  return http_response::json(200, fmt::format(R"({{"events":[{}],"next":{},"head":{}}})",
                                              events, next, *head));
}

http_response server_impl::projections(const http_request&) {
  auto list = [&] {
    std::lock_guard lock(admin_mu_);
    return admin_->projections();
  }();
  if (!list) return store_error(list.error());
  std::string body = "{\"projections\":[";
  bool first = true;
  for (const auto& p : *list) {
    if (!first) body += ',';
    first = false;
    // The handler's error stays out: it may quote SQL. `annals stats` shows it.
    body += fmt::format(
        R"({{"name":{},"version":{},"checkpoint":{},"head":{},"lag_events":{},"lag_seconds":{:.6f},"stuck":{},"stuck_position":{},"parked":{}}})",
        json_string(p.name), p.version, p.checkpoint, p.head, p.lag_events, p.lag_seconds,
        p.stuck_position ? "true" : "false",
        p.stuck_position ? std::to_string(*p.stuck_position) : "null", p.parked);
  }
  body += "]}";
  return http_response::json(200, std::move(body));
}

subscription_admin* server_impl::subs() {
  if (!subs_ && !subs_failed_) {
    // Read-only like the rest of the built-in routes: serving a store never upgrades or
    // writes it, and a read-only file can be served.
    auto a = subscription_admin::open_read_only(uri_);
    if (a) {
      subs_ = std::move(a).value();
    } else {
      subs_failed_ = true;
      o_.log(fmt::format(R"({{"level":"error","msg":"cannot open the subscription admin","detail":{}}})",
                         json_string(a.error().message())));
    }
  }
  return subs_.get();
}

http_response server_impl::subscriptions(const http_request&) {
  std::lock_guard lock(subs_mu_);
  auto* a = subs();
  if (!a) return http_response::error(500, "internal error");
  auto list = a->list();
  if (!list) return store_error(list.error());
  std::string body = "{\"subscriptions\":[";
  bool first = true;
  for (const auto& s : *list) {
    if (!first) body += ',';
    first = false;
    body += fmt::format(
        R"({{"name":{},"filter":{},"checkpoint":{},"head":{},"lag_events":{},"lag_seconds":{:.6f},"delivered":{},"parked":{},"active":{},"failing":{},"updated_at":{}}})",
        json_string(s.name), json_string(s.detail), s.checkpoint, s.head, s.lag_events,
        s.lag_seconds, s.delivered, s.parked, s.active ? "true" : "false",
        s.error.empty() ? "false" : "true",
        s.updated_at_us ? json_string(iso_time(s.updated_at_us)) : std::string("null"));
  }
  body += "]}";
  return http_response::json(200, std::move(body));
}

http_response server_impl::metrics(const http_request&) {
  metrics_sources src;
  src.admin = admin_.get();
  src.admin_mu = &admin_mu_;
  {
    std::lock_guard lock(subs_mu_);
    src.subs = subs();
  }
  src.subs_mu = &subs_mu_;
  auto text = render_metrics(src);
  if (!text) return store_error(text.error());
  http_response res;
  res.content_type = "text/plain; version=0.0.4; charset=utf-8";
  res.body = std::move(text).value();
  return res;
}

http_response server_impl::health(const http_request&) {
  auto head = store().head_position();
  if (!head) return store_error(head.error());
  http_response res;
  res.content_type = "text/plain; charset=utf-8";
  res.body = "ok";
  return res;
}

}  // namespace annals::http_detail
