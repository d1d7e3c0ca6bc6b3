// cfx::async_wait over both backends: every kind of completion token, exceptions by type,
// where the handler runs, cancellation both ways, and 10,000 concurrent waits.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <latch>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <cfx/asio.hpp>

#include "async/coro.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;

namespace {

/// Runs the coroutine to its end on a fresh io_context in this thread; rethrows.
template <class T>
T run(asio::awaitable<T> coro) {
  asio::io_context io;
  auto result = asio::co_spawn(io, std::move(coro), asio::use_future);
  io.run();
  return result.get();
}

asio::awaitable<int> wait_int(cfx::Future<int> f) {
  co_return co_await cfx::async_wait(f, asio::use_awaitable);
}

}  // namespace

TEST_CASE_TEMPLATE("async_wait with use_awaitable: value, void, exception by type", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  CHECK(run(wait_int(ex->submit(conf::mul, 6, 7))) == 42);
  CHECK_THROWS_AS(run([&]() -> asio::awaitable<std::pair<int, int>> {
                    co_return co_await cfx::async_wait(ex->submit(conf::divmod, 1, 0),
                                                       asio::use_awaitable);
                  }()),
                  std::domain_error);
  cfx::Promise<void> p;
  auto done = p.get_future();
  p.set_result();
  run([&]() -> asio::awaitable<void> { co_await cfx::async_wait(done, asio::use_awaitable); }());
}

TEST_CASE_TEMPLATE("async_wait with as_tuple, use_future, deferred and a callback", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  auto [e, v] = run([&]() -> asio::awaitable<std::tuple<std::exception_ptr, int>> {
    co_return co_await cfx::async_wait(ex->submit(conf::mul, 3, 3),
                                       asio::as_tuple(asio::use_awaitable));
  }());
  CHECK(!e);
  CHECK(v == 9);
  auto [e2, v2] =
      run([&]() -> asio::awaitable<std::tuple<std::exception_ptr, std::pair<int, int>>> {
        co_return co_await cfx::async_wait(ex->submit(conf::divmod, 1, 0),
                                           asio::as_tuple(asio::use_awaitable));
      }());
  CHECK_THROWS_AS(std::rethrow_exception(e2), std::domain_error);
  CHECK(v2 == std::pair<int, int>{});

  // use_future completes on its own (inline-capable) executor: no io_context needed.
  std::future<int> fut = cfx::async_wait(ex->submit(conf::mul, 4, 5), asio::use_future);
  CHECK(fut.get() == 20);

  asio::io_context io;
  auto op = cfx::async_wait(ex->submit(conf::mul, 5, 5), asio::deferred);  // not started yet
  std::optional<int> got;
  std::thread::id handler_thread;
  op(asio::bind_executor(io, [&](std::exception_ptr err, int value) {
    CHECK(!err);
    got = value;
    handler_thread = std::this_thread::get_id();
  }));
  io.run();
  CHECK(got == 25);
  CHECK(handler_thread == std::this_thread::get_id());
}

TEST_CASE_TEMPLATE("a plain callback never runs on the pool's delivery thread", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  conf::Gate gate;
  auto f = ex->submit(conf::value_after_gate, gate.path(), 3);
  std::promise<std::string> ran_on;
  cfx::async_wait(f, [&](std::exception_ptr, int) { ran_on.set_value(async_test::thread_name()); });
  gate.open();
  auto ready = ran_on.get_future();
  REQUIRE(ready.wait_for(conf::kLong) == std::future_status::ready);
  std::string name = ready.get();
  if constexpr (Backend::in_process)
    CHECK(name.rfind("ThreadPoolExec", 0) == 0);  // dispatched inline by the worker
  else
    CHECK(name.rfind("cfx_", 0) != 0);  // posted to Asio's system pool, not an I/O thread
}

TEST_CASE_TEMPLATE("the coroutine resumes on its own executor's thread", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(1);
  conf::Gate gate;
  auto f = ex->submit(conf::value_after_gate, gate.path(), 4);
  asio::io_context io;
  std::thread::id resumed;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        gate.open();
        CHECK(co_await cfx::async_wait(f, asio::use_awaitable) == 4);
        resumed = std::this_thread::get_id();
      },
      asio::detached);
  io.run();  // returns only once the wait has completed: it counts as work
  CHECK(resumed == std::this_thread::get_id());
}

