// What a backend library gives the core. annals::sqlite (backends/sqlite/) and annals::postgres
// (backends/postgres/) each define one table behind an extern "C" function that the core
// declares weak, and each library's link interface names that function as undefined
// (--undefined), so linking the library is what brings its backend in: a program linked with
// annals::sqlite alone has no PostgreSQL code and no libpq. The core never names a backend's
// types; it reaches them through these tables only.
#pragma once

#include <annals/admin.hpp>
#include <annals/store.hpp>

#include "db/coordination.hpp"
#include "db/sql_connection.hpp"
#include "store/commit_hook.hpp"
#include "store/uri.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace annals::store {

// How a consumer (projection runner, subscription, sql_database) opens a connection of its own.
struct connect_options {
  // The writer of bookkeeping and read models (configured so its commits need not wait for
  // the disk: what it writes is derived or redone after a crash); else a read-only reader.
  bool writer = true;
  bool read_only = false;  // the consumer opened read-only: the writer writes nothing either
  std::int64_t busy_timeout_ms = 10000;
};

struct backend_ops {
  // The event store at `target` (the file's path or the libpq URI), running `hook` (may be
  // null) in each append's transaction. Only the opener of the table's own backend is set.
  result<std::unique_ptr<event_store>> (*open_sqlite)(const std::string& target,
                                                      sqlite_options options,
                                                      std::shared_ptr<commit_hook> hook);
  result<std::unique_ptr<event_store>> (*open_postgres)(const std::string& target,
                                                        postgres_options options,
                                                        std::shared_ptr<commit_hook> hook);
  result<std::unique_ptr<store_admin>> (*open_admin)(const std::string& target, bool writable);
  result<std::unique_ptr<detail::sql_connection>> (*connect)(const std::string& target,
                                                             const connect_options& options);
  // Coordination of the consumers of the store at `target` (db/coordination.hpp).
  result<std::unique_ptr<detail::runner_coordination>> (*open_coordination)(
      const std::string& target);
};

// The table of `kind`'s backend, or invalid_argument naming the CMake target to link.
result<const backend_ops*> backend_for(location::backend kind);

}  // namespace annals::store

// Defined by each backend library (its backend.cpp); weak in the core.
extern "C" const annals::store::backend_ops* annals_backend_sqlite();
extern "C" const annals::store::backend_ops* annals_backend_postgres();
