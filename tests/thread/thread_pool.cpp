// ThreadPoolExecutor's own API: thread names, lazy threads, saturation and idle reuse,
// initializer, shutdown from a worker (CPython test_thread_pool.py, test_init.py).
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <latch>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cfx/detail/bytes.hpp>

#include "conformance/backends.hpp"

using namespace conf;

namespace {

/// The names of this process's threads, from /proc/self/task/*/comm.
std::vector<std::string> thread_names() {
  std::vector<std::string> names;
  for (auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

std::vector<std::string> names_starting_with(const std::string& prefix) {
  std::vector<std::string> out;
  for (auto& n : thread_names())
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// test_thread_names_assigned
TEST_CASE("thread pool: threads are named <prefix>_<i>") {
  cfx::ThreadPoolExecutor ex({.max_workers = 3, .thread_name_prefix = "SpecialPool"});
  Gate gate;
  auto fs = occupy(ex, 3, gate);
  CHECK(names_starting_with("SpecialPool") ==
        std::vector<std::string>{"SpecialPool_0", "SpecialPool_1", "SpecialPool_2"});
  gate.open();
}

TEST_CASE("thread pool: thread names are cut to 15 bytes") {
  cfx::ThreadPoolExecutor ex({.max_workers = 1, .thread_name_prefix = "AVeryLongPrefixName"});
  CHECK(ex.submit([] { return 1; }).result() == 1);
  CHECK(names_starting_with("AVeryLongPrefix") == std::vector<std::string>{"AVeryLongPrefix"});
}

// test_thread_names_default. Checked from inside the tasks: threads of earlier pools with the
// same (truncated) name may still linger in /proc for a moment after being joined.
TEST_CASE("thread pool: the default prefix is ThreadPoolExecutor-<n>") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  auto own_name = [] {
    char buf[16] = {};
    pthread_getname_np(pthread_self(), buf, sizeof buf);
    return std::string(buf);
  };
  // "ThreadPoolExecutor-<n>_<i>" is longer than the 15 bytes Linux keeps.
  CHECK(ex.submit(own_name).result() == "ThreadPoolExecu");
}

/// Counts the pool threads that have exited: a thread_local armed by the initializer, whose
/// destructor runs as its thread exits (before a join of that thread returns).
struct ExitCounter {
  std::atomic<int>* exited = nullptr;
  ~ExitCounter() {
    if (exited) ++*exited;
  }
};
thread_local ExitCounter exit_counter;

// test_threads_terminate. (/proc/self/task is no witness here: a joined thread's entry may
// linger for a moment after pthread_join returns.)
TEST_CASE("thread pool: threads start lazily and have exited after shutdown") {
  std::atomic<int> exited{0};
  cfx::ThreadPoolExecutor ex({.max_workers = 3,
                              .thread_name_prefix = "LazyPool",
                              .initializer = [&exited] { exit_counter.exited = &exited; }});
  CHECK(ex.thread_count() == 0);
  CHECK(names_starting_with("LazyPool").empty());
  Gate gate;
  auto fs = occupy(ex, 3, gate);
  CHECK(ex.thread_count() == 3);
  CHECK(names_starting_with("LazyPool").size() == 3);
  gate.open();
  for (auto& f : fs) (void)f.result();
  CHECK(exited == 0);
  ex.shutdown(true);
  CHECK(exited == 3);
}

// test_saturation [CORE]
TEST_CASE("thread pool: never more threads than max_workers") {
  cfx::ThreadPoolExecutor ex({.max_workers = 4});
  Gate gate;
  auto fs = occupy(ex, 4, gate);
  for (int i = 0; i < 56; ++i)
    fs.push_back(
        ex.submit(cfx_test::notify_then_wait, std::string("/nonexistent"), gate.path(), i));
  CHECK(ex.thread_count() == 4);
  gate.open();
  for (std::size_t i = 0; i < fs.size(); ++i)
    CHECK(fs[i].result() == static_cast<int>(i < 4 ? i : i - 4));
  CHECK(ex.thread_count() == 4);
}

// test_idle_thread_reuse: deterministic in cfx (a worker counts itself idle before it
// publishes the result).
TEST_CASE("thread pool: an idle thread is reused") {
  cfx::ThreadPoolExecutor ex({.max_workers = 4});
  for (int i = 0; i < 3; ++i) CHECK(ex.submit(mul, i, 2).result() == 2 * i);
  CHECK(ex.thread_count() == 1);
  for (int round = 0; round < 20; ++round) {
    Gate gate;
    auto fs = occupy(ex, 2, gate);
    gate.open();
    for (auto& f : fs) (void)f.result();
  }
  CHECK(ex.thread_count() == 2);
}

// A worker that takes a cancelled task from the queue and skips it is idle again: the next
// submit must use it instead of starting a thread.
TEST_CASE("thread pool: skipping a cancelled task leaves the worker counted idle") {
  Gate init_gate;
  std::atomic<int> inits{0};
  cfx::ThreadPoolExecutor ex({.max_workers = 3, .initializer = [&inits, &init_gate] {
                                if (inits++ == 0) cfx_test::wait_gate(init_gate.path());
                              }});
  Gate a_gate, b_gate;
  // The first thread is held in its initializer, so X stays queued: cancel it there.
  auto x = ex.submit(mul, 1, 1);
  CHECK(x.cancel());
  init_gate.open();
  // A is taken after X (FIFO): once A runs, X has been skipped.
  Signal started;
  auto a = ex.submit(cfx_test::notify_then_wait, started.path(), a_gate.path(), 1);
  REQUIRE(started.receive(1).size() == 1);
  REQUIRE(ex.thread_count() <= 2);
  // One thread runs A; if a second one was started, it is idle and B must run there. Either
  // way two threads are enough.
  auto b = ex.submit(cfx_test::notify_then_wait, started.path(), b_gate.path(), 2);
  REQUIRE(started.receive(1).size() == 1);
  CHECK(ex.thread_count() == 2);
  a_gate.open();
  b_gate.open();
  CHECK(a.result() == 1);
  CHECK(b.result() == 2);
}

// test_default_workers
TEST_CASE("thread pool: max_workers 0 means min(32, cores + 4)") {
  cpu_set_t set;
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  auto cores = static_cast<std::size_t>(CPU_COUNT(&set));
  cfx::ThreadPoolExecutor ex;
  CHECK(ex.max_workers() == std::min<std::size_t>(32, cores + 4));
  CHECK(ex.backend() == "thread");
}

TEST_CASE("thread pool: runs any callable, including lambdas and move-only captures") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  auto p = std::make_unique<int>(41);
  auto f = ex.submit([q = std::move(p)] { return *q + 1; });
  CHECK(f.result() == 42);
  int local = 0;
  ex.submit([&local] { local = 5; }).result();
  CHECK(local == 5);
  std::vector<int> in{1, 2, 3};
  CHECK(ex.map([](int x) { return x * 10; }, in).to_vector() == std::vector<int>{10, 20, 30});
}

// InitializerMixin.test_initializer
TEST_CASE("thread pool: the initializer runs once in each thread before any task") {
  std::atomic<int> runs{0};
  static thread_local bool initialized = false;
  cfx::ThreadPoolExecutor ex({.max_workers = 2, .initializer = [&] {
                                ++runs;
                                initialized = true;
                              }});
  Gate gate;
  auto fs = occupy(ex, 2, gate);
  gate.open();
  std::vector<cfx::Future<bool>> checks;
  for (int i = 0; i < 10; ++i) checks.push_back(ex.submit([] { return initialized; }));
  for (auto& c : checks) CHECK(c.result());
  ex.shutdown(true);
  CHECK(runs == 2);
  CHECK_FALSE(initialized);  // not in this (the test's) thread
}

// FailingInitializerMixin.test_initializer [CORE]
TEST_CASE("thread pool: a failing initializer breaks the pool") {
  StderrCapture err;
  cfx::ThreadPoolExecutor ex({.max_workers = 2, .initializer = [] {
                                throw std::invalid_argument("error in initializer");
                              }});
  // The first submit starts the first thread: its initializer fails and fails the task.
  auto f = ex.submit(mul, 1, 2);
  CHECK_THROWS_AS(f.result(), cfx::BrokenThreadPool);
  CHECK_THROWS_AS(f.result(), cfx::BrokenExecutor);
  // From then on the pool is broken: submit throws.
  CHECK_THROWS_AS((void)ex.submit(mul, 1, 2), cfx::BrokenThreadPool);
  std::vector<int> in{1, 2};
  CHECK_THROWS_AS(ex.map(inc, in), cfx::BrokenThreadPool);
  CHECK_NOTHROW(ex.shutdown(true));
  CHECK(err.text().find("error in initializer") != std::string::npos);
}

// Python raises RuntimeError from Thread.join; cfx throws cfx::Error.
TEST_CASE("thread pool: shutdown(wait=true) from one of its own tasks throws cfx::Error") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  auto f = ex.submit([&ex] { ex.shutdown(true); });
  CHECK_THROWS_AS(f.result(), cfx::Error);
  // The failed call did not shut the pool down.
  CHECK(ex.submit(mul, 2, 3).result() == 6);
  // shutdown(wait=false) from a task is fine.
  auto g = ex.submit([&ex] { ex.shutdown(false); });
  CHECK_NOTHROW(g.result());
  CHECK_THROWS_AS((void)ex.submit(mul, 2, 3), cfx::Error);
}

TEST_CASE("thread pool: a done-callback may shut the pool down without waiting") {
  std::promise<bool> refused;  // outlives the executor, whose thread sets it
  cfx::ThreadPoolExecutor ex({.max_workers = 1});
  auto f = ex.submit(mul, 1, 1);
  f.add_done_callback([&](const cfx::Future<int>&) {
    ex.shutdown(false);
    try {
      (void)ex.submit(mul, 1, 1);
      refused.set_value(false);
    } catch (const cfx::Error&) {
      refused.set_value(true);
    }
  });
  CHECK(refused.get_future().get());
}

// The header documents it: destroyed on one of its own threads, the executor reports it on
// stderr, waits for the other threads and lets its own thread finish.
TEST_CASE("thread pool: destroyed by its own task") {
  StderrCapture err;
  auto ex = std::make_shared<cfx::ThreadPoolExecutor>(
      cfx::ThreadPoolOptions{.max_workers = 2, .thread_name_prefix = "SelfDestruct"});
  Gate other_gate, last_gate;
  Signal started;
  auto other = ex->submit(cfx_test::notify_then_wait, started.path(), other_gate.path(), 1);
  REQUIRE(started.receive(1).size() == 1);
  // This task holds a reference to the executor; it becomes the last one at ex.reset(), and
  // is dropped on the worker when the task finishes, which runs ~ThreadPoolExecutor there.
  auto f = ex->submit([keep = ex, path = last_gate.path()] {
    cfx_test::wait_gate(path);
    return 7;
  });
  ex.reset();
  other_gate.open();
  last_gate.open();
  CHECK(f.result(kLong) == 7);
  CHECK(other.result(kLong) == 1);
  CHECK_FALSE(err.text().empty());
}

namespace {

/// A result that counts its live instances: every one constructed must be destroyed once.
struct Counted {
  static inline std::atomic<int> live{0};
  int value = 0;
  explicit Counted(int v) : value(v) { ++live; }
  Counted(const Counted& o) : value(o.value) { ++live; }
  Counted(Counted&& o) noexcept : value(o.value) { ++live; }
  Counted& operator=(const Counted&) = default;
  Counted& operator=(Counted&&) = default;
  ~Counted() { --live; }
};

}  // namespace

// Issue 10: a map over a random-access input writes its results in place, in one slab shared
// by its chunks; the slab must end each result exactly once however the map ends.
TEST_CASE("thread pool: map results written in place are destroyed once each") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  auto make = [](int x) {
    if (x == 57) throw std::runtime_error("item 57");
    return Counted(x);
  };
  SUBCASE("consumed by moving out") {
    {
      std::vector<Counted> out =
          ex.map(make, std::views::iota(0, 50), {.chunksize = 7}).to_vector();
      REQUIRE(out.size() == 50);
      CHECK(out[49].value == 49);
    }
    CHECK(Counted::live == 0);
  }
  SUBCASE("read by reference, then dropped half way") {
    {
      auto results = ex.map(make, std::views::iota(0, 50), {.chunksize = 7});
      int seen = 0;
      for (Counted& c : results) {
        CHECK(c.value == seen);
        if (++seen == 20) break;
      }
    }
    ex.shutdown();  // every chunk that started has ended
    CHECK(Counted::live == 0);
  }
  SUBCASE("cut short by an item's exception inside a chunk") {
    {
      auto results = ex.map(make, std::views::iota(0, 100), {.chunksize = 10});
      int seen = 0;
      CHECK_THROWS_WITH_AS(
          [&] {
            for (Counted& c : results) CHECK(c.value == seen++);
          }(),
          "item 57", std::runtime_error);
      CHECK(seen == 57);
    }
    ex.shutdown();
    CHECK(Counted::live == 0);
  }
}

