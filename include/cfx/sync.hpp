// Process-shared synchronisation: Python's multiprocessing Lock, RLock, Semaphore,
// BoundedSemaphore, Event, Condition and Barrier (API section 6, docs/toolkit.md).
//
// Each is a cheap copyable handle to an object in anonymous shared memory (a memfd, never a
// name in /dev/shm): every copy, in this process or, once passed on, in another, refers to
// the same object. They work between threads of one process and between processes sharing
// the memory (pool workers, cfx::Process children, plain fork() children).
//
// Constructing one makes a new object, as in Python: `cfx::Lock m;` is a usable lock,
// `cfx::Semaphore s(3);` a semaphore at 3 (Semaphore and BoundedSemaphore default to 1, as
// Python's; a Barrier needs its number of parties). The decoder of a handle that crossed a
// process boundary builds it without making anything (HandleAccess); a moved-from handle
// refers to nothing, and every operation on it throws cfx::Error.
//
// Beyond Python: a Lock or RLock whose holder dies, however it dies (SIGKILL included), is
// handed to the next locker instead of hanging it; misuse (unlocking a lock this thread does
// not hold, releasing a BoundedSemaphore past its bound, waiting on or notifying a Condition
// without its lock) throws cfx::Error and changes nothing.
//
// Timeouts are Python's: a duration, negative or zero meaning "try once without waiting";
// the *_until forms take a time_point of any clock. Waits measure time on the monotonic
// clock, so a change of the wall clock does not shorten or stretch them.
//
// Thread safety: distinct objects, and distinct or shared handles to one object: safe; that
// is what they are for. Assigning to or destroying one handle object while another thread
// uses that same handle object is not, as for std::shared_ptr.
#pragma once

#include <chrono>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "cfx/detail/handle_json.hpp"
#include "cfx/detail/shared_block.hpp"
#include "cfx/detail/shared_sync.hpp"

namespace cfx {

namespace detail {

/// Makes a handle of type H to the object at `offset` of `block`, which the caller knows to
/// be an initialised object of H's kind: for the decoder of a handle that crossed a process
/// boundary (from_json), and for objects that embed a Lock in their own block (a
/// SharedArray's get_lock()). Every use of the handle still checks that the object fits.
/// An empty block makes a handle that refers to nothing, at the cost of a null pointer: the
/// decoder builds handles this way, never through their constructors, which allocate.
/// The argument of the private constructors that make a handle refer to nothing.
struct NoObject {};

struct HandleAccess {
  template <class H>
  static H make(SharedBlock block, std::size_t offset) {
    return H(std::move(block), offset);
  }
};

/// What every synchronisation handle has: its block, where its object lies in it, and
/// identity. Internal (the serialisation of handles uses block() and offset()).
class SyncHandle {
 public:
  /// True if this handle refers to an object (false once moved from).
  bool valid() const noexcept { return static_cast<bool>(block_); }
  const SharedBlock& block() const noexcept { return block_; }
  std::size_t offset() const noexcept { return offset_; }
  /// Same object.
  friend bool operator==(const SyncHandle& a, const SyncHandle& b) noexcept {
    return a.block_ == b.block_ && a.offset_ == b.offset_;
  }

 protected:
  SyncHandle() = default;
  SyncHandle(SharedBlock block, std::size_t offset) : block_(std::move(block)), offset_(offset) {}
  /// The object, or cfx::Error naming `type`, for an empty handle.
  template <class State>
  State& state(const char* type) const {
    return shared_at<State>(checked_block(type), offset_);
  }
  /// The block, or cfx::Error naming `type`, for an empty handle.
  const SharedBlock& checked_block(const char* type) const {
    if (!block_) throw_empty(type);
    return block_;
  }
  [[noreturn]] static void throw_empty(const char* type);

  SharedBlock block_;
  std::size_t offset_ = 0;
};

/// Lock and RLock: a SharedMutex somewhere in a block. Internal; `Handle` names the public
/// class (its type_name) for the error on an empty handle.
template <class Handle>
class MutexHandle : public SyncHandle {
 public:
  /// Blocks until this thread holds it. A Lock already held by this thread throws
  /// cfx::Error (Python would deadlock).
  void lock() { mutex().lock(); }
  /// Takes it if free now; false otherwise (also for a Lock this thread holds).
  bool try_lock() { return mutex().try_lock(); }
  /// Waits up to `timeout` for it; false if the time ran out. Negative: one try.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return mutex().lock_until(sync_deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> when) {
    return mutex().lock_until(sync_deadline_at(when));
  }
  /// Releases it. Throws cfx::Error, changing nothing, unless this thread holds it.
  void unlock() { mutex().unlock(); }
  /// True if the calling thread holds it.
  bool held_by_me() const { return mutex().held_by_me(); }

