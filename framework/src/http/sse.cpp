// Server-Sent Events (/subscribe). Each client follows the store on its own, on its own
// connection thread: it pages read_all after its last position and waits on the server's head
// watcher, so appends never wait for a subscriber and one slow client slows no other.
//
// Writes bypass httplib's blocking sink: the session finds its connection's socket (by its
// local and remote ports) and writes HTTP chunks itself with MSG_DONTWAIT, so it always knows
// how much is unsent. A client whose unsent backlog reaches sse_max_buffer_bytes and that
// takes nothing for a grace period is cut off with a final "event: error".
#include "http/internal.hpp"
#include "http/server_impl.hpp"
#include "metrics.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <future>

namespace annals::http_detail {
namespace {

int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

// The socket of this process whose local and remote ports are these, or -1. A connection's
// port pair is unique while it is open, and it is open while its handler runs.
int find_connection_fd(int local_port, int remote_port) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  const int self = dirfd(d);
  while (dirent* e = readdir(d)) {
    int fd = std::atoi(e->d_name);
    if (fd <= 2 || fd == self) continue;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) continue;
    if (port_of(a) != remote_port) continue;
    len = sizeof a;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) continue;
    if (port_of(a) == local_port) {
      found = fd;
      break;
    }
  }
  closedir(d);
  return found;
}

std::string chunk(std::string_view data) {
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

}  // namespace

// Bounds the event streams' concurrent store reads (a PostgreSQL store opens a connection per
// read beyond its pool: five hundred filtered clients must not mean five hundred connections).
struct read_slot {
  server_impl& s;
  explicit read_slot(server_impl& server) : s(server) { s.read_slots_.acquire(); }
  ~read_slot() { s.read_slots_.release(); }
  read_slot(const read_slot&) = delete;
  read_slot& operator=(const read_slot&) = delete;
};

struct sse_session {
  server_impl& server;
  int fd;
  std::int64_t next;  // the next position to read
  read_all_options filter;
  live_decoder decoder;
  std::deque<std::string> chunks;  // framed HTTP chunks not yet (fully) sent
  std::size_t front_sent = 0;      // bytes of chunks.front() already sent
  std::size_t unsent = 0;          // bytes in chunks not yet sent
  std::chrono::steady_clock::time_point last_queued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_progress = std::chrono::steady_clock::now();
  bool failed = false;  // the connection broke

  sse_session(server_impl& s, int f, std::int64_t n, read_all_options o)
      : server(s), fd(f), next(n), filter(std::move(o)), decoder(s.store()) {}

  void queue(std::string_view sse_text) {
    chunks.push_back(chunk(sse_text));
    unsent += chunks.back().size();
    last_queued = std::chrono::steady_clock::now();
  }

