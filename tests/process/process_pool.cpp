// Process-backend behaviour beyond the conformance suite: the four serialisation points,
// exceptions by kind, registration errors, crashes of every kind, leaks, start methods,
// timeouts, recycling, the initializer, and where the worker marker may not go.
#include <dlfcn.h>
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include "support/start_methods.hpp"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <future>
#include <new>
#include <set>

#include "lib/stack_trace.hpp"
#include "support/gate.hpp"
#include "tasks.hpp"

using namespace std::chrono_literals;
using cfx_test::Gate;
using cfx_test::Signal;
using proc_test::child_pids;
using proc_test::open_fds;
using proc_test::thread_count;

namespace {

// ---- values that fail at a chosen serialisation point -------------------------------------

/// Encodes and decodes like an int, except: `fail_encode_in` / `fail_decode_in` name the
/// side ("parent" or "worker") where to_json / from_json throw.
struct Fragile {
  int value = 0;
  std::string fail_encode_in;
  std::string fail_decode_in;
};
const char* side() {
  return cfx::is_worker_process() ? "worker" : "parent";
}
void to_json(nlohmann::json& j, const Fragile& f) {
  if (f.fail_encode_in == side()) throw std::runtime_error("to_json refused");
  j = {{"value", f.value}, {"enc", f.fail_encode_in}, {"dec", f.fail_decode_in}};
}
void from_json(const nlohmann::json& j, Fragile& f) {
  f.fail_decode_in = j.at("dec").get<std::string>();
  if (f.fail_decode_in == side()) throw std::runtime_error("from_json refused");
  f.value = j.at("value").get<int>();
  f.fail_encode_in = j.at("enc").get<std::string>();
}

Fragile echo_fragile(Fragile f) {
  return f;
}
CFX_TASK(echo_fragile);

/// Returns a Fragile that fails where the argument says.
Fragile make_fragile(int value, std::string fail_encode_in, std::string fail_decode_in) {
  return Fragile{value, std::move(fail_encode_in), std::move(fail_decode_in)};
}
CFX_TASK(make_fragile);

/// No to_json/from_json at all.
struct Opaque {
  int* pointer = nullptr;
};
int take_opaque(Opaque) {
  return 1;
}
CFX_TASK(take_opaque);

// ---- exceptions --------------------------------------------------------------------------

struct RegisteredError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
CFX_EXCEPTION(RegisteredError);

struct UnregisteredError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int throw_kind(std::string kind) {
  if (kind == "invalid_argument") throw std::invalid_argument("bad argument");
  if (kind == "out_of_range") throw std::out_of_range("too far");
  if (kind == "overflow_error") throw std::overflow_error("too big");
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "registered") throw RegisteredError("registered one");
  if (kind == "unregistered") throw UnregisteredError("unregistered one");
  if (kind == "int") throw 42;
  return 0;
}
CFX_TASK(throw_kind);

// Where throw_here throws, for the stack-trace test. Not inlined, so that it keeps a frame of
// its own in the trace whatever the optimisation level.
constexpr int throw_here_line = __LINE__ + 2;
[[gnu::noinline]] int throw_here(int x) {
  if (x > 0) throw std::domain_error("thrown here");
  return x;
}
CFX_TASK(throw_here);

// ---- crashes ------------------------------------------------------------------------------

int crash(std::string how) {
  if (how == "segv") ::raise(SIGSEGV);
  if (how == "abort") std::abort();
  if (how == "exit3") std::_Exit(3);
  if (how == "exit0") ::_exit(0);
  return 0;
}
CFX_TASK(crash);

int add(int a, int b) {
  return a + b;
}
CFX_TASK(add);

int get_pid() {
  return ::getpid();
}
CFX_TASK(get_pid);

int pid_after_gate(std::string signal_path, std::string gate_path) {
  cfx_test::notify(signal_path, 1);
  cfx_test::wait_gate(gate_path);
  return ::getpid();
}
CFX_TASK(pid_after_gate);

// ---- environment and descriptors seen by a worker ----------------------------------------

std::vector<int> worker_fds() {
  return open_fds();
}
CFX_TASK(worker_fds);

bool marker_visible() {
  return std::getenv("CFX_WORKER") != nullptr;
}
CFX_TASK(marker_visible);

