// cfx/queue.hpp: Queue<T> between threads and between fork()ed processes; bounded waits and
// timeouts; close; big items and the ring's wrap-around; producers killed mid-put.
#include "cfx/queue.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "cfx/errors.hpp"
#include "cfx/sync.hpp"
#include "tests/toolkit/fork_support.hpp"

namespace {

using cfx::test::fork_child;
using cfx::test::fork_holder;
using cfx::test::join_child;
using cfx::test::kill_child;
using cfx::test::PipeSignal;
using namespace std::chrono_literals;

/// The queue's own lock (its state begins with it), for holding it from a test.
template <class Q>
cfx::Lock lock_of(const Q& q) {
  return cfx::detail::HandleAccess::make<cfx::Lock>(q.block(), q.offset());
}

/// A string whose content says which item it is, of a length that varies with it.
std::string item_text(int i) {
  return std::to_string(i) + ":" +
         std::string(static_cast<std::size_t>(i * 37 % 300), 'a' + i % 26);
}

TEST_CASE("Queue: a default-constructed one is a new unbounded queue") {
  cfx::Queue<int> q;
  CHECK(q.valid());
  CHECK(q.maxsize() == 0);
  q.put(4);
  CHECK(q.get() == 4);
  CHECK_FALSE(q == cfx::Queue<int>());
}

TEST_CASE("Queue: a moved-from handle refers to nothing, and every use throws") {
  cfx::Queue<int> q;
  auto taker = std::move(q);
  CHECK_FALSE(q.valid());  // NOLINT(bugprone-use-after-move): the state under test
  CHECK(q.block().size() == 0);
  CHECK_THROWS_WITH_AS(q.put(1), doctest::Contains("cfx::Queue: empty handle"), cfx::Error);
  CHECK_THROWS_AS(q.get(), cfx::Error);
  CHECK_THROWS_AS((void)q.try_get(), cfx::Error);
  CHECK_THROWS_AS((void)q.qsize(), cfx::Error);
  CHECK_THROWS_AS(q.close(), cfx::Error);
}

TEST_CASE("Queue: FIFO; copies are one queue; qsize, try_get and timeouts on an empty queue") {
  cfx::Queue<int> q(0);
  auto copy = q;
  CHECK(copy == q);
  for (int i = 0; i < 100; ++i) q.put(i);
  CHECK(copy.qsize() == 100);
  for (int i = 0; i < 100; ++i) CHECK(copy.get() == i);
  CHECK(q.empty());
  CHECK_FALSE(q.try_get().has_value());
  CHECK_THROWS_AS(q.get(1ms), cfx::QueueEmpty);
  CHECK_THROWS_AS(q.get(-1s), cfx::QueueEmpty);
  q.put(7);
  CHECK(q.try_get() == 7);
}

TEST_CASE("Queue: items of any task argument type, raw and encoded") {
  cfx::Queue<std::pair<int, double>> pairs(0);
  pairs.put({1, 2.5});
  CHECK(pairs.get() == std::pair{1, 2.5});
  cfx::Queue<std::vector<std::string>> lists(0);
  lists.put({"a", "", "ccc"});
  CHECK(lists.get() == std::vector<std::string>{"a", "", "ccc"});
}

TEST_CASE("Queue: many producer and consumer threads pass every item exactly once") {
  constexpr int producers = 4, consumers = 3, per_producer = 5000;
  cfx::Queue<std::int64_t> q(64);  // bounded: producers also wait for room
  std::vector<std::int64_t> sums(consumers, 0);
  std::vector<int> counts(consumers, 0);
  std::vector<std::thread> threads;
  for (int c = 0; c < consumers; ++c)
    threads.emplace_back([&, c] {
      for (;;) {
        auto v = q.get();
        if (v < 0) return;
        sums[c] += v;
        ++counts[c];
      }
    });
  std::vector<std::thread> putters;
  for (int p = 0; p < producers; ++p)
    putters.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) q.put(std::int64_t{p} * per_producer + i);
    });
  for (auto& t : putters) t.join();
  for (int c = 0; c < consumers; ++c) q.put(-1);
  for (auto& t : threads) t.join();
  std::int64_t n = std::int64_t{producers} * per_producer;
  CHECK(std::accumulate(sums.begin(), sums.end(), std::int64_t{0}) == n * (n - 1) / 2);
  CHECK(std::accumulate(counts.begin(), counts.end(), 0) == n);
}

TEST_CASE("Queue: between fork()ed processes, in order, both ways") {
  cfx::Queue<std::string> to_child(0);
  cfx::Queue<std::string> to_parent(8);
  pid_t child = fork_child([&] {
    for (int i = 0; i < 2000; ++i) {
      if (to_child.get() != item_text(i)) return 3;
      to_parent.put(item_text(i));
    }
    return 0;
  });
  std::thread feeder([&] {
    for (int i = 0; i < 2000; ++i) to_child.put(item_text(i));
  });
  int in_order = 0;
  for (int i = 0; i < 2000; ++i) in_order += to_parent.get() == item_text(i);
  feeder.join();
  CHECK(in_order == 2000);
  CHECK(join_child(child) == 0);
}

TEST_CASE("Queue: a bounded queue makes put wait for room, and a timed put throws QueueFull") {
  cfx::Queue<int> q(2);
  q.put(1);
  q.put(2);
  CHECK(q.qsize() == 2);
  CHECK_THROWS_AS(q.put(3, 1ms), cfx::QueueFull);
  CHECK_THROWS_AS(q.put_nowait(3), cfx::QueueFull);
  CHECK(q.qsize() == 2);
  std::thread putter([&] { q.put(3); });  // waits until the get below makes room
  CHECK(q.get() == 1);
  putter.join();
  CHECK(q.get() == 2);
  CHECK(q.get() == 3);
  CHECK(q.maxsize() == 2);
}

