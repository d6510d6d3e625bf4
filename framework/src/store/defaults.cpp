// Defaults of event_store's optional capabilities, for backends (and test doubles) without them.
#include <annals/event_store.hpp>

namespace annals {

result<std::vector<stored_schema>> event_store::read_schemas(std::string_view) {
  return error(errc::invalid_argument, "this event store keeps no schema registry");
}

result<std::vector<registered_type>> event_store::register_schemas(
    const std::vector<schema_candidate>&, const schema_check_fn&) {
  return error(errc::invalid_argument, "this event store keeps no schema registry");
}

result<std::optional<snapshot_record>> event_store::read_snapshot(std::string_view,
                                                                  std::string_view) {
  return std::optional<snapshot_record>{};
}

void event_store::save_snapshot(snapshot_record) noexcept {}

}  // namespace annals
