// Executor::shutdown and the destructor, concurrency around them, and stress (CPython
// test_shutdown.py, plus the lessons listed in STYLE.md).
#include <algorithm>
#include <atomic>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends.hpp"

using namespace conf;

namespace {

constexpr const char* kAfterShutdown = "cannot schedule new futures after shutdown";

bool all_done(const std::vector<cfx::Future<int>>& fs) {
  return std::all_of(fs.begin(), fs.end(), [](const cfx::Future<int>& f) { return f.done(); });
}

}  // namespace

// test_run_after_shutdown [CORE]
TEST_CASE_TEMPLATE("shutdown: submit and map after shutdown throw cfx::Error", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  CHECK(ex->submit(mul, 2, 5).result() == 10);
  ex->shutdown();
  CHECK_THROWS_WITH_AS((void)ex->submit(ipow, 2, 5), kAfterShutdown, cfx::Error);
  std::vector<int> in{1, 2, 3};
  CHECK_THROWS_WITH_AS(ex->map(inc, in), kAfterShutdown, cfx::Error);
  CHECK_THROWS_WITH_AS(ex->map(inc, in, {.buffersize = 1}), kAfterShutdown, cfx::Error);
  std::vector<std::tuple<int, int>> pairs{{1, 2}};
  CHECK_THROWS_WITH_AS(ex->starmap(mul, pairs), kAfterShutdown, cfx::Error);
  CHECK_THROWS_WITH_AS(ex->map_unordered(inc, in), kAfterShutdown, cfx::Error);
}

TEST_CASE_TEMPLATE("shutdown: twice, in every combination, is harmless", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  auto f = ex->submit(mul, 3, 3);
  CHECK_NOTHROW(ex->shutdown(false));
  CHECK_NOTHROW(ex->shutdown(true));
  CHECK_NOTHROW(ex->shutdown(true, true));
  CHECK_NOTHROW(ex->shutdown(false, true));
  CHECK(f.result() == 9);
  CHECK_THROWS_AS((void)ex->submit(mul, 1, 1), cfx::Error);
}

// test_hang_issue12364 [CORE]: everything queued at shutdown still runs.
TEST_CASE_TEMPLATE("shutdown: work queued behind busy workers still runs", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  auto fs = occupy(*ex, 2, gate);
  for (int i = 0; i < 50; ++i) fs.push_back(ex->submit(mul, i, 2));
  bool done_when_returned = false;
  std::thread stopper([&] {
    ex->shutdown(true);
    done_when_returned = all_done(fs);
  });
  gate.open();
  stopper.join();
  CHECK(done_when_returned);
  for (std::size_t i = 0; i < 2; ++i) CHECK(fs[i].result() == static_cast<int>(i));
  for (int i = 0; i < 50; ++i) CHECK(fs[static_cast<std::size_t>(i) + 2].result() == 2 * i);
}

// test_shutdown_race_issue12456, test_context_manager_shutdown
TEST_CASE_TEMPLATE("shutdown: right after map, and by the destructor", Backend, CFX_BACKENDS) {
  std::vector<std::string> got;
  {
    auto ex = Backend::make(2);
    std::vector<int> in(3, 2);
    auto r = ex->map(to_str, in);
    ex->shutdown();
    got = r.to_vector();
  }
  CHECK(got == std::vector<std::string>{"2", "2", "2"});
  std::vector<int> abs;
  {
    auto ex = Backend::make(5);
    std::vector<std::tuple<int, int>> in;
    for (int i = -5; i < 5; ++i) in.emplace_back(i, i < 0 ? -1 : 1);
    abs = ex->starmap(mul, in).to_vector();
  }
  CHECK(abs == std::vector<int>{5, 4, 3, 2, 1, 0, 1, 2, 3, 4});
}

