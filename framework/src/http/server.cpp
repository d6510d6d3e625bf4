// The HTTP server of annals/http.hpp on cpp-httplib: one dispatcher for every method does the
// routing itself on the raw request target (so "%2F" inside a segment stays inside it), then
// rate limit, token, handler; every error is a short JSON body.
#include "http/internal.hpp"
#include "http/server_impl.hpp"
#include "metrics.hpp"
#include "store/uri.hpp"

#include <annals/admin.hpp>
#include <annals/trace.hpp>

#include <fmt/format.h>
#include <httplib.h>

#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>

namespace annals {

std::string http_request::param(std::string_view name) const {
  auto it = params.find(std::string(name));
  return it == params.end() ? std::string() : it->second;
}

std::optional<std::string> http_request::query_value(std::string_view name) const {
  auto it = query.find(std::string(name));
  if (it == query.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> http_request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k.size() == name.size() &&
        std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return v;
    }
  }
  return std::nullopt;
}

http_response http_response::json(int status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http_response http_response::error(int status, std::string_view message) {
  return json(status, "{\"error\":" + http_detail::json_string(message) + "}");
}

namespace http_detail {
namespace {

// A task queue that grows to `max` threads as connections come (httplib's ThreadPool starts
// them all at once) and keeps them for later connections.
class growing_pool final : public httplib::TaskQueue {
 public:
  explicit growing_pool(std::size_t max) : max_(max) {}
  ~growing_pool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    if (stopping_) return;
    jobs_.push_back(std::move(fn));
    if (idle_ < jobs_.size() && threads_.size() < max_) {
      threads_.emplace_back([this] { work(); });
    }
    cv_.notify_one();
  }

  void shutdown() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      threads.swap(threads_);
    }
    cv_.notify_all();
    for (auto& t : threads) t.join();
  }

 private:
  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;  // stopping, nothing left
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const std::size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;
  bool stopping_ = false;
};

int from_hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one path segment; nullopt for a malformed escape, a NUL or another control
// character, or invalid UTF-8.
std::optional<std::string> decode_segment(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = from_hex(s[i + 1]), lo = from_hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return std::nullopt;
    out += c;
  }
  if (!is_valid_utf8(out)) return std::nullopt;
  return out;
}

// "." or ".." as a segment, or as a part of one that holds an encoded '/': a path traversal
// attempt, whatever the route would do with it.
bool has_dot_component(std::string_view s) {
  for (std::size_t i = 0; i <= s.size();) {
    auto j = s.find('/', i);
    if (j == std::string_view::npos) j = s.size();
    auto part = s.substr(i, j - i);
    if (part == "." || part == "..") return true;
    i = j + 1;
  }
  return false;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Compares every byte of the longer string whatever the lengths, so the time says nothing
  // about where they differ.
  const std::size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::vector<std::string> split_pattern(std::string_view pattern) {
  std::vector<std::string> out;
  std::size_t i = 0;
  if (!pattern.empty() && pattern[0] == '/') i = 1;
  while (i <= pattern.size()) {
    auto j = pattern.find('/', i);
    if (j == std::string_view::npos) j = pattern.size();
    out.emplace_back(pattern.substr(i, j - i));
    i = j + 1;
  }
  if (out.size() == 1 && out[0].empty()) out.clear();  // "/"
  return out;
}

void default_log(std::string_view line) {
  std::string l(line);
  l += '\n';
  std::fwrite(l.data(), 1, l.size(), stderr);
}

}  // namespace

result<std::int64_t> parse_int(const http_request& r, std::string_view name,
                               std::int64_t fallback, std::int64_t min, std::int64_t max) {
  auto v = r.query_value(name);
  if (!v) return fallback;
  std::int64_t x = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
  if (v->empty() || ec != std::errc() || p != v->data() + v->size() || x < min) {
    return error(errc::invalid_argument,
                 fmt::format("'{}' must be an integer of at least {}", name, min));
  }
  return std::min(x, max);
}

