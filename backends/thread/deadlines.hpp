// The CallOptions timeouts of one ThreadPoolExecutor: deadlines of running calls, ordered,
// and the loop of the one thread that expires them (started by the pool on the first call
// with a timeout; see thread_pool.cpp).
//
// A worker arms a call's deadline when the call starts and disarms it when the call returns;
// so the ordered map holds only running calls, and a call that finishes in time leaves
// nothing behind. The timer thread sleeps on a condition variable until the earliest
// deadline (or until an earlier one is armed), then expires the calls past theirs
// (LocalTask::expire: TimeoutError unless the call finished first, and stop requested).
// Every entry holds a reference on its call, so neither side can see it freed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "cfx/detail/local_task.hpp"

namespace cfx::detail {

class Deadlines {
 public:
  using Clock = std::chrono::steady_clock;
  using Key = std::pair<Clock::time_point, std::uint64_t>;  // deadline, then arming order

  /// Arms task's timeout, counted from now, and retains the task until disarm or expiry.
  /// nullopt: the timeout is too long ever to pass. Throws std::bad_alloc (nothing armed).
  std::optional<Key> arm(LocalTask* task);
  /// Disarms a deadline that has not expired; nothing if it has.
  void disarm(const Key& key) noexcept;
  /// The timer thread: expires calls as their deadlines pass, until stop().
  void run() noexcept;
  /// Makes run() return; deadlines still armed are dropped without expiring.
  void stop() noexcept;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Key, LocalTask*> armed_;
  std::uint64_t armed_count_ = 0;
  bool stopping_ = false;
};

}  // namespace cfx::detail
