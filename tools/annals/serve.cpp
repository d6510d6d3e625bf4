// `annals serve`: the built-in HTTP routes of annals/http.hpp over any store, read-only and
// without application code, until SIGINT or SIGTERM.
#include "commands.hpp"

#include <annals/http.hpp>

#include <fmt/format.h>
#include <fmt/ostream.h>
#include <sys/resource.h>

#include <chrono>
#include <thread>

namespace annals::tool {

int serve(const context& c, const serve_options& o, const std::atomic<bool>& stop) {
  // Each event-stream client holds a socket: allow as many as the hard limit does.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  http_options ho;
  ho.port = o.port;
  ho.bind_address = o.bind;  // no write token: read-only
  auto server = http_server::open(c.db, ho);
  if (!server) {
    fmt::print(c.err, "annals: {}\n", server.error().message());
    return server.error().kind() == errc::invalid_argument ? 2 : 4;
  }
  if (auto started = (*server)->start(); !started) {
    fmt::print(c.err, "annals: {}\n", started.error().message());
    return 4;
  }
  const bool v6 = o.bind.find(':') != std::string::npos;
  fmt::print(c.out, "serving {} at http://{}{}{}:{}/ (read-only; SIGINT or SIGTERM stops)\n",
             c.db, v6 ? "[" : "", o.bind, v6 ? "]" : "", (*server)->port());
  c.out.flush();
  while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  (*server)->stop();
  return 0;
}

}  // namespace annals::tool
