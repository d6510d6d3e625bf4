// open_admin(): the URI parsed by the one parser (store/uri.hpp), then the backend's admin.
#include <annals/admin.hpp>

#include "store/backend_ops.hpp"
#include "store/uri.hpp"

namespace annals {

result<std::unique_ptr<store_admin>> open_admin(std::string_view uri, bool writable) {
  auto where = store::parse_uri(uri);
  if (!where) return std::move(where).error();
  auto b = store::backend_for(where->kind);
  if (!b) return std::move(b).error();
  return (*b)->open_admin(where->target, writable);
}

}  // namespace annals
