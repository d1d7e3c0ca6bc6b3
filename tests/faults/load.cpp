// robust-pools.md section 3.5: load, pipes and recycling.
//
// Rows not repeated here, because existing tests assert them already:
// - #43 a flood of tiny submits: process/process_pool.cpp "100,000 tiny tasks: none lost" (more
//   than the 2 x 65536 wake-ups that filled CPython's pipe).
// - #48 submits from many threads: conformance/shutdown.cpp "stress: 8 threads submitting at
//   once" (both backends, under TSan in CI).
// - #51 spawning fails: process/process_pool.cpp "a worker launch that fails leaks no descriptor
//   and breaks the pool saying why" (no free descriptors; the errno is named). A low
//   RLIMIT_NPROC is not tested: root, as in CI containers, is exempt from it.
// - #47 needs worker_memory_limit: control.cpp. #45 and #49, #50 need a program of their own:
//   parent_death.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

using namespace faults;

TEST_SUITE("faults 3.5 load") {
  TEST_CASE("3.5 #44 slow consumer: large results drain while nobody calls result()") {
    NoLeaks leaks;
    Pool pool({.max_workers = 2});
    constexpr std::size_t kSize = 4u << 20;
    std::vector<cfx::Future<std::string>> fs;
    for (int i = 0; i < 16; ++i) fs.push_back(pool->submit(big_string, kSize));
    // Waiting is not consuming: the results must arrive without anyone reading them.
    auto [done, not_done] = cfx::wait(fs, kBound, cfx::ReturnWhen::all_completed);
    CHECK(not_done.empty());
    CHECK(unfinished(fs) == 0);
    for (auto& f : fs)
      if (f.done()) CHECK(f.result().size() == kSize);
  }

  TEST_CASE("3.5 #46 max_tasks_per_child 1 and 2 with a backlog: all results; <= max_workers") {
    struct Case {
      std::size_t per_child, workers, tasks;
    };
    for (auto c : {Case{1, 2, 6}, Case{2, 2, 8}}) {  // CPython's gh-115634 cases
      CAPTURE(c.per_child);
      NoLeaks leaks;
      Pool pool({.max_workers = c.workers, .max_tasks_per_child = c.per_child});
      std::vector<cfx::Future<int>> fs;
      for (std::size_t i = 0; i < c.tasks; ++i) fs.push_back(pool->submit(get_pid));
      // Samples the worker count until every call has ended (polling, with a deadline).
      std::size_t most = 0;
      auto by = deadline();
      while (unfinished(fs) > 0 && Clock::now() < by) {
        most = std::max(most, pool->worker_pids().size());
        (void)fs.back().wait_for(1ms);
      }
      REQUIRE(all_end(fs, by));
      CHECK(most <= c.workers);
      std::map<int, std::size_t> calls_per_pid;
      for (auto& f : fs) ++calls_per_pid[f.result()];
      for (auto [pid, calls] : calls_per_pid) {
        CAPTURE(pid);
        CHECK(calls <= c.per_child);
      }
    }
  }

  TEST_CASE("3.5 #52 fork start method while other threads run: works or is refused; no hang") {
    CHECK(cfx::ProcessPoolOptions{}.start_method == cfx::StartMethod::spawn);
    NoLeaks leaks;
    // Threads that hold the allocator's and a mutex's locks as often as they can, as the
    // threads of a real program would when the pool forks.
    std::atomic<bool> stop{false};
    std::mutex m;
    std::vector<std::thread> busy;
    for (int i = 0; i < 3; ++i)
      busy.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed)) {
          std::lock_guard lock(m);
          std::vector<std::string> v(64, std::string(100, 'x'));
        }
      });
    std::string refused;
    std::vector<cfx::Future<int>> fs;
    {
      std::optional<Pool> pool;
      try {
        pool.emplace(
            cfx::ProcessPoolOptions{.max_workers = 2, .start_method = cfx::StartMethod::fork});
        for (int i = 0; i < 40; ++i) fs.push_back((*pool)->submit(add, i, 2));
      } catch (const cfx::Error& e) {
        refused = e.what();  // refusing to fork from a threaded program is allowed too
      }
      bool all = all_end(fs, deadline());
      stop = true;
      for (auto& t : busy) t.join();
      INFO("refused with: " << refused);
      REQUIRE(all);
      for (std::size_t i = 0; i < fs.size(); ++i) CHECK(fs[i].result() == static_cast<int>(i) + 2);
      if (refused.empty()) CHECK(fs.size() == 40);
    }
  }

}  // TEST_SUITE
