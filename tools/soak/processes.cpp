#include "processes.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace soak {
namespace {

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

bool start(child& c, std::uint64_t fault_seed) {
  // Everything the child needs is built before fork(): between fork and exec only
  // async-signal-safe calls (the parent has threads).
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view v(*e);
    if (v.rfind("ANNALS_FAULTS=", 0) == 0 || v.rfind("ANNALS_FAULT_SEED=", 0) == 0) continue;
    env.emplace_back(v);
  }
  if (!c.faults.empty()) {
    env.push_back("ANNALS_FAULTS=" + c.faults);
    env.push_back("ANNALS_FAULT_SEED=" + std::to_string(fault_seed));
  }
  auto args = c_strings(c.argv);
  auto envp = c_strings(env);
  int err = open(c.err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (err < 0) return false;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    close(err);
    return false;
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  close(err);
  if (pid < 0) {
    close(fds[0]);
    return false;
  }
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  c.pid = pid;
  c.out_fd = fds[0];
  c.out.clear();
  c.killed_by_us = false;
  c.started = std::chrono::steady_clock::now();
  return true;
}

void drain(child& c) {
  if (c.out_fd < 0) return;
  char buf[8192];
  for (;;) {
    ssize_t n = read(c.out_fd, buf, sizeof buf);
    if (n > 0) {
      c.out.append(buf, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (n == 0) {  // end of file: nothing more will come
        close(c.out_fd);
        c.out_fd = -1;
      }
      return;
    }
  }
}

bool next_line(child& c, std::string& line) {
  auto nl = c.out.find('\n');
  if (nl == std::string::npos) return false;
  line = c.out.substr(0, nl);
  c.out.erase(0, nl + 1);
  return true;
}

bool reap(child& c, ended& e, bool block) {
  if (c.pid < 0) return false;
  int status = 0;
  rusage ru{};
  pid_t r;
  do {
    r = wait4(c.pid, &status, block ? 0 : WNOHANG, &ru);
  } while (r < 0 && errno == EINTR);
  if (r != c.pid) return false;
  // Its stdout's write end is closed (unless a grandchild holds it): read the rest.
  if (c.out_fd >= 0) {
    fcntl(c.out_fd, F_SETFL, fcntl(c.out_fd, F_GETFL) & ~O_NONBLOCK);
    drain(c);
    if (c.out_fd >= 0) close(c.out_fd);
    c.out_fd = -1;
  }
  if (!c.out.empty() && c.out.back() != '\n') c.out += '\n';  // a line cut by a kill
  e.pid = c.pid;
  e.exit_code = status_code(status);
  e.max_rss_kb = ru.ru_maxrss;
  c.pid = -1;
  return true;
}

ran run(const std::vector<std::string>& argv) {
  ran out;
  auto copy = argv;
  auto args = c_strings(copy);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return out;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    return out;
  }
  char buf[8192];
  for (;;) {
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      out.out.append(buf, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  out.exit_code = status_code(status);
  return out;
}

std::int64_t file_size(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0;
  return static_cast<std::int64_t>(st.st_size);
}

}  // namespace soak
