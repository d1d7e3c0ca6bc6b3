// shared_data: one big structure, built once, shared with every worker instead of copied per
// call (Python: multiprocessing.Array('L', range(1, N)) handed to a Pool's initializer).
//
// A SharedArray of 10,000,000 integers (80 MB) is filled once in this process; several
// registered functions are then mapped over slices of it on a process pool, four at a time.
// Each call receives the whole array as an argument: it travels as a descriptor, each worker
// maps it once, and every later call reuses that mapping. Each worker reports its resident
// memory from /proc/self/status: the array's pages count as shared memory (RssShmem), while
// the worker's private memory (RssAnon) stays a few MB: nothing was copied.
#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

namespace {

using Numbers = cfx::SharedArray<std::uint64_t>;
constexpr std::size_t kCount = 10'000'000;
constexpr std::size_t kSlices = 40;

std::uint64_t sum_slice(Numbers a, std::size_t slice) {
  std::uint64_t s = 0;
  for (std::size_t i = slice * a.size() / kSlices; i < (slice + 1) * a.size() / kSlices; ++i)
    s += a[i];
  return s;
}

std::uint64_t count_multiples_of_7(Numbers a, std::size_t slice) {
  std::uint64_t n = 0;
  for (std::size_t i = slice * a.size() / kSlices; i < (slice + 1) * a.size() / kSlices; ++i)
    n += a[i] % 7 == 0;
  return n;
}

std::uint64_t max_square_mod(Numbers a, std::size_t slice) {
  std::uint64_t m = 0;
  for (std::size_t i = slice * a.size() / kSlices; i < (slice + 1) * a.size() / kSlices; ++i)
    m = std::max(m, a[i] * a[i] % 1'000'003);
  return m;
}

struct Memory {
  int pid = 0;
  std::uint64_t rss_kb = 0, anon_kb = 0, shmem_kb = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Memory, pid, rss_kb, anon_kb, shmem_kb)

/// This worker's resident memory, after touching every page of the array.
Memory worker_memory(Numbers a, int) {
  volatile std::uint64_t touch = 0;
  for (std::size_t i = 0; i < a.size(); i += 512) touch = touch + a[i];
  Memory m;
  m.pid = ::getpid();
  std::ifstream status("/proc/self/status");
  for (std::string key; status >> key;) {
    std::uint64_t kb = 0;
    if (key == "VmRSS:" && status >> kb) m.rss_kb = kb;
    if (key == "RssAnon:" && status >> kb) m.anon_kb = kb;
    if (key == "RssShmem:" && status >> kb) m.shmem_kb = kb;
  }
  return m;
}

}  // namespace

CFX_TASK(sum_slice);
CFX_TASK(count_multiples_of_7);
CFX_TASK(max_square_mod);
CFX_TASK(worker_memory);

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  Numbers numbers(kCount);  // built once: 1, 2, ..., 10,000,000
  for (std::size_t i = 0; i < kCount; ++i) numbers[i] = i + 1;
  std::printf("array: %zu integers, %zu MB, built once\n", numbers.size(),
              numbers.size() * sizeof(std::uint64_t) >> 20);

  cfx::ProcessPoolExecutor pool({.max_workers = 4});
  std::vector<std::pair<Numbers, std::size_t>> slices;
  for (std::size_t s = 0; s < kSlices; ++s) slices.emplace_back(numbers, s);

  std::uint64_t sum = 0, sevens = 0, max = 0;
  for (auto v : pool.starmap(sum_slice, slices)) sum += v;
  for (auto v : pool.starmap(count_multiples_of_7, slices)) sevens += v;
  for (auto v : pool.starmap(max_square_mod, slices)) max = std::max(max, v);
  std::printf("sum: %llu\n", static_cast<unsigned long long>(sum));
  std::printf("multiples of 7: %llu\n", static_cast<unsigned long long>(sevens));
  std::printf("max of n^2 mod 1000003: %llu\n", static_cast<unsigned long long>(max));

  // One report per worker (more calls than workers, keyed by pid).
  std::vector<std::pair<Numbers, int>> probes(16, {numbers, 0});
  std::map<int, Memory> per_worker;
  for (const Memory& m : pool.starmap(worker_memory, probes)) per_worker[m.pid] = m;
  for (const auto& [pid, m] : per_worker)
    std::printf("worker: resident %llu MB, of which shared (the array) %llu MB, private %llu MB\n",
                static_cast<unsigned long long>(m.rss_kb >> 10),
                static_cast<unsigned long long>(m.shmem_kb >> 10),
                static_cast<unsigned long long>(m.anon_kb >> 10));
  return 0;
}
