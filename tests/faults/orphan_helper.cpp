// A program whose death, exit and Ctrl-C the fault tests watch from outside
// (parent_death.cpp): robust-pools.md rows 3.4 #30, #31 and 3.5 #45, #49, #50.
//
//   orphan_helper MODE PID_FILE SIGNAL
//
// It starts a ProcessPoolExecutor and two tasks that each start descendants (a shell's
// background `sleep 300` and a fork of the worker keeping fds 3 and 4), append
// "<worker> <sleep> <forked>" to PID_FILE and write the byte 1 to the FIFO SIGNAL (the test's
// cfx_test::Signal). Once set up it writes the byte 2 there, then reads one byte from stdin
// (the test's "go"), and ends as MODE says:
//   busy         the tasks block forever; after "go" (never sent: the test kills it), exits
//   idle         the tasks return; the same
//   exit-static  idle tasks, the pool a function-local static: after "go", returns from main
//                without shutdown, so the pool ends in static destruction
//   exit-leaked  busy tasks, the pool leaked: after "go", std::exit(0) without shutdown
//   MODE+forkserver  busy or idle with workers forked by a fork server
//   flood        no descendants: one task writes 50 MB to stdout and 50 MB to stderr; exits 0
//                if the task returned, 3 otherwise (PID_FILE and SIGNAL are not used)
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

#include "faults/tasks.hpp"

namespace {

/// start_descendants, notify, then block forever.
int descendants_then_block(std::string pid_file, std::string signal_path) {
  faults::start_descendants(pid_file);
  cfx_test::notify(signal_path, 1);
  faults::hang();
  return 0;
}
CFX_TASK(descendants_then_block);

/// start_descendants, notify, return.
int descendants_then_return(std::string pid_file, std::string signal_path) {
  faults::start_descendants(pid_file);
  cfx_test::notify(signal_path, 1);
  return 1;
}
CFX_TASK(descendants_then_return);

/// Writes `n` bytes to stdout and `n` to stderr; returns how many it wrote in all.
std::uint64_t flood_output(std::uint64_t n) {
  std::string chunk(1 << 20, 'o');
  std::uint64_t written = 0;
  for (int fd : {1, 2})
    for (std::uint64_t left = n; left > 0;) {
      auto k = std::min<std::uint64_t>(left, chunk.size());
      if (!faults::write_all(fd, std::string_view(chunk.data(), k))) return written;
      left -= k;
      written += k;
    }
  return written;
}
CFX_TASK(flood_output);

/// Submits the two tasks (busy: they block forever); for idle ones, waits for them.
std::vector<cfx::Future<int>> start(cfx::ProcessPoolExecutor& pool, bool busy,
                                    const std::string& pid_file, const std::string& signal) {
  std::vector<cfx::Future<int>> fs;
  for (int i = 0; i < 2; ++i)
    fs.push_back(busy ? pool.submit(descendants_then_block, pid_file, signal)
                      : pool.submit(descendants_then_return, pid_file, signal));
  if (!busy)
    for (auto& f : fs) (void)f.result();
  cfx_test::notify(signal, 2);
  return fs;
}

/// Blocks until the test writes a byte to stdin (or closes it).
void wait_for_go() {
  char c;
  while (::read(0, &c, 1) < 0 && errno == EINTR) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  if (argc != 4) {
    std::fprintf(stderr, "usage: orphan_helper MODE PID_FILE SIGNAL\n");
    return 2;
  }
  std::string mode = argv[1];
  const std::string pid_file = argv[2], signal = argv[3];
  // "MODE+forkserver": the same, with workers forked by a fork server.
  auto method = cfx::StartMethod::spawn;
  if (auto plus = mode.find("+forkserver"); plus != std::string::npos) {
    method = cfx::StartMethod::forkserver;
    mode.erase(plus);
  }
  if (mode == "flood") {
    constexpr std::uint64_t kEach = 50'000'000;
    cfx::ProcessPoolExecutor pool({.max_workers = 1});
    return pool.submit(flood_output, kEach).result() == 2 * kEach ? 0 : 3;
  }
  if (mode == "exit-static") {
    static cfx::ProcessPoolExecutor pool({.max_workers = 2});
    auto fs = start(pool, false, pid_file, signal);
    wait_for_go();
    return 0;
  }
  if (mode == "exit-leaked") {
    auto* pool = new cfx::ProcessPoolExecutor({.max_workers = 2});
    auto fs = start(*pool, true, pid_file, signal);
    wait_for_go();
    std::exit(0);
  }
  if (mode == "busy" || mode == "idle") {
    cfx::ProcessPoolExecutor pool({.max_workers = 2, .start_method = method});
    auto fs = start(pool, mode == "busy", pid_file, signal);
    wait_for_go();
    std::fflush(nullptr);
    ::_exit(0);  // not reached in the tests: they kill this process
  }
  std::fprintf(stderr, "orphan_helper: unknown mode '%s'\n", mode.c_str());
  return 2;
}
