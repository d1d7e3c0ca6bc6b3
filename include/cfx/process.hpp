// cfx::Process: one registered task in a new process, multiprocessing.Process. API section 6;
// docs/toolkit.md.
//
//   cfx::Process p(worker_main, queue, 7);                  // spawn (the default)
//   cfx::Process q(cfx::ProcessOptions{.start_method = cfx::StartMethod::fork}, worker_main,
//                  queue, 8);
//   p.start(); q.start();
//   p.join(); bool ended = q.join(std::chrono::seconds(1));
//   p.exitcode();   // 0; 1 if the task threw; -N if signal N killed it
//
// The child is a one-call worker of the process backend: it is started as pool workers are
// (spawn re-runs this program, whose main() must call cfx::init first; fork copies it), its
// arguments travel as a task's do (shared handles as descriptors), and it dies with its
// parent. The task's return value is discarded; an exception it throws is printed on stderr
// and makes the exit code 1.
//
// Destroying a started Process that has not been joined joins it (waits for the child), as
// Python waits for its non-daemon children at exit: kill() or terminate() it first not to
// wait. No zombie is ever left.
//
// Thread safety: one Process may be used from several threads (join from one, kill from
// another); start() once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "cfx/detail/handles.hpp"
#include "cfx/detail/registry.hpp"
#include "cfx/detail/remote_task.hpp"
#include "cfx/errors.hpp"
#include "cfx/process_pool.hpp"

namespace cfx {

struct ProcessOptions {
  StartMethod start_method = StartMethod::spawn;
};

class Process {
 public:
  /// `task`, a function registered with CFX_TASK, and its arguments (encoded now; shared
  /// handles are kept until start()). Throws cfx::Error if `task` is not registered,
  /// SerializationError if an argument cannot be encoded.
  template <class Fn, class... Args>
  requires detail::is_fn_ptr_v<Fn>
  explicit Process(Fn task, Args&&... args)
      : Process(ProcessOptions{}, task, std::forward<Args>(args)...) {}
  template <class Fn, class... Args>
  requires detail::is_fn_ptr_v<Fn> Process(ProcessOptions options, Fn task, Args&&... args) {
    using Tuple = typename detail::fn_traits<Fn>::args;
    static_assert(std::is_constructible_v<Tuple, Args&&...>,
                  "cfx::Process: the arguments do not convert to the task's parameter types");
    const detail::TaskEntry& entry = detail::registered_task(task);
    const Tuple one(std::forward<Args>(args)...);
    detail::HandleList handles;
    auto bytes = detail::encode_args(entry, &one, 1, handles);
    init(options, entry, std::move(bytes), std::move(handles));
  }
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  /// Joins a started child (see the file comment).
  ~Process();

  /// Starts the child. Throws cfx::Error if already started, or if it cannot be started.
  void start();
  /// Waits for the child to end. Throws cfx::Error if not started.
  void join();
  /// Waits at most `timeout`; true if the child has ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration<double>(timeout).count());
  }
  /// True between start() and the child's end.
  bool is_alive();
  /// The child's process id; 0 before start().
  int pid() const noexcept;
  /// nullopt until the child ended (and was seen to end: join() or is_alive()); then 0, 1
  /// if the task threw, or minus the signal that killed it.
  std::optional<int> exitcode();
  /// SIGTERM to the child (which passes it to the processes it started); no-op once ended.
  void terminate();
  /// SIGKILL to the child and everything it started; no-op once ended.
  void kill();

  struct State;  // backends/process/process.cpp

 private:
  void init(ProcessOptions options, const detail::TaskEntry& task, std::vector<char> args,
            detail::HandleList handles);
  bool join_for(double seconds);
  State& state() const;
  struct StateDeleter {
    void operator()(State* s) const noexcept;
  };

  std::unique_ptr<State, StateDeleter> state_;
};

/// The cores this process may use: its affinity mask, capped by its cgroup's CPU quota
/// (rounded up), at least 1. What ProcessPoolExecutor's max_workers = 0 uses.
std::size_t cpu_count();

}  // namespace cfx
