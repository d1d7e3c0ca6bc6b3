// robust-pools.md section 3.4: lifecycle.
//
// Rows not repeated here, because existing tests assert them already:
// - #27 initializer throws: process/process_pool.cpp "a failing initializer breaks the pool;
//   every future ends".
// - #28, its segfault half: process/process_pool.cpp "an initializer that kills its worker breaks
//   the pool instead of respawning forever". (The hang half is below.)
// - #29 the worker cannot start: process/no_init.cpp and process/process_pool.cpp "a worker
//   launch that fails leaks no descriptor and breaks the pool saying why".
// - #32: conformance/shutdown.cpp "shutdown: work queued behind busy workers still runs".
// - #33: conformance/shutdown.cpp "shutdown: cancel_futures cancels the queued work and wakes
//   waiters".
// - #34: conformance/shutdown.cpp "shutdown: after a cancelled submit with one worker
//   (gh-94440)" and "shutdown: returns after a cancelled task was skipped (gh-94440)".
// - #35: conformance/executor.cpp "submit: cancel racing the start of its task".
// - #36: conformance/shutdown.cpp "shutdown: twice, in every combination, is harmless" and
//   "shutdown: from two threads at once, both wait".
// - #37: process/process_pool.cpp "shutdown(wait=true) from a done-callback is refused, not a
//   deadlock".
// - #38: conformance/shutdown.cpp "callbacks: done-callbacks that submit more work".
// - #41: conformance/shutdown.cpp "shutdown: racing submits from other threads".
// - #42: conformance/shutdown.cpp "shutdown: the destructor waits for queued work".
// - #30 and #31 (the parent's death and exit) need a program of their own: parent_death.cpp.
// - #40's exit() inside a callback would end this test program; not tested.
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <optional>

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

using namespace faults;

TEST_SUITE("faults 3.4 lifecycle") {
  TEST_CASE("3.4 #28 initializer hangs: the pool breaks in bounded time saying so") {
    // No task_timeout: the initializer must say "ready" within a start-up time, or its worker
    // is killed and the pool breaks with a message naming the initializer.
    NoLeaks leaks;
    Pool pool({.max_workers = 1, .initializer = cfx::task_call(hang)});
    std::optional<cfx::Future<int>> f;
    try {
      f = pool->submit(add, 1, 1);
    } catch (const cfx::BrokenProcessPool&) {
    }
    if (f) {
      REQUIRE_MESSAGE(pool.ends(*f, deadline()),
                      "a hanging initializer left the call pending for " << kBound.count() << " s");
      std::string what = error_of<cfx::BrokenProcessPool>(*f);
      INFO("message: " << what);
      CHECK(has(what, "initializer"));
      CHECK_FALSE(oom_hint(what));
    }
    CHECK_THROWS_AS((void)pool->submit(add, 1, 1), cfx::BrokenProcessPool);
  }

  TEST_CASE("3.4 #39 submit from a done-callback while a worker crashes: no deadlock") {
    for (auto mode : {cfx::OnWorkerCrash::respawn, cfx::OnWorkerCrash::break_pool}) {
      bool respawn = mode == cfx::OnWorkerCrash::respawn;
      CAPTURE(respawn);
      NoLeaks leaks;
      Pool pool({.max_workers = 2, .on_worker_crash = mode});
      // What the callback's submit gave: a future, or the message of what it threw.
      struct Outcome {
        std::optional<cfx::Future<int>> future;
        std::string threw;
      };
      auto outcome = std::make_shared<std::promise<Outcome>>();
      auto got = outcome->get_future();
      auto f = pool->submit(crash, "segv");
      f.add_done_callback([&pool, outcome](const cfx::Future<int>&) {
        Outcome o;
        try {
          o.future = pool->submit(add, 2, 3);
        } catch (const std::exception& e) {
          o.threw = std::string("<") + e.what() + ">";
        }
        outcome->set_value(std::move(o));
      });
      REQUIRE(got.wait_for(kBound) == std::future_status::ready);
      Outcome o = got.get();
      REQUIRE(ends(f, deadline()));
      if (respawn) {
        CHECK(fails_with<cfx::WorkerCrashed>(f));
        REQUIRE_MESSAGE(o.future, "the callback's submit threw " << o.threw);
        REQUIRE(ends(*o.future, deadline()));
        CHECK(o.future->result() == 5);
      } else {
        CHECK(fails_with<cfx::BrokenProcessPool>(f));
        if (o.future) {
          REQUIRE(ends(*o.future, deadline()));
          CHECK(fails_with<cfx::BrokenProcessPool>(*o.future));
        } else {
          CHECK_THROWS_AS((void)pool->submit(add, 1, 1), cfx::BrokenProcessPool);
        }
      }
    }
  }

  TEST_CASE("3.4 #40 done-callbacks that throw on the pool's thread: swallowed; the pool works") {
    NoLeaks leaks;
    Pool pool({.max_workers = 2});
    constexpr int kCalls = 20;
    auto later_callbacks = std::make_shared<std::atomic<int>>(0);
    auto all_ran = std::make_shared<std::promise<void>>();
    std::vector<cfx::Future<int>> fs;
    for (int i = 0; i < kCalls; ++i) {
      auto f = pool->submit(add, i, 1);
      if (i % 2)
        f.add_done_callback([](const cfx::Future<int>&) { throw std::runtime_error("boom"); });
      else
        f.add_done_callback([](const cfx::Future<int>&) { throw 42; });
      // Runs after the throwing one: it must run all the same.
      f.add_done_callback([later_callbacks, all_ran](const cfx::Future<int>&) {
        if (++*later_callbacks == kCalls) all_ran->set_value();
      });
      fs.push_back(f);
    }
    REQUIRE(all_end(fs, deadline()));
    for (int i = 0; i < kCalls; ++i) CHECK(fs[static_cast<std::size_t>(i)].result() == i + 1);
    CHECK(all_ran->get_future().wait_for(kBound) == std::future_status::ready);
    auto next = pool->submit(add, 40, 2);
    REQUIRE(ends(next, deadline()));
    CHECK(next.result() == 42);
  }

}  // TEST_SUITE