 protected:
  using SyncHandle::SyncHandle;
  SharedMutex& mutex() const { return state<SharedMutex>(Handle::type_name); }
};

}  // namespace detail

/// multiprocessing.Lock: a non-recursive process-shared mutex. Lockable and TimedLockable,
/// so std::lock_guard, std::unique_lock and std::scoped_lock work. Unlike Python's, only
/// the thread holding it may unlock it.
class Lock final : public detail::MutexHandle<Lock> {
 public:
  static constexpr const char* type_name = "cfx::Lock";
  /// A new, unlocked lock.
  Lock();

 private:
  friend detail::HandleAccess;
  using MutexHandle::MutexHandle;
};

/// multiprocessing.RLock: the holder may lock it again and must unlock it as many times.
class RLock final : public detail::MutexHandle<RLock> {
 public:
  static constexpr const char* type_name = "cfx::RLock";
  /// A new, unlocked recursive lock.
  RLock();

 private:
  friend detail::HandleAccess;
  using MutexHandle::MutexHandle;
};

/// multiprocessing.Semaphore: a counter; acquire() waits while it is zero, then takes one.
class Semaphore : public detail::SyncHandle {
 public:
  /// Starts at 1, as Python's.
  Semaphore() : Semaphore(1) {}
  /// Starts at `value` (>= 0, else cfx::Error).
  explicit Semaphore(std::ptrdiff_t value);

  /// Waits until the count is above zero, then decrements it.
  void acquire();
  /// Decrements it if above zero now; false otherwise.
  bool try_acquire();
  template <class Rep, class Period>
  bool try_acquire_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire_until(detail::sync_deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool try_acquire_until(std::chrono::time_point<Clock, Duration> when) {
    return acquire_until(detail::sync_deadline_at(when));
  }
  /// Adds `update` (>= 0) and wakes as many waiters. Any thread or process may release.
  void release(std::ptrdiff_t update = 1);
  /// The count now (Python's get_value(); stale as soon as it returns).
  std::ptrdiff_t value() const;

 protected:
  Semaphore(std::ptrdiff_t value, std::ptrdiff_t bound);
  using SyncHandle::SyncHandle;
  friend detail::HandleAccess;
  bool acquire_until(const detail::SyncDeadline& deadline);
};

/// multiprocessing.BoundedSemaphore: a Semaphore whose count may never exceed its initial
/// value; a release() past it throws cfx::Error and changes nothing.
class BoundedSemaphore final : public Semaphore {
 public:
  /// Starts at, and never exceeds, 1, as Python's.
  BoundedSemaphore() : BoundedSemaphore(1) {}
  /// Starts at, and never exceeds, `value` (>= 0, else cfx::Error).
  explicit BoundedSemaphore(std::ptrdiff_t value) : Semaphore(value, value) {}

 private:
  friend detail::HandleAccess;
  using Semaphore::Semaphore;
};

/// multiprocessing.Event: a flag that wait() waits for.
class Event final : public detail::SyncHandle {
 public:
  /// A new event, not set.
  Event();

  /// Sets the flag and wakes every waiter.
  void set();
  void clear();
  bool is_set() const;
  /// Waits until the flag is set.
  void wait();
  /// Waits up to `timeout`; the flag on return (false: the time ran out).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_deadline(detail::sync_deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> when) {
    return wait_deadline(detail::sync_deadline_at(when));
  }

 private:
  friend detail::HandleAccess;
  using SyncHandle::SyncHandle;
  bool wait_deadline(const detail::SyncDeadline& deadline);
};

/// multiprocessing.Condition over its own cfx::Lock (Python's default is an RLock). Lock it
/// (lock(), or std::unique_lock over the Condition) before wait() and notify_*(), as Python
/// requires; either throws cfx::Error otherwise. Wake-ups may be spurious: use the
/// predicate forms or loop.
class Condition final : public detail::SyncHandle {
 public:
  /// A new condition and its lock, unlocked.
  Condition();

