// Server-Sent Events (/subscribe), written by one pump thread for every client.
//
// A client's connection thread (httplib's) hands its socket to the pump and waits until the
// pump is done with it. The pump follows the server's head watcher: when the head moves it
// reads each page once for all the clients at the same position with the same filter,
// frames it as one HTTP chunk shared by all of them, and writes it to each socket without
// blocking (epoll, edge-triggered), so it always knows how much every client has not taken.
// Rounds are at least 1 ms apart, 50 us more per client (25 ms with 500, at most 50 ms), so
// under a stream of commits hundreds of clients cost one read and a few hundred sends per
// round, not a wake-up each per commit; the first event after a quiet spell goes out at
// once. An append never waits for a subscriber.
//
// A client whose unsent backlog reaches sse_max_buffer_bytes and that takes nothing for a
// grace period is cut off with a final "event: error". httplib does not hand handlers their
// socket: the session finds it by its local and remote ports.
#include "http/internal.hpp"
#include "http/server_impl.hpp"
#include "metrics.hpp"
#include "store/prepared.hpp"

#include <fmt/format.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <future>

namespace annals::http_detail {
namespace {

using clock_type = std::chrono::steady_clock;

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

using shared_text = std::shared_ptr<const std::string>;

// `data` framed as one HTTP chunk.
shared_text chunk(std::string_view data) {
  return std::make_shared<const std::string>(fmt::format("{:x}\r\n{}\r\n", data.size(), data));
}

constexpr std::int64_t page_events = 256;
// How long a stream ended with a reason stays open for the client to take that reason. A
// client cut off for not reading may be busy elsewhere for a while; it costs an idle socket.
constexpr std::chrono::seconds reason_limit{30};
constexpr std::size_t page_bytes = 256 * 1024;  // a page ends after the event that passes it

}  // namespace

// Up to a page of events after a position, as one framed chunk, and where the next starts.
struct sse_page {
  shared_text text;      // null when the page holds no event
  std::int64_t end = 0;  // every position before it is covered
};

struct sse_pump::stream {
  int fd;
  std::int64_t next;  // the next position to read
  read_all_options filter;
  std::string key;  // the filter as text: streams with one key at one position share pages
  std::deque<shared_text> out;  // chunks not yet (fully) sent
  std::size_t front_sent = 0;   // bytes of out.front() already sent
  std::size_t unsent = 0;       // bytes in out not yet sent
  bool blocked = false;         // the socket took less than offered: wait for EPOLLOUT
  bool ending = false;          // the end of the body is queued: finish once sent or at end_by
  bool gone = false;            // the peer closed, or the connection broke
  clock_type::time_point last_queued = clock_type::now();
  clock_type::time_point last_progress = clock_type::now();
  clock_type::time_point end_by{};
  std::promise<void> done;  // set when the pump lets go of fd

  bool wants_page(std::int64_t head, std::size_t max_buffer) const {
    return !ending && !gone && unsent < max_buffer && head >= next;
  }
};

sse_pump::sse_pump(server_impl& server) : server_(server) {}

sse_pump::~sse_pump() {
  stop();
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

result<void> sse_pump::start() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up
  if (epoll_fd_ < 0 || wake_fd_ < 0 || ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0)
    return error(errc::io, "cannot set up the event-stream writer (epoll)");
  thread_ = std::thread([this] { run(); });
  return {};
}

void sse_pump::stop() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  wake();
  if (thread_.joinable()) thread_.join();
}

void sse_pump::wake() {
  if (wake_fd_ < 0) return;
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void sse_pump::serve(int fd, std::int64_t next, read_all_options filter) {
  auto s = std::make_unique<stream>();
  s->fd = fd;
  s->next = next;
  s->key = filter.stream_prefix;
  for (const auto& t : filter.event_types) s->key.append(1, '\0').append(t);
  s->filter = std::move(filter);
  auto done = s->done.get_future();
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;  // the server is stopping: the connection closes
    arriving_.push_back(std::move(s));
  }
  wake();
  done.wait();
}

void sse_pump::queue(stream& s, shared_text text) {
  s.unsent += text->size();
  s.out.push_back(std::move(text));
  s.last_queued = clock_type::now();
}

// Sends what the socket takes now, without waiting.
void sse_pump::flush(stream& s) {
  while (!s.out.empty() && !s.gone && !s.blocked) {
    const std::string& c = *s.out.front();
    ssize_t n = ::send(s.fd, c.data() + s.front_sent, c.size() - s.front_sent,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s.blocked = true;
      } else {
        s.gone = true;
      }
      return;
    }
    s.last_progress = clock_type::now();
    s.front_sent += static_cast<std::size_t>(n);
    s.unsent -= static_cast<std::size_t>(n);
    if (s.front_sent == c.size()) {
      s.out.pop_front();
      s.front_sent = 0;
    }
  }
}

