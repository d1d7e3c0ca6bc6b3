// process_overhead: what a task costs when it runs in another process. cfx::ProcessPoolExecutor
// beside Python's concurrent.futures.ProcessPoolExecutor, multiprocessing.Pool, loky and
// pebble, all in one run on 2 workers, with a raw pipe ping-pong between two processes as the
// floor of a round trip.
//
//   process_overhead [--tasks N] [--round-trips N] [--map-items N] [--chunksize N]
//                    [--repeat N] [--py-tasks N] [--py-round-trips N] [--py-map-items N]
//                    [--no-python]   (--help lists them)
//
// Throughput and start/shutdown figures are the best of --repeat runs (default 3); latencies
// are the median and p99 of one series of --round-trips samples. Goals are printed as
// PASS/MISS; they do not change the exit status (a slow run is data, not a failure). A wrong
// map result exits 1.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <cfx/cfx.hpp>

#include "common.hpp"

// ---- the tasks (registered: workers re-run this program and look them up by name) ----------

void noop() {}
CFX_TASK(noop);

int noop_int(int x) {
  return x;
}
CFX_TASK(noop_int);

void nap_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}
CFX_TASK(nap_ms);

namespace {

using bench::Clock;
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
  bench::Flags("process_overhead", "what a task in another process costs, cfx beside Python")
      .value("--tasks", c.tasks, "no-op tasks submitted before taking every result")
      .value("--round-trips", c.round_trips, "(submit, result) samples for the latencies")
      .value("--map-items", c.map_items, "ints for map")
      .value("--chunksize", c.chunksize, "map chunk size, cfx's and the peers'")
      .value("--repeat", c.repeat, "runs per throughput figure, the best is printed")
      .value("--py-tasks", c.py_tasks, "tasks for the Python peers")
      .value("--py-round-trips", c.py_round_trips, "round-trip samples for the Python peers")
      .value("--py-map-items", c.py_map_items, "map items for the Python peers")
      .flag("--no-python", c.python, false, "skip the Python peers")
      .parse(argc, argv);
  c.repeat = std::max(c.repeat, 1);
  c.tasks = std::max<std::size_t>(c.tasks, 1);
  c.round_trips = std::max<std::size_t>(c.round_trips, 1);
  c.chunksize = std::max<std::size_t>(c.chunksize, 1);
  return c;
}

/// Median and p99 of samples in µs.
struct Latency {
  double median_us = 0;
  double p99_us = 0;
  /// The tail, as the goal measures it: p99 over the median.
  double tail() const { return p99_us / median_us; }
};

