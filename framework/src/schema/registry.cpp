// The schema registry (annals/schema.hpp). STUB: being written (issue 4).
#include <annals/schema.hpp>

namespace annals {
std::string_view to_string(compatibility c) noexcept {
  switch (c) {
    case compatibility::backward: return "backward";
    case compatibility::forward: return "forward";
    case compatibility::full: return "full";
    case compatibility::none: return "none";
  }
  return "backward";
}
}  // namespace annals
