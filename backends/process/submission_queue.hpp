// What submitters share with the process pool's I/O thread: the calls not yet sent to a
// worker, the wake-up that makes the I/O thread dispatch them, the shutdown and broken
// flags, and the live workers' pids. One mutex guards all of it; everything else of the pool
// belongs to the I/O thread alone. Internal.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cfx/detail/remote_task.hpp"
#include "lib/intrusive_queue.hpp"

namespace cfx::detail {

class SubmissionQueue {
 public:
  using Calls = IntrusiveQueue<RemoteTask>;

  /// `wake` asks the I/O thread to dispatch (it posts, and must not call back in here). It
  /// is called with the lock held, so that no call can be queued after the pool broke or
  /// drained without its wake-up posted first.
  explicit SubmissionQueue(std::function<void()> wake) : wake_(std::move(wake)) {}

  // ---- submitters (any thread) ---------------------------------------------------------

  /// Queues a call and wakes the I/O thread, once for every push until it calls
  /// begin_dispatch or take. Throws BrokenProcessPool once broken, cfx::Error after shutdown.
  /// Without `wake`, the caller takes the call itself at once, and wakes the I/O thread if
  /// anything is left (an MPI submit that sends its own call).
  void push(RemoteTask* task, bool wake = true);
  /// Refuses later pushes; with cancel_futures, cancels the queued calls. Returns true the
  /// first time only.
  bool shut_down(bool cancel_futures);
  std::vector<int> worker_pids() const;

  // ---- the I/O thread ------------------------------------------------------------------

  /// Re-arms the wake-up and returns how many calls are queued, or nullopt once broken.
  std::optional<std::size_t> begin_dispatch();
  /// Re-arms the wake-up and takes up to n calls from the front, in order (none once
  /// broken: breaking empties the queue and refuses pushes).
  Calls take(std::size_t n);
  /// Returns calls taken but not sent to the front, as they were.
  void give_back(Calls calls);
  /// Puts calls that no worker started back at the front, in their order. Once the pool
  /// is broken it takes none and returns why it broke.
  std::optional<std::string> requeue(const std::vector<RemoteTask*>& calls);
  /// Breaks the pool with `message` and hands back every queued call; nullopt if it was
  /// broken already.
  std::optional<Calls> break_pool(const std::string& message);
  /// True when no queued call will ever be sent: none is queued, or the pool is broken.
  bool drained() const;
  void add_worker(int pid);
  void remove_worker(int pid);

 private:
  const std::function<void()> wake_;
  mutable std::mutex mutex_;
  Calls pending_;
  bool wake_posted_ = false;
  bool shutdown_ = false;
  std::optional<std::string> broken_;
  std::vector<int> pids_;
};

}  // namespace cfx::detail
