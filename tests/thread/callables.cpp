// The thread backend takes what std::async takes: any callable, decayed arguments passed to
// the call as rvalues, once; noexcept functions; results without a default constructor.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <cfx/thread_pool.hpp>

namespace {

int twice(int x) noexcept {
  return 2 * x;
}

int deref(std::unique_ptr<int> p) {
  return *p;
}

void bump(int& x) {
  ++x;
}

/// No default constructor: the thread backend must not need one.
struct Reading {
  explicit Reading(double v) : value(v) {}
  double value;
};
Reading read_sensor(double v) {
  return Reading(v);
}

/// Counts copies and moves of itself.
struct Counted {
  static inline std::atomic<int> copies{0};
  static inline std::atomic<int> moves{0};
  Counted() = default;
  Counted(const Counted&) { ++copies; }
  Counted(Counted&&) noexcept { ++moves; }
};
int take(Counted c) {
  (void)c;
  return 1;
}

struct Accumulator {
  int total = 0;
  int add(int x) { return total += x; }
};

}  // namespace

TEST_SUITE("thread callables") {
  TEST_CASE("a noexcept function") {
    cfx::ThreadPoolExecutor pool({.max_workers = 2});
    CHECK(pool.submit(twice, 21).result() == 42);
    CHECK(pool.submit(&twice, 5).result() == 10);
  }

  TEST_CASE("a result type without a default constructor") {
    cfx::ThreadPoolExecutor pool({.max_workers = 1});
    CHECK(pool.submit(read_sensor, 1.5).result().value == 1.5);
    CHECK(pool.submit([] { return Reading(2.5); }).result().value == 2.5);
  }

  TEST_CASE("move-only arguments, to functions and lambdas") {
    cfx::ThreadPoolExecutor pool({.max_workers = 1});
    CHECK(pool.submit(deref, std::make_unique<int>(7)).result() == 7);
    auto f = pool.submit([](std::unique_ptr<int> p) { return *p + 1; }, std::make_unique<int>(7));
    CHECK(f.result() == 8);
    auto owner = std::make_unique<int>(3);
    auto g = pool.submit([p = std::move(owner)]() mutable { return *p; });  // move-only callable
    CHECK(g.result() == 3);
  }

  TEST_CASE("arguments are moved into the call, never copied") {
    cfx::ThreadPoolExecutor pool({.max_workers = 1});
    Counted::copies = 0;
    CHECK(pool.submit(take, Counted{}).result() == 1);
    CHECK(Counted::copies == 0);
    CHECK(Counted::moves > 0);
  }

  TEST_CASE("std::ref passes a reference, member functions take their object") {
    cfx::ThreadPoolExecutor pool({.max_workers = 1});
    int x = 1;
    pool.submit(bump, std::ref(x)).result();
    CHECK(x == 2);
    Accumulator acc;
    CHECK(pool.submit(&Accumulator::add, &acc, 5).result() == 5);
    CHECK(pool.submit(&Accumulator::add, &acc, 6).result() == 11);
    CHECK(acc.total == 11);
  }

  TEST_CASE("a std::function and a const callable") {
    cfx::ThreadPoolExecutor pool({.max_workers = 1});
    std::function<std::string(int)> name = [](int i) { return "item " + std::to_string(i); };
    CHECK(pool.submit(name, 3).result() == "item 3");
    const auto square = [](int v) { return v * v; };
    CHECK(pool.submit(square, 9).result() == 81);
  }

}  // TEST_SUITE
