// soak: a process pool under a storm of worker deaths. N tasks on 2 workers; one task in
// --kill-every kills its own worker (SIGKILL), and a thread SIGKILLs a random worker from
// outside every --outside-ms. Every future must end: with its value, or with WorkerCrashed
// for a task that killed its worker or was running when one was killed. The same tasks then
// run without kills, and the kill run's wall time must stay within 2x of that plus 5 ms per
// crash (issue 8). Workers start by forkserver unless --spawn or --fork says otherwise.
// Python's peer (pebble, the only Python pool that survives a worker's death;
// concurrent.futures breaks at the first) runs a smaller count of the same job.
//
//   soak [--tasks N] [--kill-every N] [--outside-ms N] [--in-flight N] [--spawn | --fork]
//        [--py-tasks N] [--no-python]
//
// Prints tasks done, crashes survived, futures lost (must be 0), wrong values (must be 0),
// RSS at start and end, and the wall times; exits 1 if a future was lost or a value wrong.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cfx/cfx.hpp>

#include "common.hpp"

// ---- the task: workers re-run this program and find it by name -----------------------------

std::uint64_t soak_task(std::uint64_t i, bool kill_worker) {
  if (kill_worker) ::kill(::getpid(), SIGKILL);
  return i * 2 + 1;
}
CFX_TASK(soak_task);

namespace {

struct Config {
  std::size_t tasks = 1'000'000;
  std::size_t kill_every = 30;  // 0: no task kills its worker
  std::size_t outside_ms = 50;  // 0: no outside killer
  std::size_t in_flight = 20'000;
  // Workers start by forkserver, the start method for a pool whose workers die often (a
  // crash costs a fork, not a program's start); --spawn measures the default method.
  bool fork = false;
  bool spawn = false;

  cfx::StartMethod method() const {
    return fork    ? cfx::StartMethod::fork
           : spawn ? cfx::StartMethod::spawn
                   : cfx::StartMethod::forkserver;
  }
  const char* method_name() const { return fork ? "fork" : spawn ? "spawn" : "forkserver"; }
  std::size_t py_tasks = 2000;
  bool python = true;
};

struct Outcome {
  std::size_t done = 0;           // futures that ended
  std::size_t values = 0;         // with the right value
  std::size_t crashed = 0;        // with WorkerCrashed
  std::size_t wrong = 0;          // with a wrong value or another exception
  std::size_t lost = 0;           // never ended
  std::size_t self_kills = 0;     // tasks told to kill their worker
  std::size_t outside_kills = 0;  // SIGKILLs sent from outside
  double wall = 0;
  std::size_t rss_start = 0, rss_end = 0;
};

std::size_t resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  return 0;
}

/// Counts outcomes as futures end (done-callbacks, on the pool's I/O thread) and lets the
/// submitter keep at most `limit` futures unfinished.
class Tally {
 public:
  explicit Tally(std::size_t limit) : limit_(limit) {}

  void submitted() {
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] { return open_ < limit_; });
    ++open_;
  }
  void ended(bool right_value, bool crashed) {
    std::lock_guard lock(mutex_);
    --open_;
    ++done_;
    if (right_value)
      ++values_;
    else if (crashed)
      ++crashed_;
    else
      ++wrong_;
    room_.notify_one();
  }
  /// Waits until every submitted future ended, or `patience` passes; the unfinished count.
  std::size_t drain(std::chrono::seconds patience) {
    std::unique_lock lock(mutex_);
    room_.wait_for(lock, patience, [&] { return open_ == 0; });
    return open_;
  }
  void into(Outcome& o) {
    std::lock_guard lock(mutex_);
    o.done = done_;
    o.values = values_;
    o.crashed = crashed_;
    o.wrong = wrong_;
  }

 private:
  const std::size_t limit_;
  std::mutex mutex_;
  std::condition_variable room_;
  std::size_t open_ = 0, done_ = 0, values_ = 0, crashed_ = 0, wrong_ = 0;
};

Outcome soak(const Config& c, bool kills) {
  Outcome o;
  o.rss_start = resident_kib();
  Tally tally(c.in_flight);
  auto t0 = bench::Clock::now();
  {
    cfx::ProcessPoolExecutor pool({.max_workers = 2, .start_method = c.method()});
    std::atomic<bool> stop{false};
    std::thread killer;
    if (kills && c.outside_ms) {
      killer = std::thread([&] {
        std::mt19937 random(42);
        while (!stop.load()) {
          std::this_thread::sleep_for(
              std::chrono::milliseconds(c.outside_ms));  // a rate, not a sync
          auto pids = pool.worker_pids();
          if (pids.empty()) continue;
          ::kill(pids[random() % pids.size()], SIGKILL);
          ++o.outside_kills;
        }
      });
    }
    for (std::uint64_t i = 0; i < c.tasks; ++i) {
      bool kill = kills && c.kill_every && i % c.kill_every == c.kill_every - 1;
      o.self_kills += kill;
      tally.submitted();
      pool.submit(soak_task, i, kill)
          .add_done_callback([&tally, i](const cfx::Future<std::uint64_t>& f) {
            try {
              tally.ended(f.result() == i * 2 + 1, false);
            } catch (const cfx::WorkerCrashed&) {
              tally.ended(false, true);
            } catch (...) {
              tally.ended(false, false);
            }
          });
    }
    o.lost = tally.drain(std::chrono::seconds(60));
    stop = true;
    if (killer.joinable()) killer.join();
    if (o.lost) pool.kill_workers();  // a lost future would hang the destructor
  }
  o.wall = bench::seconds_since(t0);
  tally.into(o);
  o.rss_end = resident_kib();
  return o;
}