/// Runs a shell that fails if it sees the worker marker: a program a task starts is no worker.
int child_sees_marker() {
  return std::system("test -z \"$CFX_WORKER\"");
}
CFX_TASK(child_sees_marker);

/// What the pool set in the worker's environment for the worker alone (launcher.cpp), as a
/// task sees it: nothing.
bool tunables_visible() {
  return std::getenv("GLIBC_TUNABLES") != nullptr;
}
CFX_TASK(tunables_visible);

/// errno of an attempt to shrink the worker's shared file (descriptor 5: the slot page and the
/// bulk areas, which the pool has mapped): 0 if it shrank.
int shrink_shared_file() {
  return ::ftruncate(5, 0) == 0 ? 0 : errno;
}
CFX_TASK(shrink_shared_file);

/// A string of `n` bytes that says which call made it.
std::string tagged(std::size_t n, int tag) {
  std::string s(n, static_cast<char>('a' + tag % 26));
  s[n / 2] = static_cast<char>(tag);
  return s;
}
std::string retag(std::string s, int tag) {
  s[0] = static_cast<char>(tag);
  return s;
}
CFX_TASK(retag);

std::string nested_pool() {
  cfx::ProcessPoolExecutor inner({.max_workers = 1});
  return "constructed";
}
CFX_TASK(nested_pool);

// ---- initializer ---------------------------------------------------------------------------

std::string init_state = "uninitialized";
void set_init_state(std::string s) {
  init_state = std::move(s);
}
CFX_TASK(set_init_state);
std::string get_init_state() {
  return init_state;
}
CFX_TASK(get_init_state);
void failing_init() {
  throw std::runtime_error("error in initializer");
}
CFX_TASK(failing_init);
void crashing_init() {
  std::abort();
}
CFX_TASK(crashing_init);

std::string echo_string(std::string s) {
  return s;
}
CFX_TASK(echo_string);

/// `n` doubles that say which call made them.
std::vector<double> tagged_doubles(std::size_t n, int tag) {
  std::vector<double> v(n, tag);
  v[n / 2] = -tag;
  return v;
}
CFX_TASK(tagged_doubles);

int not_registered(int x) {
  return x;
}

template <class E>
std::string what_of(const cfx::Future<int>& f) {
  try {
    (void)f.result();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

/// The soft descriptor limit that leaves exactly `free` descriptors to open: the lowest
/// numbers not open count, and a new descriptor must be below the limit.
rlim_t limit_leaving(int free) {
  auto open = open_fds();
  std::set<int> used(open.begin(), open.end());
  for (int fd = 0;; ++fd)
    if (!used.count(fd) && free-- == 0) return static_cast<rlim_t>(fd);
}

/// Lowers RLIMIT_NOFILE's soft limit while it lives.
class FdLimit {
 public:
  explicit FdLimit(rlim_t soft) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    rlimit lowered = saved_;
    lowered.rlim_cur = soft;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  }
  ~FdLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  FdLimit(const FdLimit&) = delete;
  FdLimit& operator=(const FdLimit&) = delete;

 private:
  rlimit saved_{};
};

bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}

}  // namespace

