// cfx::MpiPoolExecutor: the same Executor past one machine, over MPI (docs/mpi.md).
//
//   mpiexec -n 5 ./prog        rank 0 runs main; ranks 1..4 serve tasks
//
//   int main(int argc, char** argv) {
//     cfx::init(argc, argv);                            // a serving rank serves, then exits
//     cfx::MpiPoolExecutor ex({.workers_per_rank = 2}); // or make_executor({"backend": "mpi"})
//
// Each serving rank runs its tasks in a local process pool of workers_per_rank worker
// processes, so a task that crashes fails only its own future (WorkerCrashed naming the rank
// and host). The death of a whole rank ends the MPI job: that is MPI's own limit (docs/mpi.md).
//
// The program must link the library cfx-mpi (meson dependency 'cfx-mpi', pkg-config cfx-mpi,
// -lcfx-mpi; docs/mpi.md "Linking"): its symbols live there, so that programs without it do
// not load MPI. Including this header (or <cfx/cfx.hpp>) references none of them.
// Built when meson finds an MPI implementation (feature option `mpi`); otherwise the
// constructor throws cfx::Error and "backend": "mpi" throws ConfigError, both saying that cfx
// was built without MPI.
//
// Thread safety: as cfx::Executor. One MpiPoolExecutor is open at a time in a program (the
// serving ranks serve one); executors may be created one after another.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>

#include "cfx/executor.hpp"

namespace cfx {

/// Options of MpiPoolExecutor; an aggregate for designated initializers. The config keys
/// have the same names ("workers_per_rank", "task_timeout_s", "max_tasks_per_child",
/// "max_retries").
struct MpiPoolOptions {
  /// Worker processes in each serving rank's local pool: its task slots.
  std::size_t workers_per_rank = 1;
  /// A task running longer is killed with its worker (on its rank), which is replaced; its
  /// future gets TimeoutError. Unset: no limit.
  std::optional<std::chrono::duration<double>> task_timeout{};
  /// A rank's worker is replaced after this many tasks (map chunks count as one); 0: never.
  std::size_t max_tasks_per_child = 0;
  /// A call whose worker died while running it is run again, on a fresh worker of the same
  /// rank, up to this many times before its future fails with WorkerCrashed. 0: no retry.
  std::size_t max_retries = 0;
};

namespace detail {
class MpiPoolCore;
}

/// Runs registered tasks on the serving ranks of an MPI job (ranks 1..N of
/// `mpiexec -n N+1 ./prog`). Throws cfx::Error naming `mpiexec -n N+1` when there is no
/// serving rank (a program started without mpiexec, or with -n 1), and when another
/// MpiPoolExecutor is still open.
///
/// Futures are completed, and their done-callbacks run, on the executor's MPI thread: a
/// callback must not block waiting for another future of the same executor.
class MpiPoolExecutor final : public Executor {
 public:
  explicit MpiPoolExecutor(MpiPoolOptions options = {});
  /// shutdown(wait = true).
  ~MpiPoolExecutor() override;

  void shutdown(bool wait = true, bool cancel_futures = false) override;
  /// Task slots over all serving ranks: workers_per_rank times the serving ranks.
  std::size_t max_workers() const override;
  std::string_view backend() const override { return "mpi"; }

 protected:
  void enqueue(detail::LocalTask* task) override;
  void enqueue_remote(detail::RemoteTask* task) override;

 private:
  std::shared_ptr<detail::MpiPoolCore> core_;
};

/// Releases the serving ranks of an MPI launch (they exit, and so can mpiexec) and finalizes
/// MPI, after shutting down (wait = true) an executor still open. cfx::init arranges for it
/// to run at exit; call it earlier to release the ranks before the program ends. No
/// executor can be created afterwards. Does nothing outside an MPI launch; safe to call again.
void finalize();

}  // namespace cfx
