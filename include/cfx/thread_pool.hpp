// cfx::ThreadPoolExecutor: tasks run on a pool of threads in this process
// (docs/thread-vs-process.md).
//
// Thread safety: as cfx::Executor (distinct objects: safe; shared objects: safe), and
// thread_count() may be called from any thread. The destructor must not run while another
// thread still calls the executor.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cfx/executor.hpp"

namespace cfx {

namespace detail {
class ThreadPoolCore;
}

/// Options of ThreadPoolExecutor; an aggregate for designated initializers.
struct ThreadPoolOptions {
  /// Most threads at once; 0: as Python, min(32, usable cores + 4).
  std::size_t max_workers = 0;
  /// Threads are named "<prefix>_<i>" (visible to the OS, cut to 15 bytes);
  /// empty: "ThreadPoolExecutor-<n>".
  std::string thread_name_prefix{};
  /// Run once in each new thread before any task. If it throws, the pool is broken:
  /// queued and later tasks fail with BrokenThreadPool.
  std::function<void()> initializer{};
};

/// Runs tasks on up to max_workers threads, started lazily: a new thread only when no
/// started thread is idle. Threads live until shutdown. The first call submitted with a
/// CallOptions timeout also starts the pool's timer thread ("<prefix>_timer"), which fails
/// calls past their timeout and runs those futures' done-callbacks.
///
/// Beyond Python (API section 7): a callable taking a std::stop_token first receives one;
/// Future::interrupt(), a CallOptions timeout and shutdown(cancel_futures = true) request
/// stop on it (docs/thread-vs-process.md, "Stopping a thread task").
class ThreadPoolExecutor final : public Executor {
 public:
  explicit ThreadPoolExecutor(ThreadPoolOptions options = {});
  /// shutdown(wait = true). Called from one of the pool's own threads it cannot wait for
  /// itself: it reports that on stderr, waits for the other threads and lets its own thread
  /// finish on its own.
  ~ThreadPoolExecutor() override;

  /// As Executor::shutdown; cancel_futures also requests stop on the std::stop_token of
  /// every running call that takes one.
  void shutdown(bool wait = true, bool cancel_futures = false) override;
  std::size_t max_workers() const override;
  std::string_view backend() const override { return "thread"; }

  /// Threads started so far.
  std::size_t thread_count() const;

  /// A Boost.Asio executor over this pool's threads (API section 8, docs/async.md):
  /// boost::asio::post, dispatch, defer and co_spawn run their handlers here, and it converts
  /// to boost::asio::any_io_executor. Declared here, defined in <cfx/asio.hpp>: include that
  /// header to call it. After shutdown, running a handler on it throws cfx::Error.
  class AsioExecutor;
  AsioExecutor asio_executor() const;

 protected:
  void enqueue(detail::LocalTask* task) override;

 private:
  std::shared_ptr<detail::ThreadPoolCore> core_;
};

}  // namespace cfx
