// cfx and Boost.Asio (API section 8, docs/async.md): cfx::async_wait, an Asio asynchronous
// operation that waits for a cfx::Future, and ThreadPoolExecutor::AsioExecutor, an Asio
// executor over a thread pool. <cfx/cfx.hpp> does not include this header (nor Asio).
//
//   int v = co_await cfx::async_wait(f, asio::use_awaitable);           // rethrows as result()
//   auto [e, v] = co_await cfx::async_wait(f, asio::as_tuple(asio::use_awaitable));
//   cfx::async_wait(f, [](std::exception_ptr e, int v) { ... });
//   asio::co_spawn(threads.asio_executor(), coro(), asio::detached);
//
// async_wait completes on the handler's associated executor (asio::system_executor if it has
// none), with dispatch, so inline when the future completes in that executor, but never on
// a pool's delivery thread (a process pool's I/O thread) nor inside the initiating call or a
// cancellation request: from there it posts. While it waits it keeps that executor's work
// counted (an io_context's run() does not return). Cancellation through the handler's
// cancellation slot: `terminal` calls f.interrupt() (a running process task is killed with
// its worker) and, if the future still runs (a thread task only gets a stop request), ends
// the wait at once; `partial` and `total` call f.cancel() (a pending task). A wait that was
// cancelled completes with CancelledError.
//
// Thread safety: as Asio's own operations. async_wait may be called from any thread; a
// cancellation signal must be emitted where the handler's executor runs it (for a coroutine:
// by the coroutine's own executor, as awaitable_operators do).
#pragma once

#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>

#include "cfx/detail/local_task.hpp"
#include "cfx/detail/pool_handlers.hpp"
#include "cfx/detail/resumption.hpp"
#include "cfx/errors.hpp"
#include "cfx/future.hpp"
#include "cfx/thread_pool.hpp"

namespace cfx {

namespace detail {

template <class T>
struct wait_signature {
  using type = void(std::exception_ptr, T);
};
template <>
struct wait_signature<void> {
  using type = void(std::exception_ptr);
};

/// The op whose cancellation handler is running on this thread: what it completes meanwhile
/// it posts, so that the handler never runs inside the cancellation signal's emit().
inline thread_local const void* cancelling_wait = nullptr;

/// One pending async_wait: a waiter on the future's list that owns the handler. Deleted
/// just before the handler is called (Asio's rule: free the operation's memory first), or
/// with the handler if its executor drops the completion unrun.
template <class T, class Handler>
class AsyncWaitOp final : WaiterNode {
 public:
  static void start(Handler handler, Future<T> f) {
    std::unique_ptr<AsyncWaitOp> op(new AsyncWaitOp(std::move(handler), std::move(f)));
    StateBase* state = state_of(op->future_);
    if (state->done()) return complete(std::move(op), true);
    op->connect_cancellation();
    AsyncWaitOp* raw = op.release();
    // Installed: the future may complete (and free the op) on another thread at once.
    if (!state->add_waiter(raw)) complete(std::unique_ptr<AsyncWaitOp>(raw), true);
  }

 private:
  using Executor = boost::asio::associated_executor_t<Handler, boost::asio::system_executor>;

  AsyncWaitOp(Handler handler, Future<T> f)
      : handler_(std::move(handler)),
        work_(boost::asio::make_work_guard(
            boost::asio::get_associated_executor(handler_, boost::asio::system_executor()))),
        future_(std::move(f)) {
    after_unlock = true;
  }

  void on_done(StateBase&) noexcept override {
    complete(std::unique_ptr<AsyncWaitOp>(this), on_delivery_thread() || cancelling_wait == this);
  }

  /// Sends the completion to the handler's executor: posted if `must_post`, else dispatched.
  static void complete(std::unique_ptr<AsyncWaitOp> op, bool must_post) noexcept {
    // The work stays counted until post has returned in this thread (as Asio's own
    // work_dispatcher does): else the executor could run the handler, run out of work and
    // be destroyed (an io_context after run()) while post is still signalling it.
    auto work = std::move(op->work_);
    auto finish = [op = std::move(op)]() mutable { deliver(std::move(op)); };
    if (must_post)
      boost::asio::post(work.get_executor(), std::move(finish));
    else
      boost::asio::dispatch(work.get_executor(), std::move(finish));
  }

