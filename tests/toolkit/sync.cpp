// cfx/sync.hpp: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier between
// threads and between fork()ed processes; holders that die; timeouts; misuse.
#include "cfx/sync.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <type_traits>
#include <vector>

#include "cfx/errors.hpp"
#include "tests/toolkit/fork_support.hpp"

namespace {

using cfx::test::fork_child;
using cfx::test::fork_holder;
using cfx::test::join_child;
using cfx::test::kill_child;
using cfx::test::PipeSignal;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// A counter in shared memory, visible to fork()ed children.
struct SharedCounter {
  cfx::detail::SharedBlock block{sizeof(long)};
  long& value() const { return cfx::detail::shared_at<long>(block); }
};

// --- empty handles and identity ---------------------------------------------------------

template <class H>
void check_empty_throws(H h) {
  CHECK_FALSE(h.valid());
  CHECK(h.block().size() == 0);
}

TEST_CASE("A default-constructed handle is a new object, as in Python") {
  cfx::Lock a, b;
  CHECK(a.valid());
  CHECK_FALSE(a == b);
  {
    std::lock_guard held(a);
    CHECK(a.held_by_me());
    CHECK_FALSE(b.held_by_me());
  }
  cfx::RLock r;
  std::scoped_lock both(r, r);  // recursive: twice from one thread
  cfx::Semaphore sem;
  CHECK(sem.value() == 1);  // Python's default
  cfx::BoundedSemaphore bsem;
  CHECK(bsem.value() == 1);
  CHECK_THROWS_AS(bsem.release(), cfx::Error);  // already at its bound of 1
  cfx::Event event;
  CHECK_FALSE(event.is_set());
  cfx::Condition cond;
  CHECK(cond.try_lock());
  cond.notify_all();
  cond.unlock();
  static_assert(!std::is_default_constructible_v<cfx::Barrier>, "Python needs parties too");
}

TEST_CASE("Moved-from and decoded-empty handles refer to nothing, and every use throws") {
  using cfx::detail::HandleAccess;
  cfx::Lock moved;
  cfx::Lock taker = std::move(moved);
  CHECK(taker.valid());
  check_empty_throws(moved);  // NOLINT(bugprone-use-after-move): the state under test
  CHECK_THROWS_WITH_AS(moved.lock(), doctest::Contains("cfx::Lock: empty handle"), cfx::Error);
  CHECK_THROWS_AS(moved.unlock(), cfx::Error);
  // What the decoder makes of an empty handle's encoding: no object made, nothing allocated.
  auto rlock = HandleAccess::make<cfx::RLock>({}, 0);
  auto sem = HandleAccess::make<cfx::Semaphore>({}, 0);
  auto bsem = HandleAccess::make<cfx::BoundedSemaphore>({}, 0);
  auto event = HandleAccess::make<cfx::Event>({}, 0);
  auto cond = HandleAccess::make<cfx::Condition>({}, 0);
  auto barrier = HandleAccess::make<cfx::Barrier>({}, 0);
  check_empty_throws(barrier);
  CHECK_THROWS_WITH_AS(rlock.try_lock(), doctest::Contains("cfx::RLock"), cfx::Error);
  CHECK_THROWS_AS(sem.acquire(), cfx::Error);
  CHECK_THROWS_AS(bsem.release(), cfx::Error);
  CHECK_THROWS_AS(event.set(), cfx::Error);
  CHECK_THROWS_AS((void)event.is_set(), cfx::Error);
  CHECK_THROWS_AS(cond.notify_all(), cfx::Error);
  CHECK_THROWS_AS((void)cond.get_lock(), cfx::Error);
  CHECK_THROWS_AS(barrier.wait(), cfx::Error);
  CHECK(moved == HandleAccess::make<cfx::Lock>({}, 0));
}

TEST_CASE("Copies of a handle are the same object; created ones are distinct") {
  cfx::Lock a;
  auto b = a;
  CHECK(a.valid());
  CHECK(a == b);
  CHECK_FALSE(a == cfx::Lock());
  a.lock();
  CHECK(b.held_by_me());
  CHECK_FALSE(b.try_lock());
  b.unlock();
  CHECK_FALSE(a.held_by_me());
}

TEST_CASE("A handle rebuilt from its block and offset (as a decoder does) is the same object") {
  cfx::Event event;
  auto rebuilt = cfx::detail::HandleAccess::make<cfx::Event>(event.block(), event.offset());
  CHECK(rebuilt == event);
  rebuilt.set();
  CHECK(event.is_set());
  // A handle of the wrong kind for its memory fails cleanly where the object does not fit.
  cfx::Lock lock;
  auto wrong = cfx::detail::HandleAccess::make<cfx::Barrier>(lock.block(), 0);
  CHECK_THROWS_WITH_AS(wrong.wait(), doctest::Contains("does not fit"), cfx::Error);
}

TEST_CASE("Constructors refuse bad counts") {
  CHECK_THROWS_WITH_AS(cfx::Semaphore(-1), doctest::Contains("negative"), cfx::Error);
  CHECK_THROWS_AS(cfx::BoundedSemaphore(-3), cfx::Error);
  CHECK_THROWS_WITH_AS(cfx::Barrier(0), doctest::Contains("at least 1"), cfx::Error);
}

// --- Lock and RLock ---------------------------------------------------------------------

TEST_CASE("Lock: misuse throws and changes nothing") {
  cfx::Lock lock;
  CHECK_THROWS_WITH_AS(lock.unlock(), doctest::Contains("does not hold"), cfx::Error);
  lock.lock();
  CHECK_THROWS_WITH_AS(lock.lock(), doctest::Contains("already held"), cfx::Error);
  CHECK_FALSE(lock.try_lock());
  std::thread([lock]() mutable {
    CHECK_THROWS_AS(lock.unlock(), cfx::Error);  // held by the other thread
    CHECK_FALSE(lock.try_lock_for(-1s));
  }).join();
  CHECK(lock.held_by_me());  // still held: the wrong unlocks changed nothing
  lock.unlock();
}

TEST_CASE("Lock: timed attempts give up after their timeout, or take it when free") {
  cfx::Lock lock;
  CHECK(lock.try_lock_for(-5s));  // free: a negative timeout still tries once
  lock.unlock();
  lock.lock();
  std::thread([lock]() mutable {
    auto start = Clock::now();
    CHECK_FALSE(lock.try_lock_for(20ms));
    CHECK(Clock::now() - start >= 20ms);
    CHECK_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + 5ms));
    CHECK_FALSE(lock.try_lock_for(0s));
  }).join();
  lock.unlock();
}