server_impl::server_impl(std::string uri, http_options o, std::unique_ptr<store_admin> admin,
                         std::shared_ptr<event_store> reader)
    : uri_(std::move(uri)), o_(std::move(o)), admin_(std::move(admin)), reader_(std::move(reader)) {
  if (!o_.log) o_.log = default_log;
  add_builtin_routes();
}

server_impl::~server_impl() { stop(); }

void server_impl::route(std::string method, std::string pattern, http_handler handler,
                        bool write) {
  route_entry e;
  e.method = std::move(method);
  std::transform(e.method.begin(), e.method.end(), e.method.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  e.segments = split_pattern(pattern);
  e.handler = std::move(handler);
  e.write = write || !(e.method == "GET" || e.method == "HEAD");
  std::lock_guard lock(routes_mu_);
  routes_.push_back(std::move(e));
}

void server_impl::static_content(std::string path, std::string content_type, std::string body) {
  auto shared = std::make_shared<const std::pair<std::string, std::string>>(
      std::move(content_type), std::move(body));
  route("GET", std::move(path), [shared](const http_request&) {
    http_response r;
    r.content_type = shared->first;
    r.body = shared->second;
    return r;
  }, false);
}

result<void> server_impl::start() {
  if (running_) return {};
  server_ = std::make_unique<httplib::Server>();
  const std::size_t pool = o_.sse_max_clients + 32;
  server_->new_task_queue = [pool] { return new growing_pool(pool); };
  server_->set_payload_max_length(o_.max_body_bytes);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which lets a second server bind a
  // port that is in use instead of failing.
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server_->set_keep_alive_timeout(2);
  server_->set_read_timeout(10);
  server_->set_write_timeout(10);
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    dispatch(req, res);
  };
  const std::string any = R"([\s\S]*)";
  server_->Get(any, handler);
  server_->Post(any, handler);
  server_->Put(any, handler);
  server_->Patch(any, handler);
  server_->Delete(any, handler);
  server_->Options(any, handler);
  // Requests httplib answers itself (413 for a large body, 400 for a malformed request, 404
  // for a path the catch-all pattern cannot see): a JSON body too.
  server_->set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const char* what = res.status == 413   ? "request body too large"
                       : res.status == 404 ? "no such route"
                       : res.status == 400 ? "bad request"
                                           : "request failed";
    res.set_content(http_response::error(res.status, what).body, "application/json");
    metrics::record_http_request(res.status);  // never dispatched, so not counted there
    return httplib::Server::HandlerResponse::Handled;
  }));
  server_->set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        o_.log(R"({"level":"error","msg":"exception outside a handler"})");
        res.status = 500;
        res.set_content(http_response::error(500, "internal error").body, "application/json");
      });
  int port = 0;
  if (o_.port == 0) {
    port = server_->bind_to_any_port(o_.bind_address);
  } else {
    port = server_->bind_to_port(o_.bind_address, o_.port) ? o_.port : -1;
  }
  if (port <= 0) {
    server_.reset();
    return error(errc::io, fmt::format("cannot bind {}:{}", o_.bind_address, o_.port));
  }
  port_ = port;
  stopping_ = false;
  pump_ = std::make_unique<sse_pump>(*this);
  if (auto r = pump_->start(); !r) {
    pump_.reset();
    server_.reset();
    return r.error();
  }
  start_head_watcher();
  listener_ = std::thread([this] { server_->listen_after_bind(); });
  for (int i = 0; i < 500 && !server_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  running_ = true;
  return {};
}

void server_impl::stop() {
  if (!running_) return;
  stopping_ = true;
  pump_->stop();  // ends every event stream, so their connection threads return
  server_->stop();
  if (listener_.joinable()) listener_.join();
  stop_head_watcher();
  pump_.reset();
  server_.reset();
  running_ = false;
}