  void lock();
  bool try_lock();
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return get_lock().try_lock_for(timeout);
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> when) {
    return get_lock().try_lock_until(when);
  }
  void unlock();
  /// Its lock, as a Lock handle (the same lock, not a copy).
  Lock get_lock() const;

  /// Releases the lock, waits for a notify, takes the lock back.
  void wait() { wait_deadline(std::nullopt); }
  /// The same within `timeout`; false if the time ran out (the lock is held again anyway).
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_deadline(detail::sync_deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> when) {
    return wait_deadline(detail::sync_deadline_at(when));
  }
  /// Waits until pred() (Python's wait_for(predicate)).
  template <class Pred>
  void wait(Pred pred) {
    while (!pred()) wait_deadline(std::nullopt);
  }
  /// Waits until pred() or `timeout`; pred()'s last value.
  template <class Rep, class Period, class Pred>
  bool wait_for(std::chrono::duration<Rep, Period> timeout, Pred pred) {
    return wait_until_deadline(detail::sync_deadline_after(timeout), pred);
  }
  template <class Clock, class Duration, class Pred>
  bool wait_until(std::chrono::time_point<Clock, Duration> when, Pred pred) {
    return wait_until_deadline(detail::sync_deadline_at(when), pred);
  }
  /// Wakes one waiter (if any).
  void notify_one();
  /// Wakes every waiter.
  void notify_all();

 private:
  friend detail::HandleAccess;
  using SyncHandle::SyncHandle;
  bool wait_deadline(const detail::SyncDeadline& deadline);
  template <class Pred>
  bool wait_until_deadline(const detail::SyncDeadline& deadline, Pred& pred) {
    while (!pred()) {
      if (!wait_deadline(deadline)) return pred();
    }
    return true;
  }
};

/// multiprocessing.Barrier (threading.Barrier's semantics): `parties` waiters meet, then all
/// go on; reusable. abort() or a timed-out wait breaks it: every waiter then, and every
/// later wait() until reset(), throws cfx::BrokenBarrierError. A waiter whose process dies
/// still counts as arrived.
class Barrier final : public detail::SyncHandle {
 public:
  /// For `parties` (>= 1, else cfx::Error) waiters. No default: Python requires it too.
  explicit Barrier(std::size_t parties);

  /// Waits until `parties` waiters are here; returns this one's arrival index, 0 to
  /// parties - 1, different for each (Python's return value).
  std::size_t wait() { return wait_deadline(std::nullopt); }
  /// The same within `timeout`; if it runs out, breaks the barrier and throws
  /// BrokenBarrierError.
  template <class Rep, class Period>
  std::size_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_deadline(detail::sync_deadline_after(timeout));
  }
  template <class Clock, class Duration>
  std::size_t wait_until(std::chrono::time_point<Clock, Duration> when) {
    return wait_deadline(detail::sync_deadline_at(when));
  }
  /// Breaks it: current and later waiters throw BrokenBarrierError until reset().
  void abort();
  /// Back to empty and unbroken; current waiters throw BrokenBarrierError.
  void reset();

  std::size_t parties() const;
  /// Waiters now waiting.
  std::size_t n_waiting() const;
  bool broken() const;

 private:
  friend detail::HandleAccess;
  using SyncHandle::SyncHandle;
  std::size_t wait_deadline(const detail::SyncDeadline& deadline);
};

}  // namespace cfx

namespace cfx::detail {

/// Every synchronisation handle travels as its block and offset, its descriptor beside the
/// bytes (handle_json.hpp): as a task argument or result it refers to the same object.
template <class H>
requires std::is_base_of_v<SyncHandle, H>
void to_json(nlohmann::json& j, const H& h) {
  to_json_at(j, h.block(), h.offset());
}
/// The handle an encoding names; refers to nothing if the encoded one did. Never constructs
/// an H the public way (that would make a new object).
template <class H>
requires std::is_base_of_v<SyncHandle, H> H handle_from_json(const nlohmann::json& j) {
  std::size_t offset = 0;
  SharedBlock block = from_json_at(j, offset);
  if (!block) offset = 0;
  return HandleAccess::make<H>(std::move(block), offset);
}

}  // namespace cfx::detail

/// The decoder's way to a synchronisation handle (nlohmann's get<H>() for a type that is
/// not to be default-constructed): for every type derived from SyncHandle.
template <class H>
struct nlohmann::adl_serializer<H,
                                std::enable_if_t<std::is_base_of_v<cfx::detail::SyncHandle, H>>> {
  static void to_json(nlohmann::json& j, const H& h) { cfx::detail::to_json(j, h); }
  static H from_json(const nlohmann::json& j) { return cfx::detail::handle_from_json<H>(j); }
};