// test_cancel_futures [CORE], and cfx's fix of cpython#136655: the cancelled futures are done
// at once for wait and as_completed.
TEST_CASE_TEMPLATE("shutdown: cancel_futures cancels the queued work and wakes waiters", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  auto running = occupy(*ex, 2, gate);
  std::vector<cfx::Future<int>> queued;
  for (int i = 0; i < 50; ++i) queued.push_back(ex->submit(mul, i, 3));

  // A waiter already blocked on the queued futures must be woken by their cancellation.
  std::promise<std::size_t> woke;
  auto woke_with = woke.get_future();
  std::thread waiter([&] {
    auto [done, not_done] = cfx::wait(queued, kLong, cfx::ReturnWhen::all_completed);
    woke.set_value(done.size());
  });
  ex->shutdown(false, true);

  std::vector<cfx::Future<int>> cancelled, others;
  for (auto& f : queued) (f.cancelled() ? cancelled : others).push_back(f);
  if constexpr (Backend::in_process) {
    CHECK(cancelled.size() == 50);
  } else {
    CHECK(cancelled.size() >= 1);  // a process pool may have handed a few out already
    CHECK(queued.back().cancelled());
  }
  // All cancelled ones are done now: as_completed with no time to wait yields them all.
  std::size_t n = 0;
  CHECK_NOTHROW([&] {
    for (cfx::Future<int>& f : cfx::as_completed(cancelled, 0s)) {
      CHECK_THROWS_AS(f.result(), cfx::CancelledError);
      ++n;
    }
  }());
  CHECK(n == cancelled.size());
  auto r = cfx::wait(cancelled, 0s);
  CHECK(r.done.size() == cancelled.size());
  if constexpr (Backend::in_process) {
    // Nothing blocks the waiter any more.
    auto start = std::chrono::steady_clock::now();
    REQUIRE(woke_with.wait_for(kLong) == std::future_status::ready);
    CHECK(woke_with.get() == 50);
    CHECK(seconds_since(start) < kLong.count());
  }
  // The running tasks are unaffected and finish once released.
  for (auto& f : running) CHECK_FALSE(f.done());
  gate.open();
  waiter.join();
  ex->shutdown(true);
  for (std::size_t i = 0; i < running.size(); ++i)
    CHECK(running[i].result() == static_cast<int>(i));
  for (auto& f : others) CHECK(f.exception() == nullptr);
}

// test_hang_gh94440 [CORE], as CPython writes it: the cancel races the idle worker taking
// the task.
TEST_CASE_TEMPLATE("shutdown: after a cancelled submit with one worker (gh-94440)", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  CHECK(ex->submit(mul, 1, 1).result() == 1);
  auto f = ex->submit(mul, 2, 2);
  bool cancelled = f.cancel();
  CHECK(returns_within(
      kLong, [&] { ex->shutdown(true); }, [] {}));
  REQUIRE(f.done());
  if (cancelled)
    CHECK(f.cancelled());
  else
    CHECK(f.result() == 4);
}

// gh-94440 without the race: the one worker takes the cancelled task only after the cancel.
TEST_CASE_TEMPLATE("shutdown: returns after a cancelled task was skipped (gh-94440)", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  CHECK(ex->submit(mul, 1, 1).result() == 1);
  Gate gate;
  auto blocker = occupy(*ex, 1, gate);
  auto f = ex->submit(mul, 2, 2);
  bool cancelled = f.cancel();
  // A process pool may already have handed f to its worker, which makes it uncancellable.
  if constexpr (Backend::in_process) CHECK(cancelled);
  gate.open();
  CHECK(returns_within(
      kLong, [&] { ex->shutdown(true); }, [] {}));
  CHECK(blocker[0].result() == 0);
  REQUIRE(f.done());
  CHECK(f.cancelled() == cancelled);
  if (!cancelled) CHECK(f.result() == 4);
}

TEST_CASE_TEMPLATE("shutdown: wait=false returns at once and the pending work still runs", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  Gate gate;
  auto fs = occupy(*ex, 1, gate);
  for (int i = 0; i < 10; ++i) fs.push_back(ex->submit(mul, i, i));
  // The worker is blocked at the gate: if shutdown waited, it would not return before the
  // gate opens (returns_within opens it then, and the check fails).
  CHECK(returns_within(
      kLong, [&] { ex->shutdown(false); }, [&] { gate.open(); }));
  for (std::size_t i = 1; i < fs.size(); ++i) CHECK_FALSE(fs[i].done());
  gate.open();
  CHECK(fs[0].result() == 0);
  for (int i = 0; i < 10; ++i) CHECK(fs[static_cast<std::size_t>(i) + 1].result() == i * i);
}

