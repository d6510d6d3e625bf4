// annals/http.hpp — a small, safe HTTP face for a store: events as JSON, Server-Sent Events,
// projection and subscription status, Prometheus metrics, and the application's own routes.
// Library annals::annals_http (cpp-httplib from Debian; no httplib.h in this header).
//
//   annals::http_options o;                 // 127.0.0.1:8080, read-only unless a token is set
//   auto server = annals::http_server::open("bank.db", o).value();
//   server->route("GET", "/accounts/{id}", [&](const annals::http_request& r) {
//     return annals::http_response::json(200, balance_json(r.param("id")));
//   });
//   server->start().value_or_throw();       // serves on background threads until stop()
//
// Built-in routes (GET):
//   /streams?prefix=&limit=                streams, versions, event counts (JSON)
//   /streams/{id}?from=&limit=             one stream's events, decoded from stored schemas
//   /all?from=&limit=&type=&stream_prefix=  $all, filtered
//   /projections                           each projection's status and lag
//   /subscriptions                         each subscriber's checkpoint, lag and parked count
//   /subscribe?from=&type=&stream_prefix=  Server-Sent Events: one event per message, its id
//                                          the global position; Last-Event-ID resumes after it
//   /metrics                               Prometheus text exposition format
//   /health                                200 "ok"
// Events as JSON: {"position", "stream_id", "stream_version", "event_id", "type",
// "recorded_at" (ISO-8601 UTC), "metadata": {...}, "data": <payload as protobuf JSON>}.
// limit defaults to 100 and is clamped to 1000. Full shapes: docs/http.md.
//
// Security: binds 127.0.0.1 by default. Routes registered with write = true (and every method
// but GET/HEAD) answer 403 unless options.write_token is set, and then need
// "Authorization: Bearer <token>" (401 otherwise). Request bodies above max_body_bytes get 413,
// clients above max_requests_per_second 429. Error bodies are JSON {"error": "..."} with a
// short message: never a stack trace, SQL, or a file path. Bad input (a malformed path
// segment, "..", an encoded NUL, from=-1, limit=abc) is 400, an unknown path 404, a known
// path with another method 405; nothing is written.
//
// SSE: a heartbeat comment every sse_heartbeat keeps proxies from closing the stream. A client
// that does not read and falls sse_max_buffer_bytes behind (then takes nothing for
// sse_heartbeat, clamped to 0.1-5 s) is disconnected with a final "event: error" message
// saying why (it reconnects with Last-Event-ID and loses nothing). Appends never wait for a
// subscriber: each client reads the store on its own (unfiltered clients at one position
// share a read); subscribers in the same process do share its CPU.
//
// Tracing: a request's valid W3C traceparent header is continued with a new span id (else a new
// trace starts) as http_request::traceparent, for the application to put in
// command_options::traceparent; responses carry it in a traceparent header, and each request
// is logged as one JSON line (trace_id, span_id, parent_span_id, method, path, status,
// duration_ms) to http_options::log. With tracing on (annals/trace.hpp) a request is also a
// span "http.request" that its handler runs in.
//
// Thread safety: route() before start(); handlers run concurrently on server threads.
#pragma once

#include <annals/event_store.hpp>
#include <annals/store_ref.hpp>
#include <annals/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace annals {

struct http_options {
  std::string bind_address = "127.0.0.1";  // default: loopback only
  int port = 8080;                         // 0: any free port (see http_server::port())
  std::string write_token;                 // empty: write routes answer 403. Default empty.
  std::size_t max_body_bytes = 64 * 1024;  // larger bodies: 413. Default 64 KiB.
  int max_requests_per_second = 100;       // per client address; 0: no limit. Default 100.
  std::chrono::milliseconds sse_heartbeat{15000};  // default 15 s
  std::size_t sse_max_buffer_bytes = 1 << 20;      // per client; default 1 MiB
  std::size_t sse_max_clients = 1000;              // more get 503. Default 1000.
  // Receives one JSON line per request (trace_id, span_id, parent_span_id, method, path,
  // status, duration_ms, remote) and handler errors; called concurrently.
  // Default: each line to stderr.
  std::function<void(std::string_view line)> log;
};

struct http_request {
  std::string method;
  std::string path;
  std::map<std::string, std::string> params;   // from the route's {name} segments
  std::multimap<std::string, std::string> query;
  std::multimap<std::string, std::string> headers;  // names as sent (case kept)
  std::string body;
  std::string remote_address;
  std::string traceparent;  // the request's W3C traceparent, or a new one
  // The {name} segment, or "".
  std::string param(std::string_view name) const;
  // A query parameter's first value, or nullopt.
  std::optional<std::string> query_value(std::string_view name) const;
  // A header's first value, case-insensitive, or nullopt.
  std::optional<std::string> header(std::string_view name) const;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<header> headers;
  static http_response json(int status, std::string body);
  // {"error": message}, message escaped; status 4xx/5xx.
  static http_response error(int status, std::string_view message);
};

using http_handler = std::function<http_response(const http_request&)>;

class http_server {
 public:
  // Serves a store (annals/store_ref.hpp): a handle, read and appended through (events are
  // served through its upcasters), or a path, sqlite:PATH or postgresql://... it opens
  // itself (no upcasters). Errors: the store's; invalid_argument for bad options or a store double not adopted (store_ref::adopt).
  static result<std::unique_ptr<http_server>> open(store_ref store, http_options options = {});
  virtual ~http_server() = default;  // stops

  // Adds a route. pattern: "/accounts/{id}/statement" ({name} matches one segment). write:
  // needs the token (POST/PUT/PATCH/DELETE routes always do). A handler that throws answers
  // 500 {"error": "internal error"} and is logged. Before start() only.
  virtual void route(std::string method, std::string pattern, http_handler handler,
                     bool write = false) = 0;
  // Serves a static file's bytes at `path` (a dashboard page), with its content type.
  virtual void static_content(std::string path, std::string content_type, std::string body) = 0;

  // Binds and serves on background threads. Errors: io (address in use, cannot bind).
  virtual result<void> start() = 0;
  virtual void stop() = 0;
  virtual int port() const = 0;  // the bound port (after start())

  // The store the server reads (for handlers that need it): the handle it was given (as
  // writable as the handle), or, opened from a URI, a read-only store (appends through it are
  // read_only: give the server a handle to append from route handlers).
  virtual event_store& store() = 0;
};

// Prometheus text exposition of the process's Annals metrics and of the store's projections,
// subscriptions and relays: appends and conflicts, the append latency histogram, lag per
// projection and subscriber in events and seconds, parked events, relay lag. Served at
// /metrics; also usable by an application with its own server.
result<std::string> prometheus_metrics(const std::string& store_uri);

}  // namespace annals
