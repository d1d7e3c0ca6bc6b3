// thread_overhead: what a future costs. cfx::ThreadPoolExecutor beside Boost.Asio, oneTBB,
// Debian's thread_pool and Python's ThreadPoolExecutor, all in one run on 2 workers, so that
// the cfx/peer ratios stay meaningful on a noisy machine even when the absolute figures drift.
//
//   thread_overhead [--tasks N] [--one-at-a-time N] [--map-items N] [--pending N] [--repeat N]
//                   [--py-tasks N] [--py-map-items N] [--no-python]   (--help lists them)
//
// Every figure is the best of --repeat runs (default 3). Goals from the issue are printed as
// PASS/MISS; they do not change the exit status (a slow run is data, not a failure).
#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <latch>
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

#include "common.hpp"

namespace {

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
  bench::Flags("thread_overhead", "what a future costs, cfx::ThreadPoolExecutor beside its peers")
      .value("--tasks", c.tasks, "no-op tasks submitted before taking every result")
      .value("--one-at-a-time", c.one_at_a_time, "(submit, result) round trips")
      .value("--map-items", c.map_items, "items for map")
      .value("--pending", c.pending, "futures queued behind a blocked worker")
      .value("--repeat", c.repeat, "runs per figure, the best is printed")
      .value("--py-tasks", c.py_tasks, "tasks for the Python peer")
      .value("--py-map-items", c.py_map_items, "map items for the Python peer")
      .flag("--no-python", c.python, false, "skip the Python peer")
      .parse(argc, argv);
  c.repeat = std::max(c.repeat, 1);
  return c;
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

constexpr auto identity = [](int x) { return x; };

void cfx_map(std::size_t n, std::size_t chunk, const std::function<void()>& start) {
  cfx::ThreadPoolExecutor ex({.max_workers = kWorkers});
  warm_up(ex);
  start();
  std::uint64_t sum = 0;
  for (int v : ex.map(identity, std::views::iota(0, static_cast<int>(n)), {.chunksize = chunk}))
    sum += static_cast<std::uint64_t>(v);
  bench::check_sum("cfx map", sum, n);
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
  bench::check_sum("asio map", sum, n);
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
  bench::check_sum("tbb map", sum, n);
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

// ---- Report -------------------------------------------------------------------------------

/// Rows of section 1; the first is cfx, the base of the ratios.
struct Row {
  const char* name;
  std::optional<double> all;  // tasks/s, submit all then results
  std::optional<double> one;  // tasks/s, one at a time
};

void print_rows(const std::vector<Row>& rows) {
  bench::Table table({{"", 46, bench::Align::left},
                      {"submit all", 12},
                      {"cfx/peer", 10},
                      {"one by one", 12, bench::Align::right, 3},
                      {"cfx/peer", 10}});
  table.header();
  double cfx_all = *rows.front().all;
  double cfx_one = *rows.front().one;
  for (const auto& r : rows)
    table.row({r.name, bench::rate(r.all), bench::ratio(cfx_all, r.all), bench::rate(r.one),
               bench::ratio(cfx_one, r.one)});
}

/// Tasks per second of `job` on `n` tasks, the best of c.repeat runs.
double per_s(const Config& c, std::size_t n,
             void (*job)(std::size_t, const std::function<void()>&)) {
  return static_cast<double>(n) /
         bench::best_time(c.repeat, [&](const std::function<void()>& start) { job(n, start); });
}

std::vector<Row> submit_section(const Config& c, const bench::Figures& py) {
  std::printf(
      "== 1. submit + result of no-op tasks: %zu submitted, then every result; "
      "one by one: %zu x (submit, result) ==\n",
      c.tasks, c.one_at_a_time);
  std::vector<Row> rows = {
      {"cfx::ThreadPoolExecutor", per_s(c, c.tasks, cfx_submit_all),
       per_s(c, c.one_at_a_time, cfx_one_at_a_time)},
      {"Boost.Asio thread_pool + std::packaged_task", per_s(c, c.tasks, asio_submit_all),
       per_s(c, c.one_at_a_time, asio_one_at_a_time)},
      {"oneTBB task_group raw (no futures)", per_s(c, c.tasks, tbb_raw_submit_all), std::nullopt},
      {"oneTBB task_group + std::promise", per_s(c, c.tasks, tbb_promise_submit_all),
       per_s(c, c.one_at_a_time, tbb_promise_one_at_a_time)},
      {"thread_pool 4.0 (Debian libthread-pool-dev)", per_s(c, c.tasks, tp_submit_all),
       per_s(c, c.one_at_a_time, tp_one_at_a_time)},
      {"Python ThreadPoolExecutor(2)", bench::lookup(py, "submit_all_per_s"),
       bench::lookup(py, "one_at_a_time_per_s")},
  };
  print_rows(rows);
  std::printf(
      "  oneTBB: 2 workers + main thread (max_allowed_parallelism 3, arena 3 slots, 1 for "
      "main); raw: main also runs tasks in wait(); one by one n/a (wait() runs the task "
      "inline).\n  Python: %zu tasks, %zu one by one (smaller counts: CPython is far slower).\n\n",
      c.py_tasks, c.py_one_at_a_time);
  return rows;
}

void map_section(const Config& c, const bench::Figures& py) {
  std::printf("== 2. map of %zu no-op items, chunksize %zu ==\n", c.map_items, c.chunksize);
  auto per_item = [&](void (*job)(std::size_t, std::size_t, const std::function<void()>&)) {
    return static_cast<double>(c.map_items) /
           bench::best_time(c.repeat, [&](const std::function<void()>& start) {
             job(c.map_items, c.chunksize, start);
           });
  };
  double cfx_rate = per_item(cfx_map);
  double asio_rate = per_item(asio_map);
  double tbb_rate = per_item(tbb_map);
  auto py_rate = bench::lookup(py, "map_items_per_s");
  bench::Table table({{"", 46, bench::Align::left}, {"items", 12}, {"cfx/peer", 10}});
  table.header();
  table.row({"cfx map(chunksize)", bench::rate(cfx_rate), ""});
  table.row({"Asio packaged_task per chunk into a vector", bench::rate(asio_rate),
             bench::ratio(cfx_rate, asio_rate)});
  table.row({"oneTBB parallel_for grain (simple_partitioner)", bench::rate(tbb_rate),
             bench::ratio(cfx_rate, tbb_rate)});
  table.row({"Python ThreadPoolExecutor.map(chunksize)", bench::rate(py_rate),
             bench::ratio(cfx_rate, py_rate)});
  std::printf(
      "  Python: %zu items; its ThreadPoolExecutor ignores chunksize (one task per item)."
      "\n\n",
      c.py_map_items);
}

/// Returns cfx's bytes per pending future, for its goal.
double pending_section(const Config& c) {
  std::printf(
      "== 3. heap per pending future: %zu no-op submits behind a blocked 1-worker pool "
      "(mallinfo2, handles excluded) ==\n",
      c.pending);
  auto bytes = [&](double (*measure)(std::size_t)) {
    return bench::best_of(c.repeat, [&] { return measure(c.pending); });
  };
  double cfx_bytes = bytes(cfx_pending);
  double asio_bytes = bytes(asio_pending);
  double tp_bytes = bytes(tp_pending);
  bench::Table table({{"", 46, bench::Align::left}, {"", 9}, {"", 0, bench::Align::left}});
  auto row = [&](const char* name, double b, std::size_t handle) {
    table.row({name, bench::fmt("%.1f", b), bench::fmt("B  (+ %zu B handle)", handle)});
  };
  row("cfx::ThreadPoolExecutor", cfx_bytes, sizeof(cfx::Future<void>));
  row("Boost.Asio thread_pool + std::packaged_task", asio_bytes, sizeof(std::future<void>));
  row("thread_pool 4.0 (Debian libthread-pool-dev)", tp_bytes, sizeof(std::future<void>));
  std::printf("\n");
  return cfx_bytes;
}

void print_goals(const std::vector<Row>& rows, double cfx_bytes) {
  double vs_asio = *rows[0].all / *rows[1].all;
  double vs_tbb = *rows[0].all / *rows[2].all;
  bench::Goals goal(52, 22);
  goal("cfx >= 2x the tasks/s of Asio + packaged_task", vs_asio >= 2.0, bench::times(vs_asio));
  goal("cfx >= 0.5x the tasks/s of raw oneTBB task_group", vs_tbb >= 0.5, bench::times(vs_tbb));
  goal("< 128 bytes of heap per pending future", cfx_bytes < 128, bench::fmt("%.1f B", cfx_bytes));
}

}  // namespace

int main(int argc, char** argv) {
  Config c = parse_args(argc, argv);
  std::printf("thread_overhead: %zu workers, best of %d runs per figure\n\n", kWorkers, c.repeat);
  bench::Figures py;
  if (c.python)
    py = bench::run_peer("py_thread_overhead.py", {{"--workers", kWorkers},
                                                   {"--tasks", c.py_tasks},
                                                   {"--one-at-a-time", c.py_one_at_a_time},
                                                   {"--map-items", c.py_map_items},
                                                   {"--chunksize", c.chunksize},
                                                   {"--repeat", c.repeat}});
  std::vector<Row> rows = submit_section(c, py);
  map_section(c, py);
  double cfx_bytes = pending_section(c);
  print_goals(rows, cfx_bytes);
  return 0;
}
