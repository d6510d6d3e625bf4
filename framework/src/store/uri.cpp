// Store URIs, parsed in one place.
#include "store/uri.hpp"

#include <fmt/format.h>

namespace annals::store {

std::string location::uri() const { return postgres() ? target : "sqlite:" + target; }

result<location> parse_uri(std::string_view uri) {
  constexpr std::string_view sqlite_scheme = "sqlite:";
  if (uri.empty() || uri == sqlite_scheme) {
    return error(errc::invalid_argument, "no store given (an empty path or URI, or a null handle)");
  }
  if (uri.starts_with(sqlite_scheme)) {
    return location{location::backend::sqlite, std::string(uri.substr(sqlite_scheme.size()))};
  }
  if (uri.starts_with("postgresql://") || uri.starts_with("postgres://")) {
    return location{location::backend::postgres, std::string(uri)};
  }
  if (auto colon = uri.find("://"); colon != std::string_view::npos) {
    return error(errc::invalid_argument,
                 fmt::format("unsupported store URI scheme '{}' (use a path, sqlite:PATH or "
                             "postgresql://...)",
                             uri.substr(0, colon)));
  }
  return location{location::backend::sqlite, std::string(uri)};
}

const opened_store* opened(const event_store& s) noexcept {
  return dynamic_cast<const opened_store*>(&s);
}

result<const opened_store*> for_component(const event_store& s, bool writes,
                                          std::string_view what) {
  const auto* o = opened(s);
  if (!o) {
    return error(errc::invalid_argument,
                 fmt::format("{} need a store opened by annals::open_store() (or "
                             "open_sqlite_store / open_postgres_store): their bookkeeping lives "
                             "in its database, which a store double does not have "
                             "(store_ref::adopt gives it one)",
                             what));
  }
  if (writes && o->read_only()) {
    return error(errc::read_only,
                 fmt::format("{} write to the store's database, and this store was opened "
                             "read-only",
                             what));
  }
  return o;
}

result<component_store> resolve(const store_ref& ref, bool writes, std::string_view what) {
  component_store out;
  if (ref.handle() && !ref.adopted()) {
    auto o = for_component(*ref.handle(), writes, what);
    if (!o) return std::move(o).error();
    out.where = (*o)->where();
    out.handle = ref.handle();
    return out;
  }
  if (ref.adopted()) {
    if (!ref.handle()) {
      return error(errc::invalid_argument,
                   fmt::format("{}: store_ref::adopt was given no store", what));
    }
    out.handle = ref.handle();
  }
  auto where = parse_uri(ref.uri());
  if (!where) return std::move(where).error();
  out.where = std::move(where).value();
  return out;
}

}  // namespace annals::store
