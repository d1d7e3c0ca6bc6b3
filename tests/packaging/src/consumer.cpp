// A user's program built against an installed cfx: both backends, one registered task.
#include <cstdio>

#include <cfx/cfx.hpp>

int triple(int x) {
  return 3 * x;
}
CFX_TASK(triple);

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  cfx::ThreadPoolExecutor threads({.max_workers = 2});
  cfx::ProcessPoolExecutor procs({.max_workers = 2});
  int a = threads.submit(triple, 7).result();
  int b = procs.submit(triple, 7).result();
  std::printf("consumer: thread %d, process %d\n", a, b);
  return a == 21 && b == 21 ? 0 : 1;
}
