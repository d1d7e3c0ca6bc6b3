// The worker process's side: where its channel is, its entry, and the check that keeps pools
// out of workers. cfx::init and cfx::is_worker_process live in worker.cpp too. Internal.
#pragma once

#include <signal.h>

namespace cfx::detail {

/// The worker's ends of its channel are moved to these descriptors before it serves.
inline constexpr int kWorkerInFd = 3;
inline constexpr int kWorkerOutFd = 4;
/// The page of call slots the worker shares with the pool (channel.hpp, "Call slots").
inline constexpr int kWorkerSlotsFd = 5;
/// The descriptor channel (lib/toolkit/descriptors.hpp): handles' descriptors, both ways.
inline constexpr int kWorkerHandlesFd = 6;
/// Sent to a worker when the pool's I/O thread dies (PR_SET_PDEATHSIG), and by
/// terminate_workers(): the worker's handler kills its whole process group, itself included,
/// so that nothing a task started outlives it.
inline constexpr int kParentDeathSignal = SIGTERM;
/// Environment variable that marks a process spawned as a worker: "<parent pid>", or as a
/// fork server (fork_server.hpp): "<parent pid>" followed by kForkServerMarker.
inline constexpr const char* kWorkerEnv = "CFX_WORKER";
inline constexpr const char* kForkServerMarker = ",fork-server";
/// Follows kForkServerMarker when the pool set LD_BIND_NOW for the server (fork_server.cpp).
inline constexpr const char* kBindNowMarker = ",bind-now";
/// Ends the marker when the parent set GLIBC_TUNABLES for the child (launcher.cpp).
inline constexpr const char* kTunablesMarker = ",tunables";
/// A fork server's socket to its pool.
inline constexpr int kForkServerFd = 3;
/// Exit status of a worker whose main() did not call cfx::init before starting a pool.
inline constexpr int kNoInitExitStatus = 87;

/// The worker's entry once its channel is on descriptors 3 to 6 (cfx::init and the fork
/// start method): marks this process a worker (no pools of its own), serves calls until the
/// parent closes the channel, flushes what tasks printed, and exits (0, or 1 on an error).
[[noreturn]] void serve_and_exit() noexcept;

/// Installs the handler of kParentDeathSignal and asks for it when the process's parent
/// dies; if `parent` is already gone, kills the group at once. Async-signal-safe: the fork
/// start method calls it in the child.
void kill_group_on_parent_death(int parent) noexcept;

/// Called before a pool starts: throws cfx::Error in a worker (no nested pools), and exits
/// with kNoInitExitStatus in a process spawned as a worker whose main() skipped cfx::init.
void refuse_pool_in_worker();

}  // namespace cfx::detail
