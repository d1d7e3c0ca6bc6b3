// The MPI backend under `mpiexec -n 3` (tests/mpi/run.sh): rank 0 runs these tests, ranks 1
// and 2 serve (cfx::init in tests/main.cpp). Every test opens its own executor: executors
// one after another in a run is part of the contract.
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

#include "backends/mpi/world.hpp"
#include "examples/collatz.hpp"
#include "support/gate.hpp"

namespace mpi_test {

int add(int a, int b) {
  return a + b;
}
std::string greet(std::string name) {
  return "hello, " + name;
}
void nothing() {}
int square(int x) {
  return x * x;
}
/// This worker's pid and its parent's (the serving rank's).
std::pair<int, int> where() {
  return {::getpid(), ::getppid()};
}
int throws_invalid(int x) {
  throw std::invalid_argument("bad value " + std::to_string(x));
}
struct Odd : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int throws_odd() {
  throw Odd("odd one");
}
struct Unregistered : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int throws_unregistered() {
  throw Unregistered("nobody knows me");
}
int crash(int code) {
  std::_Exit(code);
}
int sleep_ms(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}

}  // namespace mpi_test

CFX_TASK_AS(&mpi_test::add, "mpi_test::add");
CFX_TASK_AS(&mpi_test::greet, "mpi_test::greet");
CFX_TASK_AS(&mpi_test::nothing, "mpi_test::nothing");
CFX_TASK_AS(&mpi_test::square, "mpi_test::square");
CFX_TASK_AS(&mpi_test::where, "mpi_test::where");
CFX_TASK_AS(&mpi_test::throws_invalid, "mpi_test::throws_invalid");
CFX_TASK_AS(&mpi_test::throws_odd, "mpi_test::throws_odd");
CFX_TASK_AS(&mpi_test::throws_unregistered, "mpi_test::throws_unregistered");
CFX_TASK_AS(&mpi_test::crash, "mpi_test::crash");
CFX_TASK_AS(&mpi_test::sleep_ms, "mpi_test::sleep_ms");
CFX_TASK_AS(&collatz::longest_in, "collatz_longest_in");
CFX_EXCEPTION(mpi_test::Odd);

using namespace mpi_test;

namespace {

bool alive(int pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

std::string nested_message(const std::exception& e) {
  try {
    std::rethrow_if_nested(e);
  } catch (const cfx::RemoteError& context) {
    return context.what();
  } catch (...) {
  }
  return "";
}

}  // namespace

TEST_CASE("rank 0 removes the doorbell files a killed launch left, and only those") {
  // A launch killed while its ranks open the doorbells leaves its names in /dev/shm; the next
  // rank 0 removes those whose rank 0 (the pid in the name) is gone. Here in a directory of
  // the test's own, with a pid that was reaped just now.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("cfx-doorbells-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string dead_page = "cfx-mpi-" + std::to_string(dead) + "-0123456789abcdef";
  const std::string live_page = "cfx-mpi-" + std::to_string(::getpid()) + "-0123456789abcdef";
  for (const std::string& name :
       {dead_page, dead_page + "-1", dead_page + "-2", live_page, live_page + "-1",
        std::string("cfx-mpi-notapid"), std::string("other-file")})
    std::ofstream(dir / name) << "x";
  cfx::detail::mpi::doorbell::remove_stale(dir.string());
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir)) left.insert(entry.path().filename());
  CHECK(left ==
        std::set<std::string>{live_page, live_page + "-1", "cfx-mpi-notapid", "other-file"});
  fs::remove_all(dir);
}

TEST_CASE("values come back, on every serving rank") {
  cfx::MpiPoolExecutor ex;
  CHECK(ex.backend() == "mpi");
  CHECK(ex.max_workers() == 2);  // two serving ranks, one worker each
  CHECK(ex.submit(add, 2, 3).result() == 5);
  CHECK(ex.submit(greet, std::string("rank")).result() == "hello, rank");
  ex.submit(nothing).result();
  std::vector<cfx::Future<std::pair<int, int>>> fs;
  for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(where));
  std::set<int> ranks;
  for (auto& f : fs) ranks.insert(f.result().second);
  CHECK(ranks.size() == 2);  // both serving ranks ran some
  CHECK(ranks.count(::getpid()) == 0);
}

