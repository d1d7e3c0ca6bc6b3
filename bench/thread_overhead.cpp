// thread_overhead: what a future costs. cfx::ThreadPoolExecutor beside Boost.Asio, oneTBB,
// Debian's thread_pool and Python's ThreadPoolExecutor, all in one run on 2 workers, so that
// the cfx/peer ratios stay meaningful on a noisy machine even when the absolute figures drift.
//
//   thread_overhead [--tasks N] [--one-at-a-time N] [--map-items N] [--pending N] [--repeat N]
//                   [--py-tasks N] [--py-map-items N] [--no-python]
//
// Every figure is the best of --repeat runs (default 3). Goals from the issue are printed as
// PASS/MISS; they do not change the exit status (a slow run is data, not a failure).
#include <malloc.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <latch>
#include <map>
#include <optional>
#include <ranges>
#include <string>
#include <vector>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cfx/cfx.hpp>
#include <thread_pool/thread_pool.hpp>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kWorkers = 2;

struct Config {
  std::size_t tasks = 1'000'000;
  std::size_t one_at_a_time = 20'000;  // round trips are ~100x dearer than queued tasks
  std::size_t map_items = 10'000'000;
  std::size_t chunksize = 1000;
  std::size_t pending = 100'000;
  int repeat = 3;
  std::size_t py_tasks = 100'000;
  std::size_t py_one_at_a_time = 5'000;
  std::size_t py_map_items = 100'000;
  bool python = true;
};

Config parse_args(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&] { return i + 1 < argc ? std::strtoull(argv[++i], nullptr, 10) : 0ULL; };
    if (arg == "--tasks")
      c.tasks = value();
    else if (arg == "--one-at-a-time")
      c.one_at_a_time = value();
    else if (arg == "--map-items")
      c.map_items = value();
    else if (arg == "--pending")
      c.pending = value();
    else if (arg == "--repeat")
      c.repeat = static_cast<int>(value());
    else if (arg == "--py-tasks")
      c.py_tasks = value();
    else if (arg == "--py-map-items")
      c.py_map_items = value();
    else if (arg == "--no-python")
      c.python = false;
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment atop thread_overhead.cpp)\n",
                   arg.c_str());
      std::exit(2);
    }
  }
  if (c.repeat < 1) c.repeat = 1;
  return c;
}

