// Process-shared mutex and condition variable that live inside a SharedBlock. Internal: the
// layer under every synchronising object of API section 6 (cfx/sync.hpp, Queue, SharedDict).
//
// Both are plain structs with no pointers into any one process's memory, so a block mapped
// at another address, in another process, works. The creator places them in zero-filled
// shared memory with `init()` before any other thread or process can see them; everyone
// else reaches them through `shared_at<T>(block, offset)`.
//
//  - SharedMutex: a robust, process-shared pthread mutex (PTHREAD_PROCESS_SHARED +
//    PTHREAD_MUTEX_ROBUST). A holder that dies, however it dies, hands the mutex to the next
//    locker (EOWNERDEAD -> pthread_mutex_consistent), never a hang; `recovered()` tells that
//    locker so. It records its holder's thread id, so that unlocking a mutex one does not
//    hold throws instead of corrupting, and it can optionally be recursive.
//  - SharedCondition: a futex (shared, not FUTEX_PRIVATE_FLAG) on a sequence counter, not a
//    pthread_cond_t, whose state a process killed inside pthread_cond_wait leaves broken.
//    A waiter holds nothing while it sleeps, so its death leaves nothing behind.
//
// Deadlines are absolute steady_clock (CLOCK_MONOTONIC) times; nullopt waits forever; a
// deadline in the past still makes one attempt (Python's timeout <= 0).
//
//   struct Ring { SharedMutex mutex; SharedCondition not_empty; std::uint64_t count; ... };
//   SharedBlock block(sizeof(Ring));                 // creator
//   auto& r = shared_at<Ring>(block);
//   r.mutex.init();
//   r.not_empty.init();
//   ...                                              // any process mapping the block:
//   std::unique_lock held(r.mutex);
//   if (!r.not_empty.wait(r.mutex, deadline, [&] { return r.count > 0; })) throw QueueEmpty();
//
// Thread safety: every member may be called from any thread of any process mapping the
// block, except init() (once, by the creator, before sharing).
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <type_traits>

#include "cfx/detail/shared_block.hpp"

namespace cfx::detail {

/// When a wait gives up: an absolute steady_clock time, or nullopt for never.
using SyncDeadline = std::optional<std::chrono::steady_clock::time_point>;

/// Saturating conversion of a Python-style timeout (negative: no wait) to a deadline.
template <class Rep, class Period>
std::chrono::steady_clock::time_point sync_deadline_after(
    std::chrono::duration<Rep, Period> timeout) noexcept {
  using namespace std::chrono;
  auto now = steady_clock::now();
  if (timeout <= timeout.zero()) return now;
  if (duration<double>(timeout) >= duration<double>(steady_clock::time_point::max() - now))
    return steady_clock::time_point::max();
  return now + duration_cast<steady_clock::duration>(timeout);
}

/// A deadline on any clock, as a steady_clock deadline (the time left, measured now).
template <class Clock, class Duration>
std::chrono::steady_clock::time_point sync_deadline_at(
    std::chrono::time_point<Clock, Duration> when) noexcept {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    return std::chrono::time_point_cast<std::chrono::steady_clock::duration>(when);
  } else {
    return sync_deadline_after(when - Clock::now());
  }
}

/// This thread's kernel thread id (cached; correct again in a child after fork()).
std::int32_t current_tid() noexcept;

/// A robust process-shared mutex with a recorded holder (see the file comment).
struct SharedMutex {
  /// Initialises in place, in zero-filled memory not yet shared. `recursive`: the holder may
  /// lock again and must unlock as many times.
  void init(bool recursive = false);

  /// Blocks until held. Throws cfx::Error if this thread holds it already (not recursive).
  void lock();
  /// Takes it if free now (or already held by this thread, when recursive).
  bool try_lock();
  /// Blocks until held or `deadline` passes; false on timeout.
  bool lock_until(const SyncDeadline& deadline);
  /// Releases one level. Throws cfx::Error, changing nothing, unless this thread holds it.
  void unlock();

  /// True if the calling thread holds it.
  bool held_by_me() const noexcept;
  /// While held: true if this holder took it over from a holder that died holding it (the
  /// state it guards may be half-updated).
  bool recovered() const noexcept { return recovered_ != 0; }

  pthread_mutex_t native_;
  std::atomic<std::int32_t> owner_;  // tid of the holder; 0 when free
  std::uint32_t depth_;              // levels held (recursive); written by the holder
  std::uint32_t recursive_;
  std::uint32_t recovered_;

 private:
  friend struct SharedCondition;
  void after_acquire(int rc);
  /// Gives the mutex up entirely; returns the depth it had (for a condition wait).
  std::uint32_t release_all() noexcept;
  void reacquire(std::uint32_t depth);
};

/// A condition variable over a SharedMutex (see the file comment). Wake-ups may be spurious:
/// wait in a loop on the predicate (or use the predicate form). Notify while holding the
/// mutex: a waiter that arrives between an unlocked notify and its wake call may take the
/// wake meant for an earlier one (notify_all is immune).
struct SharedCondition {
  void init() noexcept {}

  /// Releases `m` (which this thread must hold; else throws cfx::Error, changing nothing),
  /// waits for a notify or `deadline`, and takes `m` back at the same depth before
  /// returning, also on timeout. False if the deadline passed.
  bool wait(SharedMutex& m, const SyncDeadline& deadline = std::nullopt);
  /// Waits until pred() (checked under `m`); returns pred()'s last value.
  template <class Pred>
  bool wait(SharedMutex& m, const SyncDeadline& deadline, Pred pred) {
    while (!pred()) {
      if (!wait(m, deadline)) return pred();
    }
    return true;
  }
  /// Wakes at least one waiter, if any.
  void notify_one() noexcept;
  /// Wakes every waiter.
  void notify_all() noexcept;

  std::atomic<std::uint32_t> seq_;      // bumped by every notify
  std::atomic<std::uint32_t> waiters_;  // sleepers (a dead one only costs a spare wake call)
};

static_assert(std::is_standard_layout_v<SharedMutex> && std::is_standard_layout_v<SharedCondition>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
              sizeof(std::atomic<std::uint32_t>) == 4);

/// The object of type T at `offset` in `block`. Throws cfx::Error if it does not fit or is
/// misaligned (a handle that does not match its block).
template <class T>
T& shared_at(const SharedBlock& block, std::size_t offset = 0);

void throw_bad_shared_offset(std::size_t offset, std::size_t size, std::size_t block_size);

template <class T>
T& shared_at(const SharedBlock& block, std::size_t offset) {
  static_assert(std::is_standard_layout_v<T>, "only plain structs live in shared memory");
  if (offset > block.size() || block.size() - offset < sizeof(T) || offset % alignof(T) != 0)
    throw_bad_shared_offset(offset, sizeof(T), block.size());
  return *std::launder(reinterpret_cast<T*>(static_cast<char*>(block.data()) + offset));
}

/// Low-level futex calls on a 32-bit word in shared memory (never FUTEX_PRIVATE_FLAG).
/// futex_wait: sleeps while *word == expected, until a wake or `deadline`; false only on
/// timeout (a changed word, a signal or a wake all return true).
bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                const SyncDeadline& deadline) noexcept;
void futex_wake(std::atomic<std::uint32_t>& word, int how_many) noexcept;

}  // namespace cfx::detail
