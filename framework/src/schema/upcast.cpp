// Upcaster chains (annals/upcaster.hpp).
#include <annals/upcaster.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace annals {

namespace {
constexpr int max_chain = 64;
}  // namespace

void upcasters::add_step(std::string from_type, std::int32_t from_version, std::string to_type,
                         std::int32_t to_version, convert_fn convert) {
  if (from_version < 0 || to_version < 0) {
    throw std::logic_error("annals: upcaster versions must not be negative");
  }
  if (from_type == to_type && to_version <= from_version) {
    throw std::logic_error(fmt::format(
        "annals: an upcaster of {} from version {} must lead to a later version, not {}",
        from_type, from_version, to_version));
  }
  for (const auto& s : steps_) {
    if (s.from_type == from_type && s.from_version == from_version) {
      throw std::logic_error(fmt::format("annals: two upcasters of {} at version {}", from_type,
                                         from_version));
    }
  }
  steps_.push_back({std::move(from_type), from_version, std::move(to_type), to_version,
                    std::move(convert)});
  // Smallest from_version first: the first match is the step to run.
  std::stable_sort(steps_.begin(), steps_.end(), [](const step_entry& a, const step_entry& b) {
    return a.from_type != b.from_type ? a.from_type < b.from_type
                                      : a.from_version < b.from_version;
  });
}

result<void> upcasters::apply(recorded_event& e) const {
  std::string out;
  for (int n = 0;; ++n) {
    auto it = std::find_if(steps_.begin(), steps_.end(), [&](const step_entry& s) {
      return s.from_type == e.type && e.metadata.schema_version <= s.from_version;
    });
    if (it == steps_.end()) return {};
    if (n == max_chain) {
      return error(errc::corruption,
                   fmt::format("event at position {}: the upcaster chain from {} does not end "
                               "after {} steps",
                               e.position, e.type, max_chain));
    }
    out.clear();
    if (!it->convert(e.payload, out)) {
      return error(errc::corruption,
                   fmt::format("event at position {}: its payload does not decode as {} "
                               "(schema version {}) for upcasting",
                               e.position, e.type, e.metadata.schema_version));
    }
    e.payload.swap(out);
    e.type = it->to_type;
    e.metadata.schema_version = it->to_version;
  }
}

std::vector<std::string> upcasters::stored_types_for(const std::vector<std::string>& types) const {
  std::vector<std::string> out = types;
  // Walk the steps backwards from the wanted types until no new source type appears.
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& s : steps_) {
      if (std::find(out.begin(), out.end(), s.to_type) != out.end() &&
          std::find(out.begin(), out.end(), s.from_type) == out.end()) {
        out.push_back(s.from_type);
        grew = true;
      }
    }
  }
  return out;
}

}  // namespace annals
