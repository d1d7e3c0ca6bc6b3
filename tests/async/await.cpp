// `co_await future` in a plain C++20 coroutine (no Asio), over both backends: values,
// exceptions by type, cancellation, where the coroutine resumes, and a frame destroyed while
// it waits.
#include <atomic>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "async/coro.hpp"

using async_test::Task;
using async_test::thread_name;
using namespace std::chrono_literals;

namespace {

template <class T>
Task<T> await_value(cfx::Future<T> f) {
  co_return co_await f;
}

Task<void> await_void(cfx::Future<void> f) {
  co_await f;
}

/// Awaits f and reports the name of the thread it resumed on, whatever f's outcome.
template <class T>
Task<std::string> resumed_on(cfx::Future<T> f) {
  try {
    (void)co_await f;
  } catch (...) {
  }
  co_return thread_name();
}

/// Awaits the futures one after another and adds up their values.
Task<long> sum_of(std::vector<cfx::Future<int>> fs) {
  long sum = 0;
  for (auto& f : fs) sum += co_await f;
  co_return sum;
}

template <class T>
T outcome_of(Task<T>& t) {
  REQUIRE(t.outcome.wait_for(conf::kLong) == std::future_status::ready);
  return t.outcome.get();
}

void void_task() {}
CFX_TASK(void_task);

}  // namespace

TEST_CASE("co_await on a done future does not suspend") {
  cfx::Promise<int> p;
  p.set_result(5);
  auto t = await_value(p.get_future());
  // An eager coroutine that never suspended has finished inside the call.
  REQUIRE(t.outcome.wait_for(0s) == std::future_status::ready);
  CHECK(t.outcome.get() == 5);
}

TEST_CASE("co_await resumes in the thread that completes a Promise") {
  cfx::Promise<std::string> p;
  auto t = resumed_on(p.get_future());
  CHECK(t.outcome.wait_for(0s) == std::future_status::timeout);
  std::string completer;
  std::thread([&] {
    pthread_setname_np(pthread_self(), "completer");
    completer = thread_name();
    p.set_result("x");
  }).join();
  CHECK(outcome_of(t) == completer);
}

TEST_CASE_TEMPLATE("co_await gives the value, Future<void> included", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  auto t = await_value(ex->submit(conf::mul, 6, 7));
  CHECK(outcome_of(t) == 42);
  auto s = await_value(ex->submit(conf::to_str, 12));
  CHECK(outcome_of(s) == "12");
  auto v = await_void(ex->submit(void_task));
  outcome_of(v);
}

TEST_CASE_TEMPLATE("co_await rethrows the task's exception by type", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(1);
  auto t = await_value(ex->submit(conf::divmod, 1, 0));
  REQUIRE(t.outcome.wait_for(conf::kLong) == std::future_status::ready);
  CHECK_THROWS_AS(t.outcome.get(), std::domain_error);
}

TEST_CASE_TEMPLATE("co_await on a future cancelled while it waits throws CancelledError", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  conf::Gate gate;
  auto busy = conf::occupy(*ex, 1, gate);
  auto queued = ex->submit(conf::mul, 2, 3);
  auto t = await_value(queued);
  REQUIRE(queued.cancel());
  REQUIRE(t.outcome.wait_for(conf::kLong) == std::future_status::ready);
  CHECK_THROWS_AS(t.outcome.get(), cfx::CancelledError);
  gate.open();
}

TEST_CASE_TEMPLATE("a coroutine never resumes on a pool's delivery thread", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(1);
  conf::Gate gate;
  auto f = ex->submit(conf::value_after_gate, gate.path(), 1);
  auto t = resumed_on(f);
  gate.open();
  std::string name = outcome_of(t);
  if constexpr (Backend::in_process) {
    // Thread pools complete on the worker that ran the task: the coroutine resumes there.
    CHECK(name.rfind("ThreadPoolExec", 0) == 0);
  } else {
    // Process pools complete on their I/O thread: the coroutine resumes on a resumer.
    CHECK(name.rfind("cfx_resume_", 0) == 0);
  }
}

TEST_CASE("a thread pool's timer thread hands a timed-out call's coroutine to a resumer") {
  cfx::ThreadPoolExecutor ex({.max_workers = 1});
  std::latch release(1);
  auto f = ex.submit(cfx::CallOptions{.timeout = 10ms}, [&release] {
    release.wait();
    return 1;
  });
  auto t = resumed_on(f);
  REQUIRE(t.outcome.wait_for(conf::kLong) == std::future_status::ready);
  CHECK(t.outcome.get().rfind("cfx_resume_", 0) == 0);
  release.count_down();
}

TEST_CASE("a frame destroyed while it waits leaves the future's waiter list") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  {
    auto t = await_value(f);
    CHECK(t.outcome.wait_for(0s) == std::future_status::timeout);
  }  // destroys the suspended frame, and with it the awaiter (ASan: no use after free)
  std::atomic<bool> callback_ran{false};
  f.add_done_callback([&](const cfx::Future<int>&) { callback_ran = true; });
  p.set_result(1);
  CHECK(callback_ran);
  CHECK(f.result() == 1);
}

TEST_CASE_TEMPLATE("a frame destroyed while it waits for a running task", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(1);
  conf::Gate gate;
  auto f = ex->submit(conf::value_after_gate, gate.path(), 9);
  { auto t = await_value(f); }
  gate.open();
  CHECK(f.result() == 9);
  // The pool still works, and a new await of the same future sees it done.
  auto again = await_value(f);
  CHECK(outcome_of(again) == 9);
}

TEST_CASE_TEMPLATE("10,000 concurrent co_awaits, none lost", Backend, CFX_BACKENDS) {
  constexpr int n = 10'000;
  auto ex = Backend::make(2);
  conf::Gate gate;
  auto busy = conf::occupy(*ex, 2, gate);  // every await below suspends
  std::vector<cfx::Future<int>> fs;
  fs.reserve(n);
  for (int i = 0; i < n; ++i) fs.push_back(ex->submit(conf::inc, i));
  std::vector<Task<int>> tasks;
  tasks.reserve(n);
  for (auto& f : fs) tasks.push_back(await_value(f));
  gate.open();
  long sum = 0;
  for (auto& t : tasks) sum += outcome_of(t);
  CHECK(sum == static_cast<long>(n) * (n + 1) / 2);
  auto total = sum_of(fs);
  CHECK(outcome_of(total) == sum);
}
