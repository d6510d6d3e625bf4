#include "support/support.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace annals::test {

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/annals-test-XXXXXX";
  if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string read_to_eof(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

namespace {
int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}
}  // namespace

namespace {
// argv as execv wants it, built in the parent: nothing is allocated between fork and exec.
std::vector<char*> argv_of(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  return args;
}

struct spawn_actions {
  posix_spawn_file_actions_t fa;
  spawn_actions() { posix_spawn_file_actions_init(&fa); }
  ~spawn_actions() { posix_spawn_file_actions_destroy(&fa); }
  spawn_actions(const spawn_actions&) = delete;
  spawn_actions& operator=(const spawn_actions&) = delete;
};

pid_t spawn_with(const std::vector<std::string>& argv, const spawn_actions& actions) {
  auto args = argv_of(argv);
  pid_t pid = -1;
  if (int rc = posix_spawn(&pid, args[0], &actions.fa, nullptr, args.data(), environ); rc != 0) {
    throw std::runtime_error("cannot start " + argv.at(0) + ": " + std::strerror(rc));
  }
  return pid;
}
}  // namespace

process_result run(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  // posix_spawn: safe while this process runs threads (a fork()ed child could inherit a held
  // lock), and the dup2'd descriptors lose O_CLOEXEC, the pipes' originals close at exec.
  spawn_actions a;
  posix_spawn_file_actions_adddup2(&a.fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&a.fa, err[1], 2);
  posix_spawn_file_actions_addopen(&a.fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = spawn_with(argv, a);
  close(out[1]);
  close(err[1]);
  process_result r;
  std::thread t([&] { r.err = read_to_eof(err[0]); });
  r.out = read_to_eof(out[0]);
  t.join();
  r.exit_code = wait_child(pid);
  return r;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
  spawn_actions a;
  if (log.empty()) {
    posix_spawn_file_actions_addopen(&a.fa, 1, "/dev/null", O_WRONLY, 0);
  } else {
    posix_spawn_file_actions_addopen(&a.fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&a.fa, 1, 2);
  }
  return spawn_with(argv, a);
}

std::string capture_stderr(const std::function<void()>& body) {
  temp_dir dir;
  const std::string path = dir.file("stderr.txt");
  std::fflush(stderr);
  int saved = ::dup(2);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (saved < 0 || fd < 0) throw std::runtime_error("cannot redirect stderr");
  ::dup2(fd, 2);
  ::close(fd);
  struct restore {
    int saved;
    ~restore() {
      std::fflush(stderr);
      ::dup2(saved, 2);
      ::close(saved);
    }
  };
  {
    restore r{saved};
    body();
  }
  return read_to_eof(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
}

// ThreadSanitizer starts a thread of its own beside the first one the program creates, and
// keeps it; its runtime intercepts fork() and holds that thread still across it, so that one
// does not count.
#if defined(__SANITIZE_THREAD__)
constexpr int runtime_threads = 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr int runtime_threads = 1;
#else
constexpr int runtime_threads = 0;
#endif
#else
constexpr int runtime_threads = 0;
#endif

int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

pid_t fork_child(const std::function<int()>& body) {
  // A child forked while another thread runs inherits whatever locks that thread held at that
  // instant (the allocator's, SQLite's, ours) and can block on one forever: the sanitizer
  // runtimes' allocators made that a real hang. So the child must be forked while this process
  // has one thread; test::waiting_child is for a child that must act while threads run.
  // A thread that was just joined can stay listed in /proc/self/task for a moment after
  // pthread_join returns (the kernel wakes the joiner before it reaps the task), so wait a
  // little before calling it a mistake.
  int n = thread_count();
  for (int i = 0; n > 1 + runtime_threads && i < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = thread_count();
  }
  if (n > 1 + runtime_threads) {
    throw std::logic_error("fork_child: " + std::to_string(n) +
                           " threads are running; fork before starting them "
                           "(or use test::waiting_child)");
  }
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (...) {
      code = 98;
    }
    _exit(code);
  }
  return pid;
}

waiting_child::waiting_child(const std::function<int()>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork_child([&]() -> int {
    ::close(fds[1]);
    char c = 0;
    ssize_t n = 0;
    do {
      n = ::read(fds[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) return 97;  // never released
    return body();
  });
  ::close(fds[0]);
  go_ = fds[1];
}

waiting_child::~waiting_child() {
  if (!waited_) wait();
}

void waiting_child::release() {
  if (go_ < 0) return;
  write_all(go_, "g");
  ::close(go_);
  go_ = -1;
}

int waiting_child::wait() {
  if (waited_) return status_;
  if (go_ >= 0) {
    ::close(go_);  // unreleased: the child exits without running its body
    go_ = -1;
  }
  status_ = wait_child(pid_);
  waited_ = true;
  return status_;
}

int wait_child(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return decode_status(status);
}

}  // namespace annals::test
