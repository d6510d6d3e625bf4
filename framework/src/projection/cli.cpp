#include <annals/projection_cli.hpp>
#include <annals/projection_runner.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace annals {
namespace {

int fail(const error& e) {
  fmt::print(stderr, "projections: {}\n", e.message());
  return e.kind() == errc::not_found ? 2 : exit_code(e.kind());
}

std::string format_duration(double seconds) {
  if (seconds < 1) return fmt::format("{:.0f} ms", seconds * 1000);
  if (seconds < 120) return fmt::format("{:.1f} s", seconds);
  return fmt::format("{:.0f} min {:02.0f} s", seconds / 60 - 0.5, std::fmod(seconds, 60.0));
}

// A progress bar on a terminal, a plain line per second otherwise.
std::function<void(const rebuild_progress&)> progress_printer(std::string name) {
  bool tty = isatty(fileno(stderr));
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [tty, last, name](const rebuild_progress& p) {
    auto now = std::chrono::steady_clock::now();
    bool done = p.position >= p.head;
    if (!done && now - *last < std::chrono::milliseconds(tty ? 100 : 1000)) return;
    *last = now;
    double fraction = p.head > 0 ? static_cast<double>(p.position) / static_cast<double>(p.head) : 1;
    if (tty) {
      int width = 30, filled = static_cast<int>(fraction * width);
      fmt::print(stderr, "\r{} [{}{}] {:3.0f}%  position {}/{}  {:.0f} events/s  ETA {}   ", name,
                 std::string(static_cast<std::size_t>(filled), '#'),
                 std::string(static_cast<std::size_t>(width - filled), '.'), fraction * 100,
                 p.position, p.head, p.events_per_s, format_duration(p.eta_seconds));
      if (done) fmt::print(stderr, "\n");
    } else {
      fmt::print(stderr, "{}: position {}/{} ({:.0f}%), {} events, {:.0f} events/s, ETA {}\n", name,
                 p.position, p.head, fraction * 100, p.events, p.events_per_s,
                 format_duration(p.eta_seconds));
    }
  };
}

}  // namespace

