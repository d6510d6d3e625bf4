// Consumer coordination on SQLite (see db/coordination.hpp). The rebuild lock is an exclusive
// flock() on a file beside the store, released by the kernel when its holder dies; any runner
// may apply any projection (the checkpoint compare-and-set keeps it exactly once), and other
// processes' appends are seen by polling. Creates no file until a rebuild locks.
#pragma once

#include "db/coordination.hpp"

#include <memory>
#include <string>

namespace annals::sqlite {

// `db` is the store's file path.
std::unique_ptr<detail::runner_coordination> open_coordination(std::string db);

}  // namespace annals::sqlite