TEST_CASE("Lock: a guarded counter from four threads") {
  cfx::Lock lock;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([lock, &counter]() mutable {
      for (int i = 0; i < 10000; ++i) {
        std::lock_guard guard(lock);
        ++counter;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(counter == 40000);
}

TEST_CASE("Lock: two processes bring a guarded counter exactly to 200,000") {
  cfx::Lock lock;
  SharedCounter counter;
  counter.value() = 0;
  auto add = [&] {
    for (int i = 0; i < 100000; ++i) {
      std::lock_guard guard(lock);
      ++counter.value();
    }
    return 0;
  };
  pid_t a = fork_child(add);
  pid_t b = fork_child(add);
  CHECK(join_child(a) == 0);
  CHECK(join_child(b) == 0);
  CHECK(counter.value() == 200000);
}

TEST_CASE("Lock: std::scoped_lock over two Locks, taken in opposite orders") {
  cfx::Lock a;
  cfx::Lock b;
  long counter = 0;
  std::thread t1([&] {
    for (int i = 0; i < 2000; ++i) {
      std::scoped_lock both(a, b);
      ++counter;
    }
  });
  std::thread t2([&] {
    for (int i = 0; i < 2000; ++i) {
      std::scoped_lock both(b, a);
      ++counter;
    }
  });
  t1.join();
  t2.join();
  CHECK(counter == 4000);
  std::unique_lock first(a, std::defer_lock);
  CHECK(first.try_lock_for(1s));
}

TEST_CASE("Lock: a holder killed by SIGKILL hands it to the next locker") {
  cfx::Lock lock;
  pid_t child = fork_holder([&] { lock.lock(); });
  CHECK_FALSE(lock.try_lock());
  CHECK(kill_child(child) == -SIGKILL);
  CHECK(lock.try_lock_for(10s));
  lock.unlock();
}

TEST_CASE("Lock: a thread that ends holding it hands it on") {
  cfx::Lock lock;
  std::thread([lock]() mutable { lock.lock(); }).join();
  CHECK(lock.try_lock());
  lock.unlock();
}

TEST_CASE("RLock: the holder locks again; others wait for the last unlock") {
  cfx::RLock rlock;
  rlock.lock();
  CHECK(rlock.try_lock());
  CHECK(rlock.try_lock_for(1ms));
  std::thread([rlock]() mutable {
    CHECK_FALSE(rlock.try_lock());
    CHECK_THROWS_AS(rlock.unlock(), cfx::Error);
  }).join();
  rlock.unlock();
  rlock.unlock();
  CHECK(rlock.held_by_me());
  rlock.unlock();
  CHECK_FALSE(rlock.held_by_me());
  CHECK_THROWS_AS(rlock.unlock(), cfx::Error);
  std::thread([rlock]() mutable {
    CHECK(rlock.try_lock());
    rlock.unlock();
  }).join();
}

TEST_CASE("RLock: a holder killed at depth 2 hands it on at depth 1") {
  cfx::RLock rlock;
  pid_t child = fork_holder([&] {
    rlock.lock();
    rlock.lock();
  });
  CHECK(kill_child(child) == -SIGKILL);
  rlock.lock();
  rlock.unlock();
  CHECK_FALSE(rlock.held_by_me());
}

// --- Semaphore and BoundedSemaphore -----------------------------------------------------

TEST_CASE("Semaphore: counts down, refuses at zero, times out") {
  cfx::Semaphore sem(2);
  CHECK(sem.value() == 2);
  sem.acquire();
  CHECK(sem.try_acquire());
  CHECK_FALSE(sem.try_acquire());
  CHECK_FALSE(sem.try_acquire_for(-1s));
  auto start = Clock::now();
  CHECK_FALSE(sem.try_acquire_for(20ms));
  CHECK(Clock::now() - start >= 20ms);
  sem.release(3);
  CHECK(sem.value() == 3);
  CHECK(sem.try_acquire_until(Clock::now()));
  CHECK_THROWS_AS(sem.release(-1), cfx::Error);
}

TEST_CASE("Semaphore: release wakes a waiting thread") {
  cfx::Semaphore sem(0);
  std::thread waiter([sem]() mutable { CHECK(sem.try_acquire_for(30s)); });
  sem.release();
  waiter.join();
  CHECK(sem.value() == 0);
}

TEST_CASE("Semaphore(2): never more than two threads inside at once") {
  cfx::Semaphore slots(2);
  std::atomic<int> inside = 0;
  std::atomic<int> most = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, slots]() mutable {
      for (int i = 0; i < 2000; ++i) {
        slots.acquire();
        int now = ++inside;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        --inside;
        slots.release();
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(most.load() <= 2);
  CHECK(most.load() >= 1);
  CHECK(slots.value() == 2);
}

TEST_CASE("Semaphore: a parent releases, a child acquires, 1000 times") {
  cfx::Semaphore items(0);
  cfx::Semaphore room(1);
  SharedCounter slot;
  slot.value() = 0;
  pid_t child = fork_child([&] {
    long expected = 0;
    for (int i = 0; i < 1000; ++i) {
      items.acquire();
      if (slot.value() != ++expected) return 1;
      room.release();
    }
    return 0;
  });
  for (int i = 0; i < 1000; ++i) {
    room.acquire();
    ++slot.value();
    items.release();
  }
  CHECK(join_child(child) == 0);
  CHECK(items.value() == 0);
}

TEST_CASE("BoundedSemaphore: release past its bound throws and changes nothing") {
  cfx::BoundedSemaphore sem(2);
  CHECK_THROWS_WITH_AS(sem.release(), doctest::Contains("released too many times"), cfx::Error);
  CHECK(sem.value() == 2);
  sem.acquire();
  CHECK_THROWS_AS(sem.release(2), cfx::Error);
  CHECK(sem.value() == 1);
  sem.release();
  CHECK(sem.value() == 2);
  cfx::Semaphore as_base = sem;  // the bound lives with the object, not the handle type
  CHECK_THROWS_AS(as_base.release(), cfx::Error);
}

// --- Event ------------------------------------------------------------------------------

TEST_CASE("Event: set, clear, timed waits") {
  cfx::Event event;
  CHECK_FALSE(event.is_set());
  auto start = Clock::now();
  CHECK_FALSE(event.wait(20ms));
  CHECK(Clock::now() - start >= 20ms);
  CHECK_FALSE(event.wait(-1s));
  event.set();
  CHECK(event.is_set());
  CHECK(event.wait(-1s));
  event.wait();
  event.clear();
  CHECK_FALSE(event.wait_until(std::chrono::system_clock::now()));
}

TEST_CASE("Event: wakes every waiting thread and a waiting child process") {
  cfx::Event event;
  pid_t child = fork_child([&] { return event.wait(60s) ? 0 : 1; });
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) waiters.emplace_back([event]() mutable { CHECK(event.wait(60s)); });
  event.set();
  for (auto& t : waiters) t.join();
  CHECK(join_child(child) == 0);
}

// --- Condition --------------------------------------------------------------------------

TEST_CASE("Condition: misuse without its lock throws") {
  cfx::Condition cond;
  CHECK_THROWS_WITH_AS(cond.wait(), doctest::Contains("without holding its lock"), cfx::Error);
  CHECK_THROWS_AS(cond.notify_one(), cfx::Error);
  CHECK_THROWS_AS(cond.notify_all(), cfx::Error);
  CHECK_THROWS_AS(cond.unlock(), cfx::Error);
  std::unique_lock held(cond);
  cond.notify_all();
  CHECK(cond.get_lock().held_by_me());
  CHECK(cond.get_lock() == cond.get_lock());
}

TEST_CASE("Condition: timed waits return false and hold the lock again") {
  cfx::Condition cond;
  std::unique_lock held(cond);
  auto start = Clock::now();
  CHECK_FALSE(cond.wait_for(20ms));
  CHECK(Clock::now() - start >= 20ms);
  CHECK(cond.get_lock().held_by_me());
  CHECK_FALSE(cond.wait_for(-1s, [] { return false; }));
  CHECK(cond.wait_for(-1s, [] { return true; }));
  CHECK_FALSE(cond.wait_until(std::chrono::system_clock::now(), [] { return false; }));
}

TEST_CASE("Condition: ping-pong between a parent and a child process") {
  cfx::Condition cond;
  SharedCounter turn;
  turn.value() = 0;
  auto play = [&](long parity) {
    for (int i = 0; i < 200; ++i) {
      std::unique_lock held(cond);
      cond.wait([&] { return turn.value() % 2 == parity; });
      ++turn.value();
      cond.notify_all();
    }
    return 0;
  };
  pid_t child = fork_child([&] { return play(1); });
  play(0);
  CHECK(join_child(child) == 0);
  CHECK(turn.value() == 400);
}

/// A thread waits on `cond` with a predicate that this thread makes true and notifies.
void check_wakes_a_waiter(cfx::Condition cond, bool all) {
  bool ready = false;
  std::thread waiter([&] {
    std::unique_lock held(cond);
    CHECK(cond.wait_for(60s, [&] { return ready; }));
  });
  std::unique_lock held(cond);
  ready = true;
  all ? cond.notify_all() : cond.notify_one();
  held.unlock();
  waiter.join();
}

TEST_CASE("Condition: notify_one and notify_all wake a thread waiting with a predicate") {
  check_wakes_a_waiter(cfx::Condition(), false);
  check_wakes_a_waiter(cfx::Condition(), true);
}

TEST_CASE("Condition: a holder killed holding its lock, or killed while waiting") {
  cfx::Condition cond;
  SUBCASE("holding the lock") {
    pid_t child = fork_holder([&] { cond.lock(); });
    CHECK(kill_child(child) == -SIGKILL);
  }
  SUBCASE("inside wait()") {
    PipeSignal waiting;
    pid_t child = fork_child([&]() -> int {
      std::unique_lock held(cond);
      waiting.notify();
      for (;;) cond.wait();
    });
    waiting.close_write();
    REQUIRE(waiting.wait());
    cond.lock();  // only once the child waits, which releases the lock
    CHECK(kill_child(child) == -SIGKILL);
    cond.notify_all();
    cond.unlock();
  }
  // Either way the condition works on: new waiters are woken.
  check_wakes_a_waiter(cond, false);
  check_wakes_a_waiter(cond, true);
}

// --- Barrier ----------------------------------------------------------------------------

TEST_CASE("Barrier: three threads, distinct indices, reused for several rounds") {
  cfx::Barrier barrier(3);
  CHECK(barrier.parties() == 3);
  std::mutex m;
  std::vector<std::size_t> indices;
  auto party = [&] {
    for (int round = 0; round < 20; ++round) {
      auto i = barrier.wait();
      std::lock_guard g(m);
      indices.push_back(i);
    }
  };
  std::thread a(party), b(party);
  party();
  a.join();
  b.join();
  REQUIRE(indices.size() == 60);
  for (std::size_t i = 0; i < 3; ++i) CHECK(std::count(indices.begin(), indices.end(), i) == 20);
  CHECK(barrier.n_waiting() == 0);
  CHECK_FALSE(barrier.broken());
}

TEST_CASE("Barrier: a parent and two child processes meet, round after round") {
  cfx::Barrier barrier(3);
  SharedCounter arrived;
  arrived.value() = 0;
  cfx::Lock lock;
  auto party = [&] {
    for (long round = 1; round <= 50; ++round) {
      {
        std::lock_guard g(lock);
        ++arrived.value();
      }
      barrier.wait(60s);
      // Everyone arrived for this round before anyone passed.
      long seen;
      {
        std::lock_guard g(lock);
        seen = arrived.value();
      }
      if (seen < 3 * round) return 1;
      barrier.wait(60s);  // nobody starts the next round before everyone has looked
    }
    return 0;
  };
  pid_t a = fork_child(party);
  pid_t b = fork_child(party);
  CHECK(party() == 0);
  CHECK(join_child(a) == 0);
  CHECK(join_child(b) == 0);
  CHECK(arrived.value() == 150);
}

/// Spins (yielding) until `n` parties wait on the barrier.
void until_waiting(cfx::Barrier& barrier, std::size_t n) {
  while (barrier.n_waiting() < n) std::this_thread::yield();
}

TEST_CASE("Barrier: a timed-out wait breaks it for everyone until reset()") {
  cfx::Barrier barrier(3);
  std::atomic<int> broken_seen = 0;
  std::thread other([&] {
    try {
      barrier.wait();
    } catch (const cfx::BrokenBarrierError&) {
      ++broken_seen;
    }
  });
  until_waiting(barrier, 1);
  CHECK_THROWS_WITH_AS(barrier.wait(10ms), doctest::Contains("timed out"), cfx::BrokenBarrierError);
  other.join();
  CHECK(broken_seen == 1);
  CHECK(barrier.broken());
  CHECK_THROWS_AS(barrier.wait(), cfx::BrokenBarrierError);
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  CHECK(barrier.n_waiting() == 0);
  std::thread a([&] { barrier.wait(); }), b([&] { barrier.wait(); });
  CHECK(barrier.wait(60s) < 3);
  a.join();
  b.join();
}

TEST_CASE("Barrier: abort() releases a waiting child process with BrokenBarrierError") {
  cfx::Barrier barrier(2);
  pid_t child = fork_child([&] {
    try {
      barrier.wait();
    } catch (const cfx::BrokenBarrierError&) {
      return 0;
    }
    return 1;
  });
  until_waiting(barrier, 1);
  barrier.abort();
  CHECK(join_child(child) == 0);
  CHECK_THROWS_AS(barrier.wait(), cfx::BrokenBarrierError);
  barrier.reset();
  std::thread other([&] { barrier.wait(); });
  barrier.wait();
  other.join();
}

TEST_CASE("Barrier: reset() with a waiter breaks that wait only") {
  cfx::Barrier barrier(2);
  std::thread waiter([&] { CHECK_THROWS_AS(barrier.wait(), cfx::BrokenBarrierError); });
  until_waiting(barrier, 1);
  barrier.reset();
  waiter.join();
  CHECK_FALSE(barrier.broken());
  std::thread other([&] { barrier.wait(); });
  barrier.wait();
  other.join();
}

TEST_CASE("Barrier of one never waits") {
  cfx::Barrier barrier(1);
  CHECK(barrier.wait() == 0);
  CHECK(barrier.wait(-1s) == 0);
}

}  // namespace
