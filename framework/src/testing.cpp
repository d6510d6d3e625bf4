#include <annals/testing.hpp>

#include <fmt/format.h>
#include <google/protobuf/util/message_differencer.h>

namespace annals::testing::detail {

namespace {
std::string describe(const google::protobuf::Message& m) {
  return fmt::format("{} {{ {} }}", m.GetDescriptor()->full_name(), m.ShortDebugString());
}
std::string describe_all(const message_list& events) {
  if (events.empty()) return "  (no events)\n";
  std::string out;
  for (const auto* m : events) out += "  " + describe(*m) + "\n";
  return out;
}
}  // namespace

verdict compare_events(const message_list& actual, bool rejected, const std::string& reason,
                       const message_list& expected) {
  if (rejected) {
    return {false, fmt::format("expected events:\n{}but the command was rejected: {}",
                               describe_all(expected), reason)};
  }
  bool same = actual.size() == expected.size();
  for (std::size_t i = 0; same && i < actual.size(); ++i) {
    same = actual[i]->GetDescriptor() == expected[i]->GetDescriptor() &&
           google::protobuf::util::MessageDifferencer::Equals(*actual[i], *expected[i]);
  }
  if (same) return {true, {}};
  return {false, fmt::format("expected events:\n{}but got:\n{}", describe_all(expected),
                             describe_all(actual))};
}

verdict compare_rejection(const message_list& actual, bool rejected, const std::string& reason,
                          std::string_view part) {
  if (!rejected) {
    return {false, fmt::format("expected a rejection{}, but the command emitted:\n{}",
                               part.empty() ? "" : fmt::format(" containing '{}'", part),
                               describe_all(actual))};
  }
  if (!part.empty() && reason.find(part) == std::string::npos) {
    return {false, fmt::format("expected a rejection containing '{}', but the reason was '{}'",
                               part, reason)};
  }
  return {true, {}};
}

}  // namespace annals::testing::detail