void server_impl::dispatch(const httplib::Request& req, httplib::Response& res) {
  const auto started = std::chrono::steady_clock::now();
  http_request r;
  r.method = req.method;
  r.path = req.path;
  r.body = req.body;
  r.remote_address = req.remote_addr;
  for (const auto& [k, v] : req.params) r.query.emplace(k, v);
  for (const auto& [k, v] : req.headers) r.headers.emplace(k, v);
  // W3C trace context (annals/trace.hpp): the caller's span continues with this request's,
  // else a new trace starts. With tracing on, the request is a span "http.request" whose
  // scope covers the handler, so commands it issues (caused_by, command_options) descend from
  // it.
  const auto incoming = r.header("traceparent");
  const bool continued = incoming && valid_traceparent(*incoming);
  const std::string parent = continued ? *incoming : child_traceparent();
  span request_span("http.request", parent);
  r.traceparent = request_span.recording() ? request_span.traceparent()
                  : continued              ? child_traceparent(parent)
                                           : parent;
  // traceparent: 00-<trace id: 3..35>-<span id: 36..52>-<flags>
  const std::string trace_id = r.traceparent.substr(3, 32);
  const std::string span_id = r.traceparent.substr(36, 16);
  const std::string parent_span_id =
      continued || request_span.recording() ? parent.substr(36, 16) : std::string();

  http_response out = respond(req, r, res);
  if (!res.is_chunked_content_provider_) {
    res.status = out.status;
    res.set_content(std::move(out.body), out.content_type);
    for (auto& h : out.headers) res.set_header(h.key, h.value);
  }
  res.set_header("traceparent", r.traceparent);
  metrics::record_http_request(res.status);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  o_.log(fmt::format(
      R"({{"trace_id":"{}","span_id":"{}","parent_span_id":"{}","method":{},"path":{},"status":{},"duration_ms":{:.3f},"remote":{}}})",
      trace_id, span_id, parent_span_id, json_string(r.method), json_string(r.path), res.status,
      ms, json_string(r.remote_address)));
  if (request_span.recording()) {
    request_span.attribute("method", r.method);
    request_span.attribute("path", r.path);
    request_span.attribute("status", std::to_string(res.status));
    if (res.status >= 500) request_span.fail("status " + std::to_string(res.status));
  }
}

bool server_impl::allow(const std::string& address) {
  if (o_.max_requests_per_second <= 0) return true;
  // A token bucket per address: max_requests_per_second tokens a second, as many in a burst.
  const double rate = o_.max_requests_per_second;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(rate_mu_);
  if (buckets_.size() > 10000) {
    // Forget full buckets (idle addresses) so the map stays bounded.
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      double t = it->second.tokens +
                 std::chrono::duration<double>(now - it->second.last).count() * rate;
      it = t >= rate ? buckets_.erase(it) : std::next(it);
    }
  }
  auto [it, added] = buckets_.try_emplace(address, bucket{rate, now});
  auto& b = it->second;
  b.tokens = std::min(rate, b.tokens + std::chrono::duration<double>(now - b.last).count() * rate);
  b.last = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

