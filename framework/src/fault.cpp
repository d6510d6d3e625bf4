// Fault injection at named points (annals/fault.hpp). Off: one relaxed load per point. Armed:
// a mutex, a lookup by name and a counter; only tests and crash drills pay for that.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <annals/fault.hpp>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace annals::fault {
namespace {

enum class action { crash, fail_io };

struct rule {
  std::string name;
  action act = action::crash;
  std::uint64_t nth = 0;     // 0: any hit
  double probability = 1.0;  // 1: always
};

enum : int { not_initialized = 0, off = 1, armed = 2 };
std::atomic<int> state{not_initialized};  // constant-initialized: safe before main

struct registry {
  std::mutex mu;
  std::vector<rule> rules;
  std::map<std::string, std::uint64_t, std::less<>> hits;
  std::mt19937_64 rng{std::random_device{}()};
};
registry& reg() {
  static registry r;
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 200) return false;
  for (unsigned char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == ':';
    if (!ok) return false;
  }
  return true;
}

error bad(std::string_view item, std::string_view why) {
  return error(errc::invalid_argument,
               fmt::format("bad fault spec '{}': {} (expected NAME=crash|fail_io[@N][%P])",
                           item.substr(0, 200), why));
}

result<rule> parse_rule(std::string_view item) {
  auto eq = item.find('=');
  if (eq == std::string_view::npos) return bad(item, "no '='");
  rule r;
  std::string_view name = trim(item.substr(0, eq));
  if (!valid_name(name)) {
    return bad(item, "the point name must be 1 to 200 of [A-Za-z0-9._:-]");
  }
  r.name = std::string(name);
  std::string_view rest = trim(item.substr(eq + 1));
  auto mark = rest.find_first_of("@%");
  std::string_view act = rest.substr(0, mark);
  if (act == "crash") {
    r.act = action::crash;
  } else if (act == "fail_io") {
    r.act = action::fail_io;
  } else {
    return bad(item, fmt::format("unknown action '{}'", act.substr(0, 40)));
  }
  rest = mark == std::string_view::npos ? std::string_view{} : rest.substr(mark);
  if (!rest.empty() && rest.front() == '@') {
    auto end = rest.find('%');
    std::string_view n = rest.substr(1, end == std::string_view::npos ? end : end - 1);
    auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), r.nth);
    if (n.empty() || ec != std::errc() || p != n.data() + n.size() || r.nth == 0) {
      return bad(item, fmt::format("'@{}' is not a hit number >= 1", n.substr(0, 40)));
    }
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  }
  if (!rest.empty() && rest.front() == '%') {
    std::string_view p = rest.substr(1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), r.probability);
    if (p.empty() || ec != std::errc() || end != p.data() + p.size() || !(r.probability > 0) ||
        r.probability > 1) {
      return bad(item, fmt::format("'%{}' is not a probability in (0, 1]", p.substr(0, 40)));
    }
    rest = {};
  }
  if (!rest.empty()) return bad(item, fmt::format("unexpected '{}'", rest.substr(0, 40)));
  return r;
}

result<std::vector<rule>> parse(std::string_view spec) {
  std::vector<rule> out;
  if (trim(spec).empty()) return out;
  for (std::size_t start = 0; start <= spec.size();) {
    auto comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = trim(spec.substr(start, comma - start));
    if (item.empty()) return bad(spec, "an empty item between commas");
    auto r = parse_rule(item);
    if (!r) return std::move(r).error();
    out.push_back(std::move(r).value());
    start = comma + 1;
  }
  return out;
}

void add_rules(std::vector<rule> rules) {
  if (rules.empty()) return;
  auto& r = reg();
  std::lock_guard lock(r.mu);
  for (auto& x : rules) r.rules.push_back(std::move(x));
  state.store(armed, std::memory_order_release);
}

[[noreturn]] void refuse_environment(const std::string& why) {
  std::fputs(fmt::format("annals: ANNALS_FAULTS / ANNALS_FAULT_SEED refused, not running "
                         "without the faults asked for: {}\n",
                         why)
                 .c_str(),
             stderr);
  std::_Exit(bad_spec_exit_code);
}

// Once per process, before any point, arm() or disarm_all() takes effect.
void init_from_environment() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const char* seed = std::getenv("ANNALS_FAULT_SEED"); seed && *seed) {
      std::string_view s = seed;
      std::uint64_t v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || p != s.data() + s.size()) {
        refuse_environment(
            fmt::format("ANNALS_FAULT_SEED '{}' is not an unsigned integer", s.substr(0, 40)));
      }
      auto& r = reg();
      std::lock_guard lock(r.mu);
      r.rng.seed(v);
    }
    if (const char* spec = std::getenv("ANNALS_FAULTS"); spec && *spec) {
      auto rules = parse(spec);
      if (!rules) refuse_environment(rules.error().message());
      add_rules(std::move(rules).value());
    }
    int expected = not_initialized;
    state.compare_exchange_strong(expected, off);
  });
}

// A process that links the framework reads ANNALS_FAULTS at start-up, so a bad one stops it
// before it does anything (not only once it reaches its first point).
[[maybe_unused]] const bool initialized_at_start = (init_from_environment(), true);

[[noreturn]] void crash(std::string_view name, std::uint64_t hit) {
  auto line = fmt::format("annals: fault injection: SIGKILL at {} (hit {})\n", name, hit);
  (void)!::write(STDERR_FILENO, line.data(), line.size());
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();
}

}  // namespace

result<void> point(std::string_view name) {
  int s = state.load(std::memory_order_relaxed);
  if (s == off) return {};
  if (s == not_initialized) init_from_environment();
  auto& r = reg();
  std::unique_lock lock(r.mu);
  std::uint64_t hit = 0;
  for (const auto& x : r.rules) {
    if (x.name != name) continue;
    if (hit == 0) {
      auto it = r.hits.find(name);
      if (it == r.hits.end()) it = r.hits.emplace(std::string(name), 0).first;
      hit = ++it->second;
    }
    if (x.nth != 0 && x.nth != hit) continue;
    if (x.probability < 1 &&
        !(std::uniform_real_distribution<double>(0, 1)(r.rng) < x.probability)) {
      continue;
    }
    if (x.act == action::crash) crash(name, hit);
    return error(errc::io, fmt::format("injected fault at {}", name));
  }
  return {};
}

result<void> arm(std::string_view spec) {
  init_from_environment();
  auto rules = parse(spec);
  if (!rules) return std::move(rules).error();
  add_rules(std::move(rules).value());
  return {};
}

void disarm_all() {
  init_from_environment();
  auto& r = reg();
  std::lock_guard lock(r.mu);
  r.rules.clear();
  r.hits.clear();
  state.store(off, std::memory_order_release);
}

namespace {
struct registered_points {
  std::mutex mu;
  std::set<std::string, std::less<>> names;  // nodes never move: views into them stay valid
  std::vector<std::string_view> order;
};
registered_points& registered() {
  static auto* r = new registered_points;  // never destroyed: usable from atexit handlers
  return *r;
}
}  // namespace

std::vector<std::string_view> known_points() {
  std::vector<std::string_view> out{store_append_before_commit, store_append_after_commit,
                                    projection_after_write,     rebuild_before_swap,
                                    relay_before_ack,           relay_after_ack};
  auto& r = registered();
  std::lock_guard lock(r.mu);
  for (auto name : r.order) {
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

void register_point(std::string_view name) {
  auto& r = registered();
  std::lock_guard lock(r.mu);
  auto [it, added] = r.names.emplace(name);
  if (added) r.order.emplace_back(*it);
}

}  // namespace annals::fault
