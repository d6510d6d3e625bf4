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
#include <semaphore>
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

// Events read once for every unfiltered SSE client at the same position: the formatted
// "id/event/data" texts of up to a page after `from`, and where the next page starts.
struct sse_page {
  struct item {
    std::int64_t position;
    std::string text;
  };
  std::vector<item> items;
  std::int64_t end = 0;  // every position before it is covered
};

class server_impl final : public http_server {
 public:
  server_impl(std::string uri, http_options o, std::unique_ptr<store_admin> admin,
              std::unique_ptr<event_store> reader);
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
  void wake_followers();
  friend struct sse_session;
  friend struct read_slot;

  std::string uri_;
  http_options o_;
  std::unique_ptr<store_admin> admin_;
  std::mutex admin_mu_;
  std::unique_ptr<event_store> reader_;  // with the upcasters, when there are some
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
  std::mutex head_mu_;
  std::condition_variable head_cv_;
  std::thread head_watcher_;
  std::atomic<std::size_t> sse_clients_{0};
  std::counting_semaphore<> read_slots_{8};
  // Pages by their first position; a page being read is a future the others wait on.
  std::mutex pages_mu_;
  std::map<std::int64_t, std::shared_future<std::shared_ptr<const sse_page>>> pages_;
  std::shared_ptr<const sse_page> shared_page(std::int64_t from, std::int64_t head,
                                              live_decoder& decoder);
};

}  // namespace annals::http_detail
