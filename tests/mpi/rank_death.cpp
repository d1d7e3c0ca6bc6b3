// The death of a whole serving rank (docs/mpi.md, "What happens on each fault"): a task kills
// its rank. tests/mpi/run.sh runs it two ways:
//   --expect-abort: under a plain mpiexec, which ends the whole job when a rank dies; the job
//     must end non-zero and soon, with no process left, rather than leave rank 0 waiting.
//   --recovery: under `mpiexec --enable-recovery`, which lets the job go on; rank 0 must see
//     the death at once (the rank is on its node), fail the calls it held with
//     BrokenExecutor naming the rank, and go on serving with the rank that is left; the job
//     then ends cleanly (exit status 0).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include <cfx/cfx.hpp>

int kill_my_rank() {
  ::kill(::getppid(), SIGKILL);  // this worker's parent is its serving rank
  ::pause();                     // the worker goes with its rank (parent-death signal)
  return 0;
}
CFX_TASK(kill_my_rank);

int square(int x) {
  return x * x;
}
CFX_TASK(square);

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  const bool recovery = argc > 1 && std::string(argv[1]) == "--recovery";
  cfx::MpiPoolExecutor ex;
  if (!recovery) {
    try {
      ex.submit(kill_my_rank).result();
    } catch (const cfx::BrokenExecutor& e) {  // if rank 0 sees it before mpiexec ends the job
      std::printf("rank 0: %s\n", e.what());
      return 3;
    }
    std::puts("rank 0 outlived its serving rank: the job should have been aborted");
    return 0;
  }
  int failures = 0;
  try {
    ex.submit(kill_my_rank).result();
    std::puts("FAIL: the call that killed its rank returned");
    ++failures;
  } catch (const cfx::BrokenExecutor& e) {
    const std::string what = e.what();
    const bool named = what.find("MPI serving rank 1 (pid ") != std::string::npos &&
                       what.find("died") != std::string::npos &&
                       what.find("kill_my_rank") != std::string::npos;
    std::printf("%s dead rank's call: %s\n", named ? "ok" : "FAIL", what.c_str());
    failures += !named;
  }
  // Rank 2 is left: every later call runs there.
  for (int i = 0; i < 20; ++i)
    if (ex.submit(square, i).result() != i * i) {
      std::printf("FAIL: square(%d) on the rank left\n", i);
      ++failures;
    }
  ex.shutdown();
  // A later executor opens on the ranks that are left only.
  cfx::MpiPoolExecutor again;
  if (again.max_workers() != 1 || again.submit(square, 7).result() != 49) {
    std::puts("FAIL: a new executor after the death");
    ++failures;
  }
  std::printf("%s\n", failures ? "rank_death: FAILED" : "rank_death: ok");
  return failures ? 1 : 0;
}