TEST_SUITE("process") {
  TEST_CASE("arguments that fail to encode in the parent fail only that future") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    auto f = ex.submit(echo_fragile, Fragile{1, "parent", ""});
    CHECK_THROWS_AS((void)f.result(), cfx::SerializationError);
    CHECK(what_of<cfx::SerializationError>(ex.submit(take_opaque, Opaque{})).find("take_opaque") !=
          std::string::npos);
    CHECK(ex.submit(add, 1, 2).result() == 3);
  }

  TEST_CASE("arguments that fail to decode in the worker fail only that future") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    auto f = ex.submit(echo_fragile, Fragile{1, "", "worker"});
    try {
      (void)f.result();
      FAIL("expected SerializationError");
    } catch (const cfx::SerializationError& e) {
      std::string what = e.what();
      CHECK(what.find("echo_fragile") != std::string::npos);
      CHECK(what.find("Fragile") != std::string::npos);
    }
    CHECK(ex.submit(add, 2, 2).result() == 4);
  }

  TEST_CASE("results that fail to encode in the worker fail only that future") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    auto f = ex.submit(make_fragile, 5, "worker", "");
    CHECK_THROWS_AS((void)f.result(), cfx::SerializationError);
    CHECK(ex.submit(add, 3, 2).result() == 5);
  }

  TEST_CASE("results that fail to decode in the parent fail only that future") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    auto f = ex.submit(make_fragile, 5, "", "parent");
    try {
      (void)f.result();
      FAIL("expected SerializationError");
    } catch (const cfx::SerializationError& e) {
      CHECK(std::string(e.what()).find("make_fragile") != std::string::npos);
    }
    CHECK(ex.submit(make_fragile, 6, "", "").result().value == 6);
  }

  TEST_CASE("exceptions come back by type with their remote context nested") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    CHECK_THROWS_WITH_AS((void)ex.submit(throw_kind, "invalid_argument").result(), "bad argument",
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)ex.submit(throw_kind, "out_of_range").result(), "too far",
                         std::out_of_range);
    CHECK_THROWS_WITH_AS((void)ex.submit(throw_kind, "overflow_error").result(), "too big",
                         std::overflow_error);
    CHECK_THROWS_AS((void)ex.submit(throw_kind, "bad_alloc").result(), std::bad_alloc);
    CHECK_THROWS_WITH_AS((void)ex.submit(throw_kind, "registered").result(), "registered one",
                         RegisteredError);
    auto unregistered = what_of<cfx::RemoteError>(ex.submit(throw_kind, "unregistered"));
    CHECK(unregistered.find("UnregisteredError") != std::string::npos);
    CHECK(unregistered.find("unregistered one") != std::string::npos);
    CHECK(what_of<cfx::RemoteError>(ex.submit(throw_kind, "int")).find("int") != std::string::npos);

    int worker = ex.submit(get_pid).result();
    try {
      (void)ex.submit(throw_kind, "invalid_argument").result();
      FAIL("expected an exception");
    } catch (const std::invalid_argument& e) {
      try {
        std::rethrow_if_nested(e);
        FAIL("expected a nested remote context");
      } catch (const cfx::RemoteError& context) {
        CHECK(context.task() == "throw_kind");
        CHECK(context.pid() == worker);
        CHECK(context.type_name() == "std::invalid_argument");
        CHECK(std::string(context.what()).find("throw_kind") != std::string::npos);
      }
    }
  }

  TEST_CASE("the remote context carries the throw site's function and file:line") {
    if (!cfx::detail::throw_stack_traces_compiled()) {
      MESSAGE("throw-site stack traces are not compiled in (sanitizers, -Dthrow_traces=false)");
      return;
    }
    // Every start method: a spawned worker is this program re-run from /proc/self/exe, a forked
    // one a copy of this process, a fork server's a copy of that program re-run.
    for (auto method :
         {cfx::StartMethod::spawn, cfx::StartMethod::fork, cfx::StartMethod::forkserver}) {
      cfx::ProcessPoolExecutor ex({.max_workers = 1, .start_method = method});
      std::string trace;
      try {
        (void)ex.submit(throw_here, 1).result();
        FAIL("expected an exception");
      } catch (const std::domain_error& e) {
        try {
          std::rethrow_if_nested(e);
        } catch (const cfx::RemoteError& context) {
          trace = context.stack_trace();
        }
      }
      std::string method_name = cfx::test::name(method);
      INFO("start method " << method_name << ", stack trace:\n" << trace);
      // The innermost frame is the throwing function itself, at the throw's own line.
      auto first_line = trace.substr(0, trace.find('\n'));
      CHECK(first_line.find("throw_here(int)") != std::string::npos);
      CHECK(first_line.find("process_pool.cpp:" + std::to_string(throw_here_line)) !=
            std::string::npos);
    }
  }

  TEST_CASE("function_name names a function of the executable without -rdynamic") {
    auto address = reinterpret_cast<const void*>(&not_registered);
    // The premise: the executable exports no symbol for it, so dladdr (the basic backend's
    // only source) cannot name it.
    Dl_info info{};
    CHECK((::dladdr(address, &info) == 0 || info.dli_sname == nullptr));
    CHECK(cfx::detail::function_name(address) == "(anonymous namespace)::not_registered(int)");
    int not_code = 0;
    CHECK(cfx::detail::function_name(&not_code).empty());
    CHECK(cfx::detail::function_name(nullptr).empty());
  }

  TEST_CASE("unregistered callables are refused at submit with how to register them") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    CHECK_THROWS_WITH_AS((void)ex.submit([] { return 1; }), doctest::Contains("CFX_TASK"),
                         cfx::Error);
    CHECK_THROWS_WITH_AS((void)ex.submit(not_registered, 1), doctest::Contains("CFX_TASK"),
                         cfx::Error);
    CHECK_THROWS_WITH_AS((void)ex.map(not_registered, std::vector<int>{1, 2}),
                         doctest::Contains("CFX_TASK"), cfx::Error);
    CHECK(ex.submit(add, 1, 1).result() == 2);
  }

  TEST_CASE("a worker cannot start a pool of its own") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    auto f = ex.submit(nested_pool);
    CHECK_THROWS_WITH_AS((void)f.result(), doctest::Contains("nested"), cfx::Error);
  }

  TEST_CASE("workers that crash fail only their own future; the pool keeps serving") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    struct Case {
      const char* how;
      const char* expect;  // in the message, unsanitized builds
    };
    for (auto c : {Case{"segv", "SIGSEGV"}, Case{"abort", "SIGABRT"}, Case{"exit3", "status 3"},
                   Case{"exit0", "status 0"}}) {
      CAPTURE(c.how);
      auto bystander = ex.submit(add, 20, 22);
      auto f = ex.submit(crash, c.how);
      try {
        (void)f.result();
        FAIL("expected WorkerCrashed");
      } catch (const cfx::WorkerCrashed& e) {
        std::string what = e.what();
        CHECK(what.find("crash") != std::string::npos);
        if (!sanitized() || std::string(c.how).rfind("exit", 0) == 0)
          CHECK(what.find(c.expect) != std::string::npos);
      }
      CHECK(bystander.result() == 42);
      CHECK(ex.submit(add, 1, 2).result() == 3);
    }
  }

  TEST_CASE("a worker killed from outside fails its task with an OOM hint; the pool goes on") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    Signal started;
    Gate gate;
    auto f = ex.submit(pid_after_gate, started.path(), gate.path());
    REQUIRE(started.receive(1).size() == 1);
    auto pids = ex.worker_pids();
    REQUIRE(pids.size() == 1);
    REQUIRE(::kill(pids[0], SIGKILL) == 0);
    try {
      (void)f.result();
      FAIL("expected WorkerCrashed");
    } catch (const cfx::WorkerCrashed& e) {
      std::string what = e.what();
      CHECK(what.find("SIGKILL") != std::string::npos);
      CHECK(what.find("out-of-memory") != std::string::npos);
      CHECK(what.find(std::to_string(pids[0])) != std::string::npos);
    }
    CHECK(ex.submit(add, 2, 3).result() == 5);
    CHECK(ex.worker_pids() != pids);
  }

  TEST_CASE("an idle worker killed from outside fails nothing and is replaced") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    int first = ex.submit(get_pid).result();
    REQUIRE(::kill(first, SIGKILL) == 0);
    int second = ex.submit(get_pid).result();
    CHECK(second != first);
  }

  TEST_CASE("calls queued behind a crash on the same worker are not lost") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    std::vector<cfx::Future<int>> before;
    for (int i = 0; i < 50; ++i) before.push_back(ex.submit(add, i, 0));
    auto crashing = ex.submit(crash, "segv");
    std::vector<cfx::Future<int>> after;
    for (int i = 0; i < 50; ++i) after.push_back(ex.submit(add, i, 1));
    CHECK_THROWS_AS((void)crashing.result(), cfx::WorkerCrashed);
    for (int i = 0; i < 50; ++i) {
      CHECK(before[i].result() == i);
      CHECK(after[i].result() == i + 1);
    }
  }

  TEST_CASE("many crashing tasks in a row: every one fails alone, then the pool serves") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    std::vector<cfx::Future<int>> crashes;
    for (int i = 0; i < 12; ++i) crashes.push_back(ex.submit(crash, "exit3"));
    for (auto& f : crashes) CHECK_THROWS_AS((void)f.result(), cfx::WorkerCrashed);
    CHECK(ex.submit(add, 4, 4).result() == 8);
  }

  TEST_CASE("on_worker_crash = break_pool breaks the pool as Python does") {
    cfx::ProcessPoolExecutor ex(
        {.max_workers = 1, .on_worker_crash = cfx::OnWorkerCrash::break_pool});
    auto f = ex.submit(crash, "segv");
    CHECK_THROWS_AS((void)f.result(), cfx::BrokenProcessPool);
    CHECK_THROWS_AS((void)ex.submit(add, 1, 1), cfx::BrokenProcessPool);
  }

  TEST_CASE("100,000 tiny tasks: none lost") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    std::vector<cfx::Future<int>> fs;
    fs.reserve(100000);
    for (int i = 0; i < 100000; ++i) fs.push_back(ex.submit(add, i, 1));
    long long sum = 0;
    for (auto& f : fs) sum += f.result();
    CHECK(sum == 100000LL * 100001 / 2);
  }

  TEST_CASE("map sends chunks and returns results in order, with raw and encoded values") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    std::vector<std::pair<int, int>> pairs;
    for (int i = 0; i < 5000; ++i) pairs.emplace_back(i, i);
    std::vector<int> sums = ex.starmap(add, pairs, {.chunksize = 100}).to_vector();
    REQUIRE(sums.size() == 5000);
    for (int i = 0; i < 5000; ++i) CHECK(sums[i] == 2 * i);
    std::vector<std::string> words{"a", "bb", "ccc"};
    CHECK(ex.map(echo_string, words, {.chunksize = 2}).to_vector() == words);
  }

  TEST_CASE("large arguments and results cross intact") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    std::string big(8 << 20, 'x');
    big[12345] = 'y';
    CHECK(ex.submit(echo_string, big).result() == big);
  }

  TEST_CASE("big values cross both ways through the bulk areas, many in flight") {
    // Several 2 MiB calls per worker at once: one at a time rides a worker's bulk area each
    // way, the others the pipe; all of them arrive intact and in their own futures, over each
    // start method (the areas live in the file every method hands the worker).
    for (auto method : cfx::test::pool_start_methods()) {
      CAPTURE(cfx::test::name(method));
      cfx::ProcessPoolExecutor ex({.max_workers = 2, .start_method = method});
      constexpr std::size_t kSize = std::size_t{2} << 20;
      std::vector<cfx::Future<std::string>> fs;
      for (int i = 0; i < 12; ++i) fs.push_back(ex.submit(retag, tagged(kSize, i), i + 100));
      for (int i = 0; i < 12; ++i) {
        CAPTURE(i);
        std::string expected = tagged(kSize, i);
        expected[0] = static_cast<char>(i + 100);
        CHECK(fs[static_cast<std::size_t>(i)].result() == expected);
      }
      std::vector<std::string> words{tagged(kSize, 1), "small", tagged(kSize + 1, 2)};
      CHECK(ex.map(echo_string, words, {.chunksize = 1}).to_vector() == words);
    }
  }

  TEST_CASE(
      "a big result of the size the task's last two had is decoded into storage prepared "
      "ahead; any size still arrives whole") {
    // After two results of one size, the pool reserves the next one's storage while the worker
    // computes (RemoteTask::prepare_result). The encoded size it goes by includes the element
    // count, so a prepared vector has room for one element more than it holds; a vector
    // decoded into fresh storage has exactly its size. Sizes that change, that the guess is too
    // small for, or that stop being big, come back whole all the same. 20 MiB and up: the
    // areas' copies take two threads.
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    constexpr std::size_t kMiBDoubles = (std::size_t{1} << 20) / sizeof(double);
    struct Step {
      std::size_t mib;
      bool prepared;
    };
    const Step steps[] = {{5, false}, {5, false}, {5, true},   {5, true},   {7, false},
                          {5, false}, {5, false}, {20, false}, {20, false}, {20, true},
                          {20, true}, {1, false}, {20, false}, {20, false}, {20, true}};
    int tag = 0;
    for (const Step& step : steps) {
      CAPTURE(step.mib);
      CAPTURE(tag);
      const std::size_t n = step.mib * kMiBDoubles;
      auto f = ex.submit(tagged_doubles, n, tag);
      const std::vector<double>& v = f.result();
      CHECK(v == tagged_doubles(n, tag));
      if (step.prepared)
        CHECK(v.capacity() > v.size());
      else
        CHECK(v.capacity() == v.size());
      ++tag;
    }
  }

  TEST_CASE("a task cannot shrink the file whose bulk areas the pool has mapped") {
    // Sealed (F_SEAL_SHRINK): shrunk under the pool's mapping, the pool's next read of a big
    // result would fault (SIGBUS) and kill the parent.
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    std::string big = tagged(std::size_t{3} << 20, 7);
    CHECK(ex.submit(echo_string, big).result() == big);
    CHECK(ex.submit(shrink_shared_file).result() == EPERM);
    CHECK(ex.submit(echo_string, big).result() == big);
  }

  TEST_CASE("no worker process, zombie, descriptor or thread remains after shutdown") {
    auto fds_before = open_fds();
    auto threads_before = thread_count();
    REQUIRE(child_pids().empty());
    for (auto method :
         {cfx::StartMethod::spawn, cfx::StartMethod::fork, cfx::StartMethod::forkserver}) {
      CAPTURE(cfx::test::name(method));
      cfx::ProcessPoolExecutor ex({.max_workers = 2, .start_method = method});
      std::vector<cfx::Future<int>> fs;
      for (int i = 0; i < 100; ++i) fs.push_back(ex.submit(add, i, i));
      for (auto& f : fs) (void)f.result();
      CHECK(ex.submit(crash, "exit3").exception() != nullptr);  // a dead worker, reaped too
      CHECK_FALSE(child_pids().empty());
      ex.shutdown();
      CHECK(child_pids().empty());
      CHECK(ex.worker_pids().empty());
    }
    CHECK(open_fds() == fds_before);
    CHECK(thread_count() == threads_before);
  }

  TEST_CASE("a worker launch that fails leaks no descriptor and breaks the pool saying why") {
    // Each run leaves one more descriptor free, so the launch fails at each step in turn (a
    // pipe, the counter page, the launcher's own pipe, the process handle) until it succeeds.
    REQUIRE(child_pids().empty());
    for (auto method :
         {cfx::StartMethod::spawn, cfx::StartMethod::fork, cfx::StartMethod::forkserver}) {
      int failed = 0;
      for (int free = 0; free < 16; ++free) {
        std::string start_method = cfx::test::name(method);
        CAPTURE(start_method);
        CAPTURE(free);
        auto fds_before = open_fds();
        std::string outcome = "started";
        {
          cfx::ProcessPoolExecutor ex({.max_workers = 1, .start_method = method});
          cfx::Future<int> f;
          {
            FdLimit limit(limit_leaving(free));
            f = ex.submit(add, 1, 1);
            f.wait();
          }
          if (f.exception()) {
            outcome = what_of<cfx::BrokenProcessPool>(f);
            CHECK_THROWS_AS((void)ex.submit(add, 1, 1), cfx::BrokenProcessPool);
          }
        }
        CHECK(open_fds() == fds_before);
        CHECK(child_pids().empty());
        // Past here the parent had every descriptor it needed: the worker started (or failed
        // in its own way under the limit it inherited).
        if (outcome.find("could not be started") == std::string::npos) break;
        ++failed;
        CHECK(outcome.find("Too many open files") != std::string::npos);
      }
      CHECK(failed >= 5);  // two pipes and the counter page need five
    }
  }

  TEST_CASE("no descriptor of the parent leaks into a worker") {
    int leaky = ::fcntl(2, F_DUPFD, 10);  // deliberately not close-on-exec
    REQUIRE(leaky >= 10);
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    auto seen = ex.submit(worker_fds).result();
    ::close(leaky);
    // stdio, the two pipes, the shared file (slot page and bulk areas) and the descriptor
    // socket
    CHECK(seen == std::vector<int>{0, 1, 2, 3, 4, 5, 6});
  }

  TEST_CASE("the fork start method runs the same tasks") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2, .start_method = cfx::StartMethod::fork});
    CHECK(ex.submit(add, 40, 2).result() == 42);
    CHECK_THROWS_AS((void)ex.submit(throw_kind, "invalid_argument").result(),
                    std::invalid_argument);
    CHECK_THROWS_AS((void)ex.submit(crash, "exit3").result(), cfx::WorkerCrashed);
    CHECK(ex.submit(add, 1, 2).result() == 3);
  }

  TEST_CASE("the worker marker and the pool's malloc tuning do not reach the tasks") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    CHECK_FALSE(ex.submit(marker_visible).result());
    CHECK(ex.submit(child_sees_marker).result() == 0);
    if (!std::getenv("GLIBC_TUNABLES")) CHECK_FALSE(ex.submit(tunables_visible).result());
  }

  TEST_CASE("task_timeout kills a task that runs too long, and only that task") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1, .task_timeout = 0.3s});
    Signal started;
    Gate never;  // opened only when the test ends
    int before = ex.submit(get_pid).result();
    auto stuck = ex.submit(pid_after_gate, started.path(), never.path());
    auto after = ex.submit(add, 1, 1);
    CHECK_THROWS_WITH_AS((void)stuck.result(), doctest::Contains("task_timeout"),
                         cfx::TimeoutError);
    CHECK(after.result() == 2);
    CHECK(ex.submit(get_pid).result() != before);
  }

  TEST_CASE("max_tasks_per_child replaces a worker after that many tasks") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1, .max_tasks_per_child = 3});
    std::vector<int> pids;
    for (int i = 0; i < 7; ++i) pids.push_back(ex.submit(get_pid).result());
    CHECK(pids[0] == pids[1]);
    CHECK(pids[1] == pids[2]);
    CHECK(pids[3] != pids[2]);
    CHECK(pids[3] == pids[5]);
    CHECK(pids[6] != pids[5]);
    CHECK(ex.worker_pids().size() <= 1);
  }

  TEST_CASE("the initializer runs in each worker before any task") {
    cfx::ProcessPoolExecutor ex(
        {.max_workers = 2, .initializer = cfx::task_call(set_init_state, "initialized")});
    for (int i = 0; i < 4; ++i) CHECK(ex.submit(get_init_state).result() == "initialized");
  }

  TEST_CASE("a failing initializer breaks the pool; every future ends") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2, .initializer = cfx::task_call(failing_init)});
    std::vector<cfx::Future<int>> fs;
    try {
      for (int i = 0; i < 5; ++i) fs.push_back(ex.submit(add, i, i));
    } catch (const cfx::BrokenProcessPool&) {
    }
    for (auto& f : fs) {
      try {
        (void)f.result();
        FAIL("expected BrokenProcessPool");
      } catch (const cfx::BrokenProcessPool& e) {
        CHECK(std::string(e.what()).find("error in initializer") != std::string::npos);
      }
    }
    CHECK_THROWS_AS((void)ex.submit(add, 1, 1), cfx::BrokenProcessPool);
  }

  TEST_CASE("an initializer that kills its worker breaks the pool instead of respawning forever") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2, .initializer = cfx::task_call(crashing_init)});
    cfx::Future<int> f;
    try {
      f = ex.submit(add, 1, 1);
    } catch (const cfx::BrokenProcessPool&) {
      return;  // already broken: that is the outcome too
    }
    CHECK_THROWS_WITH_AS((void)f.result(), doctest::Contains("crashing_init"),
                         cfx::BrokenProcessPool);
  }

  TEST_CASE("workers dying faster than the respawn limit still end every future") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    std::vector<cfx::Future<int>> fs;
    for (int i = 0; i < 30; ++i) fs.push_back(ex.submit(crash, "exit3"));
    auto last = ex.submit(add, 2, 2);
    for (auto& f : fs) CHECK_THROWS_AS((void)f.result(), cfx::WorkerCrashed);
    CHECK(last.result() == 4);
  }

  TEST_CASE("shutdown(wait=true) from a done-callback is refused, not a deadlock") {
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    std::promise<std::string> message;
    auto f = ex.submit(add, 1, 1);
    f.add_done_callback([&](const cfx::Future<int>&) {
      try {
        ex.shutdown(true);
        message.set_value("no error");
      } catch (const cfx::Error& e) {
        message.set_value(e.what());
      }
    });
    CHECK(message.get_future().get().find("wait for itself") != std::string::npos);
  }

}  // TEST_SUITE
