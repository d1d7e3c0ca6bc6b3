// mpi: what the MPI backend costs. cfx::MpiPoolExecutor beside mpi4py.futures'
// MPIPoolExecutor (Debian's python3-mpi4py, static mode) on the same 3 ranks (rank 0 submits,
// ranks 1 and 2 serve), and Collatz 1..10,000,000 on 2 serving ranks beside a 2-worker
// cfx::ProcessPoolExecutor, in one run.
//
//   mpi [--round-trips N] [--tasks N] [--py-round-trips N] [--collatz-limit N] [--repeat N]
//       [--no-python]
//
// Run it as a plain program: it launches `mpiexec -n 3` twice, once on itself (cfx's
// figures, with --mpi-job) and once on bench/peers/py_mpi.py, reads both sets of figures and
// prints them with their ratios. Latencies: median and p99 of --round-trips no-op
// submit+result with one call in flight; throughput: --tasks no-op submits, then every
// result; idle: the CPU all 3 ranks use in 1 s with the executor open and nothing to do; Collatz:
// the best of --repeat whole pool lives, each pool alternately. Goals are printed PASS/MISS and do
// not change the exit status; a wrong Collatz answer exits 1.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cfx/cfx.hpp>

#include "collatz.hpp"
#include "common.hpp"

int noop_int(int x) {
  return x;
}
CFX_TASK(noop_int);
CFX_TASK_AS(&collatz::longest_in, "collatz_longest_in");

namespace {

using bench::Clock;

struct Config {
  std::size_t round_trips = 20'000;
  std::size_t tasks = 20'000;
  std::size_t py_round_trips = 2'000;
  std::uint64_t collatz_limit = 10'000'000;
  int repeat = 2;
  bool python = true;
  bool mpi_job = false;  // this process is rank 0 of the cfx launch
};

Config parse_args(int argc, char** argv) {
  Config c;
  bench::Flags("mpi", "the MPI backend beside mpi4py.futures and the process pool")
      .value("--round-trips", c.round_trips, "no-op (submit, result) samples for the latency")
      .value("--tasks", c.tasks, "no-op tasks submitted before taking every result (both)")
      .value("--py-round-trips", c.py_round_trips, "latency samples for mpi4py")
      .value("--collatz-limit", c.collatz_limit, "Collatz starts below this")
      .value("--repeat", c.repeat, "Collatz runs per pool, the best is printed")
      .flag("--no-python", c.python, false, "skip mpi4py.futures")
      .flag("--mpi-job", c.mpi_job, true, "(internal) rank 0 of the cfx launch")
      .parse(argc, argv);
  c.repeat = std::max(c.repeat, 1);
  return c;
}

/// The command line of an `mpiexec -n 3` launch on this machine (as root, with 3 ranks on
/// fewer cores: unbound, oversubscribed).
std::string mpiexec(const std::string& program) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec --oversubscribe "
         "--bind-to none -n 3 " +
         program;
}

/// Runs a shell command and reads its "key value..." lines.
bench::Figures run_figures(const std::string& cmd) {
  std::fflush(nullptr);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return {};
  std::string output;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, n);
  if (pclose(pipe) != 0) std::fprintf(stderr, "failed: %s\n", cmd.c_str());
  return bench::parse_figures(output);
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](timeval t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

// ---- rank 0 of the cfx launch --------------------------------------------------------------

/// CPU seconds (user + system) used so far by every rank of this launch: the processes that
/// run this program with rank 0's parent (mpiexec, or its daemon), read from /proc.
double ranks_cpu_seconds() {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const auto parent = static_cast<long>(::getppid());
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path() / "exe", ec).string() != self) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = stat.rfind(')');  // fields after the command name: state ppid ...
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    long ppid = 0;
    fields >> state >> ppid;
    if (ppid != parent) continue;  // a pool worker: its rank is its parent
    std::string skip;
    for (int i = 0; i < 9; ++i) fields >> skip;  // pgrp .. cmajflt
    double utime = 0, stime = 0;
    fields >> utime >> stime;
    total += (utime + stime) / tick;
  }
  return total;
}

