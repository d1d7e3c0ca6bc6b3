// robust-pools.md section 3.1: worker death while running a task.
//
// Rows not repeated here, because existing tests assert them already:
// - #1 with on_worker_crash = break_pool: process/process_pool.cpp "on_worker_crash =
//   break_pool breaks the pool as Python does".
// - #2 abort(): process/process_pool.cpp "workers that crash fail only their own future; the
//   pool keeps serving" (SIGABRT and the task named, a bystander, the next submit) and
//   process/respawn.cpp "a worker that had started is replaced after every crash".
// - #5 SIGKILL from outside while running: process/process_pool.cpp "a worker killed from
//   outside fails its task with an OOM hint; the pool goes on" (its descendants: protocol.cpp,
//   "issue 8: a task's descendants die with its worker when the worker is killed from outside").
// - #6 SIGKILL while idle: process/process_pool.cpp "an idle worker killed from outside fails
//   nothing and is replaced".
// - #11 crash with calls sent ahead: process/process_pool.cpp "calls queued behind a crash on the
//   same worker are not lost".
// - #10 (retries) needs max_retries: control.cpp.
#include <doctest/doctest.h>

#include <sys/ioctl.h>
#include "support/start_methods.hpp"

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

using namespace faults;
using cfx_test::Gate;
using cfx_test::Signal;

namespace {

/// The "pipe:[inode]" that /proc/<pid>/fd/<fd> names, or "".
std::string link_of(int pid, int fd) {
  char buf[128];
  std::string link = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n < 0 ? "" : std::string(buf, static_cast<std::size_t>(n));
}

/// This process's descriptor for the same pipe as descriptor `fd` of process `pid`, or -1.
int our_end_of(int pid, int fd) {
  std::string target = link_of(pid, fd);
  if (target.rfind("pipe:", 0) != 0) return -1;
  for (int ours : proc_test::open_fds())
    if (link_of(::getpid(), ours) == target) return ours;
  return -1;
}

}  // namespace