TEST_CASE("terminal cancellation (|| with a timer) kills a running process task") {
  cfx::ProcessPoolExecutor ex({.max_workers = 1});
  int pid_before = ex.submit(async_test::worker_pid).result();
  conf::Gate gate;  // never opened while the pool needs it: only the kill ends the task
  cfx_test::Signal started;
  auto f = ex.submit(cfx_test::notify_then_wait, started.path(), gate.path(), 1);
  REQUIRE(started.receive(1).size() == 1);
  asio::io_context io;
  auto winner = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<std::size_t> {
        asio::steady_timer deadline(io, 20ms);
        auto r = co_await (cfx::async_wait(f, asio::use_awaitable) ||
                           deadline.async_wait(asio::use_awaitable));
        co_return r.index();
      },
      asio::use_future);
  io.run();
  CHECK(winner.get() == 1);  // the timer
  CHECK(f.cancelled());
  int pid_after = ex.submit(async_test::worker_pid).result();
  CHECK(pid_after != pid_before);  // the worker was killed and replaced
}

TEST_CASE("terminal cancellation of a running thread task stops its token, the wait ends") {
  cfx::ThreadPoolExecutor ex({.max_workers = 1});
  std::latch started(1);
  auto f = ex.submit([&started](std::stop_token stop) {
    started.count_down();
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait(lock, stop, [] { return false; });  // until stop is requested
    return 7;
  });
  started.wait();
  asio::io_context io;
  auto outcome = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<std::size_t> {
        asio::steady_timer deadline(io, 20ms);
        auto r = co_await (cfx::async_wait(f, asio::use_awaitable) ||
                           deadline.async_wait(asio::use_awaitable));
        co_return r.index();
      },
      asio::use_future);
  io.run();
  CHECK(outcome.get() == 1);
  CHECK(f.result() == 7);  // the task saw the stop request and returned
}

TEST_CASE_TEMPLATE("partial cancellation cancels a pending task, not a running one", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  conf::Gate gate;
  auto busy = conf::occupy(*ex, 1, gate);
  auto queued = ex->submit(conf::mul, 2, 2);
  asio::io_context io;
  asio::cancellation_signal cancel_queued, cancel_running;
  std::exception_ptr queued_error, running_error;
  int running_value = 0;
  cfx::async_wait(
      queued, asio::bind_cancellation_slot(
                  cancel_queued.slot(),
                  asio::bind_executor(io, [&](std::exception_ptr e, int) { queued_error = e; })));
  cfx::async_wait(
      busy[0], asio::bind_cancellation_slot(
                   cancel_running.slot(), asio::bind_executor(io, [&](std::exception_ptr e, int v) {
                     running_error = e;
                     running_value = v;
                   })));
  asio::post(io, [&] {
    cancel_queued.emit(asio::cancellation_type::partial);
    cancel_running.emit(asio::cancellation_type::total);  // running: nothing happens
    gate.open();
  });
  io.run();
  CHECK(queued.cancelled());
  CHECK_THROWS_AS(std::rethrow_exception(queued_error), cfx::CancelledError);
  CHECK(!running_error);
  CHECK(running_value == 0);  // occupy's first task returns its index
  CHECK(busy[0].result() == 0);
}

TEST_CASE_TEMPLATE("10,000 concurrent async_waits in one io_context, none lost", Backend,
                   CFX_BACKENDS) {
  constexpr int n = 10'000;
  auto ex = Backend::make(2);
  conf::Gate gate;
  auto busy = conf::occupy(*ex, 2, gate);
  std::vector<cfx::Future<int>> fs;
  fs.reserve(n);
  for (int i = 0; i < n; ++i) fs.push_back(ex->submit(conf::inc, i));
  asio::io_context io;
  long sum = 0;
  int completions = 0;
  for (auto& f : fs)
    asio::co_spawn(
        io,
        [&, f]() -> asio::awaitable<void> {
          sum += co_await cfx::async_wait(f, asio::use_awaitable);
          ++completions;
        },
        asio::detached);
  std::thread opener([&] { gate.open(); });
  io.run();
  opener.join();
  CHECK(completions == n);
  CHECK(sum == static_cast<long>(n) * (n + 1) / 2);
}

TEST_CASE_TEMPLATE("many results in a coroutine: input order and completion order", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  conf::Gate gate;
  // The first task is held back: in completion order it comes last, in input order first.
  std::vector<cfx::Future<int>> fs{ex->submit(conf::value_after_gate, gate.path(), 100)};
  for (int i = 0; i < 5; ++i) fs.push_back(ex->submit(conf::mul, i, 10));
  asio::io_context io;
  std::vector<int> completion_order;
  for (auto& f : fs)
    asio::co_spawn(
        io,
        [f, &completion_order, &gate]() -> asio::awaitable<void> {
          completion_order.push_back(co_await cfx::async_wait(f, asio::use_awaitable));
          if (completion_order.size() == 5) gate.open();  // the five quick ones are in
        },
        asio::detached);
  std::vector<int> input_order;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (auto& f : fs) input_order.push_back(co_await cfx::async_wait(f, asio::use_awaitable));
      },
      asio::detached);
  io.run();
  CHECK(input_order == std::vector<int>{100, 0, 10, 20, 30, 40});
  REQUIRE(completion_order.size() == 6);
  CHECK(completion_order.back() == 100);
}