TEST_CASE("one call at a time from several threads, and calls submitted by done-callbacks") {
  // A submit to an idle executor sends its call from the submitting thread; these threads
  // race for that turn with each other and with the MPI thread, whose done-callbacks submit
  // too (they queue their call: the MPI thread holds the turn).
  // Waiting threads take results in and send queued calls (the MPI thread stands by); a map
  // beside them waits in as_completed, which leaves its results to the MPI thread.
  // Declared before the executor, whose destructor waits for the MPI thread: the callback
  // that sets it may still be inside set_result when its result is seen.
  cfx::Promise<int> chained;
  auto chained_result = chained.get_future();
  cfx::MpiPoolExecutor ex;
  constexpr int kThreads = 3, kCalls = 200;
  std::vector<int> sums(kThreads, 0);
  long long mapped = 0;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kCalls; ++i) sums[t] += ex.submit(add, t, i).result();
      });
    threads.emplace_back([&] {
      std::vector<cfx::Future<int>> fs;
      for (int i = 0; i < kCalls; ++i) fs.push_back(ex.submit(square, i));
      for (auto& f : cfx::as_completed(fs)) mapped += f.result();
    });
  }
  for (int t = 0; t < kThreads; ++t) CHECK(sums[t] == kCalls * t + kCalls * (kCalls - 1) / 2);
  CHECK(mapped == static_cast<long long>(kCalls - 1) * kCalls * (2 * kCalls - 1) / 6);
  auto first = ex.submit(square, 6);
  first.add_done_callback([&](const cfx::Future<int>& f) {
    auto second = ex.submit(add, f.result(), 1);
    second.add_done_callback([&](const cfx::Future<int>& g) { chained.set_result(g.result()); });
  });
  CHECK(chained_result.result() == 37);
}

TEST_CASE("map keeps input order, with chunks, a buffer and unordered") {
  cfx::MpiPoolExecutor ex({.workers_per_rank = 2});
  CHECK(ex.max_workers() == 4);
  std::vector<int> xs(1000);
  for (int i = 0; i < 1000; ++i) xs[static_cast<std::size_t>(i)] = i;
  for (std::size_t chunk : {1, 7, 1000}) {
    std::vector<int> got;
    for (int v : ex.map(square, xs, {.chunksize = chunk})) got.push_back(v);
    REQUIRE(got.size() == xs.size());
    for (int i = 0; i < 1000; ++i) CHECK(got[static_cast<std::size_t>(i)] == i * i);
  }
  std::vector<int> buffered;
  for (int v : ex.map(square, xs, {.chunksize = 10, .buffersize = 3})) buffered.push_back(v);
  CHECK(buffered.size() == 1000);
  CHECK(buffered[999] == 999 * 999);
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  std::vector<int> sums;
  for (int v : ex.starmap(add, pairs)) sums.push_back(v);
  CHECK(sums == std::vector<int>{3, 7, 11});
  std::multiset<int> unordered;
  for (int v : ex.map_unordered(square, xs, {.chunksize = 13})) unordered.insert(v);
  CHECK(unordered.size() == 1000);
  CHECK(unordered.count(998001) == 1);
}

TEST_CASE("a map's timeout ends its iteration") {
  cfx::MpiPoolExecutor ex;
  cfx_test::Gate gate;  // after the executor: opened first, so its destructor does not wait
  std::vector<std::string> gates(3, gate.path());
  auto results = ex.map(cfx_test::wait_gate, gates, {.timeout = std::chrono::milliseconds(200)});
  CHECK_THROWS_AS(
      [&] {
        for (auto v : results) (void)v;
      }(),
      cfx::TimeoutError);
  gate.open();
}

TEST_CASE("exceptions cross the ranks by type, with their remote context") {
  cfx::MpiPoolExecutor ex;
  try {
    ex.submit(throws_invalid, 7).result();
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "bad value 7");
    CHECK(nested_message(e).find("mpi_test::throws_invalid") != std::string::npos);
  }
  CHECK_THROWS_AS(ex.submit(throws_odd).result(), Odd);
  try {
    ex.submit(throws_unregistered).result();
    FAIL("no exception");
  } catch (const cfx::RemoteError& e) {
    CHECK(std::string(e.what()).find("nobody knows me") != std::string::npos);
  }
  auto e = ex.submit(throws_invalid, 1).exception();
  CHECK(e != nullptr);
}