// Keeps the part of the current chunk already begun (the HTTP framing must stay whole), drops
// the rest, then queues `why` as a last event (none when empty) and the end of the chunked
// body, which the client has `limit` to take.
void sse_pump::end(stream& s, std::string_view why, std::chrono::milliseconds limit) {
  if (s.ending) return;
  if (s.front_sent > 0) {
    s.out.resize(1);
    s.unsent = s.out.front()->size() - s.front_sent;
  } else {
    s.out.clear();
    s.unsent = 0;
  }
  if (!why.empty())
    queue(s, chunk(fmt::format("event: error\ndata: {{\"error\":{}}}\n\n", json_string(why))));
  static const shared_text last = std::make_shared<const std::string>("0\r\n\r\n");
  queue(s, last);
  s.ending = true;
  s.end_by = clock_type::now() + limit;
}

std::shared_ptr<const sse_page> sse_pump::read_page(const read_all_options& filter,
                                                    std::int64_t from, std::int64_t head) {
  read_all_options o = filter;
  o.from_position = from;
  o.max_count = page_events;
  std::string text;
  std::int64_t seen = 0;
  std::int64_t last = 0;
  result<std::int64_t> r = error(errc::io, "the page read threw");
  try {
    r = server_.store().read_all(o, [&](const recorded_event& e) {
      fmt::format_to(std::back_inserter(text), "id: {}\nevent: {}\ndata: {}\n\n", e.position,
                     e.type, event_object(e, *decoder_));
      last = e.position;
      ++seen;
      return text.size() < page_bytes;
    });
  } catch (const std::exception& e) {
    r = error(errc::io, e.what());
  }
  if (!r) {
    server_.o_.log(fmt::format(R"({{"level":"error","msg":"sse read failed","detail":{}}})",
                               json_string(r.error().message())));
    return nullptr;
  }
  auto page = std::make_shared<sse_page>();
  page->end = seen > 0 ? last + 1 : from;
  // A page cut by neither limit read everything up to `head` (committed before the read
  // began): the positions the filter passed over are done too.
  if (seen < page_events && text.size() < page_bytes) page->end = std::max(page->end, head + 1);
  if (seen > 0) page->text = chunk(text);
  return page;
}

// Queues the pages every stream is due, reading each page once per filter and position.
void sse_pump::feed(std::int64_t head) {
  const std::size_t max_buffer = server_.o_.sse_max_buffer_bytes;
  std::map<std::pair<std::string_view, std::int64_t>, std::vector<stream*>> groups;
  for (auto& s : streams_) {
    if (s->wants_page(head, max_buffer)) groups[{s->key, s->next}].push_back(s.get());
  }
  for (auto& [at, members] : groups) {
    std::int64_t from = at.second;
    // Pages until the group is caught up or every member's backlog is full.
    while (!members.empty() && from <= head) {
      auto page = read_page(members.front()->filter, from, head);
      if (!page) {
        for (stream* s : members) end(*s, "the server cannot read the store", reason_limit);
        break;
      }
      for (stream* s : members) {
        if (page->text) queue(*s, page->text);
        s->next = page->end;
        flush(*s);
      }
      from = page->end;
      std::erase_if(members, [&](stream* s) { return s->unsent >= max_buffer || s->gone; });
    }
  }
}

