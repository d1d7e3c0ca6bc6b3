// The type-erased unit of work that in-process backends (threads) run. Internal.
//
// A LocalCall is at once the future's shared state and the queued task (one allocation per
// submit). The queue owns one reference; the Future holds another.
//
// Completion: execute() runs the callable with the state `running`, and only then claims it
// and stores the outcome. So whoever else may end a running call (expire(), for a
// CallOptions timeout) races the call through one claim(): if expire() claims first, the
// future gets TimeoutError and execute() discards the call's outcome; publish() then has
// nothing to make visible.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cfx/detail/shared_state.hpp"

namespace cfx::detail {

class LocalTask {
 public:
  LocalTask* next = nullptr;  // intrusive queue link, owned by the executor
  /// CallOptions::timeout: counted from the start of the call.
  std::optional<std::chrono::duration<double>> timeout;

  /// Marks the future running; false if it was cancelled (skip it then).
  virtual bool start() noexcept = 0;
  /// Runs the callable and stores its outcome, not yet visible to waiters; discards it if
  /// expire() ended the future first.
  virtual void execute() noexcept = 0;
  /// Makes the stored outcome visible and runs the done-callbacks (nothing if expire() won).
  virtual void publish() noexcept = 0;
  /// Cancels a task that never started (shutdown with cancel_futures).
  virtual void cancel() noexcept = 0;
  /// Fails a task that never started (a broken pool), or a started one not yet executed.
  virtual void fail(std::exception_ptr e) noexcept = 0;
  /// The timeout passed: a call still running ends with TimeoutError, and stop is requested
  /// on its stop token (if it takes one); a call that has finished is left alone.
  virtual void expire() noexcept = 0;
  /// True if the callable takes a std::stop_token.
  virtual bool stoppable() const noexcept = 0;
  /// Requests stop on the call's stop token; nothing if it takes none.
  virtual void request_stop() noexcept = 0;
  /// Takes one more reference, released by drop().
  virtual void retain() noexcept = 0;
  /// Releases the executor's reference (or one taken by retain()).
  virtual void drop() noexcept = 0;

  /// start + execute + publish + drop (no timeout: that needs an executor's timer).
  void run_and_drop() noexcept {
    if (start()) {
      execute();
      publish();
    }
    drop();
  }

 protected:
  ~LocalTask() = default;
};

/// The TimeoutError of a call past its CallOptions timeout (lib/executor.cpp).
std::exception_ptr call_timeout_error(std::chrono::duration<double> timeout,
                                      bool stoppable) noexcept;

/// Fn is called as fn(std::stop_token) if Stoppable, fn() otherwise. Only a Stoppable call
/// carries a std::stop_source.
template <class R, class Fn, bool Stoppable = false>
class LocalCall final : public SharedState<R>, public LocalTask {
 public:
  explicit LocalCall(Fn fn) : fn_(std::move(fn)) { this->add_ref(); }  // the executor's ref

  bool start() noexcept override { return this->set_running_or_notify_cancel(); }
  void execute() noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        invoke();
        claimed_ = this->claim();
      } else {
        R value = invoke();
        claimed_ = this->claim();
        if (claimed_) this->emplace_value(std::move(value));
      }
    } catch (...) {
      // The call threw (nothing claimed yet), or the value's move did (already claimed).
      if (!claimed_) claimed_ = this->claim();
      if (claimed_) this->store_error(std::current_exception());
    }
    fn_.reset();  // release the callable and its arguments before anyone sees the result
  }
  void publish() noexcept override {
    if (claimed_) this->StateBase::publish(Status::finished);
  }
  void cancel() noexcept override { this->StateBase::cancel(); }
  void fail(std::exception_ptr e) noexcept override { this->try_set_exception(std::move(e)); }
  void expire() noexcept override {
    if (!this->claim()) return;  // finished first, or failed
    request_stop();              // before the error is visible: whoever sees it sees the stop
    this->publish_exception(
        call_timeout_error(timeout.value_or(std::chrono::duration<double>{}), Stoppable));
  }
  bool stoppable() const noexcept override { return Stoppable; }
  void request_stop() noexcept override {
    if constexpr (Stoppable) stop_.request_stop();
  }
  void retain() noexcept override { this->add_ref(); }
  void drop() noexcept override { this->release(); }

 protected:
  /// Future::interrupt() of a running call: requests stop, the future stays running.
  bool interrupt_running() noexcept override {
    request_stop();
    return false;
  }

 private:
  decltype(auto) invoke() {
    if constexpr (Stoppable)
      return std::invoke(*fn_, stop_.get_token());
    else
      return std::invoke(*fn_);
  }

  std::optional<Fn> fn_;
  bool claimed_ = false;  // execute() claimed the state; touched by the running thread only
  struct NoStop {};
  [[no_unique_address]] std::conditional_t<Stoppable, std::stop_source, NoStop> stop_;
};

}  // namespace cfx::detail
