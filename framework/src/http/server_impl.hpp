// Internal to annals_http: the server object shared by server.cpp (routing, security),
// routes.cpp (built-in JSON routes) and sse.cpp (Server-Sent Events).
#pragma once

#include "http/internal.hpp"

#include <annals/http.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace annals::http_detail {

// A query parameter as an integer in [min, ...], clamped to max; `fallback` when absent.
// invalid_argument naming the parameter otherwise.
result<std::int64_t> parse_int(const http_request& r, std::string_view name,
                               std::int64_t fallback, std::int64_t min, std::int64_t max);

inline constexpr std::int64_t max_page = 1000;  // events or streams per JSON response

// Query text: valid UTF-8, no control characters (an encoded NUL or newline), at most
// max_bytes.
bool clean_text(std::string_view s, std::size_t max_bytes);
// The type (repeatable) and stream_prefix parameters of /all and /subscribe;
// invalid_argument with the message to answer.
result<read_all_options> parse_filter(const http_request& r);

struct route_entry {
  std::string method;
  std::vector<std::string> segments;  // "{name}" matches one segment
  http_handler handler;
  // Built-in streaming routes answer on the httplib response themselves.
  std::function<http_response(const httplib::Request&, const http_request&, httplib::Response&)>
      stream;
  bool write = false;
};

class server_impl;
struct sse_page;

// The writer of every Server-Sent Events stream (sse.cpp): one thread, epoll over the
// clients' sockets. serve() is called on a connection's thread and returns once the pump is
// done with its socket.
class sse_pump {
 public:
  explicit sse_pump(server_impl& server);
  ~sse_pump();  // stops
  sse_pump(const sse_pump&) = delete;
  sse_pump& operator=(const sse_pump&) = delete;

  result<void> start();
  // Ends every stream (the end of the body, which clients get 200 ms to take) and joins.
  // Streams served after it close at once.
  void stop();
  // Streams events from `next` (filtered) on the connection socket `fd` until the client
  // goes, falls too far behind, or the pump stops. Blocks the calling thread meanwhile.
  void serve(int fd, std::int64_t next, read_all_options filter);
  // The head moved (or anything else worth a look): thread-safe.
  void wake();

 private:
  struct stream;
  void run();
  void feed(std::int64_t head);
  std::shared_ptr<const sse_page> read_page(const read_all_options& filter,
                                                   std::int64_t from, std::int64_t head);
  void queue(stream& s, std::shared_ptr<const std::string> text);
  void flush(stream& s);
  void end(stream& s, std::string_view why, std::chrono::milliseconds limit);

  server_impl& server_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::mutex mu_;  // guards stopped_ and arriving_
  bool stopped_ = false;
  std::vector<std::unique_ptr<stream>> arriving_;
  std::vector<std::unique_ptr<stream>> streams_;  // the pump thread's own
  live_decoder* decoder_ = nullptr;               // the pump thread's own
};

class server_impl final : public http_server {
 public:
  server_impl(std::string uri, http_options o, std::unique_ptr<store_admin> admin,
              std::shared_ptr<event_store> reader);
  ~server_impl() override;

  void route(std::string method, std::string pattern, http_handler handler,
             bool write) override;
  void static_content(std::string path, std::string content_type, std::string body) override;
  result<void> start() override;
  void stop() override;
  int port() const override { return port_; }
  event_store& store() override { return reader_ ? *reader_ : admin_->store(); }

 private:
  void add_builtin_routes();
  void dispatch(const httplib::Request& req, httplib::Response& res);
  http_response respond(const httplib::Request& req, http_request& r, httplib::Response& res);
  bool allow(const std::string& address);
  http_response store_error(const error& e);

  // Built-in routes (routes.cpp).
  http_response streams(const http_request& r);
  http_response stream(const http_request& r);
  http_response all(const http_request& r);
  http_response projections(const http_request& r);
  http_response subscriptions(const http_request& r);
  http_response metrics(const http_request& r);
  http_response health(const http_request& r);
  subscription_admin* subs();  // opened on first use; null when it cannot be

  // SSE (sse.cpp).
  http_response subscribe(const httplib::Request& req, const http_request& r,
                          httplib::Response& res);
  void start_head_watcher();
  void stop_head_watcher();
  friend class sse_pump;

  std::string uri_;
  http_options o_;
  std::unique_ptr<store_admin> admin_;
  std::mutex admin_mu_;
  std::shared_ptr<event_store> reader_;  // the handle given (its upcasters); null for a URI
  std::unique_ptr<subscription_admin> subs_;
  std::mutex subs_mu_;
  bool subs_failed_ = false;

  std::vector<route_entry> routes_;
  std::mutex routes_mu_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = 0;
  bool running_ = false;

  struct bucket {
    double tokens;
    std::chrono::steady_clock::time_point last;
  };
  std::mutex rate_mu_;
  std::map<std::string, bucket> buckets_;

  // SSE: the head as last seen (this process's commits at once, others' within ~50 ms).
  std::atomic<bool> stopping_{false};
  std::atomic<std::int64_t> head_{0};
  std::thread head_watcher_;
  std::atomic<std::size_t> sse_clients_{0};
  std::unique_ptr<sse_pump> pump_;
};

}  // namespace annals::http_detail
