// A program that residue.cpp SIGKILLs (with its process group) while it and a pool worker
// hold a SharedArray: it maps an array, has a forked worker map it too, prints the block's
// inode and its worker's pid on stdout, then waits to be killed.
#include <unistd.h>

#include <cstdio>

#include "toolkit/tasks.hpp"

CFX_TASK_AS(&toolkit_test::fill_array, "helper_fill_array");

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  cfx::SharedArray<int> a(1 << 20);
  cfx::ProcessPoolExecutor pool(
      {.max_workers = 1, .start_method = cfx::test::pool_fork_or_spawn()});
  pool.submit(toolkit_test::fill_array, a, 5).result();  // the worker keeps it mapped
  if (a[0] != 5) return 2;
  nlohmann::json j;  // the block's identity, as it would travel
  cfx::detail::HandleList handles;
  {
    cfx::detail::HandleCapture capture(handles);
    j = a;
  }
  std::printf("%llu %d\n", static_cast<unsigned long long>(handles.at(0).key.ino),
              pool.worker_pids().at(0));
  std::fflush(stdout);
  for (;;) ::pause();
}
