// cfx-collatz: Project Euler 14 (which start below a limit gives the longest Collatz chain?)
// sequentially and on cfx's backends, with timings. ./run.sh runs it.
//
//   cfx-collatz [--limit N] [--backend thread|process|both|mpi|all] [--workers N]
//               [--workers-per-rank N] [--chunksize N] [--config FILE] [--json]
//
// mpi (and all, which is both plus mpi) needs an MPI launch, one serving rank or more:
//   mpiexec -n 3 cfx-collatz --backend all     (rank 0 prints the table, ranks 1-2 serve)
//
// The range [1, limit) is cut into chunks of --chunksize starts; each chunk is one task,
// submitted as its own future, and the answers are reduced as the futures complete
// (cfx::as_completed), which also feeds a progress bar when stderr is a terminal.
// Exit status: 0 when every backend agrees with the sequential answer, 1 when one does not,
// 2 for bad options or a bad config file.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

#include "collatz.hpp"

// Worker processes find the task by this name; the thread backend needs no registration.
CFX_TASK_AS(&collatz::longest_in, "collatz_longest_in");

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Options {
  std::uint64_t limit = 1'000'000;
  std::string backend = "both";
  std::size_t workers = std::max(1U, std::thread::hardware_concurrency());
  std::size_t workers_per_rank = 1;
  std::uint64_t chunksize = 0;  // 0: chosen from limit and workers
  std::string config;
  bool json = false;
};

/// About 10,000 starts take a few milliseconds: long enough that a task's dispatch cost
/// (microseconds on threads, tens of them on processes) is noise, and with at least 8 chunks
/// per worker the last chunk to finish leaves little idle time at the end.
std::uint64_t default_chunksize(std::uint64_t limit, std::size_t workers) {
  return std::clamp<std::uint64_t>(limit / (workers * 8), 1, 10'000);
}

/// Parses the command line into `o`. Returns an exit status when the program should stop
/// (0 after --help, 2 for a bad option: the usual status of a usage error), else nullopt.
std::optional<int> parse(int argc, char** argv, Options& o) {
  CLI::App app{"Project Euler 14 on cfx: sequential, thread and process backends compared"};
  app.add_option("--limit", o.limit, "starts below this are searched")
      ->check(CLI::Range(std::uint64_t{2}, std::uint64_t{1} << 40))
      ->capture_default_str();
  auto* backend = app.add_option("--backend", o.backend, "which backends to time")
                      ->check(CLI::IsMember({"thread", "process", "both", "mpi", "all"}))
                      ->capture_default_str();
  auto* workers = app.add_option("--workers", o.workers, "threads or processes per pool")
                      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}))
                      ->capture_default_str();
  app.add_option("--workers-per-rank", o.workers_per_rank,
                 "mpi: worker processes on each serving rank")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}))
      ->capture_default_str();
  app.add_option("--chunksize", o.chunksize, "starts per task (default: a few ms of work)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  app.add_option("--config", o.config, "cfx config JSON: runs only the backend it names")
      ->check(CLI::ExistingFile)
      ->excludes(backend)
      ->excludes(workers);
  app.add_flag("--json", o.json, "print one JSON object instead of a table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (o.chunksize == 0) o.chunksize = default_chunksize(o.limit, o.workers);
  return std::nullopt;
}

/// A one-line progress bar on stderr. It is drawn only when stderr is a terminal, and only
/// once the run has lasted a second: short runs and piped output stay clean.
class Progress {
 public:
  Progress(std::string label, std::size_t total)
      : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO) == 1) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");  // erase it: the table follows
  }

  void tick() {
    ++done_;
    if (!tty_) return;
    auto now = Clock::now();
    if (now - start_ < std::chrono::seconds(1) || now - last_ < std::chrono::milliseconds(100))
      return;
    last_ = now;
    draw();
  }

 private:
  void draw() {
    constexpr std::size_t width = 40;
    std::size_t filled = width * done_ / total_;
    std::fprintf(stderr, "\r%-10s [%s%s] %3zu%% (%zu/%zu chunks)", label_.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 100 * done_ / total_, done_, total_);
    std::fflush(stderr);
    drawn_ = true;
  }

  std::string label_;
  std::size_t total_;
  std::size_t done_ = 0;
  bool tty_;
  bool drawn_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
};

