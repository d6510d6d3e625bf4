// `annals consumers ...` (projections and subscriptions, annals/consumers.hpp) and the older
// `annals subscriptions ...` (annals/subscription.hpp): list consumers with their lag, and
// manage their dead letters, without the application's handlers.
#include "commands.hpp"

#include <annals/consumers.hpp>
#include <annals/subscription.hpp>

#include <fmt/format.h>
#include <fmt/ostream.h>

namespace annals::tool {
namespace {

int fail(const context& c, const error& e) {
  fmt::print(c.err, "annals: {}\n", e.message());
  return exit_code(e.kind());
}

// list and parked only read: read-only, so they neither upgrade an older store nor need
// write access; retry and skip write.
result<std::unique_ptr<subscription_admin>> open_admin(const context& c, bool writable) {
  auto a = writable ? subscription_admin::open(c.db) : subscription_admin::open_read_only(c.db);
  // A missing store is a storage error here, as for every command (not "not found").
  if (!a && a.error().kind() == errc::not_found) return error(errc::io, a.error().message());
  return a;
}

result<std::unique_ptr<consumer_admin>> open_consumers(const context& c, bool writable) {
  auto a = writable ? consumer_admin::open(c.db) : consumer_admin::open_read_only(c.db);
  if (!a && a.error().kind() == errc::not_found) return error(errc::io, a.error().message());
  return a;
}

// The STATE column of `annals consumers list`: a projection is "stuck", "behind" or
// "caught_up"; a subscription "active" (an instance holds its lease) or "idle".
std::string_view state_word(const consumer_status& s) {
  if (s.kind == consumer_kind::subscription) return s.active ? "active" : "idle";
  if (s.state == consumer_state::stuck) return "stuck";
  return s.state == consumer_state::running ? "caught_up" : "behind";
}

void print_parked(const context& c, const std::vector<parked_event>& parked) {
  for (const auto& p : parked) {
    fmt::print(c.out, "#{} {} {} {} attempts={} state={}\n  error: {}\n", p.position, p.stream_id,
               p.type, p.event_id, p.attempts, p.state, p.error);
  }
}

}  // namespace

int consumers_list(const context& c) {
  auto a = open_consumers(c, false);
  if (!a) return fail(c, a.error());
  auto list = a.value()->list();
  if (!list) return fail(c, list.error());
  if (list->empty()) {
    fmt::print(c.out, "no projections or subscriptions\n");
    return 0;
  }
  fmt::print(c.out, "{:<13} {:<28} {:>10} {:>10} {:>10} {:>9} {:>7} {:<10} {}\n", "KIND", "NAME",
             "CHECKPOINT", "HEAD", "LAG", "LAG_S", "PARKED", "STATE", "DETAIL");
  for (const auto& s : list.value()) {
    fmt::print(c.out, "{:<13} {:<28} {:>10} {:>10} {:>10} {:>9.3f} {:>7} {:<10} {}\n",
               to_string(s.kind), s.name, s.checkpoint, s.head, s.lag_events, s.lag_seconds,
               s.parked, state_word(s), s.detail);
    if (s.stuck_position) fmt::print(c.out, "  stuck at position {}\n", *s.stuck_position);
    if (!s.error.empty()) fmt::print(c.out, "  error: {}\n", s.error);
  }
  return 0;
}

int consumers_parked(const context& c, const std::string& name) {
  auto a = open_consumers(c, false);
  if (!a) return fail(c, a.error());
  auto parked = a.value()->parked(name);
  if (!parked) return fail(c, parked.error());
  if (parked->empty()) {
    fmt::print(c.out, "'{}' has no parked events\n", name);
    return 0;
  }
  print_parked(c, parked.value());
  return 0;
}

int consumers_resolve(const context& c, const std::string& name, std::int64_t position,
                      bool retry) {
  auto a = open_consumers(c, true);
  if (!a) return fail(c, a.error());
  auto n = retry ? a.value()->retry(name, position) : a.value()->skip(name, position);
  if (!n) return fail(c, n.error());
  fmt::print(c.out, "{} {} parked event{} of '{}'{}\n", retry ? "retrying" : "skipped", n.value(),
             n.value() == 1 ? "" : "s", name,
             retry ? " (its subscription or projection runner applies them again)" : "");
  return 0;
}

int subscriptions_list(const context& c) {
  auto a = open_admin(c, false);
  if (!a) return fail(c, a.error());
  auto list = a.value()->list();
  if (!list) return fail(c, list.error());
  if (list->empty()) {
    fmt::print(c.out, "no subscriptions\n");
    return 0;
  }
  fmt::print(c.out, "{:<28} {:>10} {:>10} {:>10} {:>9} {:>10} {:>7} {:<7} {}\n", "NAME",
             "CHECKPOINT", "HEAD", "LAG", "LAG_S", "DELIVERED", "PARKED", "ACTIVE", "FILTER");
  for (const auto& s : list.value()) {
    fmt::print(c.out, "{:<28} {:>10} {:>10} {:>10} {:>9.3f} {:>10} {:>7} {:<7} {}\n", s.name,
               s.checkpoint, s.head, s.lag_events, s.lag_seconds, s.delivered, s.parked,
               s.active ? "yes" : "no", s.detail);
    if (!s.error.empty()) fmt::print(c.out, "  last error: {}\n", s.error);
  }
  return 0;
}

int subscriptions_parked(const context& c, const std::string& name) {
  auto a = open_admin(c, false);
  if (!a) return fail(c, a.error());
  auto parked = a.value()->parked(name);
  if (!parked) return fail(c, parked.error());
  if (parked->empty()) {
    fmt::print(c.out, "subscription '{}' has no parked events\n", name);
    return 0;
  }
  print_parked(c, parked.value());
  return 0;
}

int subscriptions_resolve(const context& c, const std::string& name, std::int64_t position,
                          bool retry) {
  auto a = open_admin(c, true);
  if (!a) return fail(c, a.error());
  auto n = retry ? a.value()->retry(name, position) : a.value()->skip(name, position);
  if (!n) return fail(c, n.error());
  fmt::print(c.out, "{} {} parked event{} of '{}'{}\n", retry ? "retrying" : "skipped", n.value(),
             n.value() == 1 ? "" : "s", name,
             retry ? " (the running subscription redelivers them)" : "");
  return 0;
}

}  // namespace annals::tool
