// Starting a worker process (see launcher.hpp).
#include "backends/process/launcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
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

#include "backends/process/bulk_area.hpp"
#include "backends/process/channel.hpp"
#include "backends/process/fork_server.hpp"
#include "backends/process/worker.hpp"
#include "lib/toolkit/descriptors.hpp"

namespace cfx::detail {
namespace {

[[noreturn]] void throw_errno(const char* what, int error = errno) {
  throw std::system_error(error, std::generic_category(), what);
}

/// The environment of a spawned worker or fork server: this process's, with the marker. The
/// marker travels in this child's environment only; cfx::init removes it before any task
/// runs, so programs a task starts are not workers.
///
/// Unless the user tuned glibc's malloc, the child's malloc backs its big blocks with huge
/// pages (glibc.malloc.hugetlb=1): a task that builds a 200 MB result then takes a page fault
/// per 2 MiB instead of per 4 KiB (0.6-1.4 s instead of 2-5 s here). cfx::init takes the
/// variable out again (kTunablesMarker), so programs a task starts run untuned.
std::vector<std::string> worker_environment(std::string marker,
                                            const std::vector<std::string>& extra) {
  std::vector<std::string> env(extra);
  if (!std::getenv("GLIBC_TUNABLES")) {
    env.emplace_back("GLIBC_TUNABLES=glibc.malloc.hugetlb=1");
    marker += kTunablesMarker;
  }
  std::string name = std::string(kWorkerEnv) + "=";
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, name.c_str(), name.size()) != 0) env.emplace_back(*e);
  env.push_back(name + marker);
  return env;
}

/// posix_spawn's attributes and file actions, released however the spawn ends.
struct SpawnSetup {
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    posix_spawnattr_init(&attributes);
    posix_spawn_file_actions_init(&actions);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
  }
};

/// Forks the calling (launcher) thread as a worker.
pid_t fork_child(const ChildEnds& ends) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) run_forked_worker(ends, parent);
  return pid;
}

}  // namespace

Fd above_channel_fds(Fd fd) {
  if (fd.get() > kWorkerHandlesFd) return fd;
  Fd moved(::fcntl(fd.get(), F_DUPFD_CLOEXEC, kWorkerHandlesFd + 1));
  if (moved.get() < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  return moved;
}

// posix_spawn, not a fork: glibc's shares the parent's memory until the exec, so a parent
// with a large heap pays neither the copy of its page tables nor the copy-on-write faults that
// follow a fork (they were most of a respawn's cost). PR_SET_PDEATHSIG cannot be set from
// here; the child sets it in cfx::init and checks that the parent named in its marker is still
// its parent (worker.cpp).
pid_t spawn_program(std::span<const int> fds, const std::string& marker,
                    const std::vector<std::string>& extra_env) {
  std::vector<std::string> env_strings = worker_environment(marker, extra_env);
  std::vector<char*> env;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  SpawnSetup setup;
  // Its own group, so that kills reach its descendants; no signal blocked (the I/O thread
  // blocks SIGPIPE).
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&setup.attributes, &none);
  posix_spawnattr_setpgroup(&setup.attributes, 0);
  posix_spawnattr_setflags(&setup.attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  const int first = kWorkerInFd;
  for (std::size_t i = 0; i < fds.size(); ++i)
    posix_spawn_file_actions_adddup2(&setup.actions, fds[i], first + static_cast<int>(i));
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, first + static_cast<int>(fds.size()));
  char program[] = "/proc/self/exe";
  char* argv[] = {program, nullptr};
  pid_t pid = -1;
  int error = ::posix_spawn(&pid, program, &setup.actions, &setup.attributes, argv, env.data());
  if (error != 0) throw_errno("posix_spawn", error);
  return pid;
}