/// The CPU all ranks use while an executor is open and has nothing to do: the ranks wait on
/// their doorbells and should cost about nothing.
void idle_cpu(cfx::Executor& ex) {
  ex.submit(noop_int, 1).result();  // every rank has just been active
  const double seconds = 1.0;
  const double before = ranks_cpu_seconds();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double used = ranks_cpu_seconds() - before;
  std::printf("cfx_idle_cpu_pct %.2f\n", 100 * used / bench::seconds_since(t0));
}

void round_trips(cfx::Executor& ex, std::size_t n) {
  for (int i = 0; i < 50; ++i) ex.submit(noop_int, i).result();  // warm-up
  std::vector<double> us;
  us.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    ex.submit(noop_int, 1).result();
    us.push_back(bench::seconds_since(t0) * 1e6);
  }
  std::sort(us.begin(), us.end());
  std::printf("cfx_rtt %.3f %.3f\n", us[us.size() / 2], us[us.size() * 99 / 100]);
}

void throughput(cfx::Executor& ex, std::size_t n) {
  auto t0 = Clock::now();
  std::vector<cfx::Future<int>> fs;
  fs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) fs.push_back(ex.submit(noop_int, 1));
  for (auto& f : fs) f.result();
  std::printf("cfx_tasks_per_s %.1f\n", static_cast<double>(n) / bench::seconds_since(t0));
}

/// One Collatz search over a whole pool's life (start to shutdown), as cfx-collatz times it.
template <class Make>
double collatz_run(Make make, std::uint64_t limit) {
  const std::uint64_t chunk = 10'000;
  auto t0 = Clock::now();
  auto ex = make();
  std::vector<cfx::Future<collatz::Best>> fs;
  for (std::uint64_t lo = 1; lo < limit; lo += chunk)
    fs.push_back(ex->submit(collatz::longest_in, lo, std::min(limit, lo + chunk)));
  collatz::Best best{0, 0};
  for (auto& f : cfx::as_completed(fs)) best = collatz::better(best, f.result());
  ex.reset();
  const bool known = limit == 10'000'000 || limit == 1'000'000;
  const collatz::Best expected =
      limit == 1'000'000 ? collatz::Best{837799, 524} : collatz::Best{8400511, 685};
  if (known && best != expected) {
    std::fprintf(stderr, "wrong Collatz answer %llu\n",
                 static_cast<unsigned long long>(best.first));
    std::exit(1);
  }
  return bench::seconds_since(t0);
}

void mpi_job(const Config& c) {
  {
    cfx::MpiPoolExecutor ex;
    round_trips(ex, c.round_trips);
    throughput(ex, c.tasks);
    idle_cpu(ex);
  }
  double mpi = 1e300, procs = 1e300, master_cpu = 0;
  for (int i = 0; i < c.repeat; ++i) {  // alternately, so that the machine's load hits both
    procs = std::min(procs, collatz_run(
                                [] {
                                  return std::make_unique<cfx::ProcessPoolExecutor>(
                                      cfx::ProcessPoolOptions{.max_workers = 2});
                                },
                                c.collatz_limit));
    double cpu0 = cpu_seconds();
    double t =
        collatz_run([] { return std::make_unique<cfx::MpiPoolExecutor>(); }, c.collatz_limit);
    if (t < mpi) {
      mpi = t;
      master_cpu = cpu_seconds() - cpu0;
    }
  }
  std::printf("cfx_collatz_mpi_s %.4f\ncfx_collatz_process_s %.4f\ncfx_rank0_cpu_s %.4f\n", mpi,
              procs, master_cpu);
}

// ---- the driver ----------------------------------------------------------------------------

