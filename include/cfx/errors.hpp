// cfx error hierarchy (docs/errors.md).
//
// Everything cfx throws derives from cfx::Error, itself a std::runtime_error, so a single
// `catch (const cfx::Error&)` catches every library error while task exceptions (which
// come back with their own types) pass through untouched.
//
// Thread safety: errors are immutable once thrown; distinct and shared objects: safe (an
// exception held by a Future is rethrown to every thread that asks for its result).
#pragma once

#include <stdexcept>
#include <string>

namespace cfx {

/// Base of every cfx error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The future was cancelled before it ran.
class CancelledError : public Error {
 public:
  CancelledError() : Error("future was cancelled") {}
  using Error::Error;
};

/// A wait (result(timeout), as_completed, map) ran out of time, or a task ran past
/// ProcessPoolOptions::task_timeout.
class TimeoutError : public Error {
 public:
  TimeoutError() : Error("timed out") {}
  using Error::Error;
};

/// An operation that the future's state does not allow (a second set_result, say).
class InvalidStateError : public Error {
 public:
  using Error::Error;
};

/// A configuration value is unknown, of the wrong type or out of range.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A task's arguments or result could not be encoded or decoded for another process.
class SerializationError : public Error {
 public:
  using Error::Error;
};

/// The executor can no longer run tasks.
class BrokenExecutor : public Error {
 public:
  using Error::Error;
};

/// A ThreadPoolExecutor's initializer failed.
class BrokenThreadPool : public BrokenExecutor {
 public:
  using BrokenExecutor::BrokenExecutor;
};

/// A ProcessPoolExecutor cannot run tasks (a worker failed to start, a worker died with
/// on_worker_crash = break_pool, the initializer failed).
class BrokenProcessPool : public BrokenExecutor {
 public:
  using BrokenExecutor::BrokenExecutor;
};

/// The worker process running (or holding) this future's task died. Only the futures that
/// worker held fail with it; the pool replaces the worker (on_worker_crash = respawn).
class WorkerCrashed : public BrokenProcessPool {
 public:
  using BrokenProcessPool::BrokenProcessPool;
};

/// Queue::get(timeout) found nothing in time, or Queue::try_get's timed forms (API section 6).
class QueueEmpty : public Error {
 public:
  QueueEmpty() : Error("queue is empty") {}
  using Error::Error;
};

/// Queue::put(x, timeout) found no room in time in a bounded queue (API section 6).
class QueueFull : public Error {
 public:
  QueueFull() : Error("queue is full") {}
  using Error::Error;
};

/// A Barrier was aborted, or a wait on it timed out, and it has not been reset since.
class BrokenBarrierError : public Error {
 public:
  BrokenBarrierError() : Error("barrier is broken (aborted or a wait timed out); reset() it") {}
  using Error::Error;
};

/// A task in a worker process threw an exception whose type cannot be rebuilt here (neither
/// a standard type nor one registered with CFX_EXCEPTION): what() holds
/// "<type name>: <message>".
///
/// Every exception that comes back from a worker also carries a RemoteError as its nested
/// exception (std::rethrow_if_nested) describing where it was thrown: task(), pid() and
/// stack_trace() are set on that one.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message)
      : Error(type_name + ": " + message),
        type_name_(std::move(type_name)),
        message_(std::move(message)) {}
  /// The remote context of an exception thrown by `task` in worker `pid`.
  RemoteError(std::string type_name, std::string message, std::string task, int pid,
              std::string stack_trace)
      : Error(type_name + ": " + message + " (in task '" + task + "', worker pid " +
              std::to_string(pid) + ")" + (stack_trace.empty() ? "" : "\n" + stack_trace)),
        type_name_(std::move(type_name)),
        message_(std::move(message)),
        task_(std::move(task)),
        pid_(pid),
        stack_trace_(std::move(stack_trace)) {}

  /// The original exception's type name (demangled where possible).
  const std::string& type_name() const noexcept { return type_name_; }
  /// The original exception's what().
  const std::string& message() const noexcept { return message_; }
  /// The registered name of the task that threw (context only; else empty).
  const std::string& task() const noexcept { return task_; }
  /// The worker's process id (context only; else 0).
  int pid() const noexcept { return pid_; }
  /// The worker's stack where the exception was thrown, where available (see
  /// docs/errors.md, "Throw-site stack traces").
  const std::string& stack_trace() const noexcept { return stack_trace_; }

 private:
  std::string type_name_;
  std::string message_;
  std::string task_;
  int pid_ = 0;
  std::string stack_trace_;
};

}  // namespace cfx
