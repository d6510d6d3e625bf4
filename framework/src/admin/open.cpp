// open_admin(): the URI parsed by the one parser (store/uri.hpp), then the backend's admin.
#include <annals/admin.hpp>

#include "admin/checks.hpp"
#include "store/uri.hpp"

namespace annals {

result<std::unique_ptr<store_admin>> open_admin(std::string_view uri, bool writable) {
  auto where = store::parse_uri(uri);
  if (!where) return std::move(where).error();
  if (where->postgres()) return admin_detail::open_postgres_admin(where->target, writable);
  return admin_detail::open_sqlite_admin(where->target, writable);
}

}  // namespace annals
