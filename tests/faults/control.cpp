// API section 7 on the process pool: Future::interrupt(), CallOptions timeouts,
// terminate_workers() / kill_workers(), max_retries (robust-pools.md 3.1 #10) and
// worker_memory_limit (3.5 #47); and 3.3 #25.
//
// Not tested here: the std::stop_token of thread-pool tasks (thread pool only).
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

using namespace faults;
using cfx_test::Gate;
using cfx_test::Signal;

/// pool.terminate_workers() or pool.kill_workers().
void stop_workers(cfx::ProcessPoolExecutor& pool, bool terminate) {
  if (terminate)
    pool.terminate_workers();
  else
    pool.kill_workers();
}

namespace {

/// Appends a line to `log`, then aborts: a task that kills every worker it runs on.
int poison(std::string log) {
  append_line(log, "ran");
  std::abort();
}
CFX_TASK(poison);

/// Kills its worker the first time (it leaves `marker` behind), returns 7 afterwards.
int crash_once(std::string marker) {
  if (::access(marker.c_str(), F_OK) != 0) {
    append_line(marker, "crashed");
    std::abort();
  }
  return 7;
}
CFX_TASK(crash_once);

/// Touches `bytes` of fresh memory, notifies, waits at the gate, frees it.
int hog_then_wait(std::size_t bytes, std::string signal_path, std::string gate_path) {
  auto* p = static_cast<char*>(std::malloc(bytes));
  if (!p) return -1;
  std::memset(p, 1, bytes);
  cfx_test::notify(signal_path, 1);
  cfx_test::wait_gate(gate_path);
  int sum = p[bytes / 2];
  std::free(p);
  return sum;
}
CFX_TASK(hog_then_wait);

/// Leaks `bytes` of touched memory in its worker; returns the worker's pid.
int leak(std::size_t bytes) {
  // Kept where the compiler cannot see it unused: else malloc and memset are elided.
  static std::vector<char*> kept;
  auto* p = static_cast<char*>(std::malloc(bytes));
  if (p) std::memset(p, 1, bytes);
  kept.push_back(p);
  return ::getpid();
}
CFX_TASK(leak);

}  // namespace