TEST_CASE("a crashing task fails only its future, naming rank and host") {
  cfx::MpiPoolExecutor ex;
  auto ok = ex.submit(add, 1, 1);
  try {
    ex.submit(crash, 3).result();
    FAIL("no exception");
  } catch (const cfx::WorkerCrashed& e) {
    std::string what = e.what();
    CHECK(what.find("MPI rank") != std::string::npos);
    CHECK(what.find("host") != std::string::npos);
  }
  CHECK(ok.result() == 2);
  CHECK(ex.submit(add, 20, 22).result() == 42);  // the rank replaced its worker
}

TEST_CASE("max_retries and task_timeout apply on the ranks") {
  cfx::MpiPoolExecutor ex({.task_timeout = std::chrono::milliseconds(300), .max_retries = 1});
  CHECK_THROWS_AS(ex.submit(sleep_ms, 30000).result(), cfx::TimeoutError);
  try {
    ex.submit(crash, 4).result();
    FAIL("no exception");
  } catch (const cfx::WorkerCrashed& e) {
    CHECK(std::string(e.what()).find("2") != std::string::npos);  // counts the attempts
  }
  CHECK(ex.submit(add, 1, 2).result() == 3);
}

TEST_CASE("interrupt() of a running call cancels it; its rank goes on") {
  cfx::MpiPoolExecutor ex;
  cfx_test::Gate gate;
  cfx_test::Signal started;
  auto f = ex.submit(cfx_test::notify_then_wait, started.path(), gate.path(), 5);
  REQUIRE(started.receive(1) == std::vector<int>{5});
  CHECK(f.interrupt());
  CHECK(f.cancelled());
  CHECK_THROWS_AS(f.result(), cfx::CancelledError);
  gate.open();
  CHECK(ex.submit(add, 2, 2).result() == 4);
}

TEST_CASE("as_completed and wait over its futures") {
  cfx::MpiPoolExecutor ex({.workers_per_rank = 2});
  std::vector<cfx::Future<int>> fs;
  for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(square, i));
  int sum = 0, n = 0;
  for (auto& f : cfx::as_completed(fs)) {
    sum += f.result();
    ++n;
  }
  CHECK(n == 20);
  CHECK(sum == 2470);
  auto [done, not_done] = cfx::wait(fs, cfx::ReturnWhen::all_completed);
  CHECK(done.size() == 20);
  CHECK(not_done.empty());
}

TEST_CASE("the Collatz answer") {
  cfx::MpiPoolExecutor ex;
  std::vector<cfx::Future<collatz::Best>> chunks;
  const std::uint64_t limit = 1'000'000, chunk = 50'000;
  for (std::uint64_t lo = 1; lo < limit; lo += chunk)
    chunks.push_back(ex.submit(collatz::longest_in, lo, std::min(limit, lo + chunk)));
  collatz::Best best{0, 0};
  for (auto& f : cfx::as_completed(chunks)) best = collatz::better(best, f.result());
  CHECK(best == collatz::Best{837799, 524});
}

TEST_CASE("config swap: the same code on mpi and on threads") {
  auto run = [](cfx::Executor& ex) {
    int total = 0;
    for (int v : ex.map(square, std::vector<int>{1, 2, 3, 4})) total += v;
    return total;
  };
  auto mpi = cfx::make_executor(
      {{"backend", "mpi"}, {"workers_per_rank", 2}, {"task_timeout_s", 30}, {"max_retries", 1}});
  CHECK(mpi->backend() == "mpi");
  CHECK(mpi->max_workers() == 4);
  CHECK(run(*mpi) == 30);
  mpi.reset();
  auto threads = cfx::make_executor({{"backend", "thread"}, {"max_workers", 2}});
  CHECK(run(*threads) == 30);
  CHECK_THROWS_AS(cfx::make_executor({{"backend", "mpi"}, {"start_method", "fork"}}),
                  cfx::ConfigError);
  CHECK_THROWS_AS(cfx::make_executor({{"backend", "mpi"}, {"workers_per_rank", 0}}),
                  cfx::ConfigError);
}