  // Sends what the socket takes now, without waiting.
  void flush() {
    while (!chunks.empty() && !failed) {
      const std::string& c = chunks.front();
      ssize_t n = ::send(fd, c.data() + front_sent, c.size() - front_sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) failed = true;
        return;
      }
      last_progress = std::chrono::steady_clock::now();
      front_sent += static_cast<std::size_t>(n);
      unsent -= static_cast<std::size_t>(n);
      if (front_sent == c.size()) {
        chunks.pop_front();
        front_sent = 0;
      }
    }
  }

  // The peer closed or reset the connection.
  bool peer_gone() const {
    pollfd p{fd, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) {
      return true;
    }
    return false;
  }

  // Reads one page after `next` into the queue. false on a read error (already reported).
  bool read_page(std::int64_t head) {
    if (filter.event_types.empty() && filter.stream_prefix.empty()) {
      // Unfiltered clients at the same position share one read and one encoding.
      auto page = server.shared_page(next, head, decoder);
      if (!page) {
        end_with_error("the server cannot read the store");
        return false;
      }
      for (const auto& item : page->items) {
        if (unsent >= server.o_.sse_max_buffer_bytes) return true;  // the rest later
        queue(item.text);
        next = item.position + 1;
      }
      next = std::max(next, page->end);
      return true;
    }
    filter.from_position = next;
    filter.max_count = 256;
    std::int64_t seen = 0;
    bool full = false;
    read_slot slot(server);
    auto r = server.store().read_all(filter, [&](const recorded_event& e) {
      queue(fmt::format("id: {}\nevent: {}\ndata: {}\n\n", e.position, e.type,
                        event_object(e, decoder)));
      next = e.position + 1;
      ++seen;
      full = unsent >= server.o_.sse_max_buffer_bytes;
      return !full;
    });
    if (!r) {
      server.o_.log(fmt::format(R"({{"level":"error","msg":"sse read failed","detail":{}}})",
                                json_string(r.error().message())));
      end_with_error("the server cannot read the store");
      return false;
    }
    // A short page read everything up to `head` (committed before the read began): the
    // positions the filter passed over are done too.
    if (!full && seen < filter.max_count) next = std::max(next, head + 1);
    return true;
  }

  // Keeps the part of the current chunk already begun (the HTTP framing must stay whole),
  // drops the rest, then sends `why` as a last event and the end of the chunked body, waiting
  // a few seconds at most for the client to take it.
  void end_with_error(std::string_view why) {
    if (front_sent > 0) {
      while (chunks.size() > 1) chunks.pop_back();
    } else {
      chunks.clear();
    }
    unsent = chunks.empty() ? 0 : chunks.front().size() - front_sent;
    queue(fmt::format("event: error\ndata: {{\"error\":{}}}\n\n", json_string(why)));
    chunks.push_back("0\r\n\r\n");
    unsent += 5;
    drain(std::chrono::seconds(5));
  }

  void drain(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      flush();
      if (chunks.empty() || failed || std::chrono::steady_clock::now() >= until) return;
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 50);
    }
  }

  void run() {
    const auto heartbeat = server.o_.sse_heartbeat;
    // How long a client whose backlog is full may take nothing before it is cut off.
    const auto grace = std::clamp<std::chrono::milliseconds>(
        heartbeat, std::chrono::milliseconds(100), std::chrono::milliseconds(5000));
    queue(": connected\n\n");
    for (;;) {
      if (server.stopping_) {
        chunks.push_back("0\r\n\r\n");
        drain(std::chrono::milliseconds(200));
        return;
      }
      flush();
      if (failed || peer_gone()) return;
      const auto now = std::chrono::steady_clock::now();
      if (unsent >= server.o_.sse_max_buffer_bytes) {
        if (now - last_progress >= grace) {
          end_with_error(fmt::format(
              "the client fell {} bytes behind (the limit is {}); reconnect with "
              "Last-Event-ID to resume",
              unsent, server.o_.sse_max_buffer_bytes));
          return;
        }
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 20);
        continue;
      }
      if (unsent == 0) last_progress = now;
      const std::int64_t head = server.head_.load();
      if (head >= next) {
        if (!read_page(head)) return;
        continue;
      }
      if (unsent == 0 && now - last_queued >= heartbeat) {
        queue(": heartbeat\n\n");
        continue;
      }
      if (unsent > 0) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 20);
        continue;
      }
      auto wait = std::min<std::chrono::steady_clock::duration>(
          heartbeat - (now - last_queued), std::chrono::milliseconds(250));
      std::unique_lock lock(server.head_mu_);
      server.head_cv_.wait_for(lock, wait, [&] {
        return server.stopping_.load() || server.head_.load() >= next;
      });
    }
  }
};

http_response server_impl::subscribe(const httplib::Request& req, const http_request& r,
                                     httplib::Response& res) {
  auto parsed = parse_filter(r);
  if (!parsed) return http_response::error(400, parsed.error().message());
  read_all_options filter = std::move(parsed).value();
  std::int64_t next = 0;
  if (auto last = r.header("Last-Event-ID")) {
    std::int64_t id = -1;
    auto [p, ec] = std::from_chars(last->data(), last->data() + last->size(), id);
    if (last->empty() || ec != std::errc() || p != last->data() + last->size() || id < 0)
      return http_response::error(400, "Last-Event-ID must be a position");
    next = id + 1;  // strictly after it
  } else {
    auto from = parse_int(r, "from", -1, 0, INT64_MAX);
    if (!from) return http_response::error(400, from.error().message());
    if (*from >= 0) {
      next = std::max<std::int64_t>(*from, 1);
    } else {
      auto head = store().head_position();  // live only: what is appended from now on
      if (!head) return store_error(head.error());
      next = *head + 1;
    }
  }
  if (sse_clients_.fetch_add(1) >= o_.sse_max_clients) {
    sse_clients_.fetch_sub(1);
    auto e = http_response::error(503, "too many event-stream clients");
    e.headers.push_back({"Retry-After", "5"});
    return e;
  }
  metrics::add_sse_clients(1);
  auto release = [this](bool) {
    sse_clients_.fetch_sub(1);
    metrics::add_sse_clients(-1);
  };
  // Found from the request's ports (httplib does not hand handlers their socket).
  const int fd = find_connection_fd(req.local_port, req.remote_port);
  if (fd < 0) {
    release(false);
    return http_response::error(503, "the event stream is unavailable");
  }
  auto session = std::make_shared<sse_session>(*this, fd, next, std::move(filter));
  if (auto l = session->decoder.load(); !l) {
    release(false);
    return store_error(l.error());
  }
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [session](std::size_t, httplib::DataSink&) {
        // httplib does not catch exceptions thrown while it writes a body: none may escape.
        try {
          session->run();
        } catch (const std::exception& e) {
          session->server.o_.log(
              fmt::format(R"({{"level":"error","msg":"event stream failed","what":{}}})",
                          json_string(e.what())));
        } catch (...) {
          session->server.o_.log(R"({"level":"error","msg":"event stream failed"})");
        }
        return false;  // the session wrote the end of the body itself; close the connection
      },
      release);
  return {};
}

