// Starting a worker process (see launcher.hpp).
#include "backends/process/launcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include <boost/process/v2/posix/default_launcher.hpp>

#include "backends/process/channel.hpp"
#include "backends/process/worker.hpp"

namespace cfx::detail {
namespace {

namespace bp = boost::process::v2;

[[noreturn]] void throw_errno(const char* what, int error = errno) {
  throw std::system_error(error, std::generic_category(), what);
}

/// Moves fd above the descriptors a worker's channel is dup2'ed onto (3, 4 and 5): a
/// descriptor already on its target would keep its close-on-exec flag through the dup2.
Fd above_channel_fds(Fd fd) {
  if (fd.get() > kWorkerSlotsFd) return fd;
  Fd moved(::fcntl(fd.get(), F_DUPFD_CLOEXEC, kWorkerSlotsFd + 1));
  if (moved.get() < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  return moved;
}

/// The ends of the channel that the worker gets, as descriptors 3, 4 and 5.
struct ChildEnds {
  int calls;
  int replies;
  int slots;
};

/// Gives the child `fd` as descriptor `target`. (Boost 1.81's posix::bind_fd cannot be used:
/// its on_setup returns no value, which is undefined behaviour and corrupts the heap.)
struct BindFd {
  int target;
  int fd;
  bp::error_code on_setup(bp::posix::default_launcher& launcher, const bp::filesystem::path&,
                          const char* const*) {
    launcher.fd_whitelist.push_back(target);
    return {};
  }
  bp::error_code on_exec_setup(bp::posix::default_launcher&, const bp::filesystem::path&,
                               const char* const*) {
    if (::dup2(fd, target) == -1) return {errno, bp::system_category()};
    return {};
  }
};

/// Runs in the spawned child between fork and exec, after the BindFd dup2s.
struct WorkerChildSetup {
  pid_t parent;
  bp::error_code on_exec_setup(bp::posix::default_launcher& launcher, const bp::filesystem::path&,
                               const char* const*) {
    ::setpgid(0, 0);  // its own group: kills reach its descendants
    // SIGTERM when the pool's I/O thread dies: the worker's handler (worker.cpp) then kills
    // its whole group. Until cfx::init installs it, SIGTERM just ends the worker, which has
    // started nothing yet.
    ::prctl(PR_SET_PDEATHSIG, kParentDeathSignal);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the I/O thread blocks SIGPIPE
    // Boost 1.81's close_all skips the gaps between whitelisted descriptors; close every
    // descriptor that is not whitelisted ourselves, so nothing of the parent leaks.
    // No allocation here: between fork and exec of a multithreaded parent, malloc can
    // deadlock on a lock another thread held at the fork (and the parent would wait for
    // the exec forever). The launcher's whitelist is this child's own copy: sort it in place.
    auto& keep = launcher.fd_whitelist;
    std::sort(keep.begin(), keep.end());
    unsigned next = 0;
    for (int fd : keep) {
      if (fd < 0) continue;
      if (static_cast<unsigned>(fd) > next) ::close_range(next, static_cast<unsigned>(fd) - 1, 0);
      next = static_cast<unsigned>(fd) + 1;
    }
    ::close_range(next, ~0u, 0);
    return {};
  }
};

/// The environment of a spawned worker: this process's, with the marker naming the parent.
/// The marker travels in this child's environment only; cfx::init removes it before any task
/// runs, so programs a task starts are not workers.
std::vector<std::string> worker_environment() {
  std::vector<std::string> env;
  std::string marker = std::string(kWorkerEnv) + "=";
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, marker.c_str(), marker.size()) != 0) env.emplace_back(*e);
  env.push_back(marker + std::to_string(::getpid()));
  return env;
}

/// Re-runs this program (/proc/self/exe) as a worker.
bp::process spawn_child(const ChildEnds& ends, const boost::asio::any_io_executor& executor) {
  std::vector<std::string> env_strings = worker_environment();
  std::vector<const char*> env;
  for (auto& s : env_strings) env.push_back(s.c_str());
  env.push_back(nullptr);
  bp::posix::default_launcher launcher;
  launcher.env = env.data();
  try {
    return launcher(executor, "/proc/self/exe", std::vector<std::string>{},
                    BindFd{kWorkerInFd, ends.calls}, BindFd{kWorkerOutFd, ends.replies},
                    BindFd{kWorkerSlotsFd, ends.slots}, WorkerChildSetup{::getpid()});
  } catch (...) {
    // After the fork the launcher drops a child it fails on (its exec failed, or no
    // descriptor was left for the pidfd) without waiting for it.
    if (launcher.pid > 0) kill_and_reap(launcher.pid);
    throw;
  }
}

/// The forked child: binds its channel and serves. Nothing here allocates: the parent's other
/// threads may have held malloc's locks at the fork. (Serving does allocate, which is why the
/// fork start method is documented unsafe once the program runs threads of its own.)
[[noreturn]] void run_forked_worker(const ChildEnds& ends, pid_t parent) {
  ::setpgid(0, 0);
  kill_group_on_parent_death(parent);
  ::dup2(ends.calls, kWorkerInFd);
  ::dup2(ends.replies, kWorkerOutFd);
  ::dup2(ends.slots, kWorkerSlotsFd);
  ::close_range(kWorkerSlotsFd + 1, ~0u, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // The parent's unflushed output was copied into this child: it is the parent's to
  // write, not ours. What tasks print from here on is flushed at exit.
  __fpurge(stdout);
  __fpurge(stderr);
  serve_and_exit();
}

/// A pidfd of child `pid`, or, if none can be made, the child killed and reaped.
Fd open_pidfd(pid_t pid) {
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.get() < 0) {
    int error = errno;
    kill_and_reap(pid);
    throw_errno("pidfd_open", error);
  }
  return pidfd;
}

/// Forks the calling (launcher) thread as a worker.
pid_t fork_child(const ChildEnds& ends) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) run_forked_worker(ends, parent);
  return pid;
}

}  // namespace