void sse_pump::run() {
  // Fan-out yields to the appenders when the CPU is short: it then sends bigger rounds less
  // often instead of taking the time commits need (this thread only, nice +5).
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 5);
  (void)::pthread_setname_np(::pthread_self(), "annals-sse");  // as top -H and ps show it
  live_decoder decoder(server_.store());
  (void)decoder.load();  // types it lacks are loaded when met
  decoder_ = &decoder;
  const auto heartbeat = std::chrono::duration_cast<clock_type::duration>(server_.o_.sse_heartbeat);
  // How long a client whose backlog is full may take nothing before it is cut off.
  const auto grace = std::chrono::duration_cast<clock_type::duration>(
      std::clamp<std::chrono::milliseconds>(server_.o_.sse_heartbeat,
                                            std::chrono::milliseconds(100),
                                            std::chrono::milliseconds(5000)));
  const std::size_t max_buffer = server_.o_.sse_max_buffer_bytes;
  static const shared_text connected = chunk(": connected\n\n");
  static const shared_text beat = chunk(": heartbeat\n\n");
  std::vector<epoll_event> events(512);
  clock_type::time_point last_round{};
  bool stopping = false;
  for (;;) {
    // Sleeps until the nearest deadline: a due page (no sooner than a round interval after
    // the last), a heartbeat, a full client's grace, an ending stream's limit.
    const auto now = clock_type::now();
    const auto interval = std::chrono::microseconds(
        std::clamp<std::int64_t>(static_cast<std::int64_t>(streams_.size()) * 50, 1000, 50000));
    const std::int64_t head = server_.head_.load();
    auto wake_at = now + std::chrono::milliseconds(250);
    for (const auto& s : streams_) {
      if (s->gone || (!s->blocked && s->unsent > 0)) {
        wake_at = now;
      } else if (s->ending) {
        wake_at = std::min(wake_at, s->end_by);
      } else if (s->unsent >= max_buffer) {
        wake_at = std::min(wake_at, s->last_progress + grace);
      } else if (s->wants_page(head, max_buffer)) {
        wake_at = std::min(wake_at, last_round + interval);
      } else if (s->unsent == 0) {
        wake_at = std::min(wake_at, s->last_queued + heartbeat);
      }
    }
    int timeout = 0;
    if (wake_at > now) {
      timeout = static_cast<int>(
          std::chrono::ceil<std::chrono::milliseconds>(wake_at - now).count());
    }
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
    for (int i = 0; i < n; ++i) {
      auto* s = static_cast<stream*>(events[i].data.ptr);
      if (!s) {
        std::uint64_t count = 0;
        (void)!::read(wake_fd_, &count, sizeof count);
        continue;
      }
      if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->gone = true;
      if (events[i].events & EPOLLOUT) s->blocked = false;
    }
    {
      std::lock_guard lock(mu_);
      stopping = stopped_;
      for (auto& s : arriving_) {
        epoll_event ev{};
        ev.events = EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.ptr = s.get();
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
          s->done.set_value();  // never watched: the connection closes
          continue;
        }
        queue(*s, connected);
        streams_.push_back(std::move(s));
      }
      arriving_.clear();
    }
    const auto t = clock_type::now();
    if (stopping) {
      for (auto& s : streams_) end(*s, {}, std::chrono::milliseconds(200));
    } else if (t - last_round >= interval) {
      last_round = t;
      feed(server_.head_.load());
    }
    for (auto& s : streams_) {
      if (!s->ending && !s->gone) {
        if (s->unsent == 0) {
          s->last_progress = t;
          if (t - s->last_queued >= heartbeat) queue(*s, beat);
        } else if (s->unsent >= max_buffer && t - s->last_progress >= grace) {
          end(*s,
              fmt::format("the client fell {} bytes behind (the limit is {}); reconnect with "
                          "Last-Event-ID to resume",
                          s->unsent, max_buffer),
              reason_limit);
        }
      }
      flush(*s);
    }
    // Lets go of the streams that are over: unwatched first, then their threads released
    // (httplib closes the socket once its thread returns).
    std::erase_if(streams_, [&](std::unique_ptr<stream>& s) {
      if (!s->gone && !(s->ending && (s->out.empty() || t >= s->end_by))) return false;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, s->fd, nullptr);
      s->done.set_value();
      return true;
    });
    if (stopping && streams_.empty()) break;
  }
  decoder_ = nullptr;
}

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
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto state = std::make_shared<std::pair<std::int64_t, read_all_options>>(next, std::move(filter));
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, fd, state](std::size_t, httplib::DataSink&) {
        // By now httplib has sent the headers; the pump writes the body, this thread waits.
        pump_->serve(fd, state->first, std::move(state->second));
        return false;  // the pump wrote the end of the body; close the connection
      },
      release);
  return {};
}

void server_impl::start_head_watcher() {
  auto h = store().head_position();
  head_ = h ? *h : 0;
  head_watcher_ = std::thread([this, commits = store::commits_of(store())] {
    (void)::pthread_setname_np(::pthread_self(), "annals-head");
    while (!stopping_) {
      const auto seen = commits->sequence();
      auto h = store().head_position();
      if (h && *h != head_.load()) {
        head_ = *h;
        pump_->wake();
        // At most one head read per millisecond under a stream of commits; the pump spaces
        // its rounds further apart with many clients.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      // This process's commits wake it at once; other processes' are polled for.
      commits->wait(seen, std::chrono::milliseconds(50));
    }
  });
}

void server_impl::stop_head_watcher() {
  if (head_watcher_.joinable()) head_watcher_.join();
}

}  // namespace annals::http_detail
