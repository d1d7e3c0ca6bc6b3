// pool_patterns: Python's multiprocessing.Pool and concurrent.futures idioms, in C++.
//
//   Python                                      cfx
//   with Pool(4) as pool:                       cfx::ProcessPoolExecutor pool({.max_workers = 4});
//   pool.map(square, range(10))                 pool.map(square, inputs).to_vector()
//   pool.starmap(add, [(1, 2), (3, 4)])         pool.starmap(add, pairs)
//   pool.apply(square, (7,))                    pool.submit(square, 7).result()
//   pool.apply_async(square, (7,), callback=f)  pool.submit(square, 7).add_done_callback(f)
//   pool.map(square, data, chunksize=1000)      pool.map(square, data, {.chunksize = 1000})
//   pool.imap_unordered(square, data)           pool.map_unordered(square, data)
//   for f in as_completed(futures): ...         for (auto& f : cfx::as_completed(futures))
//
// Every task here runs in worker processes, so each is registered with CFX_TASK.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <cfx/cfx.hpp>

std::int64_t square(std::int64_t x) {
  return x * x;
}
CFX_TASK(square);

int add(int a, int b) {
  return a + b;
}
CFX_TASK(add);

/// Fails for about one input in four. The outcome depends only on the input (a fixed
/// pseudo-random generator seeded with it), so the output of this example is reproducible.
int flaky_lookup(int key) {
  std::minstd_rand rng(static_cast<std::uint_fast32_t>(key));
  if (rng() % 4 == 0) throw std::runtime_error("lookup of key " + std::to_string(key) + " failed");
  return key * 10;
}
CFX_TASK(flaky_lookup);

namespace {

template <class T>
void print_list(const char* label, const std::vector<T>& values) {
  std::printf("%-22s [", label);
  for (std::size_t i = 0; i < values.size(); ++i)
    std::printf("%s%lld", i ? ", " : "", static_cast<long long>(values[i]));
  std::puts("]");
}

void map_and_starmap(cfx::Executor& pool) {
  std::vector<std::int64_t> inputs(10);
  std::iota(inputs.begin(), inputs.end(), 0);
  print_list("map(square):", pool.map(square, inputs).to_vector());

  std::vector<std::pair<int, int>> pairs = {{1, 2}, {3, 4}, {5, 6}};
  print_list("starmap(add):", pool.starmap(add, pairs).to_vector());
}

void apply_and_apply_async(cfx::Executor& pool) {
  std::printf("%-22s %lld\n",
              "apply(square, 7):", static_cast<long long>(pool.submit(square, 7).result()));

  // The callbacks run in the pool's completion thread: they only record the value, guarded,
  // and the latch tells this thread when all three have run.
  std::mutex mutex;
  std::vector<std::int64_t> collected;
  std::latch all_done(3);
  for (std::int64_t x : {3, 4, 5}) {
    pool.submit(square, x).add_done_callback([&](const cfx::Future<std::int64_t>& f) {
      std::lock_guard lock(mutex);
      collected.push_back(f.result());
      all_done.count_down();
    });
  }
  all_done.wait();
  std::sort(collected.begin(), collected.end());  // completion order varies
  print_list("apply_async callbacks:", collected);
}

void chunked_map(cfx::Executor& pool) {
  std::vector<std::int64_t> data(100'000);
  std::iota(data.begin(), data.end(), 1);
  // One task per 1,000 items instead of one per item: 100 round trips, not 100,000.
  std::int64_t sum = 0;
  for (std::int64_t v : pool.map(square, data, {.chunksize = 1000})) sum += v;
  std::printf("%-22s %lld\n", "chunked map, sum:", static_cast<long long>(sum));

  sum = 0;
  for (std::int64_t v : pool.map_unordered(square, data, {.chunksize = 1000})) sum += v;
  std::printf("%-22s %lld\n", "map_unordered, sum:", static_cast<long long>(sum));
}

void failures_per_future(cfx::Executor& pool) {
  std::unordered_map<cfx::Future<int>, int> key_of;
  std::vector<cfx::Future<int>> futures;
  for (int key = 1; key <= 8; ++key) {
    futures.push_back(pool.submit(flaky_lookup, key));
    key_of[futures.back()] = key;
  }
  // Handle each outcome as it completes; keep them by key so the printout has a fixed order.
  std::map<int, std::string> outcome;
  for (auto& f : cfx::as_completed(futures)) {
    try {
      outcome[key_of[f]] = "-> " + std::to_string(f.result());
    } catch (const std::runtime_error& e) {
      outcome[key_of[f]] = "failed: " + std::string(e.what());
    }
  }
  std::puts("as_completed, failures handled per future:");
  for (const auto& [key, text] : outcome) std::printf("  key %d %s\n", key, text.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit here
  cfx::ProcessPoolExecutor pool({.max_workers = 4});  // shut down (waiting) at scope exit
  map_and_starmap(pool);
  apply_and_apply_async(pool);
  chunked_map(pool);
  failures_per_future(pool);
}