// Nothing here allocates: the parent's other threads may have held malloc's locks at the
// fork. (Serving does allocate, which is why the fork start method is documented unsafe once
// the program runs threads of its own.)
void run_forked_worker(const ChildEnds& ends, pid_t parent) {
  ::setpgid(0, 0);
  kill_group_on_parent_death(parent);
  ::dup2(ends.calls, kWorkerInFd);
  ::dup2(ends.replies, kWorkerOutFd);
  ::dup2(ends.slots, kWorkerSlotsFd);
  ::dup2(ends.handles, kWorkerHandlesFd);
  ::close_range(kWorkerHandlesFd + 1, ~0u, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // The parent's unflushed output was copied into this child: it is the parent's to
  // write, not ours. What tasks print from here on is flushed at exit.
  __fpurge(stdout);
  __fpurge(stderr);
  serve_and_exit();
}

Fd open_child_pidfd(pid_t pid, ForkServer* server) {
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.get() < 0) {
    int error = errno;
    kill_and_reap(pid, server);
    throw_errno("pidfd_open", error);
  }
  return pidfd;
}

void signal_group(int pid, int signal) noexcept {
  ::kill(-pid, signal);  // the group: the worker and anything its tasks started
  ::kill(pid, signal);   // in case it had not yet made its own group
}

void kill_and_reap(int pid, ForkServer* server) noexcept {
  signal_group(pid, SIGKILL);
  if (server) {
    server->reap(pid);
    return;
  }
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

SlotPage::SlotPage(Fd memfd) : file_(std::move(memfd)) {
  void* page =
      ::mmap(nullptr, slots::kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, file_.get(), 0);
  if (page == MAP_FAILED) throw_errno("mmap");
  page_ = static_cast<std::atomic<std::uint64_t>*>(page);
}

SlotPage& SlotPage::operator=(SlotPage&& other) noexcept {
  if (this != &other) {
    unmap();
    file_ = std::move(other.file_);
    page_ = std::exchange(other.page_, nullptr);
  }
  return *this;
}

void SlotPage::unmap() noexcept {
  if (page_) ::munmap(page_, slots::kPageBytes);
  page_ = nullptr;
}

namespace {

/// The worker's shared file: sparse, as big as its bulk areas may grow, and sealed so that a
/// task in the worker cannot shrink it under the pool's mappings (a SIGBUS in the pool).
Fd shared_file() {
  Fd memfd(::memfd_create("cfx-worker-slots", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (memfd.get() < 0) throw_errno("memfd_create");
  memfd = above_channel_fds(std::move(memfd));
  if (::ftruncate(memfd.get(), static_cast<off_t>(kSharedFileBytes)) != 0) throw_errno("ftruncate");
  if (::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    throw_errno("fcntl(F_ADD_SEALS)");
  return memfd;
}

pid_t start_child(StartMethod method, const ChildEnds& ends, ForkServer* server) {
  switch (method) {
    case StartMethod::fork:
      return fork_child(ends);
    case StartMethod::forkserver:
      if (server) return server->fork_worker(ends);
      break;  // no server at hand (cfx::Process): spawned
    case StartMethod::spawn:
      break;
  }
  const int fds[] = {ends.calls, ends.replies, ends.slots, ends.handles};
  return spawn_program(fds, std::to_string(::getpid()));
}

}  // namespace

LaunchedWorker launch_worker(StartMethod method, bool one_call,
                             std::shared_ptr<ForkServer> server) {
  Pipe calls, replies;  // the parent writes calls.write_end and reads replies.read_end
  auto [mine, theirs] = descriptor_socketpair();
  Fd handles_mine(mine), handles_theirs(theirs);
  handles_mine = above_channel_fds(std::move(handles_mine));
  handles_theirs = above_channel_fds(std::move(handles_theirs));
  SlotPage page(shared_file());
  page.get()[slots::kOneCallWord].store(one_call ? 1 : 0);
  ChildEnds ends{calls.read_end.get(), replies.write_end.get(), page.file(), handles_theirs.get()};
  if (method != StartMethod::forkserver) server = nullptr;
  pid_t pid = start_child(method, ends, server.get());
  Fd pidfd = open_child_pidfd(pid, server.get());
  // The child has its own copies of its ends; the parent's close as this returns.
  return {pid,
          std::move(server),
          std::move(pidfd),
          std::move(calls.write_end),
          std::move(replies.read_end),
          std::move(handles_mine),
          std::move(page)};
}

}  // namespace cfx::detail
