// What `co_await future` uses (docs/async.md). Internal: included at the end of future.hpp.
//
// The awaiter lives in the coroutine frame. It registers itself on the future's waiter list
// (no thread, no polling) with after_unlock set, so that publish() calls on_done once the
// state's lock is released; on_done resumes the coroutine there, or on cfx's resumer threads
// when the completing thread delivers a whole pool's results (detail/resumption.hpp). If the
// frame is destroyed while suspended, the destructor takes the awaiter off the list.
#pragma once

#include <coroutine>
#include <utility>

#include "cfx/detail/resumption.hpp"
#include "cfx/detail/shared_state.hpp"
#include "cfx/future.hpp"

namespace cfx::detail {

/// Owned: the awaiter holds the only handle the expression had (co_await on a temporary), so
/// await_resume may take the value as `std::move(f).result()` does.
template <class T, bool Owned>
class FutureAwaiter final : WaiterNode {
 public:
  explicit FutureAwaiter(Future<T> f) noexcept : future_(std::move(f)) { after_unlock = true; }
  FutureAwaiter(const FutureAwaiter&) = delete;
  FutureAwaiter& operator=(const FutureAwaiter&) = delete;
  ~FutureAwaiter() {
    if (waiting_) state_of(future_)->remove_waiter(this);  // the frame died first
  }

  /// A done future never suspends.
  bool await_ready() const noexcept { return future_.done(); }
  /// False (resume at once) if the future completed meanwhile.
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    handle_ = h;
    waiting_ = true;
    // Once add_waiter has installed us, the coroutine may resume (and end) on another
    // thread: nothing here may touch *this afterwards.
    if (state_of(future_)->add_waiter(this)) return true;
    waiting_ = false;
    return false;
  }
  decltype(auto) await_resume() {
    waiting_ = false;
    if constexpr (Owned)
      return std::move(future_).result();
    else
      return future_.result();
  }

 private:
  void on_done(StateBase&) noexcept override {
    if (on_delivery_thread())
      resume_on_resumer(handle_);
    else
      handle_.resume();
  }

  Future<T> future_;
  std::coroutine_handle<> handle_;
  bool waiting_ = false;  // installed on the list and not yet resumed
};

}  // namespace cfx::detail
