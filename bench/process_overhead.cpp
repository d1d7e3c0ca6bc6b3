// process_overhead: what a task costs when it runs in another process. cfx::ProcessPoolExecutor
// beside Python's concurrent.futures.ProcessPoolExecutor, multiprocessing.Pool, loky and
// pebble, all in one run on 2 workers, with a raw pipe ping-pong between two processes as the
// floor of a round trip.
//
//   process_overhead [--tasks N] [--round-trips N] [--map-items N] [--chunksize N]
//                    [--repeat N] [--py-tasks N] [--py-round-trips N] [--py-map-items N]
//                    [--no-python]
//
// Throughput and start/shutdown figures are the best of --repeat runs (default 3); latencies
// are the median and p99 of one series of --round-trips samples. Goals are printed as
// PASS/MISS; they do not change the exit status (a slow run is data, not a failure). A wrong
// map result exits 1.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <cfx/cfx.hpp>

// ---- the tasks (registered: workers re-run this program and look them up by name) ----------

void noop() {}
CFX_TASK(noop);

int noop_int(int x) { return x; }
CFX_TASK(noop_int);

void nap_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
CFX_TASK(nap_ms);

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kWorkers = 2;

struct Config {
  std::size_t tasks = 200'000;
  std::size_t round_trips = 20'000;
  std::size_t map_items = 1'000'000;
  std::size_t chunksize = 1000;
  int repeat = 3;
  std::size_t py_tasks = 20'000;
  std::size_t py_round_trips = 2'000;
  std::size_t py_map_items = 1'000'000;
  bool python = true;
};

Config parse_args(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&] { return i + 1 < argc ? std::strtoull(argv[++i], nullptr, 10) : 0ULL; };
    if (arg == "--tasks")
      c.tasks = value();
    else if (arg == "--round-trips")
      c.round_trips = value();
    else if (arg == "--map-items")
      c.map_items = value();
    else if (arg == "--chunksize")
      c.chunksize = value();
    else if (arg == "--repeat")
      c.repeat = static_cast<int>(value());
    else if (arg == "--py-tasks")
      c.py_tasks = value();
    else if (arg == "--py-round-trips")
      c.py_round_trips = value();
    else if (arg == "--py-map-items")
      c.py_map_items = value();
    else if (arg == "--no-python")
      c.python = false;
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment atop process_overhead.cpp)\n",
                   arg.c_str());
      std::exit(2);
    }
  }
  c.repeat = std::max(c.repeat, 1);
  c.tasks = std::max<std::size_t>(c.tasks, 1);
  c.round_trips = std::max<std::size_t>(c.round_trips, 1);
  c.chunksize = std::max<std::size_t>(c.chunksize, 1);
  return c;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// The shortest of `repeat` timings of job(start): job calls start() right before the part
/// to time (its setup is untimed), and the clock stops when job returns.
double best_time(int repeat, const std::function<void(const std::function<void()>&)>& job) {
  double best = 1e300;
  for (int i = 0; i < repeat; ++i) {
    Clock::time_point t0;
    job([&] { t0 = Clock::now(); });
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

/// Median and p99 of samples in µs.
struct Latency {
  double median_us = 0;
  double p99_us = 0;
};

Latency summarise(std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))];
  };
  return {at(0.5), at(0.99)};
}

// ---- cfx ------------------------------------------------------------------------------------

cfx::ProcessPoolOptions options(cfx::StartMethod method = cfx::StartMethod::spawn) {
  return {.max_workers = kWorkers, .start_method = method};
}

/// Workers start on demand: tasks that overlap in time make the pool start all of them.
void warm_up(cfx::ProcessPoolExecutor& ex) {
  std::vector<cfx::Future<void>> fs;
  for (std::size_t i = 0; i < 2 * kWorkers; ++i) fs.push_back(ex.submit(nap_ms, 50));
  for (auto& f : fs) f.result();
}

double cfx_submit_all(const Config& c) {
  cfx::ProcessPoolExecutor ex(options());
  warm_up(ex);
  return static_cast<double>(c.tasks) / best_time(c.repeat, [&](const auto& start) {
           std::vector<cfx::Future<void>> fs;
           fs.reserve(c.tasks);
           start();
           for (std::size_t i = 0; i < c.tasks; ++i) fs.push_back(ex.submit(noop));
           for (auto& f : fs) f.result();
           fs.clear();  // freeing the states is part of a future's cost
         });
}