TEST_CASE("thread pool: a big map's slab is the spare byte buffer, reused and given back") {
  // A slab of kBulkBytes or more lives in the spare byte buffer: each result must still end
  // once, and the next big map gets the same memory (no fresh pages to fault in).
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  const int items = static_cast<int>(cfx::detail::kBulkBytes / sizeof(Counted)) + 1000;
  auto make = [items](int x) {
    if (x == items - 5) throw std::runtime_error("near the end");
    return Counted(x);
  };
  {
    auto results = ex.map(make, std::views::iota(0, items), {.chunksize = 4096});
    int seen = 0, wrong = 0;
    CHECK_THROWS_WITH_AS(
        [&] {
          for (Counted& c : results) wrong += c.value != seen++;
        }(),
        "near the end", std::runtime_error);
    CHECK(seen == items - 5);
    CHECK(wrong == 0);
  }
  ex.shutdown();
  CHECK(Counted::live == 0);
  std::vector<char> spare = cfx::detail::take_spare_bytes(cfx::detail::kBulkBytes);
  CHECK(spare.capacity() >= items * sizeof(Counted));  // given back when the map ended
  const char* memory = spare.data();
  cfx::detail::give_spare_bytes(std::move(spare));

  cfx::ThreadPoolExecutor again({.max_workers = 2});
  const int strings = static_cast<int>(cfx::detail::kBulkBytes / sizeof(std::string));
  {
    auto numbers = again.map([](int x) { return std::to_string(x); }, std::views::iota(0, strings),
                             {.chunksize = 10000});
    int next = 0, wrong = 0;
    for (const std::string& text : numbers) wrong += text != std::to_string(next++);
    CHECK(next == strings);
    CHECK(wrong == 0);
  }
  again.shutdown();  // the chunk tasks, which share the slab, are gone
  spare = cfx::detail::take_spare_bytes(cfx::detail::kBulkBytes);
  CHECK(spare.data() == memory);  // the first map's memory served the second
  cfx::detail::give_spare_bytes(std::move(spare));
}