TEST_CASE("Queue: close refuses puts, lets gets drain, then makes them throw instead of wait") {
  cfx::Queue<int> q(0);
  q.put(1);
  q.put(2);
  q.close();
  CHECK(q.closed());
  CHECK_THROWS_WITH_AS(q.put(3), doctest::Contains("closed queue"), cfx::Error);
  CHECK(q.get() == 1);
  CHECK(q.try_get() == 2);
  CHECK_THROWS_WITH_AS(q.get(), doctest::Contains("cfx::Queue: get from a closed queue"),
                       cfx::Error);
  CHECK_THROWS_AS((void)q.try_get(), cfx::Error);
  q.close();  // twice: harmless
}

TEST_CASE("Queue: close wakes a get and a put waiting in other processes") {
  cfx::Queue<int> empty(0);
  cfx::Queue<int> full(1);
  full.put(0);
  auto waits_then_throws = [](auto op) {
    return fork_child([op]() mutable {
      try {
        op();
      } catch (const cfx::Error&) {
        return 0;
      }
      return 3;
    });
  };
  pid_t getter = waits_then_throws([empty]() mutable { (void)empty.get(); });
  pid_t putter = waits_then_throws([full]() mutable { full.put(1); });
  // Closed before or after they wait: either way they throw (no sleep needed to tell).
  empty.close();
  full.close();
  CHECK(join_child(getter) == 0);
  CHECK(join_child(putter) == 0);
}

TEST_CASE("Queue: big items, and an item larger than the capacity refused without harm") {
  cfx::Queue<std::vector<std::int64_t>> q(0, 1 << 18);
  std::vector<std::int64_t> big(20000);  // 160 KB encoded: fits 256 KiB
  std::iota(big.begin(), big.end(), 0);
  q.put(big);
  CHECK_THROWS_WITH_AS(q.put(std::vector<std::int64_t>(50000, INT64_MAX)),
                       doctest::Contains("does not fit the queue's capacity"), cfx::Error);
  CHECK(q.qsize() == 1);
  CHECK(q.get() == big);
  CHECK(q.capacity_bytes() == 1 << 18);
  CHECK_THROWS_AS(cfx::Queue<int>(0, 100), cfx::Error);
}

TEST_CASE("Queue: records of every length cross the ring's end intact") {
  cfx::Queue<std::string> q(0, 4096);
  int next_put = 0, next_get = 0, intact = 0;
  for (int round = 0; round < 400; ++round) {  // ~60 laps of the ring, a few items in it
    while (q.qsize() < 5) q.put(item_text(next_put++));
    while (q.qsize() > 2) intact += q.get() == item_text(next_get++);
  }
  while (auto s = q.try_get()) intact += *s == item_text(next_get++);
  CHECK(next_get == next_put);
  CHECK(intact == next_put);
}

TEST_CASE("Queue: a full ring of bytes makes put wait like a full maxsize") {
  cfx::Queue<std::string> q(0, 4096);
  q.put(std::string(3000, 'x'));
  CHECK_THROWS_AS(q.put(std::string(2000, 'y'), 1ms), cfx::QueueFull);
  std::thread putter([&] { q.put(std::string(2000, 'y')); });
  CHECK(q.get().size() == 3000);
  putter.join();
  CHECK(q.get().size() == 2000);
}

TEST_CASE("Queue: pages the consumers passed go back to the system") {
  cfx::Queue<std::string> q(0, 4 << 20);
  std::string item(64 << 10, 'z');
  for (int i = 0; i < 80; ++i) {  // 5 MiB through a 4 MiB ring: more than a lap
    q.put(item);
    REQUIRE(q.get().size() == item.size());
  }
  struct stat st {};
  REQUIRE(::fstat(q.block().fd(), &st) == 0);
  CHECK(st.st_blocks * 512 <= (2 << 20));  // without the release: all 4 MiB
}

TEST_CASE("Queue: a process killed holding the queue's lock does not stop the others") {
  cfx::Queue<int> q(0);
  q.put(1);
  pid_t holder = fork_holder([lock = lock_of(q)]() mutable { lock.lock(); });
  CHECK(kill_child(holder) == -SIGKILL);
  q.put(2);
  CHECK(q.qsize() == 2);
  CHECK(q.get() == 1);
  CHECK(q.get() == 2);
}

TEST_CASE("Queue: a producer killed anywhere in its puts leaves every item put intact") {
  cfx::Queue<std::string> q(0, 8192);  // small: the producer wraps the ring and waits for room
  PipeSignal started;
  pid_t producer = fork_child([&] {
    for (int i = 0;; ++i) {
      q.put(item_text(i));
      if (i == 5) started.notify();
    }
    return 0;
  });
  started.close_write();
  REQUIRE(started.wait());
  int next = 0, intact = 0;
  for (; next < 20; ++next) intact += q.get() == item_text(next);
  CHECK(kill_child(producer) == -SIGKILL);  // wherever it is: in a put, holding the lock, ...
  auto left = q.qsize();
  std::size_t drained = 0;
  while (auto s = q.try_get()) {
    intact += *s == item_text(next++);
    ++drained;
  }
  CHECK(drained == left);
  CHECK(intact == next);
  q.put("after");
  CHECK(q.get() == "after");
}

}  // namespace
