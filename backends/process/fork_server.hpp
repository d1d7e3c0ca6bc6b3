// The fork server of StartMethod::forkserver. Internal.
//
// A pool that starts workers by spawn pays an exec, the dynamic linker and the program's start
// for every worker: 3-7 ms of CPU, which is most of what a crash costs the pool. The fork
// server is this program re-run once per pool, as a spawned worker would be, that runs its
// static initialisers and cfx::init and then, single-threaded, forks a worker whenever the
// pool asks: each worker starts as a copy of a fresh program (nothing of the parent's state,
// as with spawn) for the price of a fork of a small process.
//
// The pool and the server talk over a SOCK_SEQPACKET socket (the server's descriptor 3), one
// request and one reply at a time:
//   fork: the worker's four channel ends (SCM_RIGHTS)  ->  its pid, or -errno
//   reap: a pid                                         ->  its wait status, or -1
// Workers are the server's children: the server kills a dead worker's process group and reaps
// it only when the pool asks, so a pid the pool holds is never reused under it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>

#include "backends/process/launcher.hpp"

namespace cfx::detail {

class ForkServer {
 public:
  /// Spawns the server and waits for it to say it serves. Throws std::system_error, or
  /// cfx::Error saying what the server did instead (exited, did not answer in time).
  ForkServer();
  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;
  /// Closes the socket and reaps the server; its idle workers die with it (their
  /// parent-death signal).
  ~ForkServer();

  /// Forks a worker bound to `ends`. Throws std::system_error; a server that died fails with
  /// EPIPE, after which alive() is false.
  pid_t fork_worker(const ChildEnds& ends);
  /// Kills worker `pid`'s process group and reaps it: its wait status, or -1 if it cannot
  /// be known (the server died, and the worker with it). Blocks until the worker is dead.
  int reap(pid_t pid) noexcept;
  bool alive() const noexcept;
  /// The server's pidfd: readable once it has died.
  int pidfd() const noexcept { return pidfd_.get(); }

 private:
  /// One request and its reply; -EPIPE once the server is gone. Caller holds mutex_.
  long long exchange(char kind, long long value, std::span<const int> fds) noexcept;

  mutable std::mutex mutex_;
  pid_t pid_ = -1;
  Fd pidfd_;
  Fd socket_;
  bool alive_ = false;
};

/// The server's side: serves fork and reap requests on kForkServerFd until the pool closes the
/// socket, then exits. Called by cfx::init in a process spawned as a fork server.
[[noreturn]] void serve_fork_requests() noexcept;

}  // namespace cfx::detail
