// bench/toolkit: the multiprocessing toolkit (issue 9) beside its peers, in the same run.
//
//   Pipe round trip        cfx::Pipe<int> between this process and a cfx::Process child that
//                          echoes, vs a raw pipe ping-pong (two pipe(2)s, a forked child, 4-byte
//                          reads and writes), timed in alternating blocks, vs Python's
//                          multiprocessing.Pipe (fork context). Goal: within 1.5x the raw pipe.
//   SharedArray argument   a task taking a SharedArray of N bytes vs a task taking nothing, on
//                          a one-worker process pool, per call (submit + result, one at a
//                          time). Goal: under 2x, whatever N.
//
// Each section is a function that prints its rows; more rows (Queue, SharedValue, SharedDict)
// are one more function called from main.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <utility>
#include <vector>

#include <cfx/cfx.hpp>

#include "common.hpp"

namespace {

using bench::Clock;

void echo_ints(cfx::Connection<int> c) {
  try {
    for (;;) c.send(c.recv());
  } catch (const cfx::Error&) {
  }
}
int noop() {
  return 0;
}
int with_array(cfx::SharedArray<char> a) {
  return static_cast<int>(a.size() & 1);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Round trips, in microseconds, of `trips` calls of `trip`, appended to `samples`.
template <class Trip>
void sample_us(int trips, Trip trip, std::vector<double>& samples) {
  for (int i = 0; i < trips; ++i) {
    auto t0 = Clock::now();
    trip(i);
    samples.push_back(bench::seconds_since(t0) * 1e6);
  }
}

/// Median round trip, in microseconds, of `round_trips` calls of `trip` after a warm-up.
template <class Trip>
double median_us(int round_trips, Trip trip) {
  for (int i = 0; i < 1000; ++i) trip(i);
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(round_trips));
  sample_us(round_trips, trip, samples);
  return median(std::move(samples));
}

/// A cfx::Pipe<int> to a cfx::Process child that echoes.
class CfxEcho {
 public:
  CfxEcho() {
    auto [mine, theirs] = cfx::Pipe<int>();
    mine_ = mine;
    child_.emplace(cfx::ProcessOptions{.start_method = cfx::StartMethod::fork}, echo_ints, theirs);
    child_->start();
    theirs.close();
  }
  ~CfxEcho() {
    mine_.close();
    child_->join();
  }
  void trip(int i) {
    mine_.send(i);
    if (mine_.recv() != i) std::exit(1);
  }

 private:
  cfx::Connection<int> mine_;
  std::optional<cfx::Process> child_;
};

/// Two pipe(2)s to a forked child that echoes 4-byte reads.
class RawEcho {
 public:
  RawEcho() {
    if (::pipe(to_) != 0 || ::pipe(from_) != 0) std::exit(1);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(to_[1]);
      ::close(from_[0]);
      int x;
      while (::read(to_[0], &x, sizeof x) == sizeof x)
        if (::write(from_[1], &x, sizeof x) != sizeof x) break;
      ::_exit(0);
    }
    ::close(to_[0]);
    ::close(from_[1]);
  }
  ~RawEcho() {
    ::close(to_[1]);
    ::close(from_[0]);
    ::waitpid(pid_, nullptr, 0);
  }
  void trip(int i) {
    int x = i;
    if (::write(to_[1], &x, sizeof x) != sizeof x || ::read(from_[0], &x, sizeof x) != sizeof x ||
        x != i)
      std::exit(1);
  }

 private:
  int to_[2], from_[2];
  pid_t pid_ = -1;
};

/// Median round trips of cfx and of the raw pipe, in microseconds: both echo children live at
/// once and the two are timed in alternating blocks, so that a change of load on the machine
/// weighs on both alike.
std::pair<double, double> pipe_rtts(int round_trips) {
  constexpr int blocks = 20;
  CfxEcho cfx_echo;
  RawEcho raw_echo;
  auto cfx_trip = [&](int i) { cfx_echo.trip(i); };
  auto raw_trip = [&](int i) { raw_echo.trip(i); };
  for (int i = 0; i < 1000; ++i) {
    cfx_trip(i);
    raw_trip(i);
  }
  std::vector<double> cfx_us, raw_us;
  int per_block = std::max(1, round_trips / blocks);
  for (int b = 0; b < blocks; ++b) {
    sample_us(per_block, cfx_trip, cfx_us);
    sample_us(per_block, raw_trip, raw_us);
  }
  return {median(std::move(cfx_us)), median(std::move(raw_us))};
}

void pipe_rows(const bench::Goals& goals, int round_trips) {
  auto [cfx_us, raw_us] = pipe_rtts(round_trips);
  auto py = bench::lookup(bench::run_peer("py_toolkit.py", {{"--round-trips", round_trips}}),
                          "pipe_rtt_us");
  bench::Table t({{"Pipe round trip (median)", 26, bench::Align::left},
                  {"cfx", 10},
                  {"raw pipe", 10},
                  {"Python", 10},
                  {"cfx/raw", 8},
                  {"Python/cfx", 10}});
  t.header();
  t.row({"int, parent <-> child", bench::fmt("%.1f us", cfx_us), bench::fmt("%.1f us", raw_us),
         py ? bench::fmt("%.1f us", *py) : "n/a", bench::times(cfx_us / raw_us),
         py ? bench::times(*py / cfx_us) : "n/a"});
  std::printf("\n");
  goals("Pipe round trip within 1.5x a raw pipe", cfx_us <= 1.5 * raw_us,
        bench::times(cfx_us / raw_us));
}

void shared_array_rows(const bench::Goals& goals, int calls) {
  cfx::ProcessPoolExecutor pool({.max_workers = 1});
  double none_us = median_us(calls, [&](int) { pool.submit(noop).result(); });
  bench::Table t({{"task argument", 26, bench::Align::left}, {"per call", 10}, {"vs no arg", 10}});
  t.header("one worker, one call at a time, median");
  t.row({"none", bench::fmt("%.1f us", none_us), "1.00x"});
  double worst = 0;
  for (std::size_t bytes : {std::size_t{1} << 10, std::size_t{1} << 20, std::size_t{64} << 20,
                            std::size_t{512} << 20}) {
    cfx::SharedArray<char> a(bytes);
    double us = median_us(calls, [&](int) { pool.submit(with_array, a).result(); });
    worst = std::max(worst, us / none_us);
    t.row({bench::fmt("SharedArray of %zu KiB", bytes >> 10), bench::fmt("%.1f us", us),
           bench::times(us / none_us)});
  }
  std::printf("\n");
  goals("a SharedArray argument under 2x no argument", worst < 2.0, bench::times(worst));
}

}  // namespace

CFX_TASK(echo_ints);
CFX_TASK(noop);
CFX_TASK(with_array);

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  int round_trips = 20000, calls = 2000;
  bench::Flags("toolkit", "cfx's multiprocessing toolkit beside a raw pipe and Python")
      .value("--round-trips", round_trips, "Pipe round trips per peer")
      .value("--calls", calls, "task calls per SharedArray row")
      .parse(argc, argv);
  bench::Goals goals(44, 8);
  pipe_rows(goals, round_trips);
  shared_array_rows(goals, calls);
  return 0;
}
