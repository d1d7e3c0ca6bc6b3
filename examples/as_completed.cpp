// as_completed: handle results as soon as they are ready, not in the order submitted.
//
// Part 1 submits Collatz searches over ranges of very different sizes, each on its own
// thread, and prints each answer as its future completes: roughly smallest first, and the
// largest range, submitted first, comes out last. (Threads, because a process pool starts
// its workers one after another, which would blur the order for the small ranges.)
// Part 2 shows as_completed with a timeout: one task waits for a latch that this program
// opens only later, so the timeout always expires with exactly that future unfinished.
#include <cstdint>
#include <cstdio>
#include <latch>
#include <unordered_map>
#include <utility>
#include <vector>

// A thread-only program includes only what it uses: no codec, no Boost, no JSON.
#include <cfx/thread_pool.hpp>
#include <cfx/wait.hpp>

#include "collatz.hpp"

namespace {

using Range = std::pair<std::uint64_t, std::uint64_t>;

void print_in_completion_order() {
  std::puts("Part 1: Collatz searches of different sizes, printed as they complete");
  const std::vector<Range> ranges = {
      {1, 1'000'000}, {1, 20'000}, {1, 500'000}, {1, 2'000}, {1, 100'000}};
  cfx::ThreadPoolExecutor pool({.max_workers = ranges.size()});

  // Python's idiom, {pool.submit(fn, r): r for r in ranges}: a map from future to its input,
  // to know what each result belongs to. as_completed takes the map and yields its keys.
  std::unordered_map<cfx::Future<collatz::Best>, Range> input_of;
  for (const Range& r : ranges)
    input_of.emplace(pool.submit(collatz::longest_in, r.first, r.second), r);
  for (auto& f : cfx::as_completed(input_of)) {
    auto [start, length] = f.result();
    std::printf("  starts below %9llu: longest chain from %llu, %d steps\n",
                static_cast<unsigned long long>(input_of.at(f).second),
                static_cast<unsigned long long>(start), length);
  }
}

void timeout_expires() {
  std::puts("Part 2: as_completed with a timeout that expires");
  cfx::ThreadPoolExecutor pool({.max_workers = 3});
  std::latch gate(1);
  std::vector<cfx::Future<int>> futures = {
      pool.submit([] { return 1; }),
      pool.submit([] { return 2; }),
      pool.submit([&gate] {
        gate.wait();  // held until the program opens the gate below
        return 3;
      }),
  };
  // Let the two quick tasks finish first, so what follows does not depend on timing.
  cfx::wait({futures[0], futures[1]});
  try {
    for (auto& f : cfx::as_completed(futures, std::chrono::milliseconds(200)))
      std::printf("  completed: %d\n", f.result());
  } catch (const cfx::TimeoutError& e) {
    std::printf("  TimeoutError: %s\n", e.what());
  }
  gate.count_down();  // the blocked task may finish now: it was never cancelled
  std::printf("  after opening the gate: %d\n", futures[2].result());
}

}  // namespace

int main() {
  // Threads only, so no cfx::init: that is for programs that start process pools.
  print_in_completion_order();
  timeout_expires();
}
