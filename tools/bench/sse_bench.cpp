// sse_fanout: an annals::http_server on 127.0.0.1 and N raw-socket SSE clients read by one
// thread with poll().
//
// - sse_fanout_N (N = 1, 100, 500; --quick 1, 20, 100): E single-event appends from one
//   thread, timed from the first append until every client has received the last event;
//   events_per_s counts deliveries (N * E). Its baseline is the same E appends with no server
//   (the appender alone), so the ratio is deliveries per appended event per second: how many
//   subscribers the fan-out keeps up with at the store's own append rate.
// - sse_fanout_append_N (N = the largest): the same appends with N subscribers connected and
//   draining, beside the same appends with no server: ratio = append throughput kept.
// Both sides of a rep append to fresh stores; reps alternate which side goes first.
#include "sse_bench.hpp"

#include <annals/http.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

namespace annals_bench {
namespace {

struct sse_clients {
  std::vector<int> fds;
  std::vector<std::string> tails;  // the last bytes received, to find the last id across reads
  std::vector<bool> done;
  std::atomic<std::size_t> finished{0};
  std::string last_id;  // "\nid: N\n"
  std::atomic<bool> stop{false};
  std::thread reader;

  sse_clients(int port, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<std::uint16_t>(port));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        storage_failure("sse_fanout: cannot connect to the server");
      const char req[] = "GET /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
      if (::send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != sizeof req - 1)
        storage_failure("sse_fanout: cannot send the request");
      fds.push_back(fd);
      // httplib listens with a backlog of 5: wait for each client's headers.
      std::string got;
      char buf[4096];
      while (got.find("\r\n\r\n") == std::string::npos) {
        ssize_t r = ::recv(fd, buf, sizeof buf, 0);
        if (r <= 0) storage_failure("sse_fanout: the server closed a stream");
        got.append(buf, static_cast<std::size_t>(r));
      }
      if (got.rfind("HTTP/1.1 200", 0) != 0) storage_failure("sse_fanout: refused: " + got.substr(0, 40));
    }
    tails.assign(n, {});
    done.assign(n, false);
    reader = std::thread([this] { read_loop(); });
  }

  ~sse_clients() {
    stop = true;
    if (reader.joinable()) reader.join();
    for (int fd : fds) ::close(fd);
  }

  // Waits until every client has the expected last event, at most two minutes after `since`.
  void wait_all(clock_type::time_point since, std::string_view scenario) {
    while (finished < fds.size()) {
      if (seconds_since(since) > 120)
        logic_failure(fmt::format("{}: clients did not receive every event", scenario));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void expect(std::int64_t last_position) {
    last_id = fmt::format("\nid: {}\n", last_position);
    finished = 0;
    for (std::size_t i = 0; i < done.size(); ++i) done[i] = false;
  }

  void read_loop() {
    std::vector<pollfd> p(fds.size());
    char buf[65536];
    while (!stop) {
      for (std::size_t i = 0; i < fds.size(); ++i) p[i] = {fds[i], POLLIN, 0};
      if (::poll(p.data(), p.size(), 20) <= 0) continue;
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (!(p[i].revents & POLLIN)) continue;
        ssize_t r = ::recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
        if (r <= 0) continue;
        std::string& t = tails[i];
        t.append(buf, static_cast<std::size_t>(r));
        if (!done[i] && !last_id.empty() && t.find(last_id) != std::string::npos) {
          done[i] = true;
          ++finished;
        }
        if (t.size() > 64) t.erase(0, t.size() - 64);
      }
    }
  }
};

// E single-event appends to a fresh store; returns seconds. With `after`, called once the
// appends are done (untimed by the caller's choice).
double append_all(annals::event_store& s, std::int64_t events) {
  const auto id = account_id(1);
  const auto t0 = clock_type::now();
  for (std::int64_t i = 0; i < events; ++i) {
    std::vector<annals::event_data> v(1);
    v[0].type = type_deposited();
    v[0].payload = deposited_payload(id, i + 1);
    check(s.append("account-1", annals::expected_version::any(), std::move(v)), "append");
  }
  return seconds_since(t0);
}

// Paced single-event appends, one every `interval`; returns each append's latency in ms.
std::vector<double> append_paced(annals::event_store& s, std::int64_t events,
                                 std::chrono::microseconds interval) {
  const auto id = account_id(1);
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(events));
  auto next = clock_type::now();
  for (std::int64_t i = 0; i < events; ++i) {
    next += interval;
    std::this_thread::sleep_until(next);
    std::vector<annals::event_data> v(1);
    v[0].type = type_deposited();
    v[0].payload = deposited_payload(id, i + 1);
    const auto t0 = clock_type::now();
    check(s.append("account-1", annals::expected_version::any(), std::move(v)), "append");
    ms.push_back(seconds_since(t0) * 1000);
  }
  return ms;
}

// A server on the store at `path` for n SSE clients: any port, no rate limit, no request log.
std::unique_ptr<annals::http_server> start_server(const std::string& path, std::size_t n) {
  annals::http_options o;
  o.port = 0;
  o.max_requests_per_second = 0;
  o.sse_max_clients = n + 8;
  o.log = [](std::string_view) {};
  auto server = check(annals::http_server::open(path, o), "http_server::open");
  check(server->start(), "http_server::start");
  return server;
}

