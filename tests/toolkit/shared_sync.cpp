// include/cfx/detail/shared_sync.hpp: the robust shared mutex and futex condition under
// every toolkit object, between threads and between fork()ed processes.
#include "cfx/detail/shared_sync.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "cfx/errors.hpp"
#include "tests/toolkit/fork_support.hpp"

namespace {

using cfx::detail::shared_at;
using cfx::detail::SharedBlock;
using cfx::detail::SharedCondition;
using cfx::detail::SharedMutex;
using cfx::test::fork_child;
using cfx::test::fork_holder;
using cfx::test::join_child;
using cfx::test::kill_child;
using namespace std::chrono_literals;

struct Guarded {
  SharedMutex mutex;
  SharedCondition cond;
  long value;
};

Guarded& make_guarded(const SharedBlock& block, bool recursive = false) {
  auto& g = shared_at<Guarded>(block);
  g.mutex.init(recursive);
  g.cond.init();
  return g;
}

TEST_CASE("shared_at refuses an object that does not fit its block") {
  SharedBlock block(16);
  CHECK_THROWS_AS(shared_at<Guarded>(block), cfx::Error);
  CHECK_THROWS_AS(shared_at<long>(block, 12), cfx::Error);
  CHECK_THROWS_AS(shared_at<long>(block, 3), cfx::Error);
  CHECK_NOTHROW(shared_at<long>(block, 8));
}

TEST_CASE("SharedMutex: held, refused twice, unlock only by its holder") {
  SharedBlock block(sizeof(Guarded));
  auto& g = make_guarded(block);
  g.mutex.lock();
  CHECK(g.mutex.held_by_me());
  CHECK_FALSE(g.mutex.try_lock());
  CHECK_THROWS_AS(g.mutex.lock(), cfx::Error);
  std::thread([&] {
    CHECK_FALSE(g.mutex.held_by_me());
    CHECK_THROWS_AS(g.mutex.unlock(), cfx::Error);
    CHECK_FALSE(g.mutex.try_lock());
    CHECK_FALSE(g.mutex.lock_until(std::chrono::steady_clock::now() + 1ms));
  }).join();
  g.mutex.unlock();
  CHECK_FALSE(g.mutex.held_by_me());
  CHECK_THROWS_AS(g.mutex.unlock(), cfx::Error);
  CHECK(g.mutex.lock_until(std::chrono::steady_clock::now() - 1s));  // free: one try succeeds
  g.mutex.unlock();
}

TEST_CASE("SharedMutex: recursive levels") {
  SharedBlock block(sizeof(Guarded));
  auto& g = make_guarded(block, true);
  g.mutex.lock();
  CHECK(g.mutex.try_lock());
  g.mutex.lock();
  g.mutex.unlock();
  g.mutex.unlock();
  CHECK(g.mutex.held_by_me());
  g.mutex.unlock();
  CHECK_FALSE(g.mutex.held_by_me());
}

TEST_CASE("SharedMutex: a holder killed by SIGKILL hands it to the next locker") {
  SharedBlock block(sizeof(Guarded));
  auto& g = make_guarded(block);
  pid_t child = fork_holder([&] {
    g.mutex.lock();
    g.value = 42;
  });
  CHECK_FALSE(g.mutex.try_lock());
  CHECK(kill_child(child) == -SIGKILL);
  g.mutex.lock();
  CHECK(g.mutex.recovered());
  CHECK(g.value == 42);
  g.mutex.unlock();
  g.mutex.lock();  // consistent again: a plain lock now
  CHECK_FALSE(g.mutex.recovered());
  g.mutex.unlock();
}

TEST_CASE("SharedCondition: wait times out holding the mutex again") {
  SharedBlock block(sizeof(Guarded));
  auto& g = make_guarded(block);
  g.mutex.lock();
  CHECK_FALSE(g.cond.wait(g.mutex, std::chrono::steady_clock::now() + 5ms));
  CHECK(g.mutex.held_by_me());
  CHECK_FALSE(g.cond.wait(g.mutex, std::chrono::steady_clock::now() - 1s));
  g.mutex.unlock();
  CHECK_THROWS_AS(g.cond.wait(g.mutex), cfx::Error);
}

TEST_CASE("SharedCondition: a predicate wait between processes") {
  SharedBlock block(sizeof(Guarded));
  auto& g = make_guarded(block);
  g.value = 0;
  pid_t child = fork_child([&] {
    for (int i = 0; i < 100; ++i) {
      g.mutex.lock();
      g.cond.wait(g.mutex, std::nullopt, [&] { return g.value % 2 == 1; });
      ++g.value;
      g.cond.notify_all();
      g.mutex.unlock();
    }
    return 0;
  });
  for (int i = 0; i < 100; ++i) {
    g.mutex.lock();
    g.cond.wait(g.mutex, std::nullopt, [&] { return g.value % 2 == 0; });
    ++g.value;
    g.cond.notify_all();
    g.mutex.unlock();
  }
  CHECK(join_child(child) == 0);
  CHECK(g.value == 200);
}

TEST_CASE("SharedCondition: notify_one wakes a waiting thread") {
  SharedBlock block(sizeof(Guarded));
  auto& g = make_guarded(block);
  g.value = 0;
  std::thread waiter([&] {
    g.mutex.lock();
    bool woke = g.cond.wait(g.mutex, std::nullopt, [&] { return g.value == 1; });
    g.mutex.unlock();
    CHECK(woke);
  });
  g.mutex.lock();
  g.value = 1;
  g.cond.notify_one();
  g.mutex.unlock();
  waiter.join();
}

}  // namespace
