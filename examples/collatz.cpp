// cfx-collatz: Project Euler 14 sequentially and on cfx's backends, with timings.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

#include "collatz.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Splits [1, limit) into ranges of `block` starts, one task each, and reduces the results.
collatz::Best run_on(cfx::Executor& ex, std::uint64_t limit, std::uint64_t block) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (std::uint64_t lo = 1; lo < limit; lo += block) ranges.emplace_back(lo, std::min(limit, lo + block));
  collatz::Best best{0, 0};
  for (auto& b : ex.starmap(collatz::longest_in, ranges)) best = collatz::better(best, b);
  return best;
}

void row(const char* name, collatz::Best best, double secs, double base, std::size_t workers) {
  std::printf("%-12s %8llu %6d %9.3f %8.2f %10.2f\n", name,
              static_cast<unsigned long long>(best.first), best.second, secs, base / secs,
              base / secs / static_cast<double>(workers));
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t limit = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  std::size_t workers = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 2;
  std::printf("Project Euler 14: longest Collatz chain for starts below %llu, %zu workers\n",
              static_cast<unsigned long long>(limit), workers);
  std::printf("%-12s %8s %6s %9s %8s %10s\n", "backend", "start", "length", "seconds", "speedup",
              "efficiency");

  auto t0 = Clock::now();
  auto seq = collatz::longest_in(1, limit);
  double base = seconds_since(t0);
  row("sequential", seq, base, base, 1);

  t0 = Clock::now();
  cfx::ThreadPoolExecutor threads({.max_workers = workers});
  auto thr = run_on(threads, limit, std::max<std::uint64_t>(1, limit / (workers * 16)));
  row("thread", thr, seconds_since(t0), base, workers);
  return thr == seq ? 0 : 1;
}