TEST_CASE("thread pool: map over an rvalue input keeps it until every chunk has run") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  Gate gate;
  // The first chunk waits, so the others run after map() has returned and its argument, a
  // temporary vector, would be gone if the map did not own it.
  auto results = ex.map(
      [path = gate.path()](const std::string& s) {
        if (s == "a") cfx_test::wait_gate(path);
        return s + s;
      },
      std::vector<std::string>{"a", "b", std::string(100, 'c')}, {.chunksize = 1});
  gate.open();
  CHECK(results.to_vector() == std::vector<std::string>{"aa", "bb", std::string(200, 'c')});
}

TEST_CASE("thread pool: map consumes an lvalue input before it returns") {
  // The contract without buffersize: the whole input is consumed inside map(). The caller
  // may change or destroy it afterwards, while the chunks still run.
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  Gate gate;
  auto in = std::make_unique<std::vector<int>>(std::vector<int>{1, 2, 3, 4, 5, 6});
  auto results = ex.map(
      [path = gate.path()](int x) {
        if (x == 1) cfx_test::wait_gate(path);
        return x * 2;
      },
      *in, {.chunksize = 2});
  (*in)[5] = 100;
  in.reset();
  gate.open();
  CHECK(results.to_vector() == std::vector<int>{2, 4, 6, 8, 10, 12});
}

TEST_CASE("thread pool: map passes each call its own copy of the item") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  std::vector<int> in{1, 2, 3, 4};
  auto out = ex.map(
                   [](int& x) {
                     x *= 100;
                     return x;
                   },
                   in, {.chunksize = 2})
                 .to_vector();
  CHECK(out == std::vector<int>{100, 200, 300, 400});
  CHECK(in == std::vector<int>{1, 2, 3, 4});
}