TEST_CASE_TEMPLATE("shutdown: wait=true with cancel_futures waits for the running tasks", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  auto running = occupy(*ex, 2, gate);
  std::vector<cfx::Future<int>> queued;
  for (int i = 0; i < 20; ++i) queued.push_back(ex->submit(mul, i, 1));
  bool running_done_at_return = false;
  std::thread stopper([&] {
    ex->shutdown(true, true);
    running_done_at_return = all_done(running) && all_done(queued);
  });
  gate.open();
  stopper.join();
  CHECK(running_done_at_return);
  CHECK(running[0].result() == 0);
  CHECK(running[1].result() == 1);
}

TEST_CASE_TEMPLATE("shutdown: from two threads at once, both wait", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  auto fs = occupy(*ex, 2, gate);
  for (int i = 0; i < 30; ++i) fs.push_back(ex->submit(mul, i, 5));
  std::latch go(3);
  bool done_a = false, done_b = false;
  std::thread a([&] {
    go.arrive_and_wait();
    ex->shutdown(true);
    done_a = all_done(fs);
  });
  std::thread b([&] {
    go.arrive_and_wait();
    ex->shutdown(true);
    done_b = all_done(fs);
  });
  go.arrive_and_wait();
  gate.open();
  a.join();
  b.join();
  CHECK(done_a);
  CHECK(done_b);
  for (int i = 0; i < 30; ++i) CHECK(fs[static_cast<std::size_t>(i) + 2].result() == 5 * i);
}

// Each submit racing a shutdown either returns a future that ends or throws cfx::Error; once
// one has thrown, every later one does.
TEST_CASE_TEMPLATE("shutdown: racing submits from other threads", Backend, CFX_BACKENDS) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200;
  for (int round = 0; round < 5; ++round) {
    auto ex = Backend::make(2);
    std::latch go(kThreads + 1);
    std::vector<std::vector<cfx::Future<int>>> accepted(kThreads);
    std::vector<int> rejected(kThreads, 0);
    std::vector<int> accepted_after_reject(kThreads, 0);
    std::vector<std::string> wrong_message(kThreads);
    std::vector<std::thread> submitters;
    for (int t = 0; t < kThreads; ++t)
      submitters.emplace_back([&, t] {
        go.arrive_and_wait();
        for (int i = 0; i < kPerThread; ++i) {
          try {
            auto f = ex->submit(mul, t, i);
            if (rejected[t]) ++accepted_after_reject[t];
            accepted[t].push_back(f);
          } catch (const cfx::Error& e) {
            ++rejected[t];
            if (std::string(e.what()) != kAfterShutdown) wrong_message[t] = e.what();
          }
        }
      });
    go.arrive_and_wait();
    ex->shutdown(true);
    for (auto& s : submitters) s.join();
    for (int t = 0; t < kThreads; ++t) {
      CHECK(accepted[t].size() + static_cast<std::size_t>(rejected[t]) == kPerThread);
      CHECK(accepted_after_reject[t] == 0);
      CHECK(wrong_message[t] == "");
      // Accepted before shutdown took effect, so shutdown(wait=true) waited for it.
      for (std::size_t i = 0; i < accepted[t].size(); ++i) {
        REQUIRE(accepted[t][i].done());
        CHECK(accepted[t][i].result() == t * static_cast<int>(i));
      }
    }
  }
}

TEST_CASE_TEMPLATE("shutdown: no future is left pending", Backend, CFX_BACKENDS) {
  for (bool cancel : {false, true}) {
    CAPTURE(cancel);
    std::vector<cfx::Future<int>> fs;
    {
      auto ex = Backend::make(2);
      Gate gate;
      fs = occupy(*ex, 2, gate);
      for (int i = 0; i < 40; ++i) fs.push_back(ex->submit(mul, i, 7));
      ex->shutdown(false, cancel);
      gate.open();
    }  // the destructor waits
    for (std::size_t i = 0; i < fs.size(); ++i) {
      REQUIRE(fs[i].done());
      if (!fs[i].cancelled())
        CHECK(fs[i].result() == (i < 2 ? static_cast<int>(i) : 7 * static_cast<int>(i - 2)));
    }
    if (!cancel)
      for (auto& f : fs) CHECK_FALSE(f.cancelled());
  }
}

