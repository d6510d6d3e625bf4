// Consumer coordination on SQLite (see sqlite_coordination.hpp).
#include "backends/sqlite/sqlite_coordination.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <thread>

namespace annals::sqlite {

namespace {
// SQLite: the rebuild lock is an exclusive flock() on "<db>-annals-rebuild-<name>.lock",
// released by the kernel when the process dies, so a killed rebuild never blocks the next.
// The holder unlinks the file before it unlocks, so none stays beside the store; an acquirer
// whose lock is on a file no longer at the path (unlinked meanwhile) drops it and tries again.
// Any runner may apply any projection (the checkpoint compare-and-set keeps it exactly once);
// other processes' appends are seen by polling.
class sqlite_coordination final : public detail::runner_coordination {
 public:
  explicit sqlite_coordination(std::string db) : db_(std::move(db)) {}

  result<std::shared_ptr<void>> lock_rebuild(std::string_view name) override {
    auto path = file_for(name);
    // rebuild_running() probes take the lock shared for an instant: retry briefly before
    // calling it busy.
    for (int attempt = 0;; ++attempt) {
      if (attempt == 100) {
        return error(errc::busy,
                     fmt::format("a rebuild of projection '{}' is already running", name));
      }
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return error(errc::io, fmt::format("cannot open lock file '{}'", path));
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      struct stat held, named;  // filled by fstat() and stat()
      if (::fstat(fd, &held) != 0 || ::stat(path.c_str(), &named) != 0 ||
          held.st_dev != named.st_dev || held.st_ino != named.st_ino) {
        ::close(fd);  // its holder removed it: the lock is on the file now at the path
        continue;
      }
      // Unlinked while still locked, then closed (which releases the flock).
      return std::shared_ptr<void>(nullptr, [fd, path](void*) {
        ::unlink(path.c_str());
        ::close(fd);
      });
    }
  }
  // Creates no file.
  bool rebuild_running(std::string_view name) override {
    int fd = ::open(file_for(name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;  // no rebuild holds it (the file goes with the lock)
    bool busy = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
    ::close(fd);
    return busy;
  }
  bool lead(std::string_view, bool) override { return true; }
  void release(std::string_view) override {}
  void release_all() override {}
  std::chrono::milliseconds follow_interval(std::chrono::milliseconds poll) const override {
    return poll;
  }

 private:
  std::string file_for(std::string_view name) const {
    std::string path = db_ + "-annals-rebuild-";
    for (char c : name) path += (std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
    return path + ".lock";
  }
  std::string db_;
};

}  // namespace

std::unique_ptr<detail::runner_coordination> open_coordination(std::string db) {
  return std::make_unique<sqlite_coordination>(std::move(db));
}

}  // namespace annals::sqlite