void remove_files(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix, ec);
}

}  // namespace

void run_sse_fanout(const config& c, const std::string& dir) {
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  const std::vector<std::size_t> counts =
      c.quick ? std::vector<std::size_t>{1, 20, 100} : std::vector<std::size_t>{1, 100, 500};
  const std::int64_t events = c.quick ? 200 : 1000;
  int file = 0;
  auto fresh = [&] {
    auto path = fmt::format("{}/sse-{}.db", dir, ++file);
    remove_files(path);
    annals::sqlite_options so;
    so.sync = annals::durability::normal;  // the fan-out, not the disk, is measured
    return std::make_pair(path, check(annals::open_sqlite_store(path, so), "open"));
  };
  // The appender alone: the baseline of every figure.
  auto alone = [&] {
    auto [path, s] = fresh();
    double t = append_all(*s, events);
    s.reset();
    remove_files(path);
    return t;
  };
  for (std::size_t n : counts) {
    figure f;
    f.scenario = fmt::format("sse_fanout_{}", n);
    f.events = events * static_cast<std::int64_t>(n);
    f.baseline_events = events;
    f.note = fmt::format(
        "{} single-event appends (synchronous=NORMAL) delivered over SSE to {} clients: "
        "deliveries/s from the first append to the last client's last event; baseline: the "
        "same appends with no server",
        events, n);
    std::vector<double> append_with;
    alternate(
        c.reps,
        [&] {
          auto [path, s] = fresh();
          auto server = start_server(path, n);
          double t = 0;
          {
            sse_clients clients(server->port(), n);
            clients.expect(events);
            const auto t0 = clock_type::now();
            append_with.push_back(append_all(*s, events));
            clients.wait_all(t0, "sse_fanout");
            t = seconds_since(t0);
          }
          server->stop();
          s.reset();
          remove_files(path);
          return t;
        },
        alone, f.annals_seconds, f.baseline_seconds);
    f.extra.emplace_back("clients", std::to_string(n));
    f.extra.emplace_back("append_per_s_with_clients",
                         num(static_cast<double>(events) / median(append_with), 0));
    f.extra.emplace_back("append_per_s_alone",
                         num(static_cast<double>(events) / median(f.baseline_seconds), 0));
    print_figure(f);
    if (n == counts.back()) {
      figure a;
      a.scenario = fmt::format("sse_fanout_append_{}", n);
      a.events = events;
      a.baseline_events = events;
      a.annals_seconds = append_with;
      a.baseline_seconds = f.baseline_seconds;
      a.note = fmt::format(
          "append throughput with {} SSE subscribers connected and receiving, beside the same "
          "appends with no server (ratio: the throughput kept)",
          n);
      print_figure(a);

      // At a steady rate the appender is not saturated: do subscribers slow each append?
      // Latency of paced appends (250/s) with n subscribers receiving, beside no server.
      const std::int64_t paced = c.quick ? 100 : 500;
      const auto interval = std::chrono::microseconds(4000);
      std::vector<double> with_ms, alone_ms;
      figure p;
      p.scenario = fmt::format("sse_fanout_paced_{}", n);
      p.events = paced;
      p.baseline_events = paced;
      p.note = fmt::format(
          "{} single-event appends at 250/s with {} SSE subscribers receiving them, beside the "
          "same paced appends with no server: events_per_s is appends per second of append "
          "time (1 / mean latency); p50/p99 append latency in ms on each side",
          paced, n);
      alternate(
          c.reps,
          [&] {
            auto [path, s] = fresh();
            auto server = start_server(path, n);
            double t = 0;
            {
              sse_clients clients(server->port(), n);
              clients.expect(paced);
              auto ms = append_paced(*s, paced, interval);
              for (double m : ms) t += m / 1000;
              with_ms.insert(with_ms.end(), ms.begin(), ms.end());
              clients.wait_all(clock_type::now(), "sse_fanout_paced");
            }
            server->stop();
            s.reset();
            remove_files(path);
            return t;
          },
          [&] {
            auto [path, s] = fresh();
            auto ms = append_paced(*s, paced, interval);
            double t = 0;
            for (double m : ms) t += m / 1000;
            alone_ms.insert(alone_ms.end(), ms.begin(), ms.end());
            s.reset();
            remove_files(path);
            return t;
          },
          p.annals_seconds, p.baseline_seconds);
      p.extra.emplace_back("clients", std::to_string(n));
      p.extra.emplace_back("append_p50_ms_with_clients", num(quantile(with_ms, 0.5), 3));
      p.extra.emplace_back("append_p99_ms_with_clients", num(quantile(with_ms, 0.99), 3));
      p.extra.emplace_back("append_p50_ms_alone", num(quantile(alone_ms, 0.5), 3));
      p.extra.emplace_back("append_p99_ms_alone", num(quantile(alone_ms, 0.99), 3));
      print_figure(p);
    }
  }
}

}  // namespace annals_bench
