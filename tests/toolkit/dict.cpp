// cfx/shared_dict.hpp: SharedDict<K, V> between threads and between fork()ed processes;
// growth, erase, items; update's atomicity; capacity; holders killed mid-change.
#include "cfx/shared_dict.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
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

/// The dict's own lock (its state begins with it), for holding it from a test.
template <class D>
cfx::Lock lock_of(const D& d) {
  return cfx::detail::HandleAccess::make<cfx::Lock>(d.block(), d.offset());
}

TEST_CASE("SharedDict: a default-constructed one is a new, empty dict") {
  cfx::SharedDict<int, int> d;
  CHECK(d.valid());
  CHECK(d.empty());
  d.set(1, 2);
  CHECK(d.get(1) == 2);
  CHECK(cfx::SharedDict<int, int>().empty());
}

TEST_CASE("SharedDict: a moved-from handle refers to nothing, and every use throws") {
  cfx::SharedDict<int, int> d;
  auto taker = std::move(d);
  CHECK_FALSE(d.valid());  // NOLINT(bugprone-use-after-move): the state under test
  CHECK(d.block().size() == 0);
  CHECK_THROWS_WITH_AS(d.set(1, 1), doctest::Contains("cfx::SharedDict: empty handle"), cfx::Error);
  CHECK_THROWS_AS((void)d.get(1), cfx::Error);
  CHECK_THROWS_AS((void)d.size(), cfx::Error);
  CHECK_THROWS_AS(d.update(1, [](std::optional<int>) { return 1; }), cfx::Error);
}

TEST_CASE("SharedDict: set, get, contains, erase, size and items, with encoded types") {
  cfx::SharedDict<std::string, std::vector<int>> d;
  auto copy = d;
  d.set("a", {1, 2});
  d.set("b", {});
  d.set("a", {3});  // overwrite
  CHECK(copy.size() == 2);
  CHECK(copy.get("a") == std::vector<int>{3});
  CHECK(copy.get("b") == std::vector<int>{});
  CHECK_FALSE(copy.get("c").has_value());
  CHECK(copy.contains("b"));
  CHECK(copy.erase("b"));
  CHECK_FALSE(copy.erase("b"));
  CHECK_FALSE(d.contains("b"));
  auto items = d.items();
  REQUIRE(items.size() == 1);
  CHECK(items[0].first == "a");
  CHECK(items[0].second == std::vector<int>{3});
}

TEST_CASE("SharedDict: grows past many entries; erased slots are reused; items is complete") {
  cfx::SharedDict<std::int64_t, double> d;
  for (std::int64_t i = 0; i < 20000; ++i) d.set(i, i * 0.5);
  CHECK(d.size() == 20000);
  for (std::int64_t i = 0; i < 20000; i += 2) REQUIRE(d.erase(i));
  CHECK(d.size() == 10000);
  for (int round = 0; round < 3; ++round)  // churn: erase and insert through erased slots
    for (std::int64_t i = 0; i < 20000; i += 2) {
      d.set(i + 1000000, 1.0);
      d.erase(i + 1000000);
    }
  int right = 0;
  for (std::int64_t i = 0; i < 20000; ++i) {
    auto v = d.get(i);
    right += (i % 2 == 0) ? !v.has_value() : (v == i * 0.5);
  }
  CHECK(right == 20000);
  auto items = d.items();
  std::map<std::int64_t, double> seen(items.begin(), items.end());
  CHECK(seen.size() == 10000);
  CHECK(seen.begin()->first == 1);
  CHECK(seen.rbegin()->first == 19999);
}

TEST_CASE("SharedDict: update is atomic per key, between threads and between processes") {
  cfx::SharedDict<std::string, std::int64_t> d;
  auto increment = [d]() mutable {
    for (int i = 0; i < 10000; ++i)
      d.update("hits", [](std::optional<std::int64_t> v) { return v.value_or(0) + 1; });
    return 0;
  };
  pid_t child = fork_child(increment);
  std::thread thread(increment);
  increment();
  thread.join();
  CHECK(join_child(child) == 0);
  CHECK(d.get("hits") == 30000);
  CHECK(d.update("new", [](std::optional<std::int64_t> v) { return v ? -1 : 5; }) == 5);
}

TEST_CASE(
    "SharedDict: an update whose function throws changes nothing; using the dict "
    "inside it throws") {
  cfx::SharedDict<int, int> d;
  d.set(1, 10);
  CHECK_THROWS_AS(d.update(1, [](std::optional<int>) -> int { throw std::range_error("no"); }),
                  std::range_error);
  CHECK(d.get(1) == 10);
  CHECK_THROWS_AS(d.update(1, [&](std::optional<int>) { return *d.get(1); }), cfx::Error);
  CHECK(d.get(1) == 10);
  d.set(2, 20);  // the lock was given back each time
  CHECK(d.size() == 2);
}

TEST_CASE("SharedDict: a full arena refuses the set that does not fit and stays usable") {
  cfx::SharedDict<int, std::string> d(16384);
  int stored = 0;
  CHECK_THROWS_WITH_AS(
      [&] {
        for (;; ++stored) d.set(stored, std::string(1000, 'v'));
      }(),
      doctest::Contains("no room for an entry"), cfx::Error);
  CHECK(stored > 0);
  CHECK(d.size() == static_cast<std::size_t>(stored));
  CHECK(d.erase(0));
  d.set(0, "small again");  // the freed block is reused
  CHECK(d.get(0) == "small again");
  using IntDict = cfx::SharedDict<int, int>;
  CHECK_THROWS_AS(IntDict(10), cfx::Error);
}

TEST_CASE("SharedDict: a process killed holding the dict's lock does not stop the others") {
  cfx::SharedDict<int, int> d;
  d.set(1, 1);
  pid_t holder = fork_holder([lock = lock_of(d)]() mutable { lock.lock(); });
  CHECK(kill_child(holder) == -SIGKILL);
  d.set(2, 2);
  CHECK(d.size() == 2);
  CHECK(d.get(1) == 1);
}

TEST_CASE("SharedDict: a writer killed anywhere in its sets leaves a consistent dict") {
  cfx::SharedDict<std::int64_t, std::string> d;
  PipeSignal started;
  pid_t writer = fork_child([&] {
    for (std::int64_t i = 0;; ++i) {  // inserts (growing the table), overwrites and erases
      d.set(i % 5000, std::to_string(i % 5000) + std::string(i % 64, '.'));
      if (i % 3 == 0) d.erase((i * 7) % 5000);
      if (i == 20000) started.notify();
    }
    return 0;
  });
  started.close_write();
  REQUIRE(started.wait());
  CHECK(kill_child(writer) == -SIGKILL);
  auto items = d.items();
  CHECK(d.size() == items.size());
  int consistent = 0;
  for (const auto& [k, v] : items) consistent += v.rfind(std::to_string(k), 0) == 0;
  CHECK(consistent == static_cast<int>(items.size()));
  for (std::int64_t k = 0; k < 5000; ++k) d.set(k, "again");
  CHECK(d.size() == 5000);
  CHECK(d.get(4999) == "again");
}

}  // namespace
