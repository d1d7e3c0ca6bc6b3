// Starting a worker process: its channel's descriptors, the start methods (spawn, fork, and
// forkserver through fork_server.hpp), and the environment marker of a spawned worker.
// Internal.
//
// Every descriptor is owned by an Fd from the moment it exists, so a launch that fails at any
// step (no descriptor left, fork refused, exec failed) closes what it had opened; a child
// that was started before the failure is killed and reaped.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cfx/process_pool.hpp"

namespace cfx::detail {

/// Owns one descriptor and closes it when destroyed.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  /// Gives the descriptor up without closing it.
  int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the descriptor held, if any, and holds `fd` instead.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// A pipe whose ends are close-on-exec and above the descriptors a worker's channel is
/// dup2'ed onto, so that binding one end never overwrites another.
struct Pipe {
  Pipe();  // throws std::system_error
  Fd read_end;
  Fd write_end;
};

/// The file a worker shares with the pool: the page of call slots (channel.hpp, "Call
/// slots") at its start, then the bulk areas (bulk_area.hpp). Holds the file and the page's
/// mapping, unmapped when destroyed.
class SlotPage {
 public:
  SlotPage() = default;
  /// Maps the page of `memfd` (sized by the caller); throws std::system_error.
  explicit SlotPage(Fd memfd);
  SlotPage(SlotPage&& other) noexcept
      : file_(std::move(other.file_)), page_(std::exchange(other.page_, nullptr)) {}
  SlotPage& operator=(SlotPage&& other) noexcept;
  ~SlotPage() { unmap(); }

  std::atomic<std::uint64_t>* get() const noexcept { return page_; }
  int file() const noexcept { return file_.get(); }

 private:
  void unmap() noexcept;

  Fd file_;
  std::atomic<std::uint64_t>* page_ = nullptr;
};

/// Moves fd above the descriptors a worker's channel is dup2'ed onto (3 to 6): a descriptor
/// already on its target would keep its close-on-exec flag through the dup2, or be
/// overwritten by another end's dup2. Throws std::system_error.
Fd above_channel_fds(Fd fd);

/// The ends of the channel that the worker gets, as descriptors 3 to 6.
struct ChildEnds {
  int calls;
  int replies;
  int slots;
  int handles;
};

/// Runs in a child just forked to be a worker: binds `ends` to descriptors 3 to 6, makes its
/// own process group, asks to die with `parent`, and serves. Allocates nothing before serving.
[[noreturn]] void run_forked_worker(const ChildEnds& ends, pid_t parent);

/// Re-runs this program (/proc/self/exe) with `fds` on descriptors 3, 4, ... and nothing
/// else of ours open, in its own process group, marked by kWorkerEnv=`marker` (worker.hpp),
/// with `extra_env` ("NAME=value") added to this process's environment. Throws
/// std::system_error.
pid_t spawn_program(std::span<const int> fds, const std::string& marker,
                    const std::vector<std::string>& extra_env = {});

class ForkServer;

/// A pidfd of child `pid` (`server`: the fork server whose child it is; null: this process's),
/// or, if none can be made, the child killed and reaped and std::system_error thrown.
Fd open_child_pidfd(pid_t pid, ForkServer* server = nullptr);

/// Sends `signal` to worker `pid`'s process group and to the worker itself.
void signal_group(int pid, int signal) noexcept;
/// SIGKILLs a worker's group and waits for the worker, so that no process or zombie is left;
/// `server`: the fork server whose child it is (null: a child of this process).
void kill_and_reap(int pid, ForkServer* server = nullptr) noexcept;

/// A started worker: its process (pid and pidfd, by which the parent reaps it) and the
/// parent's side of its channel.
struct LaunchedWorker {
  int pid = 0;
  std::shared_ptr<ForkServer> server;  // whose child it is; null: a child of this process
  Fd pidfd;
  Fd calls;        // the parent writes calls here
  Fd replies;      // and reads replies here
  Fd handles;      // the descriptor channel (lib/toolkit/descriptors.hpp)
  SlotPage slots;  // its call slots
};

/// Starts a worker by `method` (forkserver: forked by `server`). Throws std::system_error
/// after undoing what it had done. `one_call`: the worker runs one call and exits by its
/// outcome (cfx::Process).
LaunchedWorker launch_worker(StartMethod method, bool one_call = false,
                             std::shared_ptr<ForkServer> server = nullptr);

}  // namespace cfx::detail
