// cfx::Future<T> and cfx::Promise<T> (docs/concepts.md, "Futures").
//
// A Future is a copyable handle to the outcome of one task: a value, an exception, or
// cancellation. Executors create them; Promise is the producer side, public so that users
// (and tests) can make futures of their own, as Python's Future() + set_result() allows.
//
// Futures compare (==, <=>) and hash (std::hash) by the task they refer to, so they can key
// a std::unordered_map or std::map, or fill a set.
//
// Thread safety, as Asio states it:
//  - Distinct objects: safe. Any number of handles to the same task may be used from any
//    number of threads at once; that is what they are for.
//  - Shared objects (one Future or Promise object used from several threads): the const
//    members and cancel(), add_done_callback(), set_result(), set_exception() and
//    set_running_or_notify_cancel() are safe to call concurrently. Assigning to, moving
//    from or destroying that object while another thread uses it is not, as for
//    std::shared_ptr: give each thread its own copy.
#pragma once

#include <chrono>
#include <compare>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include "cfx/detail/shared_state.hpp"
#include "cfx/errors.hpp"

namespace cfx {

template <class T>
class Future;
template <class T>
class Promise;

namespace detail {
template <class T>
Future<T> make_future(Ref<SharedState<T>> state);
template <class T>
SharedState<T>* state_of(const Future<T>& f);
/// result() that moves the value out: for futures that only one consumer ever reads
/// (the chunks of a map).
template <class T>
T take_result(Future<T>& f, const std::optional<std::chrono::steady_clock::time_point>& deadline);
template <class T, bool Owned>
class FutureAwaiter;
}  // namespace detail

/// Outcome of an asynchronous task. States: pending, running, finished, cancelled.
template <class T>
class [[nodiscard]] Future {
 public:
  using value_type = T;

  /// What result() returns on a handle: a reference to the value (nothing for void).
  using const_reference =
      std::conditional_t<std::is_void_v<T>, void, std::add_lvalue_reference_t<const T>>;

  /// An empty handle (valid() == false); only assignment and valid() may be used on it.
  Future() = default;
  Future(const Future& o) noexcept : state_(o.state_) {
    if (state_) state_->add_handle();
  }
  Future(Future&& o) noexcept = default;
  Future& operator=(const Future& o) noexcept {
    if (this != &o) *this = Future(o);
    return *this;
  }
  Future& operator=(Future&& o) noexcept {
    if (this != &o) {
      if (state_) state_->drop_handle();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  ~Future() {
    if (state_) state_->drop_handle();
  }

  /// True if this handle refers to a task's state.
  bool valid() const noexcept { return static_cast<bool>(state_); }

  /// Blocks until done; returns the value, rethrows the task's exception, or throws
  /// CancelledError. The reference stays valid as long as any handle to the task exists.
  const_reference result() const& {
    state_->wait();
    return value_when_done();
  }
  /// On a temporary (ex.submit(f, x).result(), std::move(f).result()): the value, moved out
  /// if this is the only handle to the task, else copied. Nothing is copied on the way.
  T result() && {
    state_->wait();
    return take_when_done();
  }
  /// As result(), but throws TimeoutError if not done within `timeout` (the task keeps
  /// running). A done future returns at once whatever the timeout, even zero or negative.
  template <class Rep, class Period>
  const_reference result(std::chrono::duration<Rep, Period> timeout) const& {
    if (!state_->wait_for(timeout)) throw TimeoutError();
    return value_when_done();
  }
  template <class Rep, class Period>
  T result(std::chrono::duration<Rep, Period> timeout) && {
    if (!state_->wait_for(timeout)) throw TimeoutError();
    return take_when_done();
  }

  /// Blocks until done; the task's exception, or nullptr on success. CancelledError if
  /// cancelled.
  std::exception_ptr exception() const {
    state_->wait();
    return state_->exception_when_done();
  }
  template <class Rep, class Period>
  std::exception_ptr exception(std::chrono::duration<Rep, Period> timeout) const {
    if (!state_->wait_for(timeout)) throw TimeoutError();
    return state_->exception_when_done();
  }

  /// Pending: becomes cancelled, returns true. Cancelled: true. Running or finished: false.
  bool cancel() { return state_->cancel(); }
  /// Beyond Python (API section 7). Pending or cancelled: as cancel(). Running in a process
  /// pool: its worker is killed (and replaced), the future ends cancelled, returns true.
  /// Running in a thread pool: requests stop of the task's std::stop_token, returns false.
  /// Done: false.
  bool interrupt() { return state_->interrupt(); }
  bool cancelled() const noexcept { return state_->status() == detail::Status::cancelled; }
  /// True once the task has started where it runs, until it is done.
  bool running() const noexcept { return state_->running(); }
  /// Finished or cancelled.
  bool done() const noexcept { return state_->done(); }

  /// Calls f(const Future<T>&) once when done: in the thread that completes the future, or
  /// at once in the caller if already done. Callbacks run in the order they were added. An
  /// exception thrown by f is reported on stderr and swallowed.
  template <class F>
  void add_done_callback(F f) {
    state_->add_handle();  // the callback's, taken over by the Future it will be given
    state_->add_callback(new Callback<std::decay_t<F>>(std::move(f)));
  }

  /// Waits until done without consuming the outcome.
  void wait() const { state_->wait(); }
  /// Waits up to `timeout`; true if done.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return state_->wait_for(timeout);
  }

  /// `T v = co_await f;` in any C++20 coroutine (API section 8, docs/async.md): no suspension
  /// if done; else the coroutine waits on the future's waiter list and resumes in the thread
  /// that completes it, except a pool's delivery thread (a process pool's I/O thread), where
  /// it resumes on cfx's resumer threads. Gives what result() gives, or rethrows as it does.
  /// Destroying the suspended coroutine takes its waiter off the future.
  detail::FutureAwaiter<T, false> operator co_await() const& noexcept {
    return detail::FutureAwaiter<T, false>(*this);
  }
  detail::FutureAwaiter<T, true> operator co_await() && noexcept {
    return detail::FutureAwaiter<T, true>(std::move(*this));
  }

  /// Handles to the same task compare equal. With std::hash<Future<T>>, futures can key a
  /// std::unordered_map, as in Python's `{executor.submit(fn, x): x for x in xs}`.
  friend bool operator==(const Future& a, const Future& b) noexcept {
    return a.state_.get() == b.state_.get();
  }
  /// A total order over tasks, consistent with ==, so that futures can key a std::map or fill
  /// a std::set. The order is arbitrary (it is not submission or completion order) but fixed
  /// for as long as the futures exist. Beyond the contract (Python futures are not ordered).
  friend std::strong_ordering operator<=>(const Future& a, const Future& b) noexcept {
    return std::compare_three_way{}(a.state_.get(), b.state_.get());
  }

 private:
  template <class F>
  struct Callback final : detail::CallbackNode {
    explicit Callback(F fn) : f(std::move(fn)) {}
    void run(detail::StateBase& s) override {
      f(Future(detail::Ref<detail::SharedState<T>>::share(static_cast<detail::SharedState<T>*>(&s)),
               AdoptHandle{}));
    }
    F f;
  };

  explicit Future(detail::Ref<detail::SharedState<T>> s) : state_(std::move(s)) {
    if (state_) state_->add_handle();
  }
  struct AdoptHandle {};
  /// A handle already counted (by add_done_callback).
  Future(detail::Ref<detail::SharedState<T>> s, AdoptHandle) : state_(std::move(s)) {}

  const_reference value_when_done() const {
    state_->rethrow_if_failed();
    if constexpr (!std::is_void_v<T>) return std::as_const(*state_).value();
  }
  T take_when_done() {
    state_->rethrow_if_failed();
    if constexpr (!std::is_void_v<T>) {
      if (state_->sole_handle()) return std::move(state_->value());
      if constexpr (std::is_copy_constructible_v<T>)
        return state_->value();
      else
        throw InvalidStateError(
            "result() on a temporary: a move-only value shared by other handles");
    }
  }

  friend Future detail::make_future<T>(detail::Ref<detail::SharedState<T>>);
  friend detail::SharedState<T>* detail::state_of<T>(const Future&);

  detail::Ref<detail::SharedState<T>> state_;
};

/// The producer side of a Future. Move-only; a Promise destroyed without an outcome
/// finishes its future with cfx::Error ("promise destroyed before a result was set") so
/// that no future is ever left pending forever.
template <class T>
class Promise {
 public:
  Promise() : state_(detail::Ref<State>::adopt(new State)) {}
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& o) noexcept {
    abandon();
    state_ = std::move(o.state_);
    return *this;
  }
  ~Promise() { abandon(); }