  /// Runs in the handler's executor: takes the outcome, frees the op, calls the handler.
  static void deliver(std::unique_ptr<AsyncWaitOp> op) {
    auto slot = boost::asio::get_associated_cancellation_slot(op->handler_);
    if (slot.is_connected()) slot.clear();
    Handler handler(std::move(op->handler_));
    Future<T> f(std::move(op->future_));
    bool abandoned = op->abandoned_;
    op.reset();
    std::exception_ptr error;
    if (abandoned) error = std::make_exception_ptr(CancelledError());
    if constexpr (std::is_void_v<T>) {
      if (!error) try {
          std::move(f).result();
        } catch (...) {
          error = std::current_exception();
        }
      std::move(handler)(error);
    } else {
      std::optional<T> value;
      if (!error) try {
          value.emplace(std::move(f).result());
        } catch (...) {
          error = std::current_exception();
        }
      if (error)
        std::move(handler)(error, T{});
      else
        std::move(handler)(error, std::move(*value));
    }
  }

  void connect_cancellation() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected())
      slot.assign([this](boost::asio::cancellation_type type) { on_cancel(type); });
  }

  /// Called by the cancellation slot, in the handler's executor, while the op waits.
  void on_cancel(boost::asio::cancellation_type type) noexcept {
    using boost::asio::cancellation_type;
    // A copy: once the future completes, the op may be freed (on another thread of the
    // handler's executor) while this function still runs.
    Future<T> f = future_;
    const void* outer = std::exchange(cancelling_wait, this);
    if ((type & cancellation_type::terminal) != cancellation_type::none) {
      f.interrupt();
      // A running thread task only got a stop request: the wait ends now, the task runs on.
      // remove_waiter succeeds only while nobody else completes the op.
      if (!f.done() && state_of(f)->remove_waiter(this)) {
        abandoned_ = true;
        complete(std::unique_ptr<AsyncWaitOp>(this), true);
      }
    } else if ((type & (cancellation_type::partial | cancellation_type::total)) !=
               cancellation_type::none) {
      f.cancel();
    }
    cancelling_wait = outer;
  }

  Handler handler_;
  boost::asio::executor_work_guard<Executor> work_;
  Future<T> future_;
  bool abandoned_ = false;  // a terminal cancellation ended the wait before the future
};

struct InitiateWait {
  template <class Handler, class T>
  void operator()(Handler&& handler, Future<T> f) const {
    AsyncWaitOp<T, std::decay_t<Handler>>::start(std::forward<Handler>(handler), std::move(f));
  }
};

/// A handler queued on a thread pool by ThreadPoolExecutor::AsioExecutor: a LocalTask that is
/// not a future. An exception that escapes it is reported on stderr.
template <class F>
class HandlerTask final : public LocalTask {
 public:
  explicit HandlerTask(F f) : f_(std::move(f)) {}
  bool start() noexcept override { return true; }
  void execute() noexcept override {
    try {
      std::move(f_)();
    } catch (...) {
      report_handler_exception(std::current_exception());
    }
  }
  void publish() noexcept override {}
  void cancel() noexcept override {}  // shutdown(cancel_futures): destroyed unrun, as Asio does
  void fail(std::exception_ptr) noexcept override {}
  void expire() noexcept override {}
  bool stoppable() const noexcept override { return false; }
  void request_stop() noexcept override {}
  void retain() noexcept override { refs_.fetch_add(1, std::memory_order_relaxed); }
  void drop() noexcept override {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  ~HandlerTask() = default;
  F f_;
  std::atomic<int> refs_{1};
};

}  // namespace detail