std::shared_ptr<const sse_page> server_impl::shared_page(std::int64_t from, std::int64_t head,
                                                        live_decoder& decoder) {
  std::unique_lock lock(pages_mu_);
  if (auto it = pages_.find(from); it != pages_.end()) {
    auto f = it->second;
    lock.unlock();
    return f.get();
  }
  std::promise<std::shared_ptr<const sse_page>> promise;
  pages_.emplace(from, promise.get_future().share());
  while (pages_.size() > 64) pages_.erase(pages_.begin());  // the oldest positions
  lock.unlock();

  auto page = std::make_shared<sse_page>();
  read_all_options o;
  o.from_position = from;
  o.max_count = 256;
  result<std::int64_t> r = error(errc::io, "the page read threw");
  try {  // the clients waiting on this page must be answered whatever happens
    read_slot slot(*this);
    r = store().read_all(o, [&](const recorded_event& e) {
      page->items.push_back({e.position, fmt::format("id: {}\nevent: {}\ndata: {}\n\n",
                                                     e.position, e.type,
                                                     event_object(e, decoder))});
      return true;
    });
  } catch (const std::exception& e) {
    r = error(errc::io, e.what());
  }
  if (!r) {
    o_.log(fmt::format(R"({{"level":"error","msg":"sse read failed","detail":{}}})",
                       json_string(r.error().message())));
    std::lock_guard relock(pages_mu_);
    pages_.erase(from);
    promise.set_value(nullptr);
    return nullptr;
  }
  // A short page covers everything up to `head` (committed before the read began).
  page->end = page->items.empty() ? from : page->items.back().position + 1;
  if (static_cast<std::int64_t>(page->items.size()) < o.max_count) {
    page->end = std::max(page->end, head + 1);
  }
  std::shared_ptr<const sse_page> done = page;
  promise.set_value(done);
  return done;
}

void server_impl::start_head_watcher() {
  auto h = store().head_position();
  head_ = h ? *h : 0;
  head_watcher_ = std::thread([this] {
    while (!stopping_) {
      const auto seen = store::commit_sequence();
      auto h = store().head_position();
      if (h && *h != head_.load()) {
        {
          std::lock_guard lock(head_mu_);
          head_ = *h;
        }
        head_cv_.notify_all();
        // Coalesces bursts: the followers wake at most every 2 ms (20 ms with 1000 clients)
        // and take whole pages, so hundreds of them do not take the appenders' CPU once per
        // commit. The price is that much latency under a stream of commits.
        const auto clients = static_cast<std::int64_t>(sse_clients_.load());
        std::this_thread::sleep_for(
            std::chrono::microseconds(std::clamp<std::int64_t>(clients * 20, 2000, 20000)));
      }
      // This process's commits wake it at once; other processes' are polled for.
      store::wait_for_commit(seen, std::chrono::milliseconds(50));
    }
  });
}

void server_impl::stop_head_watcher() {
  if (head_watcher_.joinable()) head_watcher_.join();
}

void server_impl::wake_followers() {
  {
    std::lock_guard lock(head_mu_);
  }
  head_cv_.notify_all();
}

}  // namespace annals::http_detail