void add_projection_commands(CLI::App& app, const std::string& store_path,
                             std::function<projection_list()> projections, int& exit_code_out,
                             runner_options options, sqlite_options store) {
  auto* cmd = app.add_subcommand("projections", "Inspect, rebuild and repair projections");
  cmd->require_subcommand(1);
  struct args {
    std::string name;
    std::int64_t position = 0;
    bool verify = false;
  };
  auto a = std::make_shared<args>();
  store.create_if_missing = false;
  auto with_runner = [&store_path, projections, &exit_code_out, options = std::move(options),
                      store = std::move(store)](const std::function<int(projection_runner&)>& body) {
    auto opened = open_store(store_path, store);
    if (!opened) {
      exit_code_out = fail(opened.error());
      return;
    }
    auto runner = projection_runner::open(std::shared_ptr<event_store>(std::move(opened).value()),
                                          projections(), options);
    if (!runner) {
      exit_code_out = fail(runner.error());
      return;
    }
    exit_code_out = body(**runner);
  };

  cmd->add_subcommand("list", "List the projections and their versions")->callback([=] {
    with_runner([](projection_runner& r) {
      auto st = r.status();
      if (!st) return fail(st.error());
      for (const auto& s : *st) fmt::print("{}  v{}\n", s.name, s.version);
      return 0;
    });
  });

  cmd->add_subcommand("status", "Checkpoint, lag and state of each projection")->callback([=] {
    with_runner([](projection_runner& r) {
      auto st = r.status();
      if (!st) return fail(st.error());
      fmt::print("{:<24} {:>7} {:>10} {:>10} {:>9} {:>9}  {:<12} {:>10} {:>7}\n", "projection",
                 "version", "checkpoint", "head", "lag", "lag s", "state", "events/s", "parked");
      for (const auto& s : *st) {
        auto version = s.stored_version == s.version
                           ? fmt::format("{}", s.version)
                           : fmt::format("{}->{}", s.stored_version, s.version);
        fmt::print("{:<24} {:>7} {:>10} {:>10} {:>9} {:>9.1f}  {:<12} {:>10.0f} {:>7}\n", s.name,
                   version, s.checkpoint, s.head, s.lag_events, s.lag_seconds, to_string(s.state),
                   s.events_per_s, s.parked);
        if (s.state == consumer_state::stuck) {
          fmt::print("    stuck at position {}: {}\n", s.stuck_position.value_or(0), s.error);
        }
      }
      return 0;
    });
  });

  auto* rebuild = cmd->add_subcommand(
      "rebuild", "Rebuild into shadow tables, catch up, then swap in atomically");
  rebuild->add_option("NAME", a->name, "Projection")->required();
  rebuild->add_flag("--verify", a->verify,
                    "Rebuild and compare with the live model row by row; do not swap");
  rebuild->callback([=] {
    with_runner([a](projection_runner& r) {
      rebuild_options o;
      o.verify = a->verify;
      o.progress = progress_printer(a->name);
      o.difference = [](std::string_view line) { fmt::print("{}\n", line); };
      auto rep = r.rebuild(a->name, o);
      if (!rep) return fail(rep.error());
      double rate = rep->seconds > 0 ? static_cast<double>(rep->events) / rep->seconds : 0;
      if (a->verify) {
        fmt::print("verified {}: {} events replayed in {} ({:.0f} events/s); {} difference(s) "
                   "at checkpoint {}\n",
                   a->name, rep->events, format_duration(rep->seconds), rate, rep->differences,
                   rep->position);
        return rep->differences == 0 ? 0 : 1;
      }
      fmt::print("rebuilt {}: {} events in {} ({:.0f} events/s); live at checkpoint {}\n", a->name,
                 rep->events, format_duration(rep->seconds), rate, rep->position);
      return 0;
    });
  });

  auto* reset = cmd->add_subcommand("reset", "Empty a model; the next catch-up replays it");
  reset->add_option("NAME", a->name, "Projection")->required();
  reset->callback([=] {
    with_runner([a](projection_runner& r) {
      if (auto x = r.reset(a->name); !x) return fail(x.error());
      fmt::print("reset {}: empty, checkpoint 0\n", a->name);
      return 0;
    });
  });

  auto* parked = cmd->add_subcommand("parked", "List the events a projection parked");
  parked->add_option("NAME", a->name, "Projection")->required();
  parked->callback([=] {
    with_runner([a](projection_runner& r) {
      auto p = r.parked(a->name);
      if (!p) return fail(p.error());
      if (p->empty()) fmt::print("{}: no parked events\n", a->name);
      for (const auto& e : *p) {
        fmt::print("position {}  {}  stream '{}' v{}  {} attempt(s)  [{}]\n    {}\n", e.position,
                   e.type, e.stream_id, e.stream_version, e.attempts, e.state, e.error);
      }
      return 0;
    });
  });

  auto* retry = cmd->add_subcommand("retry", "Apply a stuck projection's parked events again");
  retry->add_option("NAME", a->name, "Projection")->required();
  retry->callback([=] {
    with_runner([a](projection_runner& r) {
      if (auto x = r.retry(a->name); !x) return fail(x.error());
      auto c = r.catch_up();
      if (!c) return fail(c.error());
      auto st = r.status();
      if (!st) return fail(st.error());
      for (const auto& s : *st) {
        if (s.name != a->name) continue;
        if (s.state == consumer_state::stuck) {
          fmt::print(stderr, "projections: {} is stuck again at position {}: {}\n", s.name,
                     s.stuck_position.value_or(0), s.error);
          return 1;
        }
        fmt::print("{}: retried, now at checkpoint {}\n", s.name, s.checkpoint);
      }
      return 0;
    });
  });

  auto* skip = cmd->add_subcommand("skip", "Move a stuck projection past its parked event");
  skip->add_option("NAME", a->name, "Projection")->required();
  skip->add_option("POSITION", a->position, "Position of the parked event")->required();
  skip->callback([=] {
    with_runner([a](projection_runner& r) {
      if (auto x = r.skip(a->name, a->position); !x) return fail(x.error());
      fmt::print("{}: skipped the event at position {} (recorded in annals_consumer_parked)\n",
                 a->name, a->position);
      return 0;
    });
  });
}

}  // namespace annals
