// Control of thread-pool calls (API section 7): a callable's std::stop_token, interrupt(),
// CallOptions timeouts, and shutdown(cancel_futures) requesting stop.
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

std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  }
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

  TEST_CASE("a CallOptions timeout fails the future at once and requests stop") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    Gate gate;
    Signal stopped;
    std::atomic<bool> returned{false};
    auto f = ex.submit(cfx::CallOptions{.timeout = 50ms},
                       [&, gate_path = gate.path(), signal = stopped.path()](std::stop_token t) {
                         cfx_test::notify(signal, stop_seen(t) ? 1 : 0);
                         cfx_test::wait_gate(gate_path);  // still running when the test checks
                         returned = true;
                         return 5;
                       });
    REQUIRE(f.wait_for(kLong));
    CHECK_THROWS_AS(f.result(), cfx::TimeoutError);
    auto message = message_of(f.exception());
    CHECK(message.find("timeout (0.05 s)") != std::string::npos);
    CHECK(message.find("stop was requested") != std::string::npos);
    CHECK(stopped.receive(1) == std::vector<int>{1});
    CHECK_FALSE(returned);  // the call goes on after its future has failed
    gate.open();
    ex.shutdown(true);
    CHECK(returned);
    CHECK_THROWS_AS(f.result(), cfx::TimeoutError);  // its value was discarded
  }

  TEST_CASE("a CallOptions timeout fails a call that takes no stop token") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    Gate gate;
    auto f = ex.submit(cfx::CallOptions{.timeout = 20ms}, cfx_test::notify_then_wait,
                       std::string("/nonexistent"), gate.path(), 3);
    REQUIRE(f.wait_for(kLong));
    CHECK_THROWS_AS(f.result(), cfx::TimeoutError);
    CHECK(message_of(f.exception()).find("stop was requested") == std::string::npos);
    gate.open();
    ex.shutdown(true);
    CHECK_THROWS_AS(f.result(), cfx::TimeoutError);
  }

  TEST_CASE("a call that ends before its timeout keeps its outcome") {
    cfx::ThreadPoolExecutor ex({.max_workers = 2});
    cfx::CallOptions options{.timeout = 30s};
    CHECK(ex.submit(
                options, [](int x) { return x + 1; }, 41)
              .result() == 42);
    CHECK(ex.submit(options, [](std::stop_token t) { return t.stop_requested(); }).result() ==
          false);
    std::atomic<int> calls{0};
    ex.submit(options, [&calls] { ++calls; }).result();
    CHECK(calls == 1);
    auto failing = ex.submit(options, []() -> int { throw std::invalid_argument("bad"); });
    CHECK_THROWS_AS(failing.result(), std::invalid_argument);
  }

  TEST_CASE("a CallOptions timeout counts from the call's start, not from submit") {
    cfx::ThreadPoolExecutor ex({.max_workers = 1});
    Gate gate;
    Signal started;
    auto blocker = ex.submit(cfx_test::notify_then_wait, started.path(), gate.path(), 1);
    REQUIRE(started.receive(1).size() == 1);
    auto f = ex.submit(cfx::CallOptions{.timeout = 20s}, [] { return 7; });
    // Queued longer than a timeout counted from submit would allow... is not a timeout.
    auto g = ex.submit(cfx::CallOptions{.timeout = 50ms}, [] { return 8; });
    CHECK_FALSE(g.wait_for(200ms));  // queued behind the blocker: neither run nor timed out
    gate.open();
    CHECK(blocker.result() == 1);
    CHECK(f.result() == 7);
    CHECK(g.result() == 8);
  }

  TEST_CASE("an earlier deadline armed after a later one still expires on time") {
    cfx::ThreadPoolExecutor ex({.max_workers = 2});
    Gate gate;
    Signal started;
    auto slow = ex.submit(cfx::CallOptions{.timeout = 1h}, cfx_test::notify_then_wait,
                          started.path(), gate.path(), 1);
    REQUIRE(started.receive(1).size() == 1);  // its deadline is armed
    auto fast = ex.submit(cfx::CallOptions{.timeout = 10ms}, cfx_test::notify_then_wait,
                          std::string("/nonexistent"), gate.path(), 2);
    REQUIRE(fast.wait_for(kLong / 2));  // not the hour of the first deadline
    CHECK_THROWS_AS(fast.result(), cfx::TimeoutError);
    CHECK_FALSE(slow.done());
    gate.open();
    CHECK(slow.result() == 1);
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

  TEST_CASE("timeouts racing completion: every future ends once, with its value or a timeout") {
    constexpr int kCalls = 1000;
    std::vector<std::atomic<int>> ends(kCalls);
    std::atomic<int> values{0}, timeouts{0};
    {
      cfx::ThreadPoolExecutor ex({.max_workers = 4});
      std::vector<cfx::Future<int>> fs;
      fs.reserve(kCalls);
      for (int i = 0; i < kCalls; ++i) {
        auto work = std::chrono::microseconds(i % 40);
        cfx::CallOptions options{.timeout = std::chrono::microseconds(i % 7 * 5)};
        auto spin = [work] {
          auto until = std::chrono::steady_clock::now() + work;
          while (std::chrono::steady_clock::now() < until) {
          }
        };
        if (i % 2)
          fs.push_back(ex.submit(options, [spin, i] {
            spin();
            return i;
          }));
        else
          fs.push_back(ex.submit(options, [spin, i](std::stop_token) {
            spin();
            return i;
          }));
        fs.back().add_done_callback([&ends, i](const cfx::Future<int>&) { ++ends[i]; });
      }
      for (int i = 0; i < kCalls; ++i) {
        int value = -1;
        try {
          value = fs[i].result();
        } catch (const cfx::TimeoutError&) {
          ++timeouts;
          continue;
        }
        CHECK(value == i);
        ++values;
      }
      ex.shutdown(true);  // every call has returned: a late second ending would show now
      for (int i = 0; i < kCalls; ++i) CHECK(fs[i].done());
    }
    int once = 0;
    for (auto& e : ends) once += e == 1;
    CHECK(once == kCalls);
    CHECK(values + timeouts == kCalls);
  }
}