/// Seconds taken by job(), which does its own untimed setup through `start`: job calls
/// start() right before the part to time, and the clock stops when job returns.
double timed(const std::function<void(const std::function<void()>& start)>& job) {
  Clock::time_point t0;
  job([&] { t0 = Clock::now(); });
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// The shortest of `repeat` timings: noise on a shared machine only ever adds time.
double best_time(int repeat, const std::function<void(const std::function<void()>&)>& job) {
  double best = 1e300;
  for (int i = 0; i < repeat; ++i) best = std::min(best, timed(job));
  return best;
}

// Lambdas, not functions: a thread pool's usual task, and the same callable for every peer.
constexpr auto noop = [] {};

// ---- 1. submit all, then take every result ------------------------------------------------

/// Starts both lazily created cfx threads: two tasks that wait for each other need two.
void warm_up(cfx::ThreadPoolExecutor& ex) {
  std::latch both(kWorkers);
  std::vector<cfx::Future<void>> fs;
  for (std::size_t i = 0; i < kWorkers; ++i)
    fs.push_back(ex.submit([&] { both.arrive_and_wait(); }));
  for (auto& f : fs) f.result();
}

void cfx_submit_all(std::size_t n, const std::function<void()>& start) {
  cfx::ThreadPoolExecutor ex({.max_workers = kWorkers});
  warm_up(ex);
  std::vector<cfx::Future<void>> fs;
  fs.reserve(n);
  start();
  for (std::size_t i = 0; i < n; ++i) fs.push_back(ex.submit(noop));
  for (auto& f : fs) f.result();
  fs.clear();  // freeing the states is part of a future's cost, for every peer
}

void cfx_one_at_a_time(std::size_t n, const std::function<void()>& start) {
  cfx::ThreadPoolExecutor ex({.max_workers = kWorkers});
  warm_up(ex);
  start();
  for (std::size_t i = 0; i < n; ++i) ex.submit(noop).result();
}

std::future<void> asio_submit(boost::asio::thread_pool& pool) {
  std::packaged_task<void()> task(noop);
  auto f = task.get_future();
  boost::asio::post(pool, std::move(task));
  return f;
}

void asio_submit_all(std::size_t n, const std::function<void()>& start) {
  boost::asio::thread_pool pool(kWorkers);
  std::vector<std::future<void>> fs;
  fs.reserve(n);
  start();
  for (std::size_t i = 0; i < n; ++i) fs.push_back(asio_submit(pool));
  for (auto& f : fs) f.get();
  fs.clear();
}

void asio_one_at_a_time(std::size_t n, const std::function<void()>& start) {
  boost::asio::thread_pool pool(kWorkers);
  start();
  for (std::size_t i = 0; i < n; ++i) asio_submit(pool).get();
}

/// oneTBB runs 2 worker threads plus the main thread: max_allowed_parallelism 3 (the default
/// on 2 cores would allow 1 worker) and an arena of 3 slots, 1 reserved for the main thread.
/// The main thread spawns, and in wait() it runs tasks too, as TBB is meant to be used.
struct TbbPool {
  oneapi::tbb::global_control limit{oneapi::tbb::global_control::max_allowed_parallelism,
                                    kWorkers + 1};
  oneapi::tbb::task_arena arena{static_cast<int>(kWorkers + 1), 1};

  TbbPool() {
    // Wakes the workers before timing, as the other pools' threads are started before.
    arena.execute([] {
      oneapi::tbb::parallel_for(
          0, 1 << 16, [](int) {}, oneapi::tbb::simple_partitioner{});
    });
  }
};

void tbb_raw_submit_all(std::size_t n, const std::function<void()>& start) {
  TbbPool tbb;
  tbb.arena.execute([&] {
    oneapi::tbb::task_group group;
    start();
    for (std::size_t i = 0; i < n; ++i) group.run(noop);
    group.wait();
  });
}

/// task_group tasks are const callables, so each task gets a pointer to its promise.
void tbb_promise_submit_all(std::size_t n, const std::function<void()>& start) {
  TbbPool tbb;
  std::vector<std::promise<void>> promises;
  std::vector<std::future<void>> fs;
  promises.reserve(n);
  fs.reserve(n);
  tbb.arena.execute([&] {
    oneapi::tbb::task_group group;
    start();
    for (std::size_t i = 0; i < n; ++i) {
      auto* p = &promises.emplace_back();
      fs.push_back(p->get_future());
      group.run([p] { p->set_value(); });
    }
    // Blocking on the futures, like every futures peer; the main thread runs no task here.
    for (auto& f : fs) f.get();
    group.wait();
    fs.clear();
    promises.clear();
  });
}

void tbb_promise_one_at_a_time(std::size_t n, const std::function<void()>& start) {
  TbbPool tbb;
  tbb.arena.execute([&] {
    oneapi::tbb::task_group group;
    start();
    for (std::size_t i = 0; i < n; ++i) {
      std::promise<void> p;
      auto f = p.get_future();
      group.run([&p] { p.set_value(); });
      f.get();
    }
    group.wait();
  });
}

void tp_submit_all(std::size_t n, const std::function<void()>& start) {
  thread_pool::ThreadPool pool(kWorkers);
  std::vector<std::future<void>> fs;
  fs.reserve(n);
  start();
  for (std::size_t i = 0; i < n; ++i) fs.push_back(pool.Submit(noop));
  for (auto& f : fs) f.get();
  fs.clear();
}

void tp_one_at_a_time(std::size_t n, const std::function<void()>& start) {
  thread_pool::ThreadPool pool(kWorkers);
  start();
  for (std::size_t i = 0; i < n; ++i) pool.Submit(noop).get();
}

// ---- 2. map with chunks -------------------------------------------------------------------

std::uint64_t expected_sum(std::size_t n) {
  return std::uint64_t{n} * (n - 1) / 2;
}

void check_sum(const char* who, std::uint64_t sum, std::size_t n) {
  if (sum == expected_sum(n)) return;
  std::fprintf(stderr, "%s: wrong map result %llu\n", who, static_cast<unsigned long long>(sum));
  std::exit(1);
}

constexpr auto identity = [](int x) { return x; };

void cfx_map(std::size_t n, std::size_t chunk, const std::function<void()>& start) {
  cfx::ThreadPoolExecutor ex({.max_workers = kWorkers});
  warm_up(ex);
  start();
  std::uint64_t sum = 0;
  for (int v : ex.map(identity, std::views::iota(0, static_cast<int>(n)), {.chunksize = chunk}))
    sum += static_cast<std::uint64_t>(v);
  check_sum("cfx map", sum, n);
}

/// One packaged_task per chunk writing its slice; results are read chunk by chunk, in order,
/// as cfx's map hands them out.
void asio_map(std::size_t n, std::size_t chunk, const std::function<void()>& start) {
  boost::asio::thread_pool pool(kWorkers);
  start();
  std::vector<int> out(n);
  std::vector<std::future<void>> fs;
  for (std::size_t lo = 0; lo < n; lo += chunk) {
    std::size_t hi = std::min(n, lo + chunk);
    std::packaged_task<void()> task([&out, lo, hi] {
      for (std::size_t i = lo; i < hi; ++i) out[i] = identity(static_cast<int>(i));
    });
    fs.push_back(task.get_future());
    boost::asio::post(pool, std::move(task));
  }
  std::uint64_t sum = 0;
  for (std::size_t c = 0; c < fs.size(); ++c) {
    fs[c].get();
    for (std::size_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i)
      sum += static_cast<std::uint64_t>(out[i]);
  }
  check_sum("asio map", sum, n);
}

void tbb_map(std::size_t n, std::size_t chunk, const std::function<void()>& start) {
  TbbPool tbb;
  start();
  std::vector<int> out(n);
  tbb.arena.execute([&] {
    oneapi::tbb::parallel_for(
        oneapi::tbb::blocked_range<std::size_t>(0, n, chunk),
        [&](const auto& r) {
          for (std::size_t i = r.begin(); i < r.end(); ++i) out[i] = identity(static_cast<int>(i));
        },
        oneapi::tbb::simple_partitioner{});
  });
  std::uint64_t sum = 0;
  for (int v : out) sum += static_cast<std::uint64_t>(v);
  check_sum("tbb map", sum, n);
}

// ---- 3. memory per pending future ---------------------------------------------------------

std::size_t heap_in_use() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

/// Heap bytes per future of `n` submits queued behind a blocked single worker. `block`
/// submits a task that counts `started` down and waits for `gate`; `submit` queues one no-op
/// and keeps its future (in storage reserved before measuring: the handles are not counted).
template <class Block, class Submit, class Drain>
double pending_bytes(std::size_t n, Block block, Submit submit, Drain drain) {
  std::latch started(1);
  std::latch gate(1);
  block(started, gate);
  started.wait();
  std::size_t before = heap_in_use();
  for (std::size_t i = 0; i < n; ++i) submit();
  std::size_t after = heap_in_use();
  gate.count_down();
  drain();
  return static_cast<double>(after - before) / static_cast<double>(n);
}

double cfx_pending(std::size_t n) {
  cfx::ThreadPoolExecutor ex({.max_workers = 1});
  std::vector<cfx::Future<void>> fs;
  fs.reserve(n + 1);
  return pending_bytes(
      n,
      [&](std::latch& started, std::latch& gate) {
        fs.push_back(ex.submit([&] {
          started.count_down();
          gate.wait();
        }));
      },
      [&] { fs.push_back(ex.submit(noop)); },
      [&] {
        for (auto& f : fs) f.result();
      });
}

double asio_pending(std::size_t n) {
  boost::asio::thread_pool pool(1);
  std::vector<std::future<void>> fs;
  fs.reserve(n);
  return pending_bytes(
      n,
      [&](std::latch& started, std::latch& gate) {
        boost::asio::post(pool, [&] {
          started.count_down();
          gate.wait();
        });
      },
      [&] { fs.push_back(asio_submit(pool)); },
      [&] {
        for (auto& f : fs) f.get();
      });
}

double tp_pending(std::size_t n) {
  thread_pool::ThreadPool pool(1);
  std::vector<std::future<void>> fs;
  fs.reserve(n + 1);
  return pending_bytes(
      n,
      [&](std::latch& started, std::latch& gate) {
        fs.push_back(pool.Submit([&] {
          started.count_down();
          gate.wait();
        }));
      },
      [&] { fs.push_back(pool.Submit(noop)); },
      [&] {
        for (auto& f : fs) f.get();
      });
}

double best_pending(int repeat, double (*measure)(std::size_t), std::size_t n) {
  double best = 1e300;
  for (int i = 0; i < repeat; ++i) best = std::min(best, measure(n));
  return best;
}

// ---- Python peer --------------------------------------------------------------------------

/// Runs bench/peers/py_thread_overhead.py and returns its "key value" lines; empty if it
/// could not run (the C++ figures are still worth printing).
std::map<std::string, double> run_python(const Config& c) {
  const char* python = std::getenv("CFX_BENCH_PYTHON");
  std::string cmd = std::string(python ? python : "/usr/bin/python3") +
                    " " CFX_BENCH_PEERS "/py_thread_overhead.py --workers 2 --tasks " +
                    std::to_string(c.py_tasks) + " --one-at-a-time " +
                    std::to_string(c.py_one_at_a_time) + " --map-items " +
                    std::to_string(c.py_map_items) + " --chunksize " + std::to_string(c.chunksize) +
                    " --repeat " + std::to_string(c.repeat);
  std::map<std::string, double> out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  std::array<char, 256> line{};
  while (std::fgets(line.data(), line.size(), pipe)) {
    std::array<char, 64> key{};
    double value = 0;
    if (std::sscanf(line.data(), "%63s %lf", key.data(), &value) == 2) out[key.data()] = value;
  }
  if (pclose(pipe) != 0) std::fprintf(stderr, "python peer failed: %s\n", cmd.c_str());
  return out;
}

// ---- Report -------------------------------------------------------------------------------

std::string rate(double per_s) {
  std::array<char, 32> buf{};
  if (per_s >= 1e6)
    std::snprintf(buf.data(), buf.size(), "%7.2f M/s", per_s / 1e6);
  else
    std::snprintf(buf.data(), buf.size(), "%7.1f k/s", per_s / 1e3);
  return buf.data();
}

std::string ratio(double cfx, std::optional<double> peer) {
  if (!peer) return "       n/a";
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%9.2fx", cfx / *peer);
  return buf.data();
}

struct Row {
  const char* name;
  std::optional<double> all;  // tasks/s, submit all then results
  std::optional<double> one;  // tasks/s, one at a time
};

void print_rows(const std::vector<Row>& rows) {
  std::printf("%-46s %12s %10s   %12s %10s\n", "", "submit all", "cfx/peer", "one by one",
              "cfx/peer");
  double cfx_all = *rows.front().all;
  double cfx_one = *rows.front().one;
  for (const auto& r : rows)
    std::printf("%-46s %12s %10s   %12s %10s\n", r.name, r.all ? rate(*r.all).c_str() : "n/a",
                ratio(cfx_all, r.all).c_str(), r.one ? rate(*r.one).c_str() : "n/a",
                ratio(cfx_one, r.one).c_str());
}

void goal(const char* what, bool met, const char* figure) {
  std::printf("GOAL %-52s %-22s %s\n", what, figure, met ? "PASS" : "MISS");
}

std::string fmt(const char* format, double v) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), format, v);
  return buf.data();
}

