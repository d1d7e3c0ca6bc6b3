// Plain fork() children and pipe signals for the toolkit tests: the shared mappings are
// inherited, so a child reaches the parent's objects without any transport.
//
// A child reports through its exit status only (doctest's checks do not cross fork): it
// runs a function returning 0 for success, and an exception or another value fails it.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <stdexcept>

namespace cfx::test {

/// One-way signal between processes over a pipe: notify() writes a byte, wait() reads one.
class PipeSignal {
 public:
  PipeSignal() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~PipeSignal() {
    ::close(fds_[0]);
    if (fds_[1] >= 0) ::close(fds_[1]);
  }
  PipeSignal(const PipeSignal&) = delete;
  PipeSignal& operator=(const PipeSignal&) = delete;

  void notify() const {
    char c = 1;
    if (::write(fds_[1], &c, 1) != 1) throw std::runtime_error("pipe write failed");
  }
  /// Closes this process's write end, so that wait() sees a notifier's death as EOF.
  void close_write() {
    ::close(fds_[1]);
    fds_[1] = -1;
  }
  /// False if every writer closed without writing (the notifier died).
  bool wait() const {
    char c = 0;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2];
};

/// Forks a child that runs fn() and _exits with its result (2 if it threw).
template <class Fn>
pid_t fork_child(Fn fn) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int status = 2;
    try {
      status = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    } catch (...) {
    }
    ::_exit(status);
  }
  return pid;
}

/// Waits for the child; its exit code, or minus the signal that killed it.
inline int join_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  }
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

/// Forks a child that runs take() (which takes some lock) and then waits to be killed;
/// returns once take() has returned there.
template <class Take>
pid_t fork_holder(Take take) {
  PipeSignal taken;
  pid_t pid = fork_child([&]() -> int {
    take();
    taken.notify();
    for (;;) ::pause();
  });
  taken.close_write();
  if (!taken.wait()) throw std::runtime_error("the child died before taking the lock");
  return pid;
}

/// SIGKILLs the child and reaps it; what join_child() returns (-SIGKILL).
inline int kill_child(pid_t pid) {
  ::kill(pid, SIGKILL);
  return join_child(pid);
}

}  // namespace cfx::test
