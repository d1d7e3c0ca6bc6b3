// ThreadPoolExecutor::asio_executor(): Asio's post, dispatch, defer and co_spawn run on the
// pool's threads; it is an execution::executor and converts to any_io_executor.
#include <atomic>
#include <future>
#include <string>
#include <thread>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <cfx/asio.hpp>

#include "async/coro.hpp"

namespace asio = boost::asio;

static_assert(asio::execution::executor<cfx::ThreadPoolExecutor::AsioExecutor>);
static_assert(asio::is_executor<cfx::ThreadPoolExecutor::AsioExecutor>::value ||
              asio::execution::is_executor<cfx::ThreadPoolExecutor::AsioExecutor>::value);
static_assert(std::is_convertible_v<cfx::ThreadPoolExecutor::AsioExecutor, asio::any_io_executor>);

namespace {

bool on_pool_thread() {
  return async_test::thread_name().rfind("asio-pool_", 0) == 0;
}

}  // namespace

TEST_CASE("post, dispatch and defer run handlers on the pool's threads") {
  cfx::ThreadPoolExecutor pool({.max_workers = 2, .thread_name_prefix = "asio-pool"});
  auto ex = pool.asio_executor();
  CHECK(!ex.running_in_this_thread());
  CHECK(asio::post(ex, asio::use_future([] { return on_pool_thread(); })).get());
  CHECK(asio::defer(ex, asio::use_future([] { return on_pool_thread(); })).get());
  // dispatch from outside the pool queues; from inside it runs at once, in the same thread.
  CHECK(asio::dispatch(ex, asio::use_future([] { return on_pool_thread(); })).get());
  auto inline_run = asio::post(ex, asio::use_future([ex] {
                                 std::thread::id outer = std::this_thread::get_id(), inner;
                                 asio::dispatch(ex, [&] { inner = std::this_thread::get_id(); });
                                 return inner == outer;  // assigned before dispatch returned
                               }));
  CHECK(inline_run.get());
}

TEST_CASE("co_spawn runs a coroutine on the pool and awaits cfx futures there") {
  cfx::ThreadPoolExecutor pool({.max_workers = 2, .thread_name_prefix = "asio-pool"});
  cfx::ThreadPoolExecutor work({.max_workers = 2});
  asio::any_io_executor ex = pool.asio_executor();
  CHECK(&asio::query(ex, asio::execution::context) ==
        &asio::query(pool.asio_executor(), asio::execution::context));
  auto result = asio::co_spawn(
      ex,
      [&]() -> asio::awaitable<bool> {
        bool started_here = on_pool_thread();
        int v = co_await cfx::async_wait(work.submit([] { return 5; }), asio::use_awaitable);
        bool resumed_here = on_pool_thread();  // the coroutine's executor: the pool
        co_return started_here&& resumed_here&& v == 5;
      },
      asio::use_future);
  CHECK(result.get());
}

TEST_CASE("a handler's exception is reported, and the pool goes on") {
  cfx::ThreadPoolExecutor pool({.max_workers = 1});
  {
    conf::StderrCapture err;
    asio::post(pool.asio_executor(), [] { throw std::runtime_error("handler failed"); });
    CHECK(asio::post(pool.asio_executor(), asio::use_future([] { return 1; })).get() == 1);
    CHECK(err.text().find("handler failed") != std::string::npos);
  }
}

TEST_CASE("an executor used after shutdown throws cfx::Error") {
  cfx::ThreadPoolExecutor pool({.max_workers = 1});
  auto ex = pool.asio_executor();
  pool.shutdown();
  CHECK_THROWS_AS(asio::post(ex, [] {}), cfx::Error);
}