/// Waits for `f` as an Asio asynchronous operation: completes with
/// void(std::exception_ptr, T) (void(std::exception_ptr) for Future<void>): nullptr and the
/// value, or the task's exception (CancelledError if cancelled) and T{}. Any completion token:
/// asio::use_awaitable, use_future, deferred, as_tuple(...), a callback. See the file comment
/// for where it completes and how cancellation reaches the task.
template <class T, class Token>
auto async_wait(Future<T> f, Token&& token) {
  static_assert(std::is_void_v<T> || std::is_default_constructible_v<T>,
                "cfx::async_wait: the signature void(std::exception_ptr, T) passes a T even "
                "with an error, so T must be default-constructible (wrap it in std::optional)");
  return boost::asio::async_initiate<Token, typename detail::wait_signature<T>::type>(
      detail::InitiateWait{}, token, std::move(f));
}

/// An Asio executor (boost::asio::execution::executor) over a ThreadPoolExecutor's threads:
/// execute() queues the handler behind the pool's tasks, or, unless blocking.never was
/// required (post, defer), runs it at once when called on one of the pool's threads
/// (dispatch). Copies hold the pool's core, so an executor outliving its pool is safe: it
/// throws cfx::Error when asked to run a handler. Handlers left queued by shutdown(wait,
/// cancel_futures = true) are destroyed unrun.
class ThreadPoolExecutor::AsioExecutor {
 public:
  template <class F>
  void execute(F&& f) const {
    using Fn = std::decay_t<F>;
    if (!never_ && detail::runs_handlers_here(*core_)) {
      Fn fn(std::forward<F>(f));
      std::move(fn)();
      return;
    }
    auto* task = new detail::HandlerTask<Fn>(Fn(std::forward<F>(f)));
    try {
      detail::enqueue_handler(*core_, task);
    } catch (...) {
      task->drop();
      throw;
    }
  }

  friend bool operator==(const AsioExecutor& a, const AsioExecutor& b) noexcept {
    return a.core_ == b.core_ && a.never_ == b.never_ && a.continuation_ == b.continuation_;
  }
  friend bool operator!=(const AsioExecutor& a, const AsioExecutor& b) noexcept {
    return !(a == b);
  }

  /// True on one of the pool's worker threads.
  bool running_in_this_thread() const noexcept { return detail::runs_handlers_here(*core_); }

  // Properties (boost::asio::require / prefer / query).
  AsioExecutor require(boost::asio::execution::blocking_t::possibly_t) const {
    return with(false, continuation_);
  }
  AsioExecutor require(boost::asio::execution::blocking_t::never_t) const {
    return with(true, continuation_);
  }
  AsioExecutor require(boost::asio::execution::relationship_t::fork_t) const {
    return with(never_, false);
  }
  AsioExecutor require(boost::asio::execution::relationship_t::continuation_t) const {
    return with(never_, true);
  }
  static constexpr boost::asio::execution::mapping_t query(
      boost::asio::execution::mapping_t) noexcept {
    return boost::asio::execution::mapping.thread;
  }
  boost::asio::execution_context& query(boost::asio::execution::context_t) const noexcept {
    return detail::asio_context(*core_);
  }
  boost::asio::execution::blocking_t query(boost::asio::execution::blocking_t) const noexcept {
    if (never_) return boost::asio::execution::blocking.never;
    return boost::asio::execution::blocking.possibly;
  }
  boost::asio::execution::relationship_t query(
      boost::asio::execution::relationship_t) const noexcept {
    if (continuation_) return boost::asio::execution::relationship.continuation;
    return boost::asio::execution::relationship.fork;
  }

 private:
  friend class ThreadPoolExecutor;
  explicit AsioExecutor(std::shared_ptr<detail::ThreadPoolCore> core) : core_(std::move(core)) {}
  AsioExecutor with(bool never, bool continuation) const {
    AsioExecutor e(*this);
    e.never_ = never;
    e.continuation_ = continuation;
    return e;
  }

  std::shared_ptr<detail::ThreadPoolCore> core_;
  bool never_ = false;
  bool continuation_ = false;
};

inline ThreadPoolExecutor::AsioExecutor ThreadPoolExecutor::asio_executor() const {
  return AsioExecutor(core_);
}

}  // namespace cfx
