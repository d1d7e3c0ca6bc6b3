// Control of thread-pool calls (API section 7): a callable's std::stop_token, interrupt(),
// and shutdown(cancel_futures) requesting stop.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <vector>

#include <cfx/thread_pool.hpp>

#include "support/gate.hpp"

using namespace std::chrono_literals;
using cfx_test::Gate;
using cfx_test::Signal;

namespace {

/// Turns a hang into a failed check; never reached when the library works.
constexpr auto kLong = 30s;

/// Blocks until stop is requested on `token` (at most kLong); true if it was.
bool stop_seen(std::stop_token token) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, token, kLong, [] { return false; });
  return token.stop_requested();
}

/// A task that tells the test it started, then waits for its stop token.
bool started_then_stop_seen(std::stop_token token, const std::string& signal) {
  cfx_test::notify(signal, 1);
  return stop_seen(token);
}

}  // namespace

TEST_SUITE("thread control") {
  TEST_CASE("a callable taking std::stop_token first receives one, then the arguments") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    auto f = ex.submit(
        [](std::stop_token token, int a, std::string b) {
          return std::to_string(a) + b + (token.stop_possible() ? "+token" : "");
        },
        4, std::string("2"));
    static_assert(std::is_same_v<decltype(f), cfx::Future<std::string>>);
    CHECK(f.result() == "42+token");
    // Callable without the token: it gets none, even a generic one that would accept it.
    auto g = ex.submit([](auto... args) { return sizeof...(args); }, 1);
    CHECK(g.result() == 1);
    auto h = ex.submit([](std::stop_token token) { return !token.stop_requested(); });
    CHECK(h.result());
  }

  TEST_CASE("interrupt() of a running call requests stop on its token and returns false") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    Signal started;
    auto f = ex.submit(started_then_stop_seen, started.path());
    REQUIRE(started.receive(1).size() == 1);
    CHECK(f.running());
    CHECK_FALSE(f.interrupt());
    CHECK(f.result());  // the task returned because stop was requested
    CHECK_FALSE(f.cancelled());
  }

  TEST_CASE("interrupt() of a pending call cancels it; of a done one returns false") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    Gate gate;
    Signal started;
    auto blocker = ex.submit(cfx_test::notify_then_wait, started.path(), gate.path(), 1);
    REQUIRE(started.receive(1).size() == 1);
    std::atomic<bool> ran{false};
    auto queued = ex.submit([&ran](std::stop_token) { ran = true; });
    CHECK(queued.interrupt());
    CHECK(queued.cancelled());
    CHECK(queued.interrupt());  // cancelled: as cancel()
    // A running call without a stop token: nothing to request, it runs on.
    CHECK_FALSE(blocker.interrupt());
    CHECK(blocker.running());
    gate.open();
    CHECK(blocker.result() == 1);
    CHECK_FALSE(blocker.interrupt());
    auto done = ex.submit([](std::stop_token token) { return token.stop_requested(); });
    CHECK_FALSE(done.result());
    CHECK_FALSE(done.interrupt());
    CHECK_FALSE(done.cancelled());
    ex.shutdown(true);
    CHECK_FALSE(ran);
  }

  TEST_CASE("shutdown(cancel_futures) requests stop on running calls' tokens") {
    cfx::ThreadPoolExecutor ex({.max_workers = 2});
    Signal started;
    auto a = ex.submit(started_then_stop_seen, started.path());
    auto b = ex.submit(started_then_stop_seen, started.path());
    REQUIRE(started.receive(2).size() == 2);
    auto queued = ex.submit([](std::stop_token) { return false; });
    ex.shutdown(true, true);
    CHECK(queued.cancelled());
    CHECK(a.result());
    CHECK(b.result());
  }

  TEST_CASE("shutdown without cancel_futures leaves tokens alone") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    Gate gate;
    Signal started;
    auto f = ex.submit([gate_path = gate.path(), signal = started.path()](std::stop_token token) {
      cfx_test::notify(signal, 1);
      cfx_test::wait_gate(gate_path);
      return token.stop_requested();
    });
    REQUIRE(started.receive(1).size() == 1);
    ex.shutdown(false);
    gate.open();
    CHECK_FALSE(f.result());
  }
}
