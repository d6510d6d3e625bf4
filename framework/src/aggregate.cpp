#include <annals/aggregate.hpp>

#include <cxxabi.h>
#include <fmt/format.h>

#include <cstdlib>
#include <memory>

namespace annals::detail {

result<std::int64_t> fold_stream(event_store& store, std::string_view stream_id,
                                 std::int64_t from_version, const fold_step& step) {
  std::optional<error> failed;
  std::int64_t last = from_version - 1;
  read_stream_options o;
  o.from_version = from_version;
  auto r = store.read_stream(stream_id, o, [&](const recorded_event& e) {
    if (e.stream_version != last + 1) {
      failed = error(errc::corruption,
                     fmt::format("stream '{}' skips from version {} to {}", stream_id, last,
                                 e.stream_version));
      return false;
    }
    if (auto s = step(e); !s) {
      failed = s.error();
      return false;
    }
    last = e.stream_version;
    return true;
  });
  if (!r) return std::move(r).error();
  if (failed) return std::move(*failed);
  return last;
}

error unknown_event_type(const recorded_event& e, std::string_view aggregate) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(std::string(aggregate).c_str(), nullptr, nullptr, &status), std::free);
  return error(errc::corruption,
               fmt::format("stream '{}' holds an event of type '{}' at version {}, which {} does "
                           "not list in its event_list; add the type and its apply(), or an "
                           "upcaster",
                           e.stream_id, e.type, e.stream_version,
                           status == 0 && name ? name.get() : std::string(aggregate).c_str()));
}

error undecodable_event(const recorded_event& e) {
  return error(errc::corruption,
               fmt::format("event at position {} (stream '{}', version {}) does not decode as {}",
                           e.position, e.stream_id, e.stream_version, e.type));
}

}  // namespace annals::detail
