// robust-pools.md section 3.3: hangs and timeouts.
//
// Rows not repeated here, because existing tests assert them already:
// - #24 a task blocked in the kernel, with task_timeout: process/process_pool.cpp "task_timeout
//   kills a task that runs too long, and only that task" (the task waits in flock()).
// - #26 result(timeout) expires and the task keeps running: conformance/executor.cpp "submit: a
//   future is running while its task runs" (both backends).
// - #25 kill_workers()/terminate_workers() need API section 7: control.cpp.
#include <doctest/doctest.h>

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

using namespace faults;
using cfx_test::Signal;

namespace {

/// Checks a task_timeout failure: TimeoutError naming the timeout, no out-of-memory hint.
void check_timed_out(const cfx::Future<int>& f) {
  std::string what = error_of<cfx::TimeoutError>(f);
  INFO("message: " << what);
  CHECK(has(what, "timeout"));
  CHECK_FALSE(oom_hint(what));
}

}  // namespace

TEST_SUITE("faults 3.3 hangs") {
  TEST_CASE("3.3 #21 task loops forever with task_timeout: TimeoutError; worker replaced") {
    NoLeaks leaks;
    constexpr auto kTimeout = 500ms;
    Pool pool({.max_workers = 2, .task_timeout = kTimeout});
    TempDir dir;
    Signal started;
    auto pid_file = dir.path("pids");
    auto submitted = Clock::now();
    auto f = pool->submit(report_then_spin, pid_file, started.path());
    std::vector<cfx::Future<int>> others;
    for (int i = 0; i < 4; ++i) others.push_back(pool->submit(add, i, i));
    REQUIRE(started.receive(1).size() == 1);
    REQUIRE(ends(f, deadline()));
    auto since = Clock::now();
    CHECK(since - submitted >= kTimeout);  // counted from the task's start, after the submit
    check_timed_out(f);
    auto pids = read_pids(pid_file);
    REQUIRE(pids.size() == 1);
    check_gone(pids, since);
    REQUIRE(all_end(others, deadline()));
    for (int i = 0; i < 4; ++i) CHECK(others[static_cast<std::size_t>(i)].result() == 2 * i);
    auto next = pool->submit(get_pid);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() != pids[0]);
  }

  TEST_CASE("3.3 #22 task ignores SIGTERM then times out: still TimeoutError") {
    NoLeaks leaks;
    Pool pool({.max_workers = 1, .task_timeout = 300ms});
    TempDir dir;
    Signal started;
    auto pid_file = dir.path("pids");
    auto f = pool->submit(ignore_sigterm_then_spin, pid_file, started.path());
    REQUIRE(started.receive(1).size() == 1);
    REQUIRE(ends(f, deadline()));
    auto since = Clock::now();
    check_timed_out(f);
    check_gone(read_pids(pid_file), since);
    auto next = pool->submit(add, 2, 2);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() == 4);
  }

  TEST_CASE("3.3 #23 task forks grandchildren then times out: no descendant survives") {
    NoLeaks leaks;
    Pool pool({.max_workers = 1, .task_timeout = 500ms});
    TempDir dir;
    Signal started;
    auto pid_file = dir.path("pids");
    auto f = pool->submit(descendants_then_spin, pid_file, started.path());
    REQUIRE(started.receive(1).size() == 1);
    REQUIRE(ends(f, deadline()));
    auto since = Clock::now();
    check_timed_out(f);
    auto pids = read_pids(pid_file);  // worker, sleep, forked copy holding fds 3 and 4
    REQUIRE(pids.size() == 3);
    check_gone(pids, since);
    auto next = pool->submit(add, 2, 3);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() == 5);
  }

}  // TEST_SUITE
