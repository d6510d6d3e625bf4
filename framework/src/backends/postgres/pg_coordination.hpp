// Consumer coordination on PostgreSQL (see db/coordination.hpp): session advisory locks on a
// dedicated connection (the rebuild lock, and the lead that keeps one active runner per
// projection across processes: released by the server when the holder's connection ends, so a
// dead holder's projection is taken over by another runner), and a LISTEN connection that
// turns other processes' appends into the in-process commit signal the live loop waits on.
#pragma once

#include "db/coordination.hpp"

#include <memory>
#include <string>

namespace annals::pg {

result<std::unique_ptr<detail::runner_coordination>> open_coordination(const std::string& uri);

}  // namespace annals::pg