Latency summarise(std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[std::min(us.size() - 1,
                       static_cast<std::size_t>(q * static_cast<double>(us.size())))];
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
  return static_cast<double>(c.tasks) / bench::best_time(c.repeat, [&](const auto& start) {
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
    us.push_back(bench::seconds_since(t0) * 1e6);
  }
  return summarise(us);
}

double cfx_map(const Config& c) {
  cfx::ProcessPoolExecutor ex(options());
  warm_up(ex);
  std::vector<int> items(c.map_items);
  for (std::size_t i = 0; i < items.size(); ++i) items[i] = static_cast<int>(i);
  return static_cast<double>(c.map_items) / bench::best_time(c.repeat, [&](const auto& start) {
           start();
           std::uint64_t sum = 0;
           for (int v : ex.map(noop_int, items, {.chunksize = c.chunksize}))
             sum += static_cast<std::uint64_t>(v);
           bench::check_sum("cfx map", sum, c.map_items);
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

/// How the ping-pong waits. `relay`: the main thread hands each ping to a second thread, which
/// does the pipe I/O and hands the reply back (futex wake-ups both ways), the shape of cfx's
/// path (caller, I/O thread, worker). `polling`: both processes read without blocking, in a
/// loop, so that neither ever sleeps or is woken: what any design could reach on this
/// machine, its cores given over to the two processes; what is left of the tail there is the
/// machine's own (its cores stopping, bench::Stalls).
enum class PingWait { blocking, relay, polling };

/// Reads exactly buf.size() bytes from fd (non-blocking when `poll`: EAGAIN is tried again);
/// false at the end of the pipe or on an error.
bool read_ping(int fd, std::array<char, kPingBytes>& buf, bool poll) {
  std::size_t got = 0;
  while (got < buf.size()) {
    ssize_t k = ::read(fd, buf.data() + got, buf.size() - got);
    if (k < 0 && poll && errno == EAGAIN) continue;
    if (k <= 0) return false;
    got += static_cast<std::size_t>(k);
  }
  return true;
}

/// A forked child echoes kPingBytes over two pipes, waiting as `wait` says.
Latency pipe_ping_pong(std::size_t n, PingWait wait) {
  const bool poll = wait == PingWait::polling;
  const bool relay = wait == PingWait::relay;
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
    if (poll) ::fcntl(to_child[0], F_SETFL, O_NONBLOCK);
    std::array<char, kPingBytes> buf{};
    for (;;) {
      if (!read_ping(to_child[0], buf, poll)) ::_exit(0);
      if (::write(to_parent[1], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
        ::_exit(1);
    }
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  if (poll) ::fcntl(to_parent[0], F_SETFL, O_NONBLOCK);
  auto exchange = [&] {
    std::array<char, kPingBytes> buf{};
    if (::write(to_child[1], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()) ||
        !read_ping(to_parent[0], buf, poll))
      std::exit(1);
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
    if (i >= 1000) us.push_back(bench::seconds_since(t0) * 1e6);
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

// ---- report ---------------------------------------------------------------------------------

std::string num(std::optional<double> v, const char* format) {
  return v ? bench::fmt(format, *v) : "n/a";
}

/// cfx/peer; three decimals below 0.1, where Python's start and shutdown ratios fall.
std::string ratio(double cfx, std::optional<double> peer) {
  return bench::ratio(cfx, peer, 3);
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

/// cfx's figures that the goals are about.
struct CfxFigures {
  double submit_all = 0;  // tasks/s
  Latency round_trip;
  Latency raw_pipes;
  // Both processes polling: the machine's own tail. Not measured on one CPU, where the two
  // would spin through each other's time slices (milliseconds a round trip).
  std::optional<Latency> polling_pipes;
  bench::Stalls stalls;
  double map = 0;          // items/s
  double spawn_start = 0;  // ms
};

const bench::Column kName = {"", 48, bench::Align::left};

/// A peer's row: its name, then cells(key), made from its figures under `key`.
template <class Cells>
void peer_row(const bench::Table& table, const char* name, const std::string& key, Cells cells) {
  std::vector<std::string> row = cells(key);
  row.insert(row.begin(), name);
  table.row(row);
}

template <class Cells>
void peer_rows(const bench::Table& table, Cells cells) {
  for (const auto& p : kPeers) peer_row(table, p.name, p.key, cells);
}

/// cfx's rate, then each Python peer's (its figure "<key><suffix>"), with cfx/peer.
void rate_table(const char* unit, const char* cfx_name, double cfx, const bench::Figures& py,
                const std::string& suffix) {
  bench::Table table({kName, {unit, 14}, {"cfx/peer", 10}});
  table.header();
  table.row({cfx_name, bench::rate(cfx), ""});
  peer_rows(table, [&](const std::string& key) -> std::vector<std::string> {
    auto v = bench::lookup(py, key + suffix);
    return {bench::rate(v), ratio(cfx, v)};
  });
}

double submit_section(const Config& c, const bench::Figures& py) {
  double cfx = cfx_submit_all(c);
  std::printf(
      "== 1. submit + result of no-op tasks: submit N, then take every result "
      "(cfx %zu, Python %zu) ==\n",
      c.tasks, c.py_tasks);
  rate_table("tasks/s", "cfx::ProcessPoolExecutor (spawn)", cfx, py, "_submit_all_per_s");
  return cfx;
}

/// The share of cfx's median round trips that meet a stall of the machine's (bench::Stalls).
double stall_odds(const CfxFigures& cfx) {
  return cfx.stalls.per_s * cfx.round_trip.median_us * 1e-6;
}

void round_trip_section(const Config& c, const bench::Figures& py, CfxFigures& cfx) {
  cfx.round_trip = cfx_round_trip(c);
  cfx.raw_pipes = pipe_ping_pong(c.round_trips, PingWait::blocking);
  Latency relayed = pipe_ping_pong(c.round_trips, PingWait::relay);
  if (cfx::cpu_count() >= 2)  // the cores this process may use (affinity, cgroup quota)
    cfx.polling_pipes = pipe_ping_pong(c.round_trips, PingWait::polling);
  std::printf(
      "\n== 2. round trip, one task in flight: submit, result, repeat (cfx %zu, Python %zu "
      "samples) ==\n",
      c.round_trips, c.py_round_trips);
  bench::Table table({kName, {"median µs", 10}, {"p99 µs", 10}, {"cfx/peer", 10}});
  table.header("(cfx/peer: below 1 is cfx faster)");
  double base = cfx.round_trip.median_us;
  auto row = [&](const char* name, Latency l, const std::string& vs) {
    table.row({name, bench::fmt("%.1f", l.median_us), bench::fmt("%.1f", l.p99_us), vs});
  };
  row("cfx::ProcessPoolExecutor (spawn)", cfx.round_trip, "");
  row("floor: raw pipe ping-pong, 2 processes", cfx.raw_pipes,
      ratio(base, cfx.raw_pipes.median_us));
  row("floor + a thread hand-off each way (cfx's shape)", relayed, ratio(base, relayed.median_us));
  if (cfx.polling_pipes)
    row("floor: both processes polling, never sleeping", *cfx.polling_pipes,
        ratio(base, cfx.polling_pipes->median_us));
  peer_rows(table, [&](const std::string& key) -> std::vector<std::string> {
    auto median = bench::lookup(py, key + "_rt_median_us");
    return {num(median, "%.1f"), num(bench::lookup(py, key + "_rt_p99_us"), "%.1f"),
            ratio(base, median)};
  });
  cfx.stalls = bench::core_stalls(std::chrono::milliseconds(500));
  std::printf(
      "  this machine: a busy core stopped %.0f times/s, %.1f µs each (median); a round trip "
      "of the\n  cfx median meets one %.1f%% of the time, adding about that much\n",
      cfx.stalls.per_s, cfx.stalls.median_us, stall_odds(cfx) * 100);
}

double map_section(const Config& c, const bench::Figures& py) {
  double cfx = cfx_map(c);
  std::printf("\n== 3. map of %zu no-op int items, chunksize %zu (Python %zu items) ==\n",
              c.map_items, c.chunksize, c.py_map_items);
  rate_table("items/s", "cfx map(noop_int, items, {.chunksize})", cfx, py, "_map_items_per_s");
  return cfx;
}

/// Returns cfx's spawn start in ms.
double start_section(const Config& c, const bench::Figures& py) {
  auto [spawn_start, spawn_stop] = cfx_start_stop(c.repeat, cfx::StartMethod::spawn);
  auto [fork_start, fork_stop] = cfx_start_stop(c.repeat, cfx::StartMethod::fork);
  std::printf(
      "\n== 4. pool start to first result (construct, submit one no-op, result) and "
      "shutdown(wait) ==\n");
  bench::Table table(
      {kName, {"start ms", 10}, {"cfx/peer", 10}, {"shutdown ms", 12}, {"cfx/peer", 10}});
  table.header("(below 1 is cfx faster)");
  table.row({"cfx::ProcessPoolExecutor (spawn)", bench::fmt("%.2f", spawn_start), "",
             bench::fmt("%.2f", spawn_stop)});
  table.row({"cfx::ProcessPoolExecutor (fork)", bench::fmt("%.2f", fork_start), "",
             bench::fmt("%.2f", fork_stop)});
  auto cells = [&](const std::string& key) -> std::vector<std::string> {
    auto start = bench::lookup(py, key + "_start_ms");
    auto stop = bench::lookup(py, key + "_shutdown_ms");
    return {num(start, "%.2f"), ratio(spawn_start, start), num(stop, "%.2f"),
            ratio(spawn_stop, stop)};
  };
  peer_rows(table, cells);
  peer_row(table, "Python ProcessPoolExecutor (spawn context)", "ppe_spawn", cells);
  std::printf(
      "  Python peers use their Linux defaults (fork; loky: its own fork+exec) unless marked; "
      "cfx/peer is\n  against cfx spawn. cfx starts workers on demand: one task starts one "
      "worker.\n\n");
  return spawn_start;
}

/// A goal on cfx/peer >= at_least; SKIP when the peer did not run.
void ratio_goal(const bench::Goals& goal, const std::string& what, double cfx,
                std::optional<double> peer, double at_least, int digits) {
  if (!peer) return goal(what, std::nullopt, "n/a (no Python)");
  double r = cfx / *peer;
  goal(what, r >= at_least, bench::times(r, digits));
}

void print_goals(const CfxFigures& cfx, const bench::Figures& py) {
  bench::Goals goal(56, 28);
  ratio_goal(goal, "cfx submit+result >= 30x Python ProcessPoolExecutor", cfx.submit_all,
             bench::lookup(py, "ppe_submit_all_per_s"), 30, 1);
  goal("cfx round trip < 25 µs (median)", cfx.round_trip.median_us < 25,
       bench::fmt("%.1f µs (raw pipes %.1f)", cfx.round_trip.median_us, cfx.raw_pipes.median_us));
  double tail = cfx.round_trip.tail();
  const std::string polling = cfx.polling_pipes ? bench::times(cfx.polling_pipes->tail()) : "n/a";
  goal("cfx round trip p99 <= 3x its median", tail <= 3,
       bench::fmt("%.2fx (p99 %.1f µs; raw pipes %.2fx, polling %s; stalls %.1f%%)", tail,
                  cfx.round_trip.p99_us, cfx.raw_pipes.tail(), polling.c_str(),
                  stall_odds(cfx) * 100));
  ratio_goal(goal, "cfx map >= 3x multiprocessing.Pool.map", cfx.map,
             bench::lookup(py, "pool_map_items_per_s"), 3, 2);
  goal("cfx start to first result < 20 ms (spawn)", cfx.spawn_start < 20,
       bench::fmt("%.2f ms", cfx.spawn_start));
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit
  Config c = parse_args(argc, argv);
  std::printf("process_overhead: %zu worker processes, C++ figures best of %d runs\n\n", kWorkers,
              c.repeat);
  bench::Figures py;
  if (c.python)
    py = bench::run_peer("py_process_overhead.py", {{"--workers", kWorkers},
                                                    {"--tasks", c.py_tasks},
                                                    {"--round-trips", c.py_round_trips},
                                                    {"--map-items", c.py_map_items},
                                                    {"--chunksize", c.chunksize},
                                                    {"--repeat", c.repeat}});
  CfxFigures cfx;
  cfx.submit_all = submit_section(c, py);
  round_trip_section(c, py, cfx);
  cfx.map = map_section(c, py);
  cfx.spawn_start = start_section(c, py);
  print_goals(cfx, py);
  return 0;
}
