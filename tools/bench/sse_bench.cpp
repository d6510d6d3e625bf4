// sse_fanout: an annals::http_server on 127.0.0.1 and N raw-socket SSE clients read by one
// thread with epoll (the cheapest client this machine can run beside the server: real clients
// are elsewhere).
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
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <ctime>
#include <filesystem>
#include <thread>

namespace annals_bench {
namespace {

struct sse_clients {
  std::vector<int> fds;
  std::vector<std::string> tails;  // the last bytes received, to find the last id across reads
  std::vector<bool> done;
  std::atomic<std::size_t> finished{0};
  std::atomic<std::int64_t> expected{-1};  // the last position the clients must receive
  std::atomic<bool> stop{false};
  std::atomic<double> reader_cpu_s{0};  // the reader thread's CPU time, set when it stops
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

  // Called before the appends: the reader thread resets its per-client flags on seeing it.
  void expect(std::int64_t last_position) {
    finished = 0;
    expected = last_position;
  }

  void read_loop() {
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) storage_failure("sse_fanout: epoll_create1");
    for (std::size_t i = 0; i < fds.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      if (::epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) storage_failure("sse_fanout: epoll_ctl");
    }
    std::vector<epoll_event> ready(fds.size());
    char buf[65536];
    std::int64_t seen = -1;
    std::string last_id;  // "\nid: N\n"
    while (!stop) {
      if (const auto e = expected.load(); e != seen) {
        seen = e;
        last_id = fmt::format("\nid: {}\n", e);
        done.assign(fds.size(), false);
      }
      const int n = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 20);
      for (int k = 0; k < n; ++k) {
        const std::size_t i = ready[k].data.u64;
        ssize_t r = ::recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
        if (r <= 0) continue;
        std::string& t = tails[i];
        t.append(buf, static_cast<std::size_t>(r));
        if (seen >= 0 && !done[i] && t.find(last_id) != std::string::npos) {
          done[i] = true;
          ++finished;
        }
        if (t.size() > 64) t.erase(0, t.size() - 64);
      }
    }
    ::close(ep);
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    reader_cpu_s = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }
};

// CPU seconds (user + system) of this process's threads named `name` (the server names its
// event-stream writer "annals-sse").
double thread_cpu_seconds(std::string_view name) {
  double total = 0;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm(task.path() / "comm");
    std::string n;
    std::getline(comm, n);
    if (n != name) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the parenthesised name: state is 3rd, utime 14th, stime 15th.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stod(field);
      if (i == 15) stime = std::stod(field);
    }
    total += (utime + stime) / tick;
  }
  return total;
}

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
  const std::int64_t events = c.quick ? 200 : 5000;
  int file = 0;
  // Runs body(store, path) on a fresh store (synchronous=NORMAL: the fan-out, not the disk, is
  // measured), removed afterwards; returns what body returns.
  auto on_fresh_store = [&](auto body) {
    const auto path = fmt::format("{}/sse-{}.db", dir, ++file);
    remove_files(path);
    annals::sqlite_options so;
    so.sync = annals::durability::normal;
    auto s = check(annals::open_sqlite_store(path, so), "open");
    const double t = body(*s, path);
    s.reset();
    remove_files(path);
    return t;
  };
  // The same with a server on the store and n subscribers connected and draining:
  // body(store, clients).
  auto with_subscribers = [&](std::size_t n, auto body) {
    return on_fresh_store([&](annals::event_store& s, const std::string& path) {
      auto server = start_server(path, n);
      double t = 0;
      {
        sse_clients clients(server->port(), n);
        t = body(s, clients);
      }
      server->stop();
      return t;
    });
  };
  // The appender alone: the baseline of every figure.
  auto alone = [&] {
    return on_fresh_store(
        [&](annals::event_store& s, const std::string&) { return append_all(s, events); });
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
    std::vector<double> append_with, pump_cpu, client_cpu;
    alternate(
        c.reps,
        [&] {
          return with_subscribers(n, [&](annals::event_store& s, sse_clients& clients) {
            const double pump0 = thread_cpu_seconds("annals-sse");
            clients.expect(events);
            const auto t0 = clock_type::now();
            append_with.push_back(append_all(s, events));
            clients.wait_all(t0, "sse_fanout");
            const double t = seconds_since(t0);
            pump_cpu.push_back(thread_cpu_seconds("annals-sse") - pump0);
            clients.stop = true;
            clients.reader.join();
            client_cpu.push_back(clients.reader_cpu_s);
            return t;
          });
        },
        alone, f.annals_seconds, f.baseline_seconds);
    f.extra.emplace_back("clients", std::to_string(n));
    f.extra.emplace_back("append_per_s_with_clients",
                         num(static_cast<double>(events) / median(append_with), 0));
    f.extra.emplace_back("append_per_s_alone",
                         num(static_cast<double>(events) / median(f.baseline_seconds), 0));
    // Where the CPU went on this machine, where the clients share the server's cores: the
    // server's writer thread and the benchmark's one client thread, in microseconds per
    // appended event (medians; /proc ticks are 10 ms, so small runs read coarse).
    f.extra.emplace_back("server_sse_cpu_us_per_event", num(median(pump_cpu) * 1e6 / static_cast<double>(events), 1));
    f.extra.emplace_back("client_cpu_us_per_event", num(median(client_cpu) * 1e6 / static_cast<double>(events), 1));
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
      // Paced appends to s, their latencies kept in `all`; returns the seconds spent appending.
      auto paced_appends = [&](annals::event_store& s, std::vector<double>& all) {
        auto ms = append_paced(s, paced, interval);
        double t = 0;
        for (double m : ms) t += m / 1000;
        all.insert(all.end(), ms.begin(), ms.end());
        return t;
      };
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
            return with_subscribers(n, [&](annals::event_store& s, sse_clients& clients) {
              clients.expect(paced);
              const double t = paced_appends(s, with_ms);
              clients.wait_all(clock_type::now(), "sse_fanout_paced");
              return t;
            });
          },
          [&] {
            return on_fresh_store([&](annals::event_store& s, const std::string&) {
              return paced_appends(s, alone_ms);
            });
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