Latency cfx_round_trip(const Config& c) {
  cfx::ProcessPoolExecutor ex(options());
  warm_up(ex);
  for (int i = 0; i < 1000; ++i) ex.submit(noop).result();  // settle the service estimate
  std::vector<double> us;
  us.reserve(c.round_trips);
  for (std::size_t i = 0; i < c.round_trips; ++i) {
    auto t0 = Clock::now();
    ex.submit(noop).result();
    us.push_back(seconds_since(t0) * 1e6);
  }
  return summarise(us);
}

double cfx_map(const Config& c) {
  cfx::ProcessPoolExecutor ex(options());
  warm_up(ex);
  std::vector<int> items(c.map_items);
  for (std::size_t i = 0; i < items.size(); ++i) items[i] = static_cast<int>(i);
  const std::uint64_t want = std::uint64_t{c.map_items} * (c.map_items - 1) / 2;
  return static_cast<double>(c.map_items) / best_time(c.repeat, [&](const auto& start) {
           start();
           std::uint64_t sum = 0;
           for (int v : ex.map(noop_int, items, {.chunksize = c.chunksize}))
             sum += static_cast<std::uint64_t>(v);
           if (sum != want) {
             std::fprintf(stderr, "cfx map: wrong sum %llu\n",
                          static_cast<unsigned long long>(sum));
             std::exit(1);
           }
         });
}