void print(const char* title, const Outcome& o) {
  std::printf(
      "%-12s %9zu done %9zu values %7zu WorkerCrashed %3zu wrong %3zu lost  "
      "%6zu self-kills %5zu outside kills  RSS %zu -> %zu KiB  %.2f s\n",
      title, o.done, o.values, o.crashed, o.wrong, o.lost, o.self_kills, o.outside_kills,
      o.rss_start, o.rss_end, o.wall);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  Config c;
  bench::Flags("soak", "a process pool under a storm of worker deaths (issue 8)")
      .value("--tasks", c.tasks, "tasks per run")
      .value("--kill-every", c.kill_every, "one task in N kills its own worker; 0: none")
      .value("--outside-ms", c.outside_ms, "a random worker is SIGKILLed this often; 0: never")
      .value("--in-flight", c.in_flight, "most unfinished futures at once")
      .flag("--spawn", c.spawn, true, "workers start with the spawn method (default: forkserver)")
      .flag("--fork", c.fork, true, "workers start with the fork method (default: forkserver)")
      .value("--py-tasks", c.py_tasks, "tasks for the Python peer")
      .flag("--no-python", c.python, false, "skip the Python peer")
      .parse(argc, argv);

  std::printf(
      "soak: %zu tasks on 2 workers (%s); one in %zu kills its worker, an outside "
      "SIGKILL every %zu ms\n",
      c.tasks, c.method_name(), c.kill_every, c.outside_ms);
  Outcome calm = soak(c, false);
  print("no kills", calm);
  Outcome storm = soak(c, true);
  print("kills", storm);

  std::size_t crashes = storm.self_kills + storm.outside_kills;
  double budget = 2 * calm.wall + 0.005 * static_cast<double>(crashes);
  std::printf(
      "crashes survived: %zu; wall %.2f s against a budget of %.2f s (2 x %.2f s + 5 ms "
      "x %zu): %s\n",
      crashes, storm.wall, budget, calm.wall, crashes, storm.wall <= budget ? "PASS" : "MISS");
  // Every task told to kill its worker ends with WorkerCrashed; so may a task running when an
  // outside kill lands. Anything else is wrong.
  bool sound = calm.lost + storm.lost == 0 && calm.wrong + storm.wrong == 0 &&
               calm.values == c.tasks && storm.crashed >= storm.self_kills &&
               storm.crashed <= storm.self_kills + storm.outside_kills;
  std::printf("futures lost: %zu; wrong values: %zu; %s\n", calm.lost + storm.lost,
              calm.wrong + storm.wrong, sound ? "PASS" : "FAIL");

  if (c.python) {
    auto peer = bench::run_peer(
        "py_soak.py",
        {{"--tasks", c.py_tasks}, {"--kill-every", c.kill_every}, {"--outside-ms", c.outside_ms}});
    auto rate = [](std::size_t n, double s) { return static_cast<double>(n) / s; };
    auto calm_peer = bench::lookup(peer, "pebble_calm_per_s");
    auto storm_peer = bench::lookup(peer, "pebble_storm_per_s");
    std::printf("\n%-28s %12s %12s %8s\n", "tasks/s", "cfx", "pebble", "cfx/peer");
    std::printf("%-28s %12s %12s %8s\n", "no kills", bench::rate(rate(c.tasks, calm.wall)).c_str(),
                bench::rate(calm_peer).c_str(),
                bench::ratio(rate(c.tasks, calm.wall), calm_peer).c_str());
    std::printf("%-28s %12s %12s %8s\n", "kills", bench::rate(rate(c.tasks, storm.wall)).c_str(),
                bench::rate(storm_peer).c_str(),
                bench::ratio(rate(c.tasks, storm.wall), storm_peer).c_str());
    if (auto lost = bench::lookup(peer, "pebble_storm_lost"))
      std::printf("pebble under kills: %.0f futures lost, %.0f wrong\n", *lost,
                  bench::lookup(peer, "pebble_storm_wrong").value_or(-1));
    if (auto broke = bench::lookup(peer, "ppe_storm_broken"))
      std::printf("concurrent.futures under kills: %.0f of %zu futures ended BrokenProcessPool\n",
                  *broke, c.py_tasks);
  }
  return sound ? 0 : 1;
}