http_response server_impl::respond(const httplib::Request& req, http_request& r,
                                   httplib::Response& res) {
  if (!allow(r.remote_address)) {
    auto e = http_response::error(429, "too many requests");
    e.headers.push_back({"Retry-After", "1"});
    return e;
  }
  // The raw target's path, split and decoded segment by segment.
  std::string_view target = req.target;
  target = target.substr(0, target.find('?'));
  if (target.empty() || target[0] != '/') return http_response::error(400, "bad request path");
  std::vector<std::string> segments;
  for (auto& raw : split_pattern(target)) {
    auto d = decode_segment(raw);
    if (!d || has_dot_component(*d)) return http_response::error(400, "bad request path");
    segments.push_back(std::move(*d));
  }
  std::string method = r.method == "HEAD" ? "GET" : r.method;
  const route_entry* found = nullptr;
  bool path_matched = false;
  for (const auto& e : routes_) {
    if (e.segments.size() != segments.size()) continue;
    std::map<std::string, std::string> params;
    bool ok = true;
    for (std::size_t i = 0; i < segments.size() && ok; ++i) {
      const auto& p = e.segments[i];
      if (p.size() >= 2 && p.front() == '{' && p.back() == '}') {
        if (segments[i].empty()) ok = false;
        else params[p.substr(1, p.size() - 2)] = segments[i];
      } else {
        ok = p == segments[i];
      }
    }
    if (!ok) continue;
    path_matched = true;
    if (e.method != method) continue;
    found = &e;
    r.params = std::move(params);
    break;
  }
  if (!found) {
    return path_matched ? http_response::error(405, "method not allowed")
                        : http_response::error(404, "no such route");
  }
  if (found->write) {
    if (o_.write_token.empty()) {
      return http_response::error(403, "writes are disabled: the server has no token");
    }
    auto auth = r.header("Authorization");
    constexpr std::string_view bearer = "Bearer ";
    if (!auth || auth->size() < bearer.size() ||
        !constant_time_equal(std::string_view(*auth).substr(bearer.size()), o_.write_token) ||
        auth->compare(0, bearer.size(), bearer) != 0) {
      auto e = http_response::error(401, "a valid bearer token is required");
      e.headers.push_back({"WWW-Authenticate", "Bearer"});
      return e;
    }
  }
  try {
    if (found->stream) return found->stream(req, r, res);
    return found->handler(r);
  } catch (const std::exception& e) {
    o_.log(fmt::format(R"({{"level":"error","msg":"handler threw","path":{},"what":{}}})",
                       json_string(r.path), json_string(e.what())));
  } catch (...) {
    o_.log(fmt::format(R"({{"level":"error","msg":"handler threw","path":{}}})",
                       json_string(r.path)));
  }
  return http_response::error(500, "internal error");
}

http_response server_impl::store_error(const error& e) {
  o_.log(fmt::format(R"({{"level":"error","msg":"store error","detail":{}}})",
                     json_string(e.message())));
  if (e.kind() == errc::busy || e.kind() == errc::timed_out) {
    return http_response::error(503, "the store is busy");
  }
  if (e.kind() == errc::read_only) return http_response::error(403, "the store is read-only");
  return http_response::error(500, "internal error");
}

}  // namespace http_detail

result<std::unique_ptr<http_server>> http_server::open(store_ref store,
                                                       http_options options) {
  if (options.port < 0 || options.port > 65535)
    return error(errc::invalid_argument, "port must be 0..65535");
  if (options.max_body_bytes == 0)
    return error(errc::invalid_argument, "max_body_bytes must be positive");
  if (options.sse_max_clients == 0)
    return error(errc::invalid_argument, "sse_max_clients must be positive");
  if (options.sse_heartbeat.count() <= 0)
    return error(errc::invalid_argument, "sse_heartbeat must be positive");
  if (options.sse_max_buffer_bytes < 1024)
    return error(errc::invalid_argument, "sse_max_buffer_bytes must be at least 1024");
  if (options.max_requests_per_second < 0)
    return error(errc::invalid_argument, "max_requests_per_second must not be negative");
  // A handle serves and appends (through its upcasters); the admin's own store beside it reads
  // stored events as they are (verify, export).
  auto resolved = store::resolve(store, false, "HTTP servers");
  if (!resolved) return std::move(resolved).error();
  std::shared_ptr<event_store> reader = std::move(resolved->handle);
  std::string store_uri = reader ? resolved->where.uri() : store.uri();
  auto admin = open_admin(store_uri, false);
  if (!admin) return std::move(admin).error();
  return std::unique_ptr<http_server>(std::make_unique<http_detail::server_impl>(
      store_uri, std::move(options), std::move(admin).value(), std::move(reader)));
}

}  // namespace annals
