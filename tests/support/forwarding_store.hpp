// A test double base: an event_store that forwards every call to a real one. Tests derive from
// it and override the one call they watch or break (append, read_stream...).
#pragma once

#include <annals/event_store.hpp>

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace annals::test {

class forwarding_store : public event_store {
 public:
  explicit forwarding_store(event_store& inner) : inner_(inner) {}

  result<append_result> append(std::string_view stream, expected_version expected,
                               std::vector<event_data> events) override {
    return inner_.append(stream, expected, std::move(events));
  }
  result<std::int64_t> read_stream(std::string_view stream, const read_stream_options& o,
                                   const event_visitor& visit) override {
    return inner_.read_stream(stream, o, visit);
  }
  result<std::int64_t> read_all(const read_all_options& o, const event_visitor& visit) override {
    return inner_.read_all(o, visit);
  }
  result<std::int64_t> stream_version(std::string_view stream) override {
    return inner_.stream_version(stream);
  }
  result<std::int64_t> head_position() override { return inner_.head_position(); }
  result<std::optional<recorded_event>> find_event(std::string_view id) override {
    return inner_.find_event(id);
  }

 protected:
  event_store& inner_;
};

}  // namespace annals::test