std::optional<double> lookup(const std::map<std::string, double>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) return std::nullopt;
  return it->second;
}

}  // namespace

int main(int argc, char** argv) {
  Config c = parse_args(argc, argv);
  auto per_s = [&](std::size_t n, void (*job)(std::size_t, const std::function<void()>&)) {
    return static_cast<double>(n) /
           best_time(c.repeat, [&](const std::function<void()>& start) { job(n, start); });
  };
  std::printf("thread_overhead: %zu workers, best of %d runs per figure\n\n", kWorkers, c.repeat);

  std::printf(
      "== 1. submit + result of no-op tasks: %zu submitted, then every result; "
      "one by one: %zu x (submit, result) ==\n",
      c.tasks, c.one_at_a_time);
  std::map<std::string, double> py;
  if (c.python) py = run_python(c);
  std::vector<Row> rows = {
      {"cfx::ThreadPoolExecutor", per_s(c.tasks, cfx_submit_all),
       per_s(c.one_at_a_time, cfx_one_at_a_time)},
      {"Boost.Asio thread_pool + std::packaged_task", per_s(c.tasks, asio_submit_all),
       per_s(c.one_at_a_time, asio_one_at_a_time)},
      {"oneTBB task_group raw (no futures)", per_s(c.tasks, tbb_raw_submit_all), std::nullopt},
      {"oneTBB task_group + std::promise", per_s(c.tasks, tbb_promise_submit_all),
       per_s(c.one_at_a_time, tbb_promise_one_at_a_time)},
      {"thread_pool 4.0 (Debian libthread-pool-dev)", per_s(c.tasks, tp_submit_all),
       per_s(c.one_at_a_time, tp_one_at_a_time)},
      {"Python ThreadPoolExecutor(2)", lookup(py, "submit_all_per_s"),
       lookup(py, "one_at_a_time_per_s")},
  };
  print_rows(rows);
  std::printf(
      "  oneTBB: 2 workers + main thread (max_allowed_parallelism 3, arena 3 slots, 1 for "
      "main); raw: main also runs tasks in wait(); one by one n/a (wait() runs the task "
      "inline).\n  Python: %zu tasks, %zu one by one (smaller counts: CPython is far slower).\n\n",
      c.py_tasks, c.py_one_at_a_time);

  std::printf("== 2. map of %zu no-op items, chunksize %zu ==\n", c.map_items, c.chunksize);
  auto per_item = [&](void (*job)(std::size_t, std::size_t, const std::function<void()>&)) {
    return static_cast<double>(c.map_items) /
           best_time(c.repeat, [&](const std::function<void()>& start) {
             job(c.map_items, c.chunksize, start);
           });
  };
  double cfx_map_rate = per_item(cfx_map);
  double asio_map_rate = per_item(asio_map);
  double tbb_map_rate = per_item(tbb_map);
  auto py_map = lookup(py, "map_items_per_s");
  std::printf("%-46s %12s %10s\n", "", "items", "cfx/peer");
  std::printf("%-46s %12s %10s\n", "cfx map(chunksize)", rate(cfx_map_rate).c_str(), "");
  std::printf("%-46s %12s %10s\n", "Asio packaged_task per chunk into a vector",
              rate(asio_map_rate).c_str(), ratio(cfx_map_rate, asio_map_rate).c_str());
  std::printf("%-46s %12s %10s\n", "oneTBB parallel_for grain (simple_partitioner)",
              rate(tbb_map_rate).c_str(), ratio(cfx_map_rate, tbb_map_rate).c_str());
  std::printf("%-46s %12s %10s\n", "Python ThreadPoolExecutor.map(chunksize)",
              py_map ? rate(*py_map).c_str() : "n/a", ratio(cfx_map_rate, py_map).c_str());
  std::printf(
      "  Python: %zu items; its ThreadPoolExecutor ignores chunksize (one task per item)."
      "\n\n",
      c.py_map_items);

  std::printf(
      "== 3. heap per pending future: %zu no-op submits behind a blocked 1-worker pool "
      "(mallinfo2, handles excluded) ==\n",
      c.pending);
  double cfx_bytes = best_pending(c.repeat, cfx_pending, c.pending);
  double asio_bytes = best_pending(c.repeat, asio_pending, c.pending);
  double tp_bytes = best_pending(c.repeat, tp_pending, c.pending);
  std::printf("%-46s %9.1f B  (+ %zu B handle)\n", "cfx::ThreadPoolExecutor", cfx_bytes,
              sizeof(cfx::Future<void>));
  std::printf("%-46s %9.1f B  (+ %zu B handle)\n", "Boost.Asio thread_pool + std::packaged_task",
              asio_bytes, sizeof(std::future<void>));
  std::printf("%-46s %9.1f B  (+ %zu B handle)\n\n", "thread_pool 4.0 (Debian libthread-pool-dev)",
              tp_bytes, sizeof(std::future<void>));

  double vs_asio = *rows[0].all / *rows[1].all;
  double vs_tbb = *rows[0].all / *rows[2].all;
  goal("cfx >= 2x the tasks/s of Asio + packaged_task", vs_asio >= 2.0,
       fmt("%.2fx", vs_asio).c_str());
  goal("cfx >= 0.5x the tasks/s of raw oneTBB task_group", vs_tbb >= 0.5,
       fmt("%.2fx", vs_tbb).c_str());
  goal("< 128 bytes of heap per pending future", cfx_bytes < 128, fmt("%.1f B", cfx_bytes).c_str());
  return 0;
}
