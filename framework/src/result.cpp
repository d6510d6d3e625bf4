#include <annals/catch_up.hpp>
#include <annals/event_store.hpp>
#include <annals/result.hpp>

#include <charconv>

namespace annals {

std::string_view to_string(errc kind) noexcept {
  switch (kind) {
    case errc::concurrency_conflict: return "concurrency_conflict";
    case errc::rejected: return "rejected";
    case errc::not_found: return "not_found";
    case errc::invalid_argument: return "invalid_argument";
    case errc::corruption: return "corruption";
    case errc::busy: return "busy";
    case errc::io: return "io";
    case errc::timed_out: return "timed_out";
    case errc::stuck: return "stuck";
    case errc::read_only: return "read_only";
    case errc::handler_failed: return "handler_failed";
  }
  return "unknown";
}

int exit_code(errc kind) noexcept {
  switch (kind) {
    case errc::rejected:
    case errc::not_found: return 1;
    case errc::invalid_argument: return 2;
    case errc::concurrency_conflict: return 3;
    case errc::corruption:
    case errc::busy:
    case errc::io:
    case errc::timed_out:
    case errc::stuck:
    case errc::read_only:
    case errc::handler_failed: return 4;
  }
  return 4;
}

std::string_view to_string(held_reason r) noexcept {
  switch (r) {
    case held_reason::stuck: return "stuck";
    case held_reason::led_elsewhere: return "led_elsewhere";
    case held_reason::stale: return "stale";
  }
  return "unknown";
}

result<expected_version> expected_version::parse(std::string_view text) {
  if (text == "any") return any();
  if (text == "no_stream") return no_stream();
  if (text == "stream_exists") return stream_exists();
  std::int64_t v = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size() && v >= 0 &&
      text[0] != '+') {
    return exact(v);
  }
  return error(errc::invalid_argument,
               "expected version must be 'any', 'no_stream', 'stream_exists' or a version "
               "number >= 0, not '" +
                   std::string(text.substr(0, 40)) + "'");
}

std::string expected_version::to_string() const {
  switch (kind_) {
    case kind::any: return "any";
    case kind::no_stream: return "no_stream";
    case kind::stream_exists: return "stream_exists";
    case kind::exact: return std::to_string(version_);
  }
  return "?";
}

}  // namespace annals