void signal_group(int pid, int signal) noexcept {
  ::kill(-pid, signal);  // the group: the worker and anything its tasks started
  ::kill(pid, signal);   // in case it had not yet made its own group
}

void kill_and_reap(int pid) noexcept {
  signal_group(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {
constexpr int kPipeBytes = 1 << 20;  // Linux's default pipe-max-size
}  // namespace

Pipe::Pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  // Big payloads cross in 1 MiB steps instead of 64 KiB ones: 16 times fewer wake-ups of
  // the reader. Best effort (an unprivileged process may not exceed pipe-max-size); the
  // pipe's pages are taken only while bytes wait in it.
  ::fcntl(fds[1], F_SETPIPE_SZ, kPipeBytes);
  read_end = above_channel_fds(Fd(fds[0]));
  write_end = above_channel_fds(Fd(fds[1]));
}

SlotPage::SlotPage(int memfd) {
  void* page = ::mmap(nullptr, slots::kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (page == MAP_FAILED) throw_errno("mmap");
  page_ = static_cast<std::atomic<std::uint64_t>*>(page);
}

SlotPage& SlotPage::operator=(SlotPage&& other) noexcept {
  if (this != &other) {
    unmap();
    page_ = std::exchange(other.page_, nullptr);
  }
  return *this;
}

void SlotPage::unmap() noexcept {
  if (page_) ::munmap(page_, slots::kPageBytes);
  page_ = nullptr;
}

LaunchedWorker launch_worker(StartMethod method, const boost::asio::any_io_executor& executor) {
  Pipe calls, replies;  // the parent writes calls.write_end and reads replies.read_end
  Fd memfd(::memfd_create("cfx-worker-slots", MFD_CLOEXEC));
  if (memfd.get() < 0) throw_errno("memfd_create");
  memfd = above_channel_fds(std::move(memfd));
  if (::ftruncate(memfd.get(), slots::kPageBytes) != 0) throw_errno("ftruncate");
  SlotPage page(memfd.get());
  ChildEnds ends{calls.read_end.get(), replies.write_end.get(), memfd.get()};
  pid_t pid;
  if (method == StartMethod::fork) {
    pid = fork_child(ends);
  } else {
    // Boost's handle is let go here, on the launching thread: its descriptor belongs to
    // `executor`'s reactor, which only this thread may touch while it forks (a lock held by
    // another thread at the fork would deadlock the child's notify_fork).
    bp::process process = spawn_child(ends, executor);
    pid = process.id();
    auto handle = process.detach();  // neither kills nor waits for the child
  }
  Fd pidfd = open_pidfd(pid);
  // The child has its own copies of its ends; the parent's close as this returns.
  return {pid, std::move(pidfd), std::move(calls.write_end), std::move(replies.read_end),
          std::move(page)};
}

}  // namespace cfx::detail