TEST_SUITE("faults 3.1 worker death") {
  TEST_CASE("3.1 #1 task segfaults: WorkerCrashed on this future only") {
    // Spawned workers are the pool's children; a fork server's are the server's.
    for (auto method : {cfx::StartMethod::spawn, cfx::StartMethod::forkserver}) {
      CAPTURE(cfx::test::name(method));
      NoLeaks leaks;
      Pool pool({.max_workers = 2, .start_method = method});
      TempDir dir;
      auto pid_file = dir.path("pids");
      auto bystander = pool->submit(add, 20, 22);
      auto f = pool->submit(descendants_then_crash, pid_file, "segv");
      REQUIRE(ends(f, deadline()));
      auto since = Clock::now();
      auto pids = read_pids(pid_file);  // worker, sleep, forked copy
      REQUIRE(pids.size() == 3);
      std::string what = error_of<cfx::WorkerCrashed>(f);
      INFO("message: " << what);
      CHECK(has(what, "descendants_then_crash"));
      CHECK(has(what, std::to_string(pids[0])));
      if (!sanitized()) CHECK(has(what, "SIGSEGV"));  // ASan turns a SIGSEGV into exit(1)
      CHECK_FALSE(oom_hint(what));
      check_gone(pids, since);
      REQUIRE(ends(bystander, deadline()));
      CHECK(bystander.result() == 42);
      auto next = pool->submit(add, 1, 2);
      REQUIRE(ends(next, deadline()));
      CHECK(next.result() == 3);
    }
  }

  TEST_CASE("3.1 #3 task calls std::exit(0): WorkerCrashed; never taken for success") {
    NoLeaks leaks;
    Pool pool({.max_workers = 2});
    auto bystander = pool->submit(add, 1, 1);
    auto f = pool->submit(crash, "exit0");
    REQUIRE(ends(f, deadline()));
    std::string what = error_of<cfx::WorkerCrashed>(f);
    INFO("message: " << what);
    CHECK(has(what, "crash"));
    CHECK(has(what, "status 0"));
    CHECK(has(what, "before returning a result"));
    REQUIRE(ends(bystander, deadline()));
    CHECK(bystander.result() == 2);
    auto next = pool->submit(add, 2, 3);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() == 5);
  }

  TEST_CASE("3.1 #4 task calls exit(3): WorkerCrashed naming exit status 3") {
    // Spawned workers are the pool's children; a fork server's are the server's.
    for (auto method : {cfx::StartMethod::spawn, cfx::StartMethod::forkserver}) {
      CAPTURE(cfx::test::name(method));
      NoLeaks leaks;
      Pool pool({.max_workers = 2, .start_method = method});
      auto bystander = pool->submit(add, 1, 1);
      auto f = pool->submit(crash, "exit3");
      REQUIRE(ends(f, deadline()));
      std::string what = error_of<cfx::WorkerCrashed>(f);
      INFO("message: " << what);
      CHECK(has(what, "crash"));
      CHECK(has(what, "status 3"));
      CHECK_FALSE(oom_hint(what));
      REQUIRE(ends(bystander, deadline()));
      CHECK(bystander.result() == 2);
      auto next = pool->submit(add, 2, 3);
      REQUIRE(ends(next, deadline()));
      CHECK(next.result() == 5);
    }
  }

  TEST_CASE("3.1 #7 worker killed mid-frame on a large argument: the parent does not block") {
    // The worker is stopped (SIGSTOP) so that the parent fills its input pipe with the first
    // part of the call frame and must wait; then it is killed: the parent sees EPIPE in the
    // middle of a frame. The argument is just above what a worker's bulk area takes
    // (bulk_area.hpp: frames of 1 to 128 MiB go through shared memory, not the pipe), as the
    // row's 100 MB would be, and is hundreds of pipe-fulls. The call never started, so it goes
    // back to the queue (API section 4) and runs on a fresh worker; the calls behind it too.
    NoLeaks leaks;
    Pool pool({.max_workers = 1});
    auto warm = pool->submit(get_pid);
    REQUIRE(ends(warm, deadline()));
    int worker = warm.result();
    int ours = our_end_of(worker, kReplyFd - 1);  // the call pipe: the worker reads fd 3
    REQUIRE_MESSAGE(ours >= 0, "no descriptor of this process is the worker's call pipe");
    int capacity = ::fcntl(ours, F_GETPIPE_SZ);
    REQUIRE(capacity > 0);
    REQUIRE(::kill(worker, SIGSTOP) == 0);

    constexpr std::size_t kBig = cfx::detail::kKeepBufferBytes + 1;
    auto big = pool->submit(string_size, std::string(kBig, 'a'));
    std::vector<cfx::Future<int>> behind;
    for (int i = 0; i < 3; ++i) behind.push_back(pool->submit(add, i, 1));
    // Polls the pipe's fill level (an external condition) until the parent has filled it.
    // Full: within a page of its capacity.
    int queued = 0;
    const int full_at = capacity - static_cast<int>(::sysconf(_SC_PAGESIZE));
    auto by = deadline();
    while (Clock::now() < by) {
      if (::ioctl(ours, FIONREAD, &queued) != 0) break;
      if (queued >= full_at) break;
      std::this_thread::yield();
    }
    bool full = queued >= full_at;
    ::kill(worker, SIGKILL);  // also ends the stop
    REQUIRE_MESSAGE(
        full, "the large call never filled the stopped worker's pipe (" << queued << " bytes)");
    REQUIRE(ends(big, deadline()));
    CHECK(error_of<std::exception>(big) == "<no exception>");
    CHECK(big.result() == kBig);
    REQUIRE(all_end(behind, deadline()));
    for (int i = 0; i < 3; ++i) CHECK(behind[static_cast<std::size_t>(i)].result() == i + 1);
    auto next = pool->submit(get_pid);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() != worker);
  }

  TEST_CASE("3.1 #8 worker dies mid-way through writing a large result: only that call fails") {
    // The task writes the start of a result frame claiming 64 MiB, 1 MiB of it, then SIGKILLs
    // its own worker. It is the first call of the pool's first worker: call id 1. The other
    // worker returns an 8 MiB result at the same time, which must arrive intact.
    NoLeaks leaks;
    Pool pool({.max_workers = 2});
    auto f = pool->submit(partial_result_then_die, std::uint64_t{1});
    auto bystander = pool->submit(big_string, std::size_t{8} << 20);
    REQUIRE(ends(f, deadline()));
    std::string what = error_of<cfx::Error>(f);
    INFO("message: " << what);
    // The worker's death (WorkerCrashed, SIGKILL) or the frame it left unfinished (a malformed
    // reply): either way this call, and only this call, fails.
    CHECK((has(what, "SIGKILL") || has(what, "malformed")));
    CHECK(has(what, "partial_result_then_die"));
    REQUIRE(ends(bystander, deadline()));
    CHECK(bystander.result() == std::string(std::size_t{8} << 20, 'r'));
    auto next = pool->submit(add, 4, 4);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() == 8);
  }

  TEST_CASE("3.1 #9 every worker killed at once: in-flight calls fail; queued calls still run") {
    NoLeaks leaks;
    Pool pool({.max_workers = 2});
    Gate gate;
    Signal started;
    auto a = pool->submit(cfx_test::notify_then_wait, started.path(), gate.path(), 1);
    auto b = pool->submit(cfx_test::notify_then_wait, started.path(), gate.path(), 2);
    REQUIRE(started.receive(2).size() == 2);
    std::vector<cfx::Future<int>> queued;
    for (int i = 0; i < 6; ++i) queued.push_back(pool->submit(add, i, 10));
    auto workers = pool->worker_pids();
    REQUIRE(workers.size() == 2);
    for (int pid : workers) ::kill(-pid, SIGKILL);  // each worker leads its own group
    for (int pid : workers) ::kill(pid, SIGKILL);
    auto by = deadline();
    REQUIRE(ends(a, by));
    REQUIRE(ends(b, by));
    for (auto* f : {&a, &b}) {
      std::string what = error_of<cfx::WorkerCrashed>(*f);
      INFO("message: " << what);
      CHECK(has(what, "SIGKILL"));
      CHECK(has(what, "notify_then_wait"));
    }
    REQUIRE(all_end(queued, by));
    for (int i = 0; i < 6; ++i) CHECK(queued[static_cast<std::size_t>(i)].result() == i + 10);
    auto next = pool->submit(get_pid);
    REQUIRE(ends(next, deadline()));
    CHECK(std::find(workers.begin(), workers.end(), next.result()) == workers.end());
  }

}  // TEST_SUITE
