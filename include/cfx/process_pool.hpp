// cfx::ProcessPoolExecutor: tasks run in worker processes (docs/process-backend.md), and
// cfx::init, which a program that uses it calls first in main.
//
// Tasks are functions registered with CFX_TASK; their arguments and results cross the
// process boundary encoded (raw bytes for numbers and tuples of them, MessagePack through
// nlohmann::json for anything else). See docs/process-backend.md for the design.
//
// Beyond Python: on_worker_crash = respawn (the default) fails only the futures of the
// worker that died and replaces it; task_timeout kills a task that runs too long.
//
// Thread safety: as cfx::Executor (distinct objects: safe; shared objects: safe), and
// worker_pids() may be called from any thread. cfx::init must run first in main(), before
// the program starts threads. The destructor must not run while another thread still calls
// the executor.
//
// Throw-site stack traces: linking cfx replaces the global __cxa_throw, the C++ runtime
// function every `throw` calls. cfx's definition calls libstdc++'s; in a worker process
// (cfx::init turns recording on there, and only there) it first stores the throwing thread's
// return addresses, up to 32, without allocating: a few microseconds per throw in workers,
// one atomic load elsewhere, your program's own process included. The addresses become
// function names and file:line (from the program's symbol table and debug info, so no
// -rdynamic) only when an exception leaves a task, and come back as
// RemoteError::stack_trace(). Off under ASan and TSan; configure cfx with
// -Dthrow_traces=false to compile the replacement out, e.g. when the program or another
// library defines __cxa_throw, or the program links libstdc++ statically. See
// docs/errors.md, "Throw-site stack traces".
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "cfx/executor.hpp"
#include "cfx/task.hpp"

namespace cfx {

/// Call first in main(). In a process started as a pool worker it serves tasks and exits;
/// anywhere else it returns at once.
void init(int argc, char** argv);

/// True in a worker process (after init); such a process never starts a pool of its own.
bool is_worker_process() noexcept;

/// How a worker process starts.
enum class StartMethod {
  spawn,  ///< re-run this program (/proc/self/exe) as a worker; safe with threads
  fork,   ///< fork the parent: faster, but unsafe once the program runs other threads
  /// fork each worker from a server, this program re-run once per pool (Python's
  /// "forkserver"): safe with threads, and a worker costs a fork, not a program's start, which
  /// makes respawning after crashes several times cheaper. The server runs the program's
  /// static initialisers once; they must not start threads. cfx::Process spawns instead.
  forkserver,
};

/// What the pool does when a worker process dies.
enum class OnWorkerCrash {
  respawn,     ///< fail only that worker's running task (WorkerCrashed), start a new worker
  break_pool,  ///< Python's behaviour: every pending future and later submit: BrokenProcessPool
};

/// Options of ProcessPoolExecutor; an aggregate for designated initializers.
struct ProcessPoolOptions {
  /// Most worker processes at once; 0: the number of usable cores.
  std::size_t max_workers = 0;
  StartMethod start_method = StartMethod::spawn;
  /// A worker is replaced after this many tasks (map chunks count as one); 0: never.
  std::size_t max_tasks_per_child = 0;
  /// A task running longer is killed with its worker, which is replaced; its future gets
  /// TimeoutError. Unset: no limit.
  std::optional<std::chrono::duration<double>> task_timeout{};
  OnWorkerCrash on_worker_crash = OnWorkerCrash::respawn;
  /// Run once in each worker before any task; if it throws, the pool is broken.
  std::optional<TaskCall> initializer{};
  /// A call whose worker died while running it is run again on a fresh worker up to this
  /// many times before its future fails with WorkerCrashed (whose message counts the
  /// attempts). 0: no retry.
  std::size_t max_retries = 0;
  /// Bytes of resident memory a worker may use; 0: no limit. A worker found above it after a
  /// call is replaced; a call running while its worker is above it is killed with the worker
  /// (WorkerCrashed naming the limit).
  std::size_t worker_memory_limit = 0;
  /// Beyond the contract: how long the initializer may run in a worker; past it the worker
  /// is killed and the pool breaks, saying so (a hung initializer would otherwise leave every
  /// call pending). 0: no limit.
  std::chrono::duration<double> initializer_timeout = std::chrono::seconds(10);
};

namespace detail {
class ProcessPoolCore;
}

/// Runs registered tasks on up to max_workers worker processes, started on demand.
///
/// Futures are completed, and their done-callbacks run, on the pool's I/O thread: a
/// callback must not block waiting for another future of the same pool.
class ProcessPoolExecutor final : public Executor {
 public:
  /// Throws cfx::Error when called in a worker process (no pools inside workers).
  explicit ProcessPoolExecutor(ProcessPoolOptions options = {});
  /// shutdown(wait = true).
  ~ProcessPoolExecutor() override;

  void shutdown(bool wait = true, bool cancel_futures = false) override;
  std::size_t max_workers() const override;
  std::string_view backend() const override { return "process"; }

  /// Process ids of the live workers (beyond Python: for monitoring and tests).
  std::vector<int> worker_pids() const;
  /// Python 3.14: SIGTERM (terminate_workers) or SIGKILL (kill_workers) every worker, with
  /// its process group, and shut down. Unstarted and running futures end cancelled. Returns
  /// when every worker is reaped. A worker that outlives SIGTERM by a second gets SIGKILL.
  void terminate_workers();
  void kill_workers();

 protected:
  void enqueue(detail::LocalTask* task) override;
  void enqueue_remote(detail::RemoteTask* task) override;

 private:
  std::shared_ptr<detail::ProcessPoolCore> core_;
};

}  // namespace cfx