TEST_CASE("done-callbacks run on the MPI thread, also when a waiting thread took the result in") {
  // The thread waiting in result() takes in the results that have come while it watches (most
  // of these, measured), but runs none of their user code: their callbacks run on the MPI
  // thread, where a submit works and shutdown(wait=true) is refused, as always.
  constexpr int kRounds = 20;
  const auto waiter = std::this_thread::get_id();
  for (int round = 0; round < kRounds; ++round) {
    cfx::Promise<bool> refused;  // was the callback's shutdown(wait=true) refused?
    auto ran = refused.get_future();
    cfx::Future<int> next;
    cfx::MpiPoolExecutor ex;  // destroyed first: the MPI thread is done with `refused`
    // Round trips first: the waiting thread watches, and takes results in, when they have
    // come soon after the submit.
    for (int i = 0; i < 50; ++i) CHECK(ex.submit(add, i, round).result() == i + round);
    auto first = ex.submit(add, round, 1);
    first.add_done_callback([&](const cfx::Future<int>& f) {
      CHECK(std::this_thread::get_id() != waiter);
      next = ex.submit(add, f.result(), 1);
      try {
        ex.shutdown(true);
        refused.set_result(false);
      } catch (const cfx::Error&) {
        refused.set_result(true);
      }
    });
    CHECK(first.result() == round + 1);
    CHECK(ran.result());
    CHECK(next.result() == round + 2);
  }
}

/// A coroutine that awaits `f` and gives the name of the thread it resumed on.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};
/// The frame owns `where`: it is destroyed by the thread that set it, once set_result returns.
Detached name_where_resumed(cfx::Future<void> f, cfx::Promise<std::string> where) {
  co_await f;
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  where.set_result(name);
}

TEST_CASE("a coroutine awaiting an MPI future resumes on a resumer thread") {
  // The MPI thread delivers every result of the executor: user code there would hold them
  // back, so a coroutine woken there resumes on cfx's resumer threads (docs/async.md).
  cfx::MpiPoolExecutor ex;
  cfx_test::Gate gate;
  cfx::Promise<std::string> where;
  auto name = where.get_future();
  name_where_resumed(ex.submit(cfx_test::wait_gate, gate.path()), std::move(where));
  gate.open();
  const std::string resumed_on = name.result();
  CHECK_MESSAGE(resumed_on.rfind("cfx_resume_", 0) == 0, "resumed on ", resumed_on);
}

TEST_CASE("one executor open at a time; the next one after shutdown") {
  cfx::MpiPoolExecutor first;
  CHECK_THROWS_WITH_AS(cfx::MpiPoolExecutor(), doctest::Contains("another MpiPoolExecutor"),
                       cfx::Error);
  first.shutdown(false);
  cfx::MpiPoolExecutor second;  // waits for the first to finish closing
  CHECK(second.submit(add, 1, 1).result() == 2);
}

TEST_CASE("shutdown: cancel_futures, no submit after, no worker left") {
  std::vector<int> workers;
  {
    cfx::MpiPoolExecutor ex;
    cfx_test::Gate gate;
    std::vector<cfx::Future<void>> blockers;
    for (int i = 0; i < 8; ++i) blockers.push_back(ex.submit(cfx_test::wait_gate, gate.path()));
    std::vector<cfx::Future<int>> backlog;
    for (int i = 0; i < 50; ++i) backlog.push_back(ex.submit(square, i));
    ex.shutdown(false, true);
    CHECK_THROWS_WITH_AS(ex.submit(square, 1), "cannot schedule new futures after shutdown",
                         cfx::Error);
    gate.open();
    int cancelled = 0;
    for (auto& f : backlog) cancelled += f.cancelled();
    CHECK(cancelled > 0);  // the backlog past the ranks' windows never left rank 0
    ex.shutdown(true);
    for (auto& f : blockers) CHECK(f.done());
  }
  {
    cfx::MpiPoolExecutor ex({.workers_per_rank = 2});
    std::vector<cfx::Future<std::pair<int, int>>> fs;
    for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(where));
    for (auto& f : fs) workers.push_back(f.result().first);
    ex.shutdown(true);
  }
  std::sort(workers.begin(), workers.end());
  workers.erase(std::unique(workers.begin(), workers.end()), workers.end());
  CHECK(!workers.empty());
  for (int pid : workers) CHECK_MESSAGE(!alive(pid), "worker ", pid, " outlived shutdown");
}