  Future<T> get_future() const { return detail::make_future<T>(state_); }

  /// Marks the future running; false if it was cancelled (do not run the task then).
  /// Throws InvalidStateError if it is already running or finished.
  bool set_running_or_notify_cancel() { return state_->set_running_or_notify_cancel(); }

  /// Finishes with a value. Throws InvalidStateError if already done.
  template <class... U>
  void set_result(U&&... v) {
    if (!state_->try_set_value(std::forward<U>(v)...))
      throw InvalidStateError("set_result: future is already done");
  }
  /// Finishes with an exception. Throws InvalidStateError if already done.
  void set_exception(std::exception_ptr e) {
    if (!state_->try_set_exception(std::move(e)))
      throw InvalidStateError("set_exception: future is already done");
  }

 private:
  using State = detail::SharedState<T>;
  void abandon() noexcept {
    if (state_ && !state_->done())
      state_->try_set_exception(
          std::make_exception_ptr(Error("promise destroyed before a result was set")));
  }
  detail::Ref<State> state_;
};

namespace detail {
template <class T>
Future<T> make_future(Ref<SharedState<T>> state) {
  return Future<T>(std::move(state));
}
template <class T>
SharedState<T>* state_of(const Future<T>& f) {
  return f.state_.get();
}
template <class T>
T take_result(Future<T>& f, const std::optional<std::chrono::steady_clock::time_point>& deadline) {
  auto* s = state_of(f);
  if (deadline) {
    if (!s->wait_until(*deadline)) throw TimeoutError();
  } else {
    s->wait();
  }
  s->rethrow_if_failed();
  return std::move(s->value());
}
}  // namespace detail

}  // namespace cfx

#include "cfx/detail/future_awaiter.hpp"

/// Hashes the task a future refers to: copies of one future hash equal.
template <class T>
struct std::hash<cfx::Future<T>> {
  std::size_t operator()(const cfx::Future<T>& f) const noexcept {
    return std::hash<const void*>{}(cfx::detail::state_of(f));
  }
};
