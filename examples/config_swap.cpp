// config_swap: the backend is a deployment choice, not a code change.
//
//   config_swap [CONFIG.json]                  e.g. examples/pool.json, examples/pool-process.json
//   CFX_BACKEND=process CFX_MAX_WORKERS=2 config_swap
//
// The job is written once against cfx::Executor; the config file (or, without one, the
// defaults) picks the backend, and the environment variables CFX_BACKEND and
// CFX_MAX_WORKERS override either. docs/config.md lists every key.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

#include "collatz.hpp"

// Registered because the config may well choose the process backend.
CFX_TASK_AS(&collatz::longest_in, "collatz_longest_in");

namespace {

std::unique_ptr<cfx::Executor> executor_from(int argc, char** argv) {
  if (argc > 1) return cfx::make_executor_from_file(argv[1]);
  return cfx::make_executor(nlohmann::json::object());  // defaults: the thread backend
}

/// The job: the longest Collatz chain below 100,000, in chunks of 5,000 starts.
collatz::Best job(cfx::Executor& ex) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (std::uint64_t lo = 1; lo < 100'000; lo += 5'000) ranges.emplace_back(lo, lo + 5'000);
  collatz::Best best{0, 0};
  for (const auto& b : ex.starmap(collatz::longest_in, ranges)) best = collatz::better(best, b);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit here
  std::unique_ptr<cfx::Executor> ex;
  try {
    ex = executor_from(argc, argv);
  } catch (const cfx::ConfigError& e) {
    std::fprintf(stderr, "config_swap: %s\n", e.what());
    return 2;
  }
  std::printf("backend: %s, max_workers: %zu\n", std::string(ex->backend()).c_str(),
              ex->max_workers());
  auto [start, length] = job(*ex);
  std::printf("longest chain below 100000: start %llu, %d steps\n",
              static_cast<unsigned long long>(start), length);
}