TEST_SUITE("faults API 7 control") {
  TEST_CASE("API 7: interrupt() of a running task kills its worker and descendants: cancelled") {
    NoLeaks leaks;
    Pool pool({.max_workers = 1});
    TempDir dir;
    Gate gate;
    Signal started;
    auto pid_file = dir.path("pids");
    auto finished = pool->submit(add, 1, 1);
    REQUIRE(ends(finished, deadline()));
    CHECK_FALSE(finished.interrupt());  // done: false

    auto f = pool->submit(descendants_then_wait, pid_file, started.path(), gate.path());
    auto pending = pool->submit(add, 2, 2);  // behind it on the only worker
    REQUIRE(started.receive(1).size() == 1);
    CHECK(pending.interrupt());  // not started: as cancel()
    CHECK(pending.cancelled());
    auto pids = read_pids(pid_file);  // worker, sleep, forked copy
    REQUIRE(pids.size() == 3);
    CHECK(f.interrupt());
    auto since = Clock::now();
    REQUIRE(ends(f, deadline()));
    CHECK(f.cancelled());
    CHECK_THROWS_AS((void)f.result(), cfx::CancelledError);
    check_gone(pids, since);
    auto next = pool->submit(get_pid);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() != pids[0]);
  }

  TEST_CASE("API 7: a CallOptions timeout kills that call only with a TimeoutError saying so") {
    NoLeaks leaks;
    Pool pool({.max_workers = 2});
    TempDir dir;
    Gate gate;
    Signal started;
    auto pid_file = dir.path("pids");
    constexpr auto kTimeout = 300ms;
    auto submitted = Clock::now();
    auto f = pool->submit(cfx::CallOptions{.timeout = kTimeout}, report_then_spin, pid_file,
                          started.path());
    REQUIRE(started.receive(1).size() == 1);
    // A call without options, running (or queued) while the timed one times out: it must
    // not be cut short.
    auto untimed = pool->submit(cfx_test::notify_then_wait, started.path(), gate.path(), 3);
    REQUIRE_MESSAGE(pool.ends(f, deadline()),
                    "the call ran on past its CallOptions timeout for " << kBound.count() << " s");
    auto since = Clock::now();
    CHECK(since - submitted >= kTimeout);
    std::string what = error_of<cfx::TimeoutError>(f);
    INFO("message: " << what);
    CHECK(has(what, "timeout"));
    CHECK_FALSE(oom_hint(what));
    check_gone(read_pids(pid_file), since);
    CHECK_FALSE(untimed.done());
    gate.open();
    REQUIRE(ends(untimed, deadline()));
    CHECK(untimed.result() == 3);
    auto next = pool->submit(add, 2, 3);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() == 5);
  }

  TEST_CASE("3.3 #25 kill_workers()/terminate_workers(): futures end cancelled; nothing left") {
    for (bool terminate : {false, true}) {
      CAPTURE(terminate);
      NoLeaks leaks;
      Pool pool({.max_workers = 2});
      TempDir dir;
      Signal started;
      auto pid_file = dir.path("pids");
      // Two calls that never return, with no timeout anywhere, and calls queued behind them.
      std::vector<cfx::Future<int>> running, queued;
      for (int i = 0; i < 2; ++i)
        running.push_back(pool->submit(descendants_then_spin, pid_file, started.path()));
      REQUIRE(started.receive(2).size() == 2);
      for (int i = 0; i < 5; ++i) queued.push_back(pool->submit(add, i, i));
      auto workers = pool->worker_pids();
      auto pids = read_pids(pid_file);
      REQUIRE(pids.size() == 6);
      auto since = Clock::now();
      stop_workers(*pool, terminate);
      // It returns when every worker is reaped.
      auto children = proc_test::child_pids();
      for (int w : workers) CHECK(std::find(children.begin(), children.end(), w) == children.end());
      CHECK(unfinished(running) == 0);
      CHECK(unfinished(queued) == 0);
      for (auto& f : running) CHECK(f.cancelled());
      for (auto& f : queued) CHECK(f.cancelled());
      check_gone(pids, since);
      CHECK_THROWS_AS((void)pool->submit(add, 1, 1), cfx::Error);
      CHECK(pool.destroy() < 1s);  // at once
    }
  }

  TEST_CASE("API 7: kill_workers() stops a pool whose initializer never returns") {
    NoLeaks leaks;
    Pool pool({.max_workers = 2, .initializer = cfx::task_call(hang)});
    std::vector<cfx::Future<int>> fs;
    try {
      for (int i = 0; i < 3; ++i) fs.push_back(pool->submit(add, i, i));
    } catch (const cfx::BrokenProcessPool&) {
      // a start-up limit on the initializer broke the pool first: fine too
    }
    stop_workers(*pool, false);
    CHECK(unfinished(fs) == 0);
    CHECK(pool.destroy() < 1s);
  }

  TEST_CASE("3.1 #10 poison task with max_retries: WorkerCrashed counting the attempts") {
    cfx::ProcessPoolOptions options{.max_workers = 2, .max_retries = 2};
    NoLeaks leaks;
    Pool pool(options);
    TempDir dir;
    auto log = dir.path("poison");
    auto poisoned = pool->submit(poison, log);
    auto flaky = pool->submit(crash_once, dir.path("marker"));
    std::vector<cfx::Future<int>> others;
    for (int i = 0; i < 10; ++i) others.push_back(pool->submit(add, i, 1));
    auto by = deadline();
    REQUIRE(ends(poisoned, by));
    REQUIRE(ends(flaky, by));
    REQUIRE(all_end(others, by));
    std::string what = error_of<cfx::WorkerCrashed>(poisoned);
    INFO("message: " << what);
    CHECK(has(what, "poison"));
    CHECK(has(what, "3"));  // 1 run + 2 retries
    CHECK(has(what, "attempt"));
    std::size_t runs = 0;
    if (FILE* f = std::fopen(log.c_str(), "r")) {
      for (int c; (c = std::fgetc(f)) != EOF;) runs += c == '\n';
      std::fclose(f);
    }
    CHECK(runs == 3);
    CHECK(error_of<std::exception>(flaky) == "<no exception>");
    if (!flaky.exception()) CHECK(flaky.result() == 7);
    for (int i = 0; i < 10; ++i) CHECK(others[static_cast<std::size_t>(i)].result() == i + 1);
  }

  TEST_CASE("3.5 #47 worker_memory_limit: a task above it is killed naming the limit; no loss") {
    constexpr std::size_t kLimit = 256u << 20;
    cfx::ProcessPoolOptions options{.max_workers = 1, .worker_memory_limit = kLimit};
    NoLeaks leaks;
    Pool pool(options);
    Gate gate;
    Signal started;
    // Running above the limit: killed, whatever the task does next.
    // (Whether it gets to say it started is a race with the pool's memory check.)
    auto hog = pool->submit(hog_then_wait, 2 * kLimit, started.path(), gate.path());
    bool ended = ends(hog, deadline());
    if (!ended) gate.open();
    REQUIRE_MESSAGE(ended,
                    "a task at twice the memory limit ran on for " << kBound.count() << " s");
    std::string what = error_of<cfx::WorkerCrashed>(hog);
    INFO("message: " << what);
    CHECK(has(what, "hog_then_wait"));
    CHECK((has(what, "worker_memory_limit") || has(what, "memory limit")));
    CHECK_FALSE(oom_hint(what));

    // A worker left above the limit by its task is replaced; nothing submitted is lost. The
    // leaking task itself may be caught above the limit while it still runs: then it is killed.
    auto leaker = pool->submit(leak, kLimit + (kLimit / 2));
    std::vector<cfx::Future<int>> behind;
    for (int i = 0; i < 5; ++i) behind.push_back(pool->submit(add, i, 3));
    auto after = pool->submit(get_pid);
    auto by = deadline();
    REQUIRE(ends(leaker, by));
    REQUIRE(all_end(behind, by));
    REQUIRE(ends(after, by));
    if (leaker.exception()) {
      std::string leak_what = error_of<cfx::WorkerCrashed>(leaker);
      INFO("the leaking task failed with: " << leak_what);
      CHECK((has(leak_what, "worker_memory_limit") || has(leak_what, "memory limit")));
    } else {
      CHECK(after.result() != leaker.result());
    }
    for (int i = 0; i < 5; ++i) CHECK(behind[static_cast<std::size_t>(i)].result() == i + 3);
  }

}  // TEST_SUITE