/// Submits one future per chunk of [1, limit) and reduces the answers as they complete.
collatz::Best search(cfx::Executor& ex, const Options& o) {
  std::vector<cfx::Future<collatz::Best>> chunks;
  for (std::uint64_t lo = 1; lo < o.limit; lo += o.chunksize)
    chunks.push_back(ex.submit(collatz::longest_in, lo, std::min(o.limit, lo + o.chunksize)));
  Progress progress(std::string(ex.backend()), chunks.size());
  collatz::Best best{0, 0};
  for (auto& f : cfx::as_completed(chunks)) {
    best = collatz::better(best, f.result());
    progress.tick();
  }
  return best;
}

struct Row {
  std::string backend;
  std::size_t workers;
  collatz::Best best;
  double seconds;
};

/// Times a whole pool's life, from start to shutdown: starting worker processes is part of
/// what the process backend costs.
Row time_pool(const std::function<std::unique_ptr<cfx::Executor>()>& make, const Options& o) {
  auto t0 = Clock::now();
  auto ex = make();
  Row row{std::string(ex->backend()), ex->max_workers(), search(*ex, o), 0};
  ex.reset();
  row.seconds = seconds_since(t0);
  return row;
}

std::vector<Row> run_backends(const Options& o) {
  std::vector<Row> rows;
  if (!o.config.empty()) {
    rows.push_back(time_pool([&] { return cfx::make_executor_from_file(o.config); }, o));
    return rows;
  }
  const bool mpi_only = o.backend == "mpi";
  if (o.backend != "process" && !mpi_only)
    rows.push_back(time_pool(
        [&] {
          return std::make_unique<cfx::ThreadPoolExecutor>(
              cfx::ThreadPoolOptions{.max_workers = o.workers});
        },
        o));
  if (o.backend != "thread" && !mpi_only)
    rows.push_back(time_pool(
        [&] {
          return std::make_unique<cfx::ProcessPoolExecutor>(
              cfx::ProcessPoolOptions{.max_workers = o.workers});
        },
        o));
  if (o.backend == "mpi" || o.backend == "all")
    rows.push_back(time_pool(
        [&] {
          return std::make_unique<cfx::MpiPoolExecutor>(
              cfx::MpiPoolOptions{.workers_per_rank = o.workers_per_rank});
        },
        o));
  return rows;
}

void print_table(const Options& o, const std::vector<Row>& rows) {
  const Row& seq = rows.front();
  std::printf("Project Euler 14: longest Collatz chain for starts below %llu\n",
              static_cast<unsigned long long>(o.limit));
  std::printf("answer: start %llu, %d steps (chunks of %llu starts)\n\n",
              static_cast<unsigned long long>(seq.best.first), seq.best.second,
              static_cast<unsigned long long>(o.chunksize));
  std::printf("%-12s %7s %9s %8s %11s\n", "backend", "workers", "seconds", "speedup", "efficiency");
  for (const Row& r : rows) {
    double speedup = seq.seconds / r.seconds;
    std::printf("%-12s %7zu %9.3f %7.2fx %10.0f%%%s\n", r.backend.c_str(), r.workers, r.seconds,
                speedup, 100 * speedup / static_cast<double>(r.workers),
                r.best == seq.best ? "" : "  WRONG ANSWER");
  }
}

void print_json(const Options& o, const std::vector<Row>& rows) {
  const Row& seq = rows.front();
  nlohmann::ordered_json out = {
      {"limit", o.limit},
      {"chunksize", o.chunksize},
      {"answer", {{"start", seq.best.first}, {"length", seq.best.second}}},
      {"rows", nlohmann::ordered_json::array()}};
  for (const Row& r : rows) {
    double speedup = seq.seconds / r.seconds;
    out["rows"].push_back({{"backend", r.backend},
                           {"workers", r.workers},
                           {"start", r.best.first},
                           {"length", r.best.second},
                           {"seconds", r.seconds},
                           {"speedup", speedup},
                           {"efficiency", speedup / static_cast<double>(r.workers)},
                           {"correct", r.best == seq.best}});
  }
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit here
  Options o;
  if (auto status = parse(argc, argv, o)) return *status;

  auto t0 = Clock::now();
  std::vector<Row> rows{{"sequential", 1, collatz::longest_in(1, o.limit), 0}};
  rows.front().seconds = seconds_since(t0);
  try {
    auto pools = run_backends(o);
    rows.insert(rows.end(), pools.begin(), pools.end());
  } catch (const cfx::Error& e) {  // a bad config file; --backend mpi without mpiexec
    std::fprintf(stderr, "cfx-collatz: %s\n", e.what());
    return 2;
  }

  o.json ? print_json(o, rows) : print_table(o, rows);
  bool agree = std::all_of(rows.begin(), rows.end(),
                           [&](const Row& r) { return r.best == rows.front().best; });
  return agree ? 0 : 1;
}
