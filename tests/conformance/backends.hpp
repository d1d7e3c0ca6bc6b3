// The backends the conformance suite runs over, and what its tests share.
//
// Every TEST_CASE_TEMPLATE(name, Backend, CFX_BACKENDS) must run in worker processes too:
// tasks are functions at namespace scope registered with CFX_TASK, arguments and results are
// plain serialisable values, and nothing a task does is observed through shared memory (use
// tests/support/gate.hpp to block tasks and to hear from them). Done-callbacks run in the
// test's own process, so lambdas are fine there. Where a backend is documented to behave
// differently, branch on Backend::in_process with `if constexpr`.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <future>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <cfx/cfx.hpp>

#include "support/gate.hpp"

struct ThreadBackend {
  static constexpr const char* name = "thread";
  static constexpr bool in_process = true;
  static std::unique_ptr<cfx::Executor> make(std::size_t max_workers) {
    return std::make_unique<cfx::ThreadPoolExecutor>(
        cfx::ThreadPoolOptions{.max_workers = max_workers});
  }
};

struct ProcessBackend {
  static constexpr const char* name = "process";
  static constexpr bool in_process = false;
  static std::unique_ptr<cfx::Executor> make(std::size_t max_workers) {
    return std::make_unique<cfx::ProcessPoolExecutor>(
        cfx::ProcessPoolOptions{.max_workers = max_workers});
  }
};

#define CFX_BACKENDS ThreadBackend, ProcessBackend

namespace conf {

using namespace std::chrono_literals;
using cfx_test::Gate;
using cfx_test::Signal;

/// How long a test waits for something that must happen before calling it a failure (never
/// reached when the library works; it turns a hang into a failed check).
inline constexpr std::chrono::seconds kLong{30};

// ---- Tasks shared by several files (inline: one address per program, so registering them
// in every translation unit is harmless). Names must be unique in the program.

inline int mul(int a, int b) {
  return a * b;
}
CFX_TASK(mul);

inline int ipow(int base, int exp) {
  int r = 1;
  for (int i = 0; i < exp; ++i) r *= base;
  return r;
}
CFX_TASK(ipow);

inline std::string to_str(int x) {
  return std::to_string(x);
}
CFX_TASK(to_str);

inline int inc(int x) {
  return x + 1;
}
CFX_TASK(inc);

/// Python's divmod on ints; b == 0 throws std::domain_error (Python's ZeroDivisionError).
inline std::pair<int, int> divmod(int a, int b) {
  if (b == 0) throw std::domain_error("integer division or modulo by zero");
  return {a / b, a % b};
}
CFX_TASK(divmod);

/// Blocks at the gate at gate_path, then returns value.
inline int value_after_gate(std::string gate_path, int value) {
  cfx_test::wait_gate(gate_path);
  return value;
}
CFX_TASK(value_after_gate);

// ---- Futures in each state, built with Promise (CPython's canned futures). In cfx a
// cancelled future is done for wait/as_completed at once, so CANCELLED stands for both of
// CPython's CANCELLED and CANCELLED_AND_NOTIFIED.

struct CannedError : std::runtime_error {
  CannedError() : std::runtime_error("canned error") {}
};

struct Canned {
  cfx::Promise<int> pending_p, running_p, cancelled_p, exception_p, success_p;
  cfx::Future<int> pending = pending_p.get_future();
  cfx::Future<int> running = running_p.get_future();
  cfx::Future<int> cancelled = cancelled_p.get_future();
  cfx::Future<int> exception = exception_p.get_future();
  cfx::Future<int> success = success_p.get_future();

  Canned() {
    REQUIRE(running_p.set_running_or_notify_cancel());
    REQUIRE(cancelled.cancel());
    exception_p.set_exception(std::make_exception_ptr(CannedError()));
    success_p.set_result(42);
  }
};

// ---- Helpers

/// The futures of `fs` as a set (duplicates and order ignored).
template <class T>
std::unordered_set<cfx::Future<T>> as_set(const std::vector<cfx::Future<T>>& fs) {
  return {fs.begin(), fs.end()};
}
template <class T>
std::unordered_set<cfx::Future<T>> set_of(std::initializer_list<cfx::Future<T>> fs) {
  return {fs.begin(), fs.end()};
}

/// Submits `n` tasks that block at `gate` and waits until all of them run, so that what is
/// submitted next queues behind them. Their results are 0 .. n-1.
inline std::vector<cfx::Future<int>> occupy(cfx::Executor& ex, int n, Gate& gate) {
  Signal started;
  std::vector<cfx::Future<int>> fs;
  for (int i = 0; i < n; ++i)
    fs.push_back(ex.submit(cfx_test::notify_then_wait, started.path(), gate.path(), i));
  REQUIRE(started.receive(static_cast<std::size_t>(n)).size() == static_cast<std::size_t>(n));
  return fs;
}

/// Seconds since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Runs fn() on a new thread and waits up to `limit` for it to return. If it does not,
/// calls unblock() (which must make fn return) before joining. True if fn returned in time.
/// An exception thrown by fn is rethrown here.
template <class Fn, class Unblock>
bool returns_within(std::chrono::milliseconds limit, Fn fn, Unblock unblock) {
  std::promise<void> finished;
  auto done = finished.get_future();
  std::thread t([&] {
    try {
      fn();
      finished.set_value();
    } catch (...) {
      finished.set_exception(std::current_exception());
    }
  });
  bool in_time = done.wait_for(limit) == std::future_status::ready;
  if (!in_time) unblock();
  t.join();
  done.get();
  return in_time;
}

/// Captures what is written to file descriptor 2 while alive. Sanitizer reports that land in
/// the capture are written back to the real stderr, so that none is lost.
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    REQUIRE(file_ != nullptr);
    saved_ = ::dup(2);
    REQUIRE(saved_ >= 0);
    REQUIRE(::dup2(::fileno(file_), 2) == 2);
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  ~StderrCapture() {
    std::string captured = text();
    restore();
    if (captured.find("Sanitizer") != std::string::npos ||
        captured.find("runtime error:") != std::string::npos)
      std::fputs(captured.c_str(), stderr);
    std::fclose(file_);
  }

  /// Everything written so far.
  std::string text() {
    std::fflush(stderr);
    std::string out;
    std::rewind(file_);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) out.append(buf, n);
    std::fseek(file_, 0, SEEK_END);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::FILE* file_ = nullptr;
  int saved_ = -1;
};

}  // namespace conf

// Readable failure messages for vectors and pairs.
namespace doctest {
template <class T>
struct StringMaker<std::vector<T>> {
  static String convert(const std::vector<T>& v) {
    std::ostringstream os;
    os << "{";
    for (std::size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << toString(v[i]).c_str();
    os << "}";
    return os.str().c_str();
  }
};
template <class A, class B>
struct StringMaker<std::pair<A, B>> {
  static String convert(const std::pair<A, B>& p) {
    std::ostringstream os;
    os << "(" << toString(p.first).c_str() << ", " << toString(p.second).c_str() << ")";
    return os.str().c_str();
  }
};
}  // namespace doctest
