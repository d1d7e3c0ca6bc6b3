// The death of a whole serving rank ends the MPI job (MPI's limit, docs/mpi.md): a task kills
// its rank, and the job must end, non-zero and soon, rather than leave rank 0 waiting.
// tests/mpi/run.sh --expect-abort runs it: mpiexec must exit non-zero (not by its timeout)
// and leave no process behind.
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include <cfx/cfx.hpp>

int kill_my_rank() {
  ::kill(::getppid(), SIGKILL);  // this worker's parent is its serving rank
  ::pause();                     // the worker goes with its rank (parent-death signal)
  return 0;
}
CFX_TASK(kill_my_rank);

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  cfx::MpiPoolExecutor ex;
  ex.submit(kill_my_rank).result();
  std::puts("rank 0 outlived its serving rank: the job should have been aborted");
  return 0;
}
