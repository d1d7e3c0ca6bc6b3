// toolkit_sync: the process-shared containers beside Python's multiprocessing (fork context),
// in the same run (bench/peers/py_toolkit_sync.py):
//  - Queue: ints put by one process and got by another, against multiprocessing.Queue;
//  - SharedDict: sets from one process and from two at once, against Manager().dict() (whose
//    every set is a round trip to the manager process);
//  - a shared counter incremented by two processes: SharedValue<int64>::fetch_add, against
//    Value('q') incremented under its get_lock().
//
//   toolkit_sync [--repeat N] [--queue-items N] [--dict-sets N] [--incs N] [--no-python]
//
// Each figure is the best of --repeat runs, in events per second; children are fork()ed
// before the clock starts and released by a pipe. Every run checks its result (a lost item
// or increment exits 1).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

#include "common.hpp"

namespace {

struct Config {
  int repeat = 3;
  std::size_t queue_items = 2'000'000;
  std::size_t dict_sets = 1'000'000;
  std::size_t incs = 5'000'000;
  std::size_t py_queue_items = 200'000;
  std::size_t py_dict_sets = 50'000;
  std::size_t py_incs = 200'000;
  bool python = true;
};

/// Children started before the clock, each waiting for one byte on a pipe.
class Gate {
 public:
  Gate() {
    if (::pipe(fds_) != 0) std::exit(1);
  }
  /// Forks a child that waits for open(), runs fn() and exits.
  template <class Fn>
  void fork_child(Fn fn) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) std::exit(1);
    if (pid == 0) {
      char c;
      ::close(fds_[1]);
      if (::read(fds_[0], &c, 1) != 1) ::_exit(1);
      fn();
      ::_exit(0);
    }
    children_.push_back(pid);
  }
  void open() {
    std::string bytes(children_.size(), 'g');
    if (::write(fds_[1], bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))
      std::exit(1);
  }
  /// Waits for every child; exits 1 if one failed.
  void join() {
    for (pid_t pid : children_) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "toolkit_sync: a child failed\n");
        std::exit(1);
      }
    }
    children_.clear();
  }
  ~Gate() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }

 private:
  int fds_[2];
  std::vector<pid_t> children_;
};

double queue_rate(std::size_t n) {
  cfx::Queue<std::int64_t> q(0);
  Gate gate;
  gate.fork_child([&] {
    for (std::size_t i = 0; i < n; ++i) q.put(static_cast<std::int64_t>(i));
  });
  auto t0 = bench::Clock::now();
  gate.open();
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<std::uint64_t>(q.get());
  double s = bench::seconds_since(t0);
  gate.join();
  bench::check_sum("queue", sum, n);
  return static_cast<double>(n) / s;
}

/// Sets of distinct int keys by `processes` processes at once (n in all).
double dict_rate(std::size_t n, int processes) {
  cfx::SharedDict<std::int64_t, std::int64_t> d;
  Gate gate;
  std::size_t each = n / static_cast<std::size_t>(processes);
  for (int p = 0; p < processes; ++p)
    gate.fork_child([&, p] {
      auto base = static_cast<std::int64_t>(each) * p;
      for (std::size_t i = 0; i < each; ++i) d.set(base + static_cast<std::int64_t>(i), 1);
    });
  auto t0 = bench::Clock::now();
  gate.open();
  gate.join();
  double s = bench::seconds_since(t0);
  if (d.size() != each * static_cast<std::size_t>(processes)) {
    std::fprintf(stderr, "toolkit_sync: dict lost sets (%zu)\n", d.size());
    std::exit(1);
  }
  return static_cast<double>(each * static_cast<std::size_t>(processes)) / s;
}

double increment_rate(std::size_t n) {
  cfx::SharedValue<std::int64_t> counter(0);
  Gate gate;
  for (int p = 0; p < 2; ++p)
    gate.fork_child([&] {
      for (std::size_t i = 0; i < n; ++i) counter.fetch_add(1, std::memory_order_relaxed);
    });
  auto t0 = bench::Clock::now();
  gate.open();
  gate.join();
  double s = bench::seconds_since(t0);
  if (counter.load() != static_cast<std::int64_t>(2 * n)) {
    std::fprintf(stderr, "toolkit_sync: lost increments (%lld)\n",
                 static_cast<long long>(counter.load()));
    std::exit(1);
  }
  return static_cast<double>(2 * n) / s;
}

double best_rate(int repeat, const std::function<double()>& run) {
  double best = 0;
  for (int i = 0; i < repeat; ++i) best = std::max(best, run());
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  Config c;
  bench::Flags("toolkit_sync", "Queue, SharedDict and a shared counter beside multiprocessing")
      .value("--repeat", c.repeat, "runs per figure, the best is printed")
      .value("--queue-items", c.queue_items, "ints through the queue per run")
      .value("--dict-sets", c.dict_sets, "dict sets per run")
      .value("--incs", c.incs, "increments per process per run")
      .value("--py-queue-items", c.py_queue_items, "ints through Python's queue per run")
      .value("--py-dict-sets", c.py_dict_sets, "Manager().dict() sets per run")
      .value("--py-incs", c.py_incs, "Python increments per process per run")
      .flag("--no-python", c.python, false, "skip the Python peer")
      .parse(argc, argv);
  c.repeat = std::max(c.repeat, 1);

  double queue = best_rate(c.repeat, [&] { return queue_rate(c.queue_items); });
  double dict1 = best_rate(c.repeat, [&] { return dict_rate(c.dict_sets, 1); });
  double dict2 = best_rate(c.repeat, [&] { return dict_rate(c.dict_sets, 2); });
  double incs = best_rate(c.repeat, [&] { return increment_rate(c.incs); });

  bench::Figures py;
  if (c.python)
    py = bench::run_peer("py_toolkit_sync.py", {{"--queue-items", c.py_queue_items},
                                                {"--dict-sets", c.py_dict_sets},
                                                {"--value-incs", c.py_incs},
                                                {"--repeat", c.repeat}});
  auto py_queue = bench::lookup(py, "queue_ints_per_s");
  auto py_dict = bench::lookup(py, "dict_sets_per_s");
  auto py_value = bench::lookup(py, "value_incs_per_s");

  bench::Table table(
      {{"job", 44, bench::Align::left}, {"cfx", 10}, {"python", 10}, {"cfx/python", 10}});
  table.header("(events per second, best of --repeat; higher is better)");
  table.row({"Queue<int64> put->get, 2 processes", bench::rate(queue), bench::rate(py_queue),
             bench::ratio(queue, py_queue)});
  table.row({"SharedDict set, 1 process", bench::rate(dict1), bench::rate(py_dict),
             bench::ratio(dict1, py_dict)});
  table.row({"SharedDict set, 2 processes at once", bench::rate(dict2), bench::rate(py_dict),
             bench::ratio(dict2, py_dict)});
  table.row({"SharedValue fetch_add, 2 processes", bench::rate(incs), bench::rate(py_value),
             bench::ratio(incs, py_value)});

  bench::Goals goals(44, 10);
  auto meets = [](double cfx, std::optional<double> peer, double factor) -> std::optional<bool> {
    if (!peer) return std::nullopt;
    return cfx >= factor * *peer;
  };
  goals("Queue >= 20x multiprocessing.Queue", meets(queue, py_queue, 20),
        bench::ratio(queue, py_queue));
  goals("SharedDict (2 procs) >= 10x Manager().dict()", meets(dict2, py_dict, 10),
        bench::ratio(dict2, py_dict));
  goals("fetch_add >= 10x Value + Lock", meets(incs, py_value, 10), bench::ratio(incs, py_value));
  return 0;
}
