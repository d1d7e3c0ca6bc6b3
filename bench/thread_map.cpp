// thread_map: map on threads over many tiny items. cfx::ThreadPoolExecutor::map (chunksize
// 10,000) on 2 workers beside oneTBB's parallel_for writing a vector (grain 10,000, simple
// partitioner; the vector allocated in the timing, and once more allocated before it) and two
// plain std::threads each writing half of a vector; every result is summed in order, as a
// map's consumer would. All in one run, so the ratios hold on a noisy machine.
//
// cfx's map keeps its result slab in the spare byte buffer between maps, so its runs after the
// first reuse memory already touched, as the stricter oneTBB peer reuses the vector allocated
// before its timing.
//
//   thread_map [--items N] [--chunksize N] [--repeat N]   (--help lists them)
//
// Rates are items per second, the best of --repeat runs. The goal prints PASS/MISS and does
// not change the exit status; a wrong sum exits 1.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <latch>
#include <ranges>
#include <thread>
#include <vector>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <cfx/cfx.hpp>

#include "common.hpp"

namespace {

constexpr std::size_t kWorkers = 2;

struct Config {
  std::size_t items = 10'000'000;
  std::size_t chunksize = 10'000;
  int repeat = 5;
};

Config parse_args(int argc, char** argv) {
  Config c;
  bench::Flags("thread_map", "map over tiny items on threads, cfx beside oneTBB and std::thread")
      .value("--items", c.items, "items mapped")
      .value("--chunksize", c.chunksize, "items per chunk (cfx) and grain (oneTBB)")
      .value("--repeat", c.repeat, "runs per figure, the best is printed")
      .parse(argc, argv);
  c.repeat = std::max(c.repeat, 1);
  c.chunksize = std::max<std::size_t>(c.chunksize, 1);
  return c;
}

int twice_plus_one(int x) {
  return 2 * x + 1;
}

/// The sum of twice_plus_one over 0 .. n-1, which every peer must reach.
std::uint64_t expected(std::size_t n) {
  return static_cast<std::uint64_t>(n) * n;
}

void check(const char* who, std::uint64_t sum, std::size_t n) {
  if (sum == expected(n)) return;
  std::fprintf(stderr, "thread_map: %s summed to %llu\n", who,
               static_cast<unsigned long long>(sum));
  std::exit(1);
}

void cfx_map(const Config& c, const std::function<void()>& start) {
  cfx::ThreadPoolExecutor ex({.max_workers = kWorkers});
  {  // both threads up before timing, as the peers' are
    std::latch both(kWorkers);
    std::vector<cfx::Future<void>> fs;
    for (std::size_t i = 0; i < kWorkers; ++i)
      fs.push_back(ex.submit([&] { both.arrive_and_wait(); }));
    for (auto& f : fs) f.result();
  }
  start();
  std::uint64_t sum = 0;
  for (int v : ex.map(twice_plus_one, std::views::iota(0, static_cast<int>(c.items)),
                      {.chunksize = c.chunksize}))
    sum += static_cast<std::uint64_t>(v);
  check("cfx map", sum, c.items);
}

/// oneTBB runs 2 worker threads plus the main thread, which joins in from parallel_for. The
/// output vector is allocated in the timing, or before it (`ready`: no page faults timed, the
/// stricter peer on a VM where a fresh page costs microseconds).
void tbb_map(const Config& c, const std::function<void()>& start, bool ready) {
  oneapi::tbb::global_control limit{oneapi::tbb::global_control::max_allowed_parallelism,
                                    kWorkers + 1};
  oneapi::tbb::task_arena arena{static_cast<int>(kWorkers + 1), 1};
  arena.execute([] {  // wakes the workers before timing
    oneapi::tbb::parallel_for(
        0, 1 << 16, [](int) {}, oneapi::tbb::simple_partitioner{});
  });
  std::vector<int> out;
  if (ready) out.resize(c.items);
  start();
  out.resize(c.items);
  arena.execute([&] {
    oneapi::tbb::parallel_for(
        oneapi::tbb::blocked_range<std::size_t>(0, c.items, c.chunksize),
        [&](const auto& r) {
          for (std::size_t i = r.begin(); i < r.end(); ++i)
            out[i] = twice_plus_one(static_cast<int>(i));
        },
        oneapi::tbb::simple_partitioner{});
  });
  std::uint64_t sum = 0;
  for (int v : out) sum += static_cast<std::uint64_t>(v);
  check("oneTBB parallel_for", sum, c.items);
}

/// The floor: two threads started for the job, each writing its half.
void threads_map(const Config& c, const std::function<void()>& start) {
  start();
  std::vector<int> out(c.items);
  std::size_t half = c.items / 2;
  auto fill = [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) out[i] = twice_plus_one(static_cast<int>(i));
  };
  std::thread a(fill, 0, half), b(fill, half, c.items);
  a.join();
  b.join();
  std::uint64_t sum = 0;
  for (int v : out) sum += static_cast<std::uint64_t>(v);
  check("std::thread", sum, c.items);
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  Config c = parse_args(argc, argv);
  auto rate = [&](void (*job)(const Config&, const std::function<void()>&)) {
    return static_cast<double>(c.items) /
           bench::best_time(c.repeat, [&](const std::function<void()>& start) { job(c, start); });
  };
  double cfx = rate(cfx_map);
  double tbb =
      rate([](const Config& c, const std::function<void()>& start) { tbb_map(c, start, false); });
  double tbb_ready =
      rate([](const Config& c, const std::function<void()>& start) { tbb_map(c, start, true); });
  double threads = rate(threads_map);

  std::printf("== map of %zu items (x -> 2x + 1), chunksize %zu, 2 threads, summed in order ==\n",
              c.items, c.chunksize);
  bench::Table table({{"", 46, bench::Align::left}, {"items/s", 12}, {"cfx/peer", 10}});
  table.header();
  table.row({"cfx::ThreadPoolExecutor::map", bench::rate(cfx), ""});
  table.row({"oneTBB parallel_for into a vector", bench::rate(tbb), bench::ratio(cfx, tbb)});
  table.row({"  the same, vector allocated before timing", bench::rate(tbb_ready),
             bench::ratio(cfx, tbb_ready)});
  table.row({"2 std::threads into a vector", bench::rate(threads), bench::ratio(cfx, threads)});
  std::printf("\n");
  bench::Goals goal(48, 28);
  goal("map >= 0.5x oneTBB parallel_for", cfx / tbb >= 0.5, bench::times(cfx / tbb));
  goal("  ... with oneTBB's vector ready", cfx / tbb_ready >= 0.5, bench::times(cfx / tbb_ready));
  return 0;
}