TEST_CASE_TEMPLATE("shutdown: the destructor waits for queued work", Backend, CFX_BACKENDS) {
  std::vector<cfx::Future<int>> fs;
  {
    auto ex = Backend::make(1);
    Gate gate;
    fs = occupy(*ex, 1, gate);
    for (int i = 0; i < 20; ++i) fs.push_back(ex->submit(mul, i, 11));
    for (std::size_t i = 1; i < fs.size(); ++i) CHECK_FALSE(fs[i].done());
  }  // the gate opens first (declared after the executor), then ~Executor waits
  REQUIRE(all_done(fs));
  CHECK(fs[0].result() == 0);
  for (int i = 0; i < 20; ++i) {
    CHECK_FALSE(fs[static_cast<std::size_t>(i) + 1].cancelled());
    CHECK(fs[static_cast<std::size_t>(i) + 1].result() == 11 * i);
  }
}

TEST_CASE_TEMPLATE("stress: rounds of construct, submit, destroy", Backend, CFX_BACKENDS) {
  // Process pools start processes: fewer rounds keep the suite fast.
  constexpr int kRounds = Backend::in_process ? 100 : 20;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<cfx::Future<int>> fs;
    {
      auto ex = Backend::make(static_cast<std::size_t>(1 + round % 3));
      for (int i = 0; i < 10; ++i) fs.push_back(ex->submit(mul, round, i));
    }
    for (int i = 0; i < 10; ++i) {
      REQUIRE(fs[static_cast<std::size_t>(i)].done());
      CHECK(fs[static_cast<std::size_t>(i)].result() == round * i);
    }
  }
  // Destroyed without any submit, and right after construction.
  for (int round = 0; round < 20; ++round) CHECK_NOTHROW(Backend::make(2));
}

TEST_CASE_TEMPLATE("stress: 8 threads submitting at once", Backend, CFX_BACKENDS) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 250;
  auto ex = Backend::make(4);
  std::latch go(kThreads);
  std::vector<std::vector<cfx::Future<int>>> fs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      go.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i) fs[t].push_back(ex->submit(mul, t + 1, i));
    });
  for (auto& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    REQUIRE(fs[t].size() == kPerThread);
    for (int i = 0; i < kPerThread; ++i)
      CHECK(fs[t][static_cast<std::size_t>(i)].result() == (t + 1) * i);
  }
}

TEST_CASE_TEMPLATE("callbacks: done-callbacks that submit more work", Backend, CFX_BACKENDS) {
  constexpr int kChains = 4;
  constexpr int kLength = 25;
  // Declared before the executor: the last callback of a chain may still be inside
  // set_result when the test sees the result, so the promises must outlive the executor
  // (whose destructor waits for its threads).
  std::vector<cfx::Promise<int>> ends(kChains);
  std::vector<cfx::Future<int>> results;
  for (auto& p : ends) results.push_back(p.get_future());
  std::function<void(int, const cfx::Future<int>&)> step;
  auto ex = Backend::make(2);
  // step(chain) continues the chain: each link is inc() of the previous link's value.
  step = [&](int chain, const cfx::Future<int>& f) {
    try {
      int v = f.result();
      if (v == kLength) {
        ends[static_cast<std::size_t>(chain)].set_result(v);
        return;
      }
      ex->submit(inc, v).add_done_callback(
          [&step, chain](const cfx::Future<int>& g) { step(chain, g); });
    } catch (...) {
      ends[static_cast<std::size_t>(chain)].set_exception(std::current_exception());
    }
  };
  for (int c = 0; c < kChains; ++c)
    ex->submit(inc, 0).add_done_callback([&step, c](const cfx::Future<int>& g) { step(c, g); });
  for (auto& r : results) CHECK(r.result(kLong) == kLength);
}

TEST_CASE_TEMPLATE("callbacks: run once when an executor future completes", Backend, CFX_BACKENDS) {
  std::promise<int> seen;  // outlives the executor, whose thread sets it
  auto ex = Backend::make(2);
  Gate gate;
  Signal started;
  auto f = ex->submit(cfx_test::notify_then_wait, started.path(), gate.path(), 8);
  REQUIRE(started.receive(1).size() == 1);
  std::atomic<int> calls{0};
  f.add_done_callback([&](const cfx::Future<int>& g) {
    ++calls;
    seen.set_value(g.result());
  });
  CHECK(calls == 0);
  gate.open();
  CHECK(seen.get_future().get() == 8);
  ex->shutdown(true);
  CHECK(calls == 1);
  // Added after completion: runs at once, in this thread.
  int late = 0;
  f.add_done_callback([&](const cfx::Future<int>& g) { late = g.result(); });
  CHECK(late == 8);
}
