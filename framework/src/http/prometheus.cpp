// /metrics: the Prometheus text exposition format 0.0.4, written by hand. Process counters
// come from the metrics registry (metrics.hpp); lag and parked counts from the store's
// projection and subscription bookkeeping, read at each scrape.
#include "http/internal.hpp"
#include "metrics.hpp"

#include <fmt/format.h>

namespace annals::http_detail {
namespace {

// A label value per the format: backslash, double quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

result<std::string> render_metrics(const metrics_sources& src) {
  const auto m = metrics::read();
  std::string out;
  family(out, "annals_appends_total", "counter", "Append calls that succeeded in this process.");
  out += fmt::format("annals_appends_total {}\n", m.appends);
  family(out, "annals_append_conflicts_total", "counter",
         "Append calls refused with a concurrency conflict in this process.");
  out += fmt::format("annals_append_conflicts_total {}\n", m.conflicts);
  family(out, "annals_append_duration_seconds", "histogram",
         "Time of an append call in this process, successful or not.");
  for (std::size_t i = 0; i < metrics::append_buckets.size(); ++i) {
    out += fmt::format("annals_append_duration_seconds_bucket{{le=\"{}\"}} {}\n",
                       metrics::append_buckets[i], m.buckets[i]);
  }
  out += fmt::format("annals_append_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
                     m.buckets.back());
  out += fmt::format("annals_append_duration_seconds_sum {}\n", m.append_seconds_sum);
  out += fmt::format("annals_append_duration_seconds_count {}\n", m.append_count);

  auto projections = [&] {
    std::lock_guard lock(*src.admin_mu);
    return src.admin->projections();
  }();
  if (!projections) return std::move(projections).error();
  // The head the projections' lag was measured against, so that one scrape agrees with itself.
  std::int64_t head = 0;
  if (!projections->empty()) {
    head = projections->front().head;
  } else {
    auto h = src.admin->store().head_position();
    if (!h) return std::move(h).error();
    head = *h;
  }
  family(out, "annals_head_position", "gauge", "The store's highest committed global position.");
  out += fmt::format("annals_head_position {}\n", head);
  std::vector<consumer_status> subs;
  if (src.subs) {
    std::lock_guard lock(*src.subs_mu);
    auto l = src.subs->list();
    if (!l) return std::move(l).error();
    subs = std::move(l).value();
  }

  family(out, "annals_projection_lag_events", "gauge",
         "Events after the projection's checkpoint.");
  for (const auto& p : *projections) {
    out += fmt::format("annals_projection_lag_events{{projection=\"{}\"}} {}\n", label(p.name),
                       p.lag_events);
  }
  family(out, "annals_projection_lag_seconds", "gauge",
         "Age of the oldest event after the projection's checkpoint; 0 when none.");
  for (const auto& p : *projections) {
    out += fmt::format("annals_projection_lag_seconds{{projection=\"{}\"}} {}\n", label(p.name),
                       p.lag_seconds);
  }
  family(out, "annals_subscription_lag_events", "gauge",
         "Events after the subscription's checkpoint (relays included).");
  for (const auto& s : subs) {
    out += fmt::format("annals_subscription_lag_events{{subscription=\"{}\"}} {}\n",
                       label(s.name), s.lag_events);
  }
  family(out, "annals_subscription_lag_seconds", "gauge",
         "Age of the oldest event after the subscription's checkpoint; 0 when none.");
  for (const auto& s : subs) {
    out += fmt::format("annals_subscription_lag_seconds{{subscription=\"{}\"}} {}\n",
                       label(s.name), s.lag_seconds);
  }
  family(out, "annals_relay_lag_events", "gauge",
         "Events not yet published by the relay (subscriptions named relay:*).");
  for (const auto& s : subs) {
    if (s.name.rfind("relay:", 0) == 0) {
      out += fmt::format("annals_relay_lag_events{{relay=\"{}\"}} {}\n", label(s.name.substr(6)),
                         s.lag_events);
    }
  }
  family(out, "annals_relay_lag_seconds", "gauge",
         "Age of the oldest event the relay has not published; 0 when none.");
  for (const auto& s : subs) {
    if (s.name.rfind("relay:", 0) == 0) {
      out += fmt::format("annals_relay_lag_seconds{{relay=\"{}\"}} {}\n", label(s.name.substr(6)),
                         s.lag_seconds);
    }
  }
  family(out, "annals_parked_events", "gauge",
         "Parked events not yet retried or skipped, per projection or subscription.");
  for (const auto& p : *projections) {
    out += fmt::format("annals_parked_events{{consumer=\"{}\",kind=\"projection\"}} {}\n",
                       label(p.name), p.parked);
  }
  for (const auto& s : subs) {
    out += fmt::format("annals_parked_events{{consumer=\"{}\",kind=\"subscription\"}} {}\n",
                       label(s.name), s.parked);
  }
  family(out, "annals_sse_clients", "gauge", "Server-Sent Events clients connected now.");
  out += fmt::format("annals_sse_clients {}\n", m.sse_clients);
  family(out, "annals_http_requests_total", "counter", "HTTP requests answered, by status code.");
  for (const auto& [code, n] : m.http_requests) {
    out += fmt::format("annals_http_requests_total{{code=\"{}\"}} {}\n", code, n);
  }
  return out;
}

}  // namespace annals::http_detail

namespace annals {

result<std::string> prometheus_metrics(const std::string& store_uri) {
  auto admin = open_admin(store_uri, false);
  if (!admin) return std::move(admin).error();
  auto subs = subscription_admin::open_read_only(store_uri);
  std::mutex admin_mu, subs_mu;
  http_detail::metrics_sources src;
  src.admin = admin->get();
  src.admin_mu = &admin_mu;
  src.subs = subs ? subs->get() : nullptr;
  src.subs_mu = &subs_mu;
  return http_detail::render_metrics(src);
}

}  // namespace annals
