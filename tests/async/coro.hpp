// What the async tests share: a minimal eager coroutine type (no Asio), thread names, and
// tasks for both backends.
#pragma once

#include <pthread.h>
#include <unistd.h>

#include <coroutine>
#include <exception>
#include <future>
#include <optional>
#include <string>
#include <utility>

#include "conformance/backends.hpp"

namespace async_test {

/// The name of the calling thread ("ThreadPoolExecutor-0_1", "cfx_resume_0", ...).
inline std::string thread_name() {
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

/// The process a task runs in: tells worker processes apart.
inline int worker_pid() {
  return static_cast<int>(::getpid());
}
CFX_TASK(worker_pid);

/// A coroutine that starts at once and keeps its frame until the Task is destroyed, which
/// destroys the frame even while suspended. Its outcome arrives in `outcome`, a std::future
/// set once the coroutine has suspended for the last time (so the Task may then be dropped).
template <class T>
class Task {
 public:
  struct promise_type;
  using Handle = std::coroutine_handle<promise_type>;

  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    void await_suspend(Handle h) noexcept { h.promise().publish(); }
    void await_resume() noexcept {}
  };

  struct PromiseBase {
    std::promise<T> out;
    std::exception_ptr error;
    std::suspend_never initial_suspend() noexcept { return {}; }
    FinalAwaiter final_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { error = std::current_exception(); }
  };

  struct ValuePromise : PromiseBase {
    std::optional<T> value;
    template <class U>
    void return_value(U&& v) {
      value.emplace(std::forward<U>(v));
    }
    void publish() {
      if (this->error)
        this->out.set_exception(this->error);
      else
        this->out.set_value(std::move(*value));
    }
  };
  struct VoidPromise : PromiseBase {
    void return_void() noexcept {}
    void publish() {
      if (this->error)
        this->out.set_exception(this->error);
      else
        this->out.set_value();
    }
  };

  struct promise_type : std::conditional_t<std::is_void_v<T>, VoidPromise, ValuePromise> {
    Task get_return_object() { return Task(Handle::from_promise(*this)); }
  };

  Task(Task&& o) noexcept : handle_(std::exchange(o.handle_, {})), outcome(std::move(o.outcome)) {}
  ~Task() {
    if (handle_) handle_.destroy();
  }

 private:
  explicit Task(Handle h) : handle_(h), outcome(h.promise().out.get_future()) {}
  Handle handle_;

 public:
  std::future<T> outcome;
};

}  // namespace async_test
