// Test helpers: temporary directories and real child processes.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace annals::test {

// A fresh directory under $TMPDIR (default /tmp), removed with everything in it on destruction.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct process_result {
  int exit_code = -1;  // exit status, or 128 + signal number if killed
  std::string out;     // captured stdout
  std::string err;     // captured stderr
};

// Runs argv[0] (a path) with arguments, waits, captures stdout and stderr.
process_result run(const std::vector<std::string>& argv);

// Starts argv[0] (a path) with arguments and returns its pid at once (wait_child() reaps it).
// stdout goes to /dev/null, or with `log` stdout and stderr are appended to that file (stderr
// is otherwise inherited). Through posix_spawn: safe while this process runs threads.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log = {});

// Writes all of `data` to `fd`, retrying short writes and EINTR. False on error.
bool write_all(int fd, std::string_view data);

// True when `part` occurs in `text` (an output, a body, a message).
inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}
// Reads `fd` until end of file (retrying EINTR), then closes it.
std::string read_to_eof(int fd);

// Runs `body` with this process's stderr (fd 2) sent to a temporary file; returns what was
// written there (libraries that print with fprintf(stderr, ...) included).
std::string capture_stderr(const std::function<void()>& body);

// Forks; the child runs `body` and _exit()s with its return value. Returns the child's pid.
// The child must not use SQLite connections opened by the parent: open its own.
// Throws std::logic_error when this process runs more than one thread: a child forked then
// can inherit a lock another thread held and hang on it. Use waiting_child for those cases.
pid_t fork_child(const std::function<int()>& body);
// Waits for a child; returns its exit status, or 128 + signal if it was killed.
int wait_child(pid_t pid);

// A child forked at construction (so while this process has one thread) that runs `body` only
// once released: for another process that must act while this one's threads are running.
// Destroyed unreleased (a failed REQUIRE), the child exits 97 without running `body`, and is
// reaped.
class waiting_child {
 public:
  explicit waiting_child(const std::function<int()>& body);
  ~waiting_child();
  waiting_child(const waiting_child&) = delete;
  waiting_child& operator=(const waiting_child&) = delete;
  pid_t pid() const { return pid_; }
  void release();  // the child runs `body` now
  int wait();      // as wait_child(); never released, the child exits 97 without `body`

 private:
  pid_t pid_ = -1;
  int go_ = -1;  // write end: one byte releases, closing unreleased tells the child to exit
  bool waited_ = false;
  int status_ = -1;
};

}  // namespace annals::test
