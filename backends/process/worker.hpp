// The worker process's side of the channel. Internal.
#pragma once

namespace cfx::detail {

/// The worker's ends of its channel are moved to these descriptors before it serves.
inline constexpr int kWorkerInFd = 3;
inline constexpr int kWorkerOutFd = 4;
/// A shared page whose first word counts the calls the worker has started, so that the
/// parent knows, when a worker dies, whether its oldest unanswered call was running.
inline constexpr int kWorkerCounterFd = 5;
/// Environment variable that marks a process spawned as a worker: "<parent pid>".
inline constexpr const char* kWorkerEnv = "CFX_WORKER";
/// Exit status of a worker whose main() did not call cfx::init before starting a pool.
inline constexpr int kNoInitExitStatus = 87;

/// Serves calls read from in_fd, replying on out_fd, until the parent closes in_fd; counts
/// started calls in the page mapped from counter_fd. Returns the process's exit status.
int serve_worker(int in_fd, int out_fd, int counter_fd);

/// The worker's entry once its channel is on descriptors 3, 4 and 5 (the fork start method):
/// serves, flushes what tasks printed, and exits with serve_worker's status.
[[noreturn]] void serve_and_exit();

/// Marks this process as a worker (no pools of its own).
void mark_worker_process() noexcept;

}  // namespace cfx::detail