/// Best (construct + submit + first result) and best shutdown(wait = true), in ms.
std::pair<double, double> cfx_start_stop(int repeat, cfx::StartMethod method) {
  double start = 1e300, stop = 1e300;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = Clock::now();
    cfx::ProcessPoolExecutor ex(options(method));
    ex.submit(noop).result();
    auto t1 = Clock::now();
    ex.shutdown(true);
    auto t2 = Clock::now();
    start = std::min(start, std::chrono::duration<double, std::milli>(t1 - t0).count());
    stop = std::min(stop, std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  return {start, stop};
}

// ---- the floor: raw pipes between two processes ---------------------------------------------

constexpr std::size_t kPingBytes = 24;  // about a no-op call frame

/// A forked child echoes kPingBytes over two pipes; `relay`: the main thread hands each ping
/// to a second thread, which does the pipe I/O and hands the reply back (futex wake-ups both
/// ways), the shape of cfx's path (caller, I/O thread, worker).
Latency pipe_ping_pong(std::size_t n, bool relay) {
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) {
    std::perror("pipe");
    std::exit(1);
  }
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    std::array<char, kPingBytes> buf{};
    for (;;) {
      std::size_t got = 0;
      while (got < buf.size()) {
        ssize_t k = ::read(to_child[0], buf.data() + got, buf.size() - got);
        if (k <= 0) ::_exit(0);
        got += static_cast<std::size_t>(k);
      }
      if (::write(to_parent[1], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
        ::_exit(1);
    }
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  auto exchange = [&] {
    std::array<char, kPingBytes> buf{};
    if (::write(to_child[1], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
      std::exit(1);
    std::size_t got = 0;
    while (got < buf.size()) {
      ssize_t k = ::read(to_parent[0], buf.data() + got, buf.size() - got);
      if (k <= 0) std::exit(1);
      got += static_cast<std::size_t>(k);
    }
  };

  std::atomic<int> turn{0};  // 0: idle, 1: ping requested, 2: pong back, 3: stop
  std::thread helper;
  if (relay)
    helper = std::thread([&] {
      for (;;) {
        int t;
        while ((t = turn.load()) != 1 && t != 3) turn.wait(t);
        if (t == 3) return;
        exchange();
        turn.store(2);
        turn.notify_one();
      }
    });
  std::vector<double> us;
  us.reserve(n);
  for (std::size_t i = 0; i < n + 1000; ++i) {  // the first 1000: warm-up
    auto t0 = Clock::now();
    if (relay) {
      turn.store(1);
      turn.notify_one();
      while (turn.load() != 2) turn.wait(1);
      turn.store(0);
    } else {
      exchange();
    }
    if (i >= 1000) us.push_back(seconds_since(t0) * 1e6);
  }
  if (relay) {
    turn.store(3);
    turn.notify_one();
    helper.join();
  }
  ::close(to_child[1]);
  ::close(to_parent[0]);
  ::waitpid(pid, nullptr, 0);
  return summarise(us);
}

// ---- Python peers ---------------------------------------------------------------------------

std::map<std::string, double> run_python(const Config& c) {
  const char* python = std::getenv("CFX_BENCH_PYTHON");
  std::string cmd = std::string(python ? python : "/usr/bin/python3") +
                    " " CFX_BENCH_PEERS "/py_process_overhead.py --workers 2 --tasks " +
                    std::to_string(c.py_tasks) + " --round-trips " +
                    std::to_string(c.py_round_trips) + " --map-items " +
                    std::to_string(c.py_map_items) + " --chunksize " +
                    std::to_string(c.chunksize) + " --repeat " + std::to_string(c.repeat);
  std::map<std::string, double> out;
  std::fflush(nullptr);
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

// ---- report ---------------------------------------------------------------------------------

std::string fmt(const char* format, double v) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), format, v);
  return buf.data();
}

std::string rate(std::optional<double> per_s) {
  if (!per_s) return "n/a";
  if (*per_s >= 1e6) return fmt("%.2f M/s", *per_s / 1e6);
  return fmt("%.1f k/s", *per_s / 1e3);
}

std::string num(std::optional<double> v, const char* format) {
  return v ? fmt(format, *v) : "n/a";
}

std::string ratio(double cfx, std::optional<double> peer) {
  if (!peer || *peer <= 0) return "n/a";
  double r = cfx / *peer;
  return fmt(r < 0.1 ? "%.3fx" : "%.2fx", r);
}

std::optional<double> lookup(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) return std::nullopt;
  return it->second;
}

/// printf width for `s` padded to `width` columns: "µ" takes two bytes but one column.
int width_for(const std::string& s, int width) {
  int extra = 0;
  for (std::size_t at = s.find("µ"); at != std::string::npos; at = s.find("µ", at + 1)) ++extra;
  return width + extra;
}

/// met: nullopt when the figure could not be measured (no Python peer): SKIP.
void goal(const char* what, std::optional<bool> met, const std::string& figure) {
  std::printf("GOAL %-*s %-*s %s\n", width_for(what, 56), what, width_for(figure, 28),
              figure.c_str(), !met ? "SKIP" : *met ? "PASS" : "MISS");
}

struct Peer {
  const char* name;
  const char* key;
};

const std::array<Peer, 4> kPeers = {{
    {"Python concurrent.futures.ProcessPoolExecutor", "ppe"},
    {"Python multiprocessing.Pool", "pool"},
    {"Python loky (joblib.externals.loky)", "loky"},
    {"Python pebble.ProcessPool", "pebble"},
}};

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit
  Config c = parse_args(argc, argv);
  std::printf("process_overhead: %zu worker processes, C++ figures best of %d runs\n\n", kWorkers,
              c.repeat);

  std::map<std::string, double> py;
  if (c.python) py = run_python(c);

  // ---- 1. submit + result
  double cfx_all = cfx_submit_all(c);
  std::printf(
      "== 1. submit + result of no-op tasks: submit N, then take every result "
      "(cfx %zu, Python %zu) ==\n",
      c.tasks, c.py_tasks);
  std::printf("%-48s %14s %10s\n", "", "tasks/s", "cfx/peer");
  std::printf("%-48s %14s %10s\n", "cfx::ProcessPoolExecutor (spawn)", rate(cfx_all).c_str(), "");
  for (const auto& p : kPeers) {
    auto v = lookup(py, std::string(p.key) + "_submit_all_per_s");
    std::printf("%-48s %14s %10s\n", p.name, rate(v).c_str(), ratio(cfx_all, v).c_str());
  }

  // ---- 2. round trip
  Latency cfx_rt = cfx_round_trip(c);
  Latency raw = pipe_ping_pong(c.round_trips, false);
  Latency relayed = pipe_ping_pong(c.round_trips, true);
  std::printf(
      "\n== 2. round trip, one task in flight: submit, result, repeat (cfx %zu, Python %zu "
      "samples) ==\n",
      c.round_trips, c.py_round_trips);
  // "µ" is two bytes: one more in the width keeps the columns aligned.
  std::printf("%-48s %11s %11s %10s   (cfx/peer: below 1 is cfx faster)\n", "", "median µs",
              "p99 µs", "cfx/peer");
  std::printf("%-48s %10.1f %10.1f %10s\n", "cfx::ProcessPoolExecutor (spawn)", cfx_rt.median_us,
              cfx_rt.p99_us, "");
  std::printf("%-48s %10.1f %10.1f %10s\n", "floor: raw pipe ping-pong, 2 processes",
              raw.median_us, raw.p99_us, ratio(cfx_rt.median_us, raw.median_us).c_str());
  std::printf("%-48s %10.1f %10.1f %10s\n", "floor + a thread hand-off each way (cfx's shape)",
              relayed.median_us, relayed.p99_us, ratio(cfx_rt.median_us, relayed.median_us).c_str());
  for (const auto& p : kPeers) {
    auto med = lookup(py, std::string(p.key) + "_rt_median_us");
    auto p99 = lookup(py, std::string(p.key) + "_rt_p99_us");
    std::printf("%-48s %10s %10s %10s\n", p.name, num(med, "%.1f").c_str(),
                num(p99, "%.1f").c_str(), ratio(cfx_rt.median_us, med).c_str());
  }

  // ---- 3. map
  double cfx_map_rate = cfx_map(c);
  std::printf("\n== 3. map of %zu no-op int items, chunksize %zu (Python %zu items) ==\n",
              c.map_items, c.chunksize, c.py_map_items);
  std::printf("%-48s %14s %10s\n", "", "items/s", "cfx/peer");
  std::printf("%-48s %14s %10s\n", "cfx map(noop_int, items, {.chunksize})",
              rate(cfx_map_rate).c_str(), "");
  for (const auto& p : kPeers) {
    auto v = lookup(py, std::string(p.key) + "_map_items_per_s");
    std::printf("%-48s %14s %10s\n", p.name, rate(v).c_str(), ratio(cfx_map_rate, v).c_str());
  }

  // ---- 4. start and shutdown
  auto [spawn_start, spawn_stop] = cfx_start_stop(c.repeat, cfx::StartMethod::spawn);
  auto [fork_start, fork_stop] = cfx_start_stop(c.repeat, cfx::StartMethod::fork);
  std::printf(
      "\n== 4. pool start to first result (construct, submit one no-op, result) and "
      "shutdown(wait) ==\n");
  std::printf("%-48s %10s %10s %12s %10s   (below 1 is cfx faster)\n", "", "start ms",
              "cfx/peer", "shutdown ms", "cfx/peer");
  std::printf("%-48s %10.2f %10s %12.2f %10s\n", "cfx::ProcessPoolExecutor (spawn)", spawn_start,
              "", spawn_stop, "");
  std::printf("%-48s %10.2f %10s %12.2f %10s\n", "cfx::ProcessPoolExecutor (fork)", fork_start,
              "", fork_stop, "");
  auto start_row = [&](const char* name, const std::string& key) {
    auto s = lookup(py, key + "_start_ms");
    auto d = lookup(py, key + "_shutdown_ms");
    std::printf("%-48s %10s %10s %12s %10s\n", name, num(s, "%.2f").c_str(),
                ratio(spawn_start, s).c_str(), num(d, "%.2f").c_str(),
                ratio(spawn_stop, d).c_str());
  };
  for (const auto& p : kPeers) start_row(p.name, p.key);
  start_row("Python ProcessPoolExecutor (spawn context)", "ppe_spawn");
  std::printf(
      "  Python peers use their Linux defaults (fork; loky: its own fork+exec) unless marked; "
      "cfx/peer is\n  against cfx spawn. cfx starts workers on demand: one task starts one "
      "worker.\n\n");

  auto ppe_all = lookup(py, "ppe_submit_all_per_s");
  auto pool_map = lookup(py, "pool_map_items_per_s");
  auto met = [](std::optional<double> peer, double r, double at_least) -> std::optional<bool> {
    if (!peer) return std::nullopt;
    return r >= at_least;
  };
  goal("cfx submit+result >= 30x Python ProcessPoolExecutor",
       met(ppe_all, ppe_all ? cfx_all / *ppe_all : 0, 30),
       ppe_all ? fmt("%.1fx", cfx_all / *ppe_all) : "n/a (no Python)");
  goal("cfx round trip < 25 µs (median)", cfx_rt.median_us < 25,
       fmt("%.1f µs", cfx_rt.median_us) + fmt(" (raw pipes %.1f)", raw.median_us));
  goal("cfx map >= 3x multiprocessing.Pool.map",
       met(pool_map, pool_map ? cfx_map_rate / *pool_map : 0, 3),
       pool_map ? fmt("%.2fx", cfx_map_rate / *pool_map) : "n/a (no Python)");
  goal("cfx start to first result < 20 ms (spawn)", spawn_start < 20, fmt("%.2f ms", spawn_start));
  return 0;
}