void report(const Config& c, const bench::Figures& cfx, const bench::Figures& py) {
  auto get = [](const bench::Figures& f, const char* key, std::size_t i) -> std::optional<double> {
    auto it = f.find(key);
    if (it == f.end() || it->second.size() <= i) return std::nullopt;
    return it->second[i];
  };
  auto cfx_rtt = get(cfx, "cfx_rtt", 0), cfx_p99 = get(cfx, "cfx_rtt", 1);
  auto py_rtt = get(py, "mpi4py_rtt", 0), py_p99 = get(py, "mpi4py_rtt", 1);
  auto cfx_tput = get(cfx, "cfx_tasks_per_s", 0), py_tput = get(py, "mpi4py_tasks_per_s", 0);
  auto mpi_s = get(cfx, "cfx_collatz_mpi_s", 0), proc_s = get(cfx, "cfx_collatz_process_s", 0);
  auto cpu = get(cfx, "cfx_rank0_cpu_s", 0);
  if (!cfx_rtt || !cfx_tput || !mpi_s || !proc_s) {
    std::fprintf(stderr, "mpi: the cfx launch reported no figures\n");
    std::exit(1);
  }
  auto us = [](std::optional<double> v) { return v ? bench::fmt("%.1f µs", *v) : "n/a"; };
  std::printf("MPI backend, 3 ranks (rank 0 submits, 2 serve), one machine\n\n");
  bench::Table t({{"no-op task", 34, bench::Align::left},
                  {"cfx", 12},
                  {"mpi4py.futures", 15},
                  {"cfx/mpi4py", 11}});
  t.header();
  t.row({"round trip, median (1 in flight)", us(cfx_rtt), us(py_rtt),
         bench::ratio(*cfx_rtt, py_rtt, 3)});
  t.row({"round trip, p99", us(cfx_p99), us(py_p99),
         cfx_p99 ? bench::ratio(*cfx_p99, py_p99, 3) : "n/a"});
  t.row({bench::fmt("%zu submit, then results", c.tasks), bench::rate(cfx_tput),
         bench::rate(py_tput), bench::ratio(*cfx_tput, py_tput)});
  std::printf("\nCollatz 1..%llu, chunks of 10,000, whole pool lives, best of %d\n",
              static_cast<unsigned long long>(c.collatz_limit), c.repeat);
  bench::Table k({{"pool", 34, bench::Align::left}, {"seconds", 12}, {"/process", 15}});
  k.header();
  k.row({"MpiPoolExecutor, 2 ranks x 1 worker", bench::fmt("%.3f", *mpi_s),
         bench::times(*mpi_s / *proc_s)});
  k.row({"ProcessPoolExecutor, 2 workers", bench::fmt("%.3f", *proc_s), "1.00x"});
  if (cpu)
    std::printf("rank 0 used %.3f s of CPU during the best MPI run (%.1f%% of one core)\n", *cpu,
                100 * *cpu / *mpi_s);
  if (auto idle = get(cfx, "cfx_idle_cpu_pct", 0))
    std::printf("the 3 ranks, executor open and idle for 1 s: %.2f%% of one core in all\n", *idle);
  std::printf("\n");
  bench::Goals goal(48, 20);
  if (py_rtt)
    goal("round trip <= 1/10 of mpi4py's (median)", *cfx_rtt * 10 <= *py_rtt,
         bench::ratio(*cfx_rtt, py_rtt, 3));
  else
    goal("round trip <= 1/10 of mpi4py's (median)", std::nullopt, "n/a (no mpi4py)");
  if (py_tput)
    goal("throughput >= 10x mpi4py's", *cfx_tput >= 10 * *py_tput,
         bench::ratio(*cfx_tput, py_tput));
  else
    goal("throughput >= 10x mpi4py's", std::nullopt, "n/a (no mpi4py)");
  goal("Collatz on 2 ranks within 15% of the process pool", *mpi_s <= 1.15 * *proc_s,
       bench::times(*mpi_s / *proc_s));
}

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "mpi";
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // serving ranks and pool workers serve here
  Config c = parse_args(argc, argv);
  if (c.mpi_job) {
    mpi_job(c);
    return 0;
  }
  auto cfx = run_figures(
      mpiexec(self_path() + " --mpi-job --round-trips " + std::to_string(c.round_trips) +
              " --tasks " + std::to_string(c.tasks) + " --collatz-limit " +
              std::to_string(c.collatz_limit) + " --repeat " + std::to_string(c.repeat)));
  bench::Figures py;
  if (c.python)
    py = run_figures("cd " CFX_BENCH_PEERS " && " +
                     mpiexec("/usr/bin/python3 -m mpi4py.futures py_mpi.py --round-trips " +
                             std::to_string(c.py_round_trips) + " --tasks " +
                             std::to_string(c.tasks)));
  report(c, cfx, py);
  return 0;
}
