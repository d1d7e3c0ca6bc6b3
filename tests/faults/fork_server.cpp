// StartMethod::forkserver under faults (backends/process/fork_server.hpp). Its workers are the
// fork server's children, not the pool's: their wait status, their process group and their
// death with the pool all pass through the server, so the rows that depend on how a worker
// starts and dies run with both spawn and forkserver where they are: worker_death.cpp #1 and
// #4 (the status the server reaped, descendants), protocol.cpp (an outside kill, the OOM hint),
// parent_death.cpp (parent death and Ctrl-C: the helper's "+forkserver" modes), and
// process/process_pool.cpp (no process, zombie or descriptor left after shutdown). Here: what
// only a fork server has.
#include <doctest/doctest.h>

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

using namespace faults;
using cfx_test::Gate;
using cfx_test::Signal;

namespace {

cfx::ProcessPoolOptions with_server(std::size_t workers) {
  return {.max_workers = workers, .start_method = cfx::StartMethod::forkserver};
}

/// The fork server: this process's only child while a forkserver pool runs.
int server_pid() {
  auto kids = proc_test::child_pids();
  REQUIRE(kids.size() == 1);
  return kids[0];
}

}  // namespace

TEST_SUITE("faults fork server") {
  TEST_CASE("forkserver: the server killed from outside takes its workers; a new one serves") {
    NoLeaks leaks;
    Pool pool(with_server(2));
    TempDir dir;
    Gate gate;
    Signal started;
    auto pid_file = dir.path("pids");
    auto busy = pool->submit(descendants_then_wait, pid_file, started.path(), gate.path());
    REQUIRE(started.receive(1).size() == 1);
    auto pids = read_pids(pid_file);
    REQUIRE(pids.size() == 3);
    int server = server_pid();
    REQUIRE(::kill(server, SIGKILL) == 0);
    auto since = Clock::now();
    // The running call's worker died with the server (its parent-death signal): the call
    // fails, saying the worker crashed, and nothing it started remains.
    REQUIRE(ends(busy, deadline()));
    std::string what = error_of<cfx::WorkerCrashed>(busy);
    INFO("message: " << what);
    CHECK(has(what, "descendants_then_wait"));
    check_gone(pids, since);
    // The next calls run on workers of a new server.
    std::vector<cfx::Future<int>> next;
    for (int i = 0; i < 10; ++i) next.push_back(pool->submit(add, i, 1));
    REQUIRE(all_end(next, deadline()));
    for (int i = 0; i < 10; ++i) CHECK(next[static_cast<std::size_t>(i)].result() == i + 1);
    CHECK(server_pid() != server);
  }

  TEST_CASE("forkserver: one call in ten kills its worker: every other call returns its value") {
    NoLeaks leaks;
    Pool pool(with_server(2));
    std::vector<cfx::Future<int>> fs;
    for (int i = 0; i < 300; ++i)
      fs.push_back(i % 10 == 9 ? pool->submit(crash, "sigkill") : pool->submit(add, i, 1));
    REQUIRE(all_end(fs, deadline()));
    for (int i = 0; i < 300; ++i) {
      auto& f = fs[static_cast<std::size_t>(i)];
      CAPTURE(i);
      if (i % 10 == 9)
        CHECK(fails_with<cfx::WorkerCrashed>(f));
      else
        CHECK(error_of<std::exception>(f) == "<no exception>");
    }
    for (int i = 0; i < 300; i += 10) CHECK(fs[static_cast<std::size_t>(i)].result() == i + 1);
  }
}
